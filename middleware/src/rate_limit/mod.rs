//! Limit how fast each client may open connections, with `429 Too Many Requests`.
//!
//! Each client gets a budget of requests (governor's GCRA: a `burst` at once, then
//! `per_second` refills); a request over budget is answered `429` with a `Retry-After`
//! in whole seconds (rounded up, at least 1) and never reaches the rest of the stack.
//! Clients are told apart by the IP address of the TCP peer ([`PeerAddr`], which the
//! server inserts; IPv6 per /64 and IPv4-mapped addresses as IPv4, see [`crate::key`])
//! unless another [`KeyExtractor`] is chosen: [`ForwardedFor`] behind
//! trusted proxies, [`UserId`] after an auth layer, or any [`key_fn`] closure. A request
//! without a key is answered `500`, so a server that forgot `PeerAddr` is noticed.
//!
//! Memory: the limiter remembers one entry per recent client; every 1024 requests it
//! forgets the clients whose budget is full again, so it grows with the clients of the
//! last few seconds, not with every client ever seen.
//!
//! [`PeerAddr`]: crate::PeerAddr
//!
//! # Example
//!
//! ```
//! use estuary_middleware::rate_limit::RateLimitLayer;
//! use estuary_middleware::PeerAddr;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use std::convert::Infallible;
//! use std::num::NonZeroU32;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limit = RateLimitLayer::per_second(NonZeroU32::new(1).unwrap())
//!     .with_burst(NonZeroU32::new(2).unwrap());
//! let service = ServiceBuilder::new()
//!     .layer(limit)
//!     .service(service_fn(|_request: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("websocket"))))
//!     }));
//!
//! let from = |addr: &str| {
//!     let mut request = Request::new(());
//!     // The server does this for every connection it accepts.
//!     request.extensions_mut().insert(PeerAddr(addr.parse().unwrap()));
//!     request
//! };
//! for _ in 0..2 {
//!     let response = service.clone().oneshot(from("192.0.2.1:5000")).await.unwrap();
//!     assert_eq!(response.status(), StatusCode::OK);
//! }
//! let response = service.clone().oneshot(from("192.0.2.1:5001")).await.unwrap();
//! assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(response.headers()["retry-after"], "1");
//!
//! let response = service.oneshot(from("192.0.2.99:5000")).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```

mod service;

pub use crate::key::{key_fn, ForwardedFor, KeyExtractor, KeyFn, PeerIp, UserId};
pub use crate::response::ResponseFuture;
pub use governor::Quota;
pub use service::{RateLimit, RateLimitLayer};
