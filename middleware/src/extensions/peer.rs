use std::net::{IpAddr, SocketAddr};

/// The remote address of the TCP connection a request arrived on.
///
/// The server inserts it into every request's extensions when it accepts a connection;
/// [`RateLimitLayer`](crate::rate_limit::RateLimitLayer) keys on it by default and
/// [`AuthRequest::peer_addr`](crate::auth::AuthRequest::peer_addr) exposes it. In an axum
/// app, insert it from `ConnectInfo<SocketAddr>` with a small `map_request` step.
///
/// ```
/// use estuary_middleware::PeerAddr;
/// use std::net::SocketAddr;
///
/// let addr: SocketAddr = "192.0.2.7:50000".parse().unwrap();
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(PeerAddr(addr));
///
/// let peer = request.extensions().get::<PeerAddr>().unwrap();
/// assert_eq!(peer.ip().to_string(), "192.0.2.7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// The peer's IP address, without the port.
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self(addr)
    }
}
