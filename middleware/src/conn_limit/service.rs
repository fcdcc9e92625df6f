use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::key::{AllClients, KeyExtractor};
use crate::response::{self, ResponseBody, ResponseFuture};
use crate::ConnectionPermit;

/// How long a client turned away is told to wait when no other value is set.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Layer that lets at most `max` sockets live at once, and optionally at most so many per
/// client, and answers 503 to the rest.
///
/// Clones share the same slots, so keep a clone to read [`live`](Self::live).
///
/// ```
/// use estuary_middleware::conn_limit::ConnectionLimitLayer;
/// use estuary_middleware::key::PeerIp;
/// use std::time::Duration;
///
/// let layer = ConnectionLimitLayer::new(10_000)
///     .per_client(PeerIp::default(), 100)
///     .with_retry_after(Duration::from_secs(30));
/// assert_eq!(layer.max(), 10_000);
/// assert_eq!(layer.max_per_client(), Some(100));
/// assert_eq!(layer.live(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionLimitLayer<K: KeyExtractor = AllClients> {
    slots: Arc<Slots<K::Key>>,
    key: K,
    retry_after: Duration,
}

impl ConnectionLimitLayer {
    /// At most `max` live sockets; `0` turns every request away.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Slots::new(max, None)),
            key: AllClients,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl<K: KeyExtractor> ConnectionLimitLayer<K> {
    /// Also lets each client, told apart by `key`, hold at most `max_per_client` of the
    /// slots: one client (an address, with [`PeerIp`](crate::key::PeerIp)) can no longer
    /// take them all. A request without a key is answered 500.
    ///
    /// The count of a client is forgotten when its last socket closes, so the layer
    /// remembers at most as many clients as there are live sockets, never more than `max`.
    ///
    /// Starts with slots of its own: clones made before this call do not share them.
    pub fn per_client<K2: KeyExtractor>(
        self,
        key: K2,
        max_per_client: usize,
    ) -> ConnectionLimitLayer<K2> {
        ConnectionLimitLayer {
            slots: Arc::new(Slots::new(self.slots.max, Some(max_per_client))),
            key,
            retry_after: self.retry_after,
        }
    }

    /// Sets the `Retry-After` sent with a 503 (default 5 seconds; rounded up to whole
    /// seconds, at least 1).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// How many slots are held right now.
    pub fn live(&self) -> usize {
        self.slots.live()
    }

    /// The most slots that can be held at once.
    pub fn max(&self) -> usize {
        self.slots.max
    }

    /// The most slots one client can hold, when the limit is [per client](Self::per_client).
    pub fn max_per_client(&self) -> Option<usize> {
        self.slots
            .per_client
            .as_ref()
            .map(|per_client| per_client.max)
    }
}

impl<S, K: KeyExtractor> Layer<S> for ConnectionLimitLayer<K> {
    type Service = ConnectionLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectionLimit {
            inner,
            slots: self.slots.clone(),
            key: self.key.clone(),
            retry_after: self.retry_after,
        }
    }
}

/// Middleware that gives each request a connection slot, or a 503 when none is free.
///
/// Built by [`ConnectionLimitLayer`].
///
/// ```
/// use estuary_middleware::conn_limit::{ConnectionLimit, ConnectionLimitLayer};
/// use http::{Request, Response, StatusCode};
/// use std::convert::Infallible;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let layer = ConnectionLimitLayer::new(1);
/// let service: ConnectionLimit<_> = layer.layer(inner);
/// // The inner service drops the request, and the permit in its extensions with it: a
/// // request that does not become a socket gives its slot back at once.
/// let first = service.clone().oneshot(Request::new(())).await.unwrap();
/// assert_eq!(first.status(), StatusCode::OK);
/// assert_eq!(layer.live(), 0);
/// let second = service.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(second.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionLimit<S, K: KeyExtractor = AllClients> {
    inner: S,
    slots: Arc<Slots<K::Key>>,
    key: K,
    retry_after: Duration,
}

impl<S, K: KeyExtractor> ConnectionLimit<S, K> {
    /// How many slots are held right now.
    pub fn live(&self) -> usize {
        self.slots.live()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for ConnectionLimit<S, K>
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

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let key = match &self.slots.per_client {
            None => None,
            Some(_) => match self.key.extract(&request) {
                Some(key) => Some(key),
                None => {
                    tracing::warn!(
                        "connection limit: no client key for {} (is PeerAddr in the request extensions?)",
                        request.uri().path()
                    );
                    return ResponseFuture::answered(response::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "connection limit: cannot tell which client this is",
                        HeaderMap::new(),
                    ));
                }
            },
        };
        match Slots::try_take(&self.slots, key) {
            Ok(permit) => {
                request.extensions_mut().insert(permit);
                ResponseFuture::inner(self.inner.call(request))
            }
            Err(full) => ResponseFuture::answered(response::text(
                StatusCode::SERVICE_UNAVAILABLE,
                match full {
                    Full::Everyone(max) => {
                        format!("connection limit reached: {max} sockets are open")
                    }
                    Full::Client(max) => {
                        format!("connection limit reached: this client has {max} sockets open")
                    }
                },
                response::retry_after(self.retry_after),
            )),
        }
    }
}

/// The shared count of held slots, and of each client's.
#[derive(Debug)]
struct Slots<Key> {
    live: AtomicUsize,
    max: usize,
    per_client: Option<PerClient<Key>>,
}

/// How many slots each client holds; a client holding none has no entry.
#[derive(Debug)]
struct PerClient<Key> {
    max: usize,
    held: Mutex<HashMap<Key, usize>>,
}

/// Which cap a request ran into, and its value.
enum Full {
    Everyone(usize),
    Client(usize),
}

impl<Key: std::hash::Hash + Eq + Clone + Send + Sync + 'static> Slots<Key> {
    fn new(max: usize, max_per_client: Option<usize>) -> Self {
        Self {
            live: AtomicUsize::new(0),
            max,
            per_client: max_per_client.map(|max| PerClient {
                max,
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// A permit that gives its slot (and its client's) back when dropped, or which cap is
    /// full. `key` is `Some` exactly when the limit is per client.
    fn try_take(slots: &Arc<Self>, key: Option<Key>) -> Result<ConnectionPermit, Full> {
        slots
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < slots.max).then_some(live + 1)
            })
            .map_err(|_| Full::Everyone(slots.max))?;
        if let (Some(per_client), Some(key)) = (&slots.per_client, &key) {
            // The global slot is taken first, so the map never has more entries than
            // there are live sockets.
            if !per_client.take(key) {
                slots.live.fetch_sub(1, Ordering::AcqRel);
                return Err(Full::Client(per_client.max));
            }
        }
        let slots = slots.clone();
        Ok(ConnectionPermit::new(move || {
            if let (Some(per_client), Some(key)) = (&slots.per_client, key) {
                per_client.give_back(&key);
            }
            slots.live.fetch_sub(1, Ordering::AcqRel);
        }))
    }
}

impl<Key: std::hash::Hash + Eq + Clone> PerClient<Key> {
    fn take(&self, key: &Key) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.get(key).copied().unwrap_or(0);
        if count >= self.max {
            return false;
        }
        held.insert(key.clone(), count + 1);
        true
    }

    fn give_back(&self, key: &Key) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                held.remove(key);
            }
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::PeerIp;
    use crate::test_util::{answer, get, text, TestBody};
    use crate::PeerAddr;
    use bytes::Bytes;
    use http::header::RETRY_AFTER;
    use http::Extensions;
    use http_body_util::{Empty, Full};
    use std::convert::Infallible;
    use std::sync::Mutex;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    /// Extensions kept by the stand-in upgrade, one per open "socket".
    type Sockets = Arc<Mutex<Vec<Extensions>>>;

    /// A stack whose inner service keeps each request's extensions, like the upgrade.
    fn upgrading_stack<K: KeyExtractor + Send + Sync + 'static>(
        layer: &ConnectionLimitLayer<K>,
    ) -> (
        impl Service<
                Request<Empty<Bytes>>,
                Response = Response<ResponseBody<TestBody>>,
                Error = Infallible,
            > + Clone,
        Sockets,
    ) {
        let sockets = Sockets::default();
        let open = sockets.clone();
        let service = ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(move |mut request: Request<Empty<Bytes>>| {
                open.lock()
                    .unwrap()
                    .push(std::mem::take(request.extensions_mut()));
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                std::future::ready(Ok::<_, Infallible>(response))
            }));
        (service, sockets)
    }

    #[tokio::test]
    async fn request_under_the_cap_carries_a_permit() {
        let service = ServiceBuilder::new()
            .layer(ConnectionLimitLayer::new(1))
            .service(service_fn(|request: Request<Empty<Bytes>>| async move {
                assert!(request.extensions().get::<ConnectionPermit>().is_some());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }));
        let response = service.oneshot(get("/ws")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn socket_over_the_cap_gets_503_with_retry_after() {
        let layer = ConnectionLimitLayer::new(2).with_retry_after(Duration::from_millis(1500));
        let (service, _sockets) = upgrading_stack(&layer);
        for _ in 0..2 {
            let response = service.clone().oneshot(get("/ws")).await.unwrap();
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        }
        assert_eq!(layer.live(), 2);

        let response = service.clone().oneshot(get("/ws")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert_eq!(
            text(response).await,
            "connection limit reached: 2 sockets are open"
        );
        assert_eq!(layer.live(), 2);
    }

    #[tokio::test]
    async fn slot_is_free_again_after_a_socket_closes() {
        let layer = ConnectionLimitLayer::new(2);
        let (service, sockets) = upgrading_stack(&layer);
        for _ in 0..2 {
            service.clone().oneshot(get("/ws")).await.unwrap();
        }
        let response = service.clone().oneshot(get("/ws")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

        drop(sockets.lock().unwrap().pop()); // one socket closes
        assert_eq!(layer.live(), 1);
        let response = service.clone().oneshot(get("/ws")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(layer.live(), 2);
    }

    #[tokio::test]
    async fn rejected_handshake_gives_its_slot_back() {
        let layer = ConnectionLimitLayer::new(1);
        for status in [StatusCode::UNAUTHORIZED, StatusCode::BAD_REQUEST] {
            let service = ServiceBuilder::new()
                .layer(layer.clone())
                .service(service_fn(answer(status)));
            let response = service.oneshot(get("/ws")).await.unwrap();
            assert_eq!(response.status(), status);
            assert_eq!(layer.live(), 0, "after {status}");
        }
    }

    #[tokio::test]
    async fn zero_cap_turns_everyone_away() {
        let (service, _sockets) = upgrading_stack(&ConnectionLimitLayer::new(0));
        let response = service.oneshot(get("/ws")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn clones_of_the_layer_share_the_slots() {
        let layer = ConnectionLimitLayer::new(1);
        let (first, _sockets_a) = upgrading_stack(&layer);
        let (second, _sockets_b) = upgrading_stack(&layer.clone());
        first.oneshot(get("/a")).await.unwrap();
        let response = second.oneshot(get("/b")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    fn from_peer(addr: &str) -> Request<Empty<Bytes>> {
        let mut request = get("/ws");
        let addr = addr.parse().expect("test addresses are valid");
        request.extensions_mut().insert(PeerAddr(addr));
        request
    }

    #[tokio::test]
    async fn one_client_over_its_share_gets_503_while_another_connects() {
        let layer = ConnectionLimitLayer::new(10).per_client(PeerIp::default(), 2);
        let (service, sockets) = upgrading_stack(&layer);
        for port in 1..=2 {
            let response = service
                .clone()
                .oneshot(from_peer(&format!("192.0.2.1:{port}")));
            assert_eq!(
                response.await.unwrap().status(),
                StatusCode::SWITCHING_PROTOCOLS
            );
        }
        let response = service
            .clone()
            .oneshot(from_peer("192.0.2.1:3"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        assert_eq!(
            text(response).await,
            "connection limit reached: this client has 2 sockets open"
        );
        // IPv6 neighbours in one /64 are one client.
        for (addr, expected) in [
            ("[2001:db8::1]:1", StatusCode::SWITCHING_PROTOCOLS),
            ("[2001:db8::2]:1", StatusCode::SWITCHING_PROTOCOLS),
            ("[2001:db8::3]:1", StatusCode::SERVICE_UNAVAILABLE),
            ("192.0.2.2:1", StatusCode::SWITCHING_PROTOCOLS),
        ] {
            let response = service.clone().oneshot(from_peer(addr)).await.unwrap();
            assert_eq!(response.status(), expected, "{addr}");
        }
        assert_eq!(layer.live(), 5);

        drop(sockets.lock().unwrap().remove(0)); // one of 192.0.2.1's sockets closes
        let response = service
            .clone()
            .oneshot(from_peer("192.0.2.1:4"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    }

    #[tokio::test]
    async fn a_client_is_forgotten_when_its_last_socket_closes() {
        let layer = ConnectionLimitLayer::new(100).per_client(PeerIp::default(), 3);
        let (service, sockets) = upgrading_stack(&layer);
        for client in 0..50 {
            let request = from_peer(&format!("192.0.2.{client}:1"));
            service.clone().oneshot(request).await.unwrap();
        }
        let per_client = layer.slots.per_client.as_ref().unwrap();
        assert_eq!(per_client.clients(), 50);
        // A refused request leaves no entry behind.
        let refused = ConnectionLimitLayer::new(0).per_client(PeerIp::default(), 3);
        let (service_refused, _kept) = upgrading_stack(&refused);
        service_refused
            .oneshot(from_peer("192.0.2.1:1"))
            .await
            .unwrap();
        assert_eq!(refused.slots.per_client.as_ref().unwrap().clients(), 0);

        sockets.lock().unwrap().clear();
        assert_eq!(per_client.clients(), 0);
        assert_eq!(layer.live(), 0);
    }

    #[tokio::test]
    async fn the_total_cap_bounds_how_many_clients_are_remembered() {
        let layer = ConnectionLimitLayer::new(8).per_client(PeerIp::default(), 1);
        let (service, _sockets) = upgrading_stack(&layer);
        let mut refused = 0;
        for client in 0..200 {
            let request = from_peer(&format!("10.0.{}.{}:1", client / 250, client % 250));
            let response = service.clone().oneshot(request).await.unwrap();
            refused += usize::from(response.status() == StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(refused, 192);
        assert_eq!(layer.slots.per_client.as_ref().unwrap().clients(), 8);
    }

    #[tokio::test]
    async fn per_client_request_without_a_key_gets_500() {
        let layer = ConnectionLimitLayer::new(8).per_client(PeerIp::default(), 1);
        let (service, _sockets) = upgrading_stack(&layer);
        let response = service.oneshot(get("/ws")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(layer.live(), 0);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_cap() {
        let slots = Arc::new(Slots::<()>::new(8, None));
        let held = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(permit) = Slots::try_take(&slots, None) {
                            held.lock().unwrap().push(permit);
                        }
                    }
                });
            }
        });
        assert_eq!(held.lock().unwrap().len(), 8);
        assert_eq!(slots.live(), 8);
        held.lock().unwrap().clear();
        assert_eq!(slots.live(), 0);
    }
}
