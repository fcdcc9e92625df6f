//! Carry axum's `ConnectInfo<SocketAddr>` into [`PeerAddr`] (feature `axum`).
//!
//! estuary's `Server` inserts a [`PeerAddr`] into every request itself. Under
//! `axum::serve`, axum knows the peer instead, as `ConnectInfo<SocketAddr>` (when the app
//! is served with `into_make_service_with_connect_info::<SocketAddr>()`);
//! [`PeerAddrLayer`] copies it into a [`PeerAddr`], so that the rate limiter, the
//! connection caps, the authenticators and the session see the client's address. A
//! request that already has a `PeerAddr`, or has no `ConnectInfo`, passes unchanged.
//!
//! [`PeerAddr`]: crate::PeerAddr
//!
//! # Example
//!
//! ```
//! use axum::extract::ConnectInfo;
//! use axum::routing::get;
//! use axum::Router;
//! use estuary_middleware::peer_addr::PeerAddrLayer;
//! use estuary_middleware::PeerAddr;
//! use http::Request;
//! use std::net::SocketAddr;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app: Router = Router::new()
//!     .route(
//!         "/ip",
//!         get(|request: axum::extract::Request| async move {
//!             request.extensions().get::<PeerAddr>().unwrap().ip().to_string()
//!         }),
//!     )
//!     .layer(PeerAddrLayer::new());
//! // axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//! // inserts this for every request; here it is inserted by hand.
//! let mut request = Request::get("/ip").body(axum::body::Body::empty()).unwrap();
//! let peer: SocketAddr = "192.0.2.7:50000".parse().unwrap();
//! request.extensions_mut().insert(ConnectInfo(peer));
//! let response = app.oneshot(request).await.unwrap();
//! let body = axum::body::to_bytes(response.into_body(), 64).await.unwrap();
//! assert_eq!(&body[..], b"192.0.2.7");
//! # }
//! ```

mod service;

pub use service::{PeerAddrLayer, SetPeerAddr};
