use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, ALLOW, CACHE_CONTROL};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::response::{self, ResponseBody, ResponseFuture};

/// A shared switch the server flips when it starts draining, turning health probes to 503.
///
/// Clones share one flag.
///
/// ```
/// use estuary_middleware::health::Draining;
///
/// let draining = Draining::new();
/// let seen_by_layer = draining.clone();
/// assert!(!seen_by_layer.is_draining());
/// draining.start();
/// assert!(seen_by_layer.is_draining());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// A switch that is off: the server is serving.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the server as draining; health probes answer 503 from now on.
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`Draining::start`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Layer that answers the health check path itself: 200 "OK", or 503 "draining".
///
/// ```
/// use estuary_middleware::health::{Draining, HealthLayer};
///
/// let draining = Draining::new();
/// let layer = HealthLayer::new("/health").with_draining(draining.clone());
/// assert!(!layer.draining().is_draining());
/// ```
#[derive(Debug, Clone)]
pub struct HealthLayer {
    path: Arc<str>,
    draining: Draining,
}

impl HealthLayer {
    /// Answers health probes on `path` (matched exactly, without the query).
    pub fn new(path: impl Into<Arc<str>>) -> Self {
        Self {
            path: path.into(),
            draining: Draining::new(),
        }
    }

    /// Uses `draining` as the switch, so that the server can flip it on shutdown.
    pub fn with_draining(mut self, draining: Draining) -> Self {
        self.draining = draining;
        self
    }

    /// The switch this layer reads.
    pub fn draining(&self) -> &Draining {
        &self.draining
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Health {
            inner,
            path: self.path.clone(),
            draining: self.draining.clone(),
        }
    }
}

/// Middleware that answers the health check path and passes every other request on.
///
/// Built by [`HealthLayer`].
///
/// ```
/// use estuary_middleware::health::{Health, HealthLayer};
/// use http::{Request, Response, StatusCode};
/// use std::convert::Infallible;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let service: Health<_> = HealthLayer::new("/health").layer(inner);
/// let response = service.oneshot(Request::get("/health").body(()).unwrap()).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Health<S> {
    inner: S,
    path: Arc<str>,
    draining: Draining,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Health<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if request.uri().path() != &*self.path {
            return ResponseFuture::inner(self.inner.call(request));
        }
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let (status, reason) = match *request.method() {
            Method::GET | Method::HEAD if self.draining.is_draining() => {
                (StatusCode::SERVICE_UNAVAILABLE, "draining")
            }
            Method::GET | Method::HEAD => (StatusCode::OK, "OK"),
            _ => {
                headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    "health check answers GET and HEAD only",
                )
            }
        };
        ResponseFuture::answered(response::text(status, reason, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{get, inner_ok, text};
    use bytes::Bytes;
    use http_body_util::Empty;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    fn stack(
        draining: &Draining,
    ) -> impl Service<
        Request<Empty<Bytes>>,
        Response = Response<ResponseBody<crate::test_util::TestBody>>,
        Error = std::convert::Infallible,
    > + Clone {
        ServiceBuilder::new()
            .layer(HealthLayer::new("/health").with_draining(draining.clone()))
            .service(service_fn(inner_ok))
    }

    #[tokio::test]
    async fn get_on_health_path_answers_ok() {
        let response = stack(&Draining::new())
            .oneshot(get("/health"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(text(response).await, "OK");
    }

    #[tokio::test]
    async fn head_on_health_path_answers_ok() {
        let request = Request::head("/health").body(Empty::new()).unwrap();
        let response = stack(&Draining::new()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn health_path_with_query_answers_ok() {
        let response = stack(&Draining::new())
            .oneshot(get("/health?probe=lb"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn health_path_answers_503_while_draining() {
        let draining = Draining::new();
        let service = stack(&draining);
        draining.start();
        let response = service.oneshot(get("/health")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text(response).await, "draining");
    }

    #[tokio::test]
    async fn post_on_health_path_is_405_with_allow() {
        let request = Request::post("/health").body(Empty::new()).unwrap();
        let response = stack(&Draining::new()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }

    #[tokio::test]
    async fn other_paths_reach_the_inner_service() {
        for path in ["/echo", "/health/deep", "/healthz", "/"] {
            let response = stack(&Draining::new()).oneshot(get(path)).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(text(response).await, "inner", "{path}");
        }
    }

    #[tokio::test]
    async fn other_paths_still_reach_the_inner_service_while_draining() {
        let draining = Draining::new();
        draining.start();
        let response = stack(&draining).oneshot(get("/echo")).await.unwrap();
        assert_eq!(text(response).await, "inner");
    }
}
