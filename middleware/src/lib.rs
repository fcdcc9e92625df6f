//! Tower layers for WebSocket servers, re-exported by `estuary` as `estuary::middleware`.
//!
//! Every layer here is a plain [`tower_layer::Layer`] over `http::Request<B>` for any body
//! `B`: it knows HTTP, not WebSocket frames. Layers talk to the connection that follows
//! them only through the typed values in [`extensions`], which the WebSocket upgrade moves
//! into the session so that they live exactly as long as the socket.
//!
//! | module | layer | answers itself with |
//! |---|---|---|
//! | [`health`] | [`HealthLayer`](health::HealthLayer) | 200 "OK" / 503 "draining" on the health path |
//! | [`origin`] | [`OriginLayer`](origin::OriginLayer) | 403 for an origin not on the allow-list (or, [`same_origin`](origin::OriginLayer::same_origin), not the `Host`) |
//! | [`rate_limit`] | [`RateLimitLayer`](rate_limit::RateLimitLayer) | 429 + `Retry-After` |
//! | [`conn_limit`] | [`ConnectionLimitLayer`](conn_limit::ConnectionLimitLayer) | 503 + `Retry-After` when full, in total or for one client |
//! | [`auth`] | [`AuthLayer`](auth::AuthLayer) | 401 + `WWW-Authenticate`, or 403 |
//! | [`session_limits`] | [`SessionLimitsLayer`](session_limits::SessionLimitsLayer) | never: it only inserts [`SessionLimits`] |
//! | `peer_addr` (feature `axum`) | `PeerAddrLayer` | never: it copies axum's `ConnectInfo<SocketAddr>` into [`PeerAddr`] |
//!
//! Layers that count per client tell clients apart with a [`key::KeyExtractor`]: the
//! peer's address by default (IPv6 per /64, IPv4-mapped as IPv4), `X-Forwarded-For`
//! behind trusted proxies, or the authenticated user.
//!
//! Every answer is a short `text/plain` reason; see [`response`] for how the layers stay
//! generic over the inner body. Each layer works alone, in any hyper or axum app; the
//! server inserts a [`PeerAddr`] into each request so that the rate limiter (and
//! authenticators) know the client.
//!
//! # Example: the whole stack, in the order of the request path
//!
//! ```
//! use estuary_middleware::auth::{AuthLayer, BasicUsers};
//! use estuary_middleware::conn_limit::ConnectionLimitLayer;
//! use estuary_middleware::health::HealthLayer;
//! use estuary_middleware::origin::OriginLayer;
//! use estuary_middleware::rate_limit::RateLimitLayer;
//! use estuary_middleware::session_limits::SessionLimitsLayer;
//! use estuary_middleware::{Identity, PeerAddr};
//! use bytes::Bytes;
//! use headers::{Authorization, HeaderMapExt};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use std::convert::Infallible;
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let stack = ServiceBuilder::new()
//!     .layer(HealthLayer::new("/health"))
//!     .layer(OriginLayer::new(["https://app.example.com"]).expect("valid origins"))
//!     .layer(RateLimitLayer::per_second(NonZeroU32::new(20).unwrap()))
//!     .layer(ConnectionLimitLayer::new(10_000))
//!     .layer(AuthLayer::new(BasicUsers::new("estuary").with_user("alice", "wonderland")))
//!     .layer(SessionLimitsLayer::new().with_idle_timeout(Duration::from_secs(120)));
//! // The WebSocket upgrade goes here; this stand-in greets the authenticated user.
//! let service = stack.service(service_fn(|request: Request<()>| async move {
//!     let user = request.extensions().get::<Identity>().unwrap().user_id().to_owned();
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(user))))
//! }));
//!
//! let mut request = Request::get("/ws").body(()).unwrap();
//! request.headers_mut().typed_insert(Authorization::basic("alice", "wonderland"));
//! request.extensions_mut().insert(PeerAddr("192.0.2.1:50000".parse().unwrap()));
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```

#![warn(missing_docs, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod conn_limit;
pub mod extensions;
pub mod health;
pub mod key;
pub mod origin;
#[cfg(feature = "axum")]
pub mod peer_addr;
pub mod rate_limit;
pub mod response;
pub mod session_limits;

#[cfg(test)]
mod test_util;

pub use extensions::{ConnectionPermit, Identity, MessageRate, PeerAddr, SessionLimits};
pub use response::ResponseBody;
