use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::{MessageRate, SessionLimits};

/// Layer that puts a [`SessionLimits`] into every request's extensions.
///
/// A limit left unset is `None`: the engine's own default applies.
///
/// ```
/// use estuary_middleware::session_limits::SessionLimitsLayer;
/// use estuary_middleware::SessionLimits;
/// use std::time::Duration;
///
/// let layer = SessionLimitsLayer::new().with_idle_timeout(Duration::from_secs(30));
/// assert_eq!(layer.limits().idle_timeout, Some(Duration::from_secs(30)));
///
/// let same = SessionLimitsLayer::from_limits(
///     SessionLimits::default().with_idle_timeout(Duration::from_secs(30)),
/// );
/// assert_eq!(same.limits(), layer.limits());
/// ```
#[derive(Debug, Clone, Default)]
pub struct SessionLimitsLayer {
    limits: SessionLimits,
}

impl SessionLimitsLayer {
    /// A layer with no limits set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer inserting `limits` as they are.
    pub fn from_limits(limits: SessionLimits) -> Self {
        Self { limits }
    }

    /// Closes a socket that sent no frame for `timeout` (close code 1000).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits = self.limits.with_idle_timeout(timeout);
        self
    }

    /// Closes a socket `age` after it opened (close code 1001). Leave unset for no limit.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.limits = self.limits.with_max_age(age);
        self
    }

    /// Closes each socket up to `fraction` of the max age earlier, drawn once per socket,
    /// so that sockets opened together are not all closed together (see
    /// [`SessionLimits::with_max_age_jitter`]).
    ///
    /// # Panics
    ///
    /// If `fraction` is not between 0 and 1.
    ///
    /// ```
    /// use estuary_middleware::session_limits::SessionLimitsLayer;
    /// use std::time::Duration;
    ///
    /// // Each socket closes between 50 and 60 minutes after it opened.
    /// let layer = SessionLimitsLayer::new()
    ///     .with_max_age(Duration::from_secs(3600))
    ///     .with_max_age_jitter(1.0 / 6.0);
    /// let earliest = layer.limits().connection_max_age(1.0).unwrap();
    /// assert_eq!(earliest.as_secs(), 3000);
    /// ```
    pub fn with_max_age_jitter(mut self, fraction: f64) -> Self {
        self.limits = self.limits.with_max_age_jitter(fraction);
        self
    }

    /// Closes a socket that sends more than `rate.capacity` frames per `rate.duration`
    /// (close code 1008).
    pub fn with_message_rate(mut self, rate: MessageRate) -> Self {
        self.limits = self.limits.with_message_rate(rate);
        self
    }

    /// Closes a socket that sends a message larger than `bytes` (close code 1009).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.limits = self.limits.with_max_message_size(bytes);
        self
    }

    /// The limits this layer inserts.
    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }
}

impl<S> Layer<S> for SessionLimitsLayer {
    type Service = SetSessionLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetSessionLimits {
            inner,
            limits: self.limits,
        }
    }
}

/// Middleware that inserts a [`SessionLimits`] into the request and calls the inner service.
///
/// Built by [`SessionLimitsLayer`]. It replaces a `SessionLimits` an outer layer inserted,
/// so the layer closest to the socket wins.
///
/// ```
/// use estuary_middleware::session_limits::{SessionLimitsLayer, SetSessionLimits};
/// use estuary_middleware::SessionLimits;
/// use http::{Request, Response};
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|request: Request<()>| async move {
///     let limits = request.extensions().get::<SessionLimits>().copied();
///     Ok::<_, Infallible>(Response::new(limits))
/// });
/// let layer = SessionLimitsLayer::new().with_idle_timeout(Duration::from_secs(60));
/// let service: SetSessionLimits<_> = layer.layer(inner);
/// let seen = service.oneshot(Request::new(())).await.unwrap().into_body().unwrap();
/// assert_eq!(seen.idle_timeout, Some(Duration::from_secs(60)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SetSessionLimits<S> {
    inner: S,
    limits: SessionLimits,
}

impl<S, ReqBody> Service<Request<ReqBody>> for SetSessionLimits<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        request.extensions_mut().insert(self.limits);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{get, TestBody};
    use bytes::Bytes;
    use http::{Response, StatusCode};
    use http_body_util::{Empty, Full};
    use std::convert::Infallible;
    use tower::util::BoxCloneService;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    type Handler = BoxCloneService<Request<Empty<Bytes>>, Response<TestBody>, Infallible>;

    /// The `SessionLimits` the inner service finds in the request after `layer`.
    async fn limits_seen<L>(layer: L) -> Option<SessionLimits>
    where
        L: Layer<Handler>,
        L::Service:
            Service<Request<Empty<Bytes>>, Response = Response<TestBody>, Error = Infallible>,
    {
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let handler = BoxCloneService::new(service_fn(move |request: Request<Empty<Bytes>>| {
            seen_tx
                .send(request.extensions().get::<SessionLimits>().copied())
                .unwrap();
            std::future::ready(Ok(Response::new(TestBody::new(Bytes::new()))))
        }));
        layer.layer(handler).oneshot(get("/ws")).await.unwrap();
        seen_rx.recv().unwrap()
    }

    #[tokio::test]
    async fn inner_service_sees_every_configured_limit() {
        let rate = MessageRate::new(10, Duration::from_secs(2));
        let layer = SessionLimitsLayer::new()
            .with_idle_timeout(Duration::from_secs(120))
            .with_max_age(Duration::from_secs(3600))
            .with_max_age_jitter(0.2)
            .with_message_rate(rate)
            .with_max_message_size(4096);
        let seen = limits_seen(layer).await.expect("limits inserted");
        assert_eq!(seen.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(seen.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(seen.max_age_jitter, Some(0.2));
        assert_eq!(seen.message_rate, Some(rate));
        assert_eq!(seen.max_message_size, Some(4096));
    }

    #[tokio::test]
    async fn unset_limits_stay_none() {
        let seen = limits_seen(SessionLimitsLayer::new()).await;
        assert_eq!(seen, Some(SessionLimits::default()));
    }

    #[tokio::test]
    async fn layer_closest_to_the_socket_wins() {
        let outer = SessionLimitsLayer::new().with_idle_timeout(Duration::from_secs(1));
        let inner = SessionLimitsLayer::new().with_idle_timeout(Duration::from_secs(2));
        let seen = limits_seen(ServiceBuilder::new().layer(outer).layer(inner))
            .await
            .unwrap();
        assert_eq!(seen.idle_timeout, Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn response_passes_through_untouched() {
        let service = ServiceBuilder::new()
            .layer(SessionLimitsLayer::new())
            .service(service_fn(|_request: Request<Empty<Bytes>>| async {
                let mut response = Response::new(Full::new(Bytes::from_static(b"101")));
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                Ok::<_, Infallible>(response)
            }));
        let response = service.oneshot(get("/ws")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    }
}
