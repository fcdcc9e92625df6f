use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::{KeyExtractor, PeerIp};
use crate::response::{self, ResponseBody, ResponseFuture};

/// How many requests pass between two sweeps of keys whose budget is full again, so that
/// the limiter's memory follows the clients of the last few seconds, not every client ever.
const CLEANUP_EVERY: u64 = 1024;

/// Layer that gives each client (by IP, or by a [`KeyExtractor`]) a request budget and
/// answers 429 with `Retry-After` once it is spent.
///
/// A GCRA limiter (governor): a client may send `burst` requests at once, then one more
/// every `1 / per_second` seconds. Clones and every service built from them share one
/// limiter.
///
/// ```
/// use estuary_middleware::rate_limit::RateLimitLayer;
/// use std::num::NonZeroU32;
///
/// let layer = RateLimitLayer::per_second(NonZeroU32::new(5).unwrap())
///     .with_burst(NonZeroU32::new(20).unwrap());
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<K: KeyExtractor = PeerIp> {
    quota: Quota,
    key: K,
    limiter: Arc<Limiter<K::Key>>,
}

impl RateLimitLayer<PeerIp> {
    /// `per_second` requests per second per client IP, with a burst of the same size.
    pub fn per_second(per_second: NonZeroU32) -> Self {
        Self::from_quota(Quota::per_second(per_second))
    }

    /// Any governor [`Quota`] (per minute, per hour, custom period) per client IP.
    ///
    /// ```
    /// use estuary_middleware::rate_limit::{Quota, RateLimitLayer};
    /// use std::num::NonZeroU32;
    ///
    /// let layer = RateLimitLayer::from_quota(Quota::per_minute(NonZeroU32::new(30).unwrap()));
    /// # let _ = layer;
    /// ```
    pub fn from_quota(quota: Quota) -> Self {
        Self {
            quota,
            key: PeerIp::default(),
            limiter: Arc::new(Limiter::new(quota)),
        }
    }
}

impl<K: KeyExtractor> RateLimitLayer<K> {
    /// Lets a client send `burst` requests at once before the rate applies.
    pub fn with_burst(self, burst: NonZeroU32) -> Self {
        let quota = self.quota.allow_burst(burst);
        Self {
            quota,
            key: self.key,
            limiter: Arc::new(Limiter::new(quota)),
        }
    }

    /// Tells clients apart with `key` instead of by IP.
    ///
    /// ```
    /// use estuary_middleware::rate_limit::{ForwardedFor, RateLimitLayer};
    /// use std::num::NonZeroU32;
    ///
    /// let behind_proxy = ForwardedFor::new(["10.0.0.2".parse().unwrap()]);
    /// let layer = RateLimitLayer::per_second(NonZeroU32::new(5).unwrap()).with_key(behind_proxy);
    /// # let _ = layer;
    /// ```
    pub fn with_key<K2: KeyExtractor>(self, key: K2) -> RateLimitLayer<K2> {
        RateLimitLayer {
            quota: self.quota,
            key,
            limiter: Arc::new(Limiter::new(self.quota)),
        }
    }
}

impl<K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("quota", &self.quota)
            .field("key", &self.key)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<S, K: KeyExtractor> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            key: self.key.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

/// Middleware that spends one unit of the client's budget per request, or answers 429.
///
/// Built by [`RateLimitLayer`].
///
/// ```
/// use estuary_middleware::rate_limit::{RateLimit, RateLimitLayer};
/// use estuary_middleware::PeerAddr;
/// use http::{Request, Response, StatusCode};
/// use std::convert::Infallible;
/// use std::num::NonZeroU32;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let layer = RateLimitLayer::per_second(NonZeroU32::new(1).unwrap());
/// let service: RateLimit<_> = layer.layer(inner);
/// let from = |_| {
///     let mut request = Request::new(());
///     request.extensions_mut().insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
///     request
/// };
/// let first = service.clone().oneshot(from(())).await.unwrap();
/// let second = service.oneshot(from(())).await.unwrap();
/// assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS));
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimit<S, K: KeyExtractor = PeerIp> {
    inner: S,
    key: K,
    limiter: Arc<Limiter<K::Key>>,
}

impl<S: fmt::Debug, K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimit<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("key", &self.key)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: KeyExtractor,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(key) = self.key.extract(&request) else {
            tracing::warn!(
                "rate limit: no client key for {} (is PeerAddr in the request extensions?)",
                request.uri().path()
            );
            return ResponseFuture::answered(response::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rate limit: cannot tell which client this is",
                HeaderMap::new(),
            ));
        };
        match self.limiter.check(&key) {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(wait) => ResponseFuture::answered(response::text(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
                response::retry_after(wait),
            )),
        }
    }
}

/// governor's keyed limiter plus the request count that schedules its cleanup.
struct Limiter<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    requests: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(quota: Quota) -> Self {
        Self {
            limiter: RateLimiter::dashmap(quota),
            requests: AtomicU64::new(0),
        }
    }

    /// Spends one unit of `key`'s budget, or says how long until one is available.
    fn check(&self, key: &K) -> Result<(), std::time::Duration> {
        if self.requests.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY == CLEANUP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// How many clients the limiter remembers.
    fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

impl<K: std::hash::Hash + Eq + Clone> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("tracked_clients", &self.tracked())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{key_fn, ForwardedFor, UserId};
    use crate::test_util::{get, inner_ok, text};
    use crate::{Identity, PeerAddr};
    use bytes::Bytes;
    use http::header::RETRY_AFTER;
    use http_body_util::Empty;
    use std::time::Duration;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("test rates are not zero")
    }

    fn from_peer(addr: &str) -> Request<Empty<Bytes>> {
        let mut request = get("/ws");
        let addr = addr.parse().expect("test addresses are valid");
        request.extensions_mut().insert(PeerAddr(addr));
        request
    }

    async fn status<K>(layer: &RateLimitLayer<K>, request: Request<Empty<Bytes>>) -> StatusCode
    where
        K: KeyExtractor + Send + Sync + 'static,
    {
        let service = ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(inner_ok));
        service.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn requests_within_the_burst_reach_the_inner_service() {
        let layer = RateLimitLayer::per_second(rate(1)).with_burst(rate(3));
        for _ in 0..3 {
            assert_eq!(
                status(&layer, from_peer("192.0.2.1:1000")).await,
                StatusCode::OK
            );
        }
    }

    #[tokio::test]
    async fn burst_plus_one_request_gets_429_with_retry_after() {
        let layer = RateLimitLayer::per_second(rate(1)).with_burst(rate(3));
        let service = ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(inner_ok));
        for _ in 0..3 {
            let response = service.clone().oneshot(from_peer("192.0.2.1:1000")).await;
            assert_eq!(response.unwrap().status(), StatusCode::OK);
        }
        let response = service.oneshot(from_peer("192.0.2.1:1001")).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(text(response).await, "rate limit exceeded");
    }

    #[tokio::test]
    async fn another_ip_still_gets_through_while_one_is_limited() {
        let layer = RateLimitLayer::per_second(rate(1));
        assert_eq!(
            status(&layer, from_peer("192.0.2.1:1000")).await,
            StatusCode::OK
        );
        let limited = status(&layer, from_peer("192.0.2.1:1000")).await;
        assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            status(&layer, from_peer("192.0.2.2:1000")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&layer, from_peer("[2001:db8::1]:1000")).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn retry_after_counts_the_whole_wait_in_seconds() {
        let layer = RateLimitLayer::from_quota(Quota::per_minute(rate(1)));
        let service = ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(inner_ok));
        service
            .clone()
            .oneshot(from_peer("192.0.2.1:1"))
            .await
            .unwrap();
        let response = service.oneshot(from_peer("192.0.2.1:1")).await.unwrap();
        assert_eq!(response.headers()[RETRY_AFTER], "60");
    }

    #[tokio::test]
    async fn budget_refills_with_time() {
        let layer = RateLimitLayer::per_second(rate(50)).with_burst(rate(1));
        assert_eq!(
            status(&layer, from_peer("192.0.2.1:1")).await,
            StatusCode::OK
        );
        let limited = status(&layer, from_peer("192.0.2.1:1")).await;
        assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            status(&layer, from_peer("192.0.2.1:1")).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn request_without_a_client_key_gets_500() {
        let layer = RateLimitLayer::per_second(rate(1));
        let request = get("/ws"); // no PeerAddr: the server forgot to insert it
        assert_eq!(
            status(&layer, request).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn clients_behind_a_trusted_proxy_get_their_own_budget() {
        let layer = RateLimitLayer::per_second(rate(1))
            .with_key(ForwardedFor::new(["10.0.0.2".parse().unwrap()]));
        let via_proxy = |client: &str| {
            let mut request = from_peer("10.0.0.2:5000");
            let value = client.parse().unwrap();
            request.headers_mut().insert("x-forwarded-for", value);
            request
        };
        assert_eq!(
            status(&layer, via_proxy("198.51.100.1")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&layer, via_proxy("198.51.100.2")).await,
            StatusCode::OK
        );
        let again = status(&layer, via_proxy("198.51.100.1")).await;
        assert_eq!(again, StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn spoofed_forwarded_bytes_and_ipv6_neighbours_share_one_key() {
        let layer = RateLimitLayer::per_second(rate(1))
            .with_key(ForwardedFor::new(["10.0.0.2".parse().unwrap()]));
        // What the proxy sends on: whatever the client wrote, then the client's address.
        let via_proxy = |sent: &[u8], client: &str| {
            let mut value = sent.to_vec();
            value.extend_from_slice(format!(", {client}").as_bytes());
            let mut request = from_peer("10.0.0.2:5000");
            let value = http::HeaderValue::from_bytes(&value).unwrap();
            request.headers_mut().insert("x-forwarded-for", value);
            request
        };
        assert_eq!(
            status(&layer, via_proxy(b"1.1.1.1", "198.51.100.1")).await,
            StatusCode::OK
        );
        for spoofed in [
            &b"\xff\xfe2.2.2.2"[..],
            b"3.3.3.3\x80",
            b"\x80",
            b"::ffff:4.4.4.4",
        ] {
            let again = status(&layer, via_proxy(spoofed, "198.51.100.1")).await;
            assert_eq!(again, StatusCode::TOO_MANY_REQUESTS, "{spoofed:?}");
        }
        let mapped = status(&layer, via_proxy(b"", "::ffff:198.51.100.1")).await;
        assert_eq!(mapped, StatusCode::TOO_MANY_REQUESTS);
        // An honest client behind the same proxy has a budget of its own.
        assert_eq!(
            status(&layer, via_proxy(b"", "198.51.100.2")).await,
            StatusCode::OK
        );

        let direct = RateLimitLayer::per_second(rate(1));
        let first = status(&direct, from_peer("[2001:db8:1:2::1]:1000")).await;
        assert_eq!(first, StatusCode::OK);
        for neighbour in ["[2001:db8:1:2::2]:1000", "[2001:db8:1:2:ffff::9]:1"] {
            let again = status(&direct, from_peer(neighbour)).await;
            assert_eq!(again, StatusCode::TOO_MANY_REQUESTS, "{neighbour}");
        }
        let other_network = status(&direct, from_peer("[2001:db8:1:3::1]:1000")).await;
        assert_eq!(other_network, StatusCode::OK);
        assert_eq!(
            status(&direct, from_peer("192.0.2.1:1")).await,
            StatusCode::OK
        );
        let mapped = status(&direct, from_peer("[::ffff:192.0.2.1]:2")).await;
        assert_eq!(mapped, StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn user_id_key_limits_each_user_separately() {
        let layer = RateLimitLayer::per_second(rate(1)).with_key(UserId);
        let as_user = |user: &str| {
            let mut request = get("/ws");
            request.extensions_mut().insert(Identity::new(user));
            request
        };
        assert_eq!(status(&layer, as_user("alice")).await, StatusCode::OK);
        assert_eq!(status(&layer, as_user("bob")).await, StatusCode::OK);
        let again = status(&layer, as_user("alice")).await;
        assert_eq!(again, StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn key_fn_limits_by_a_header() {
        let layer = RateLimitLayer::per_second(rate(1)).with_key(key_fn(|headers, _| {
            Some(headers.get("x-api-key")?.as_bytes().to_vec())
        }));
        let with_key = |key: &'static str| {
            let mut request = get("/ws");
            request
                .headers_mut()
                .insert("x-api-key", key.parse().unwrap());
            request
        };
        assert_eq!(status(&layer, with_key("a")).await, StatusCode::OK);
        assert_eq!(status(&layer, with_key("b")).await, StatusCode::OK);
        let again = status(&layer, with_key("a")).await;
        assert_eq!(again, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            status(&layer, get("/ws")).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn clients_whose_budget_refilled_are_forgotten() {
        let layer = RateLimitLayer::per_second(rate(1000)).with_burst(rate(1));
        for client in 0..10 {
            status(&layer, from_peer(&format!("192.0.2.{client}:1"))).await;
        }
        assert_eq!(layer.limiter.tracked(), 10);
        tokio::time::sleep(Duration::from_millis(5)).await;
        for _ in 10..CLEANUP_EVERY {
            layer.limiter.check(&"198.51.100.1".parse().unwrap()).ok();
        }
        assert!(layer.limiter.tracked() <= 1, "{:?}", layer.limiter);
    }
}
