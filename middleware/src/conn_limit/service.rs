use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::response::{self, ResponseBody, ResponseFuture};
use crate::ConnectionPermit;

/// How long a client turned away is told to wait when no other value is set.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Layer that lets at most `max` sockets live at once and answers 503 to the rest.
///
/// Clones share the same slots, so keep a clone to read [`live`](Self::live).
///
/// ```
/// use estuary_middleware::conn_limit::ConnectionLimitLayer;
/// use std::time::Duration;
///
/// let layer = ConnectionLimitLayer::new(10_000).with_retry_after(Duration::from_secs(30));
/// assert_eq!(layer.max(), 10_000);
/// assert_eq!(layer.live(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionLimitLayer {
    slots: Arc<Slots>,
    retry_after: Duration,
}

impl ConnectionLimitLayer {
    /// At most `max` live sockets; `0` turns every request away.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Slots {
                live: AtomicUsize::new(0),
                max,
            }),
            retry_after: DEFAULT_RETRY_AFTER,
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
}

impl<S> Layer<S> for ConnectionLimitLayer {
    type Service = ConnectionLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectionLimit {
            inner,
            slots: self.slots.clone(),
            retry_after: self.retry_after,
        }
    }
}

/// Middleware that gives each request a connection slot, or a 503 when none is free.
///
/// Built by [`ConnectionLimitLayer`].
#[derive(Debug, Clone)]
pub struct ConnectionLimit<S> {
    inner: S,
    slots: Arc<Slots>,
    retry_after: Duration,
}

impl<S> ConnectionLimit<S> {
    /// How many slots are held right now.
    pub fn live(&self) -> usize {
        self.slots.live()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConnectionLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match Slots::try_take(&self.slots) {
            Some(permit) => {
                request.extensions_mut().insert(permit);
                ResponseFuture::inner(self.inner.call(request))
            }
            None => ResponseFuture::answered(response::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "connection limit reached: {} sockets are open",
                    self.slots.max
                ),
                response::retry_after(self.retry_after),
            )),
        }
    }
}

/// The shared count of held slots.
#[derive(Debug)]
struct Slots {
    live: AtomicUsize,
    max: usize,
}

impl Slots {
    fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// A permit that gives its slot back when dropped, or `None` when all are held.
    fn try_take(slots: &Arc<Self>) -> Option<ConnectionPermit> {
        slots
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < slots.max).then_some(live + 1)
            })
            .ok()?;
        let slots = slots.clone();
        Some(ConnectionPermit::new(move || {
            slots.live.fetch_sub(1, Ordering::AcqRel);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{answer, get, text, TestBody};
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
    fn upgrading_stack(
        layer: &ConnectionLimitLayer,
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

    #[test]
    fn concurrent_takers_never_exceed_the_cap() {
        let slots = Arc::new(Slots {
            live: AtomicUsize::new(0),
            max: 8,
        });
        let held = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        if let Some(permit) = Slots::try_take(&slots) {
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
