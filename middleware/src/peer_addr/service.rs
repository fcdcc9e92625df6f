use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::PeerAddr;

/// Layer that puts a [`PeerAddr`] into every request from axum's
/// `ConnectInfo<SocketAddr>`.
///
/// ```
/// use estuary_middleware::peer_addr::PeerAddrLayer;
///
/// let app: axum::Router = axum::Router::new().layer(PeerAddrLayer::new());
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerAddrLayer;

impl PeerAddrLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for PeerAddrLayer {
    type Service = SetPeerAddr<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetPeerAddr { inner }
    }
}

/// Middleware that copies `ConnectInfo<SocketAddr>` into a [`PeerAddr`], then calls the
/// inner service. Built by [`PeerAddrLayer`].
///
/// A `PeerAddr` already in the request (from estuary's `Server`) is kept: it is the
/// address of the TCP connection as the server accepted it.
///
/// ```
/// use axum::extract::ConnectInfo;
/// use estuary_middleware::peer_addr::{PeerAddrLayer, SetPeerAddr};
/// use estuary_middleware::PeerAddr;
/// use http::{Request, Response};
/// use std::convert::Infallible;
/// use std::net::SocketAddr;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|request: Request<()>| async move {
///     Ok::<_, Infallible>(Response::new(request.extensions().get::<PeerAddr>().copied()))
/// });
/// let service: SetPeerAddr<_> = PeerAddrLayer::new().layer(inner);
/// let addr: SocketAddr = "192.0.2.7:50000".parse().unwrap();
/// let mut request = Request::new(());
/// request.extensions_mut().insert(ConnectInfo(addr));
/// let peer = service.oneshot(request).await.unwrap().into_body();
/// assert_eq!(peer, Some(PeerAddr(addr)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SetPeerAddr<S> {
    inner: S,
}

impl<S, ReqBody> Service<Request<ReqBody>> for SetPeerAddr<S>
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
        let extensions = request.extensions_mut();
        let connected = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        if let (None, Some(addr)) = (extensions.get::<PeerAddr>(), connected) {
            extensions.insert(PeerAddr(addr));
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::get;
    use bytes::Bytes;
    use http::Response;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    /// The `PeerAddr` the inner service finds in `request`.
    async fn peer_seen(request: Request<http_body_util::Empty<Bytes>>) -> Option<PeerAddr> {
        let inner = service_fn(|request: Request<_>| async move {
            let peer = request.extensions().get::<PeerAddr>().copied();
            Ok::<_, Infallible>(Response::new(peer))
        });
        let response = PeerAddrLayer::new()
            .layer(inner)
            .oneshot(request)
            .await
            .unwrap();
        response.into_body()
    }

    #[tokio::test]
    async fn connect_info_becomes_the_peer_addr() {
        let addr: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let mut request = get("/ws");
        request.extensions_mut().insert(ConnectInfo(addr));
        assert_eq!(peer_seen(request).await, Some(PeerAddr(addr)));
    }

    #[tokio::test]
    async fn a_peer_addr_from_the_server_is_kept() {
        let server: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let mut request = get("/ws");
        request.extensions_mut().insert(PeerAddr(server));
        request.extensions_mut().insert(ConnectInfo(
            "192.0.2.7:50000".parse::<SocketAddr>().unwrap(),
        ));
        assert_eq!(peer_seen(request).await, Some(PeerAddr(server)));
    }

    #[tokio::test]
    async fn without_connect_info_there_is_no_peer_addr() {
        assert_eq!(peer_seen(get("/ws")).await, None);
    }
}
