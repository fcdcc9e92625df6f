//! Answer the health check path inside the stack, with a drain switch for shutdown.
//!
//! `GET` (or `HEAD`) on the health path answers `200 OK` with the body "OK" without
//! touching the rest of the stack, so a load balancer can probe a server whose sockets
//! are all taken or whose clients must authenticate. Once the server starts shutting down
//! it flips the [`Draining`] handle and the same probe answers `503` "draining", so the
//! balancer stops sending new clients while open sockets finish. Other methods on the
//! health path get `405` with `Allow: GET, HEAD`; every other path goes to the inner
//! service.
//!
//! # Example
//!
//! ```
//! use estuary_middleware::health::{Draining, HealthLayer};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use std::convert::Infallible;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let draining = Draining::new();
//! let service = ServiceBuilder::new()
//!     .layer(HealthLayer::new("/health").with_draining(draining.clone()))
//!     .service(service_fn(|_request: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("websocket"))))
//!     }));
//!
//! let probe = || Request::get("/health").body(()).unwrap();
//! let response = service.clone().oneshot(probe()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! draining.start(); // the server is shutting down
//! let response = service.oneshot(probe()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! # }
//! ```

mod service;

pub use crate::response::ResponseFuture;
pub use service::{Draining, Health, HealthLayer};
