//! Cap the number of live sockets, holding each slot for the life of its socket.
//!
//! Each request takes a slot and carries it as a [`ConnectionPermit`] in its extensions.
//! The WebSocket upgrade moves those extensions into the session, so the slot is held
//! until the socket closes, not just for the HTTP handshake. A request that does not
//! become a socket (rejected by a later layer, a bad handshake, a plain HTTP route)
//! drops its extensions with the request and gives the slot back at once. When every
//! slot is taken the layer answers `503 Service Unavailable` with `Retry-After`.
//!
//! [`ConnectionLimitLayer::per_client`] also caps the slots one client may hold (told
//! apart by a [`KeyExtractor`](crate::key::KeyExtractor): the peer's address, a user
//! id...), so that one address cannot take every socket; it remembers a client only while
//! it holds a slot.
//!
//! [`ConnectionLimitLayer::live`] reports how many slots are held, for metrics.
//!
//! [`ConnectionPermit`]: crate::ConnectionPermit
//!
//! # Example
//!
//! ```
//! use estuary_middleware::conn_limit::ConnectionLimitLayer;
//! use estuary_middleware::ConnectionPermit;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limit = ConnectionLimitLayer::new(1);
//! // Stands in for the WebSocket upgrade: it keeps each request's extensions
//! // (and so its permit) for as long as the "socket" lives.
//! let sockets = Arc::new(Mutex::new(Vec::new()));
//! let open = sockets.clone();
//! let service = ServiceBuilder::new()
//!     .layer(limit.clone())
//!     .service(service_fn(move |mut request: Request<()>| {
//!         open.lock().unwrap().push(std::mem::take(request.extensions_mut()));
//!         async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("socket")))) }
//!     }));
//!
//! let response = service.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(limit.live(), 1);
//!
//! let response = service.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//!
//! sockets.lock().unwrap().clear(); // the socket closes
//! assert_eq!(limit.live(), 0);
//! # }
//! ```

mod service;

pub use crate::response::ResponseFuture;
pub use service::{ConnectionLimit, ConnectionLimitLayer};
