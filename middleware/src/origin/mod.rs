//! Reject WebSocket handshakes from web pages on origins you did not allow.
//!
//! Browsers do not apply the same-origin policy to WebSocket handshakes: any page can open
//! a socket to your server, and the browser attaches the user's cookies. The `Origin`
//! header is the only thing that tells which site opened it, so checking it against an
//! allow-list is what stops cross-site WebSocket hijacking. An origin not on the list gets
//! `403 Forbidden` with a reason naming it.
//!
//! Origins match on `scheme://host[:port]`: the scheme and host compare case-insensitively
//! and a default port (`:80` for http/ws, `:443` for https/wss) is the same as none. A
//! request without an `Origin` header is not from a browser page and passes, unless the
//! layer is [`strict`](OriginLayer::strict). A server that serves its own pages and has
//! no list can allow just those: [`OriginLayer::same_origin`] lets in an `Origin` whose
//! host and port are the request's `Host`.
//!
//! # Example
//!
//! ```
//! use estuary_middleware::origin::OriginLayer;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use std::convert::Infallible;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let origins = OriginLayer::new(["https://app.example.com"]).expect("valid origins");
//! let service = ServiceBuilder::new()
//!     .layer(origins)
//!     .service(service_fn(|_request: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("websocket"))))
//!     }));
//!
//! let from = |origin| Request::get("/ws").header("origin", origin).body(()).unwrap();
//! let response = service.clone().oneshot(from("https://app.example.com")).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let response = service.oneshot(from("https://evil.example")).await.unwrap();
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//! # }
//! ```

mod service;

pub use crate::response::ResponseFuture;
pub use service::{CheckOrigin, InvalidOrigin, OriginLayer};
