//! Attach per-connection limits for the connection engine to enforce.
//!
//! [`SessionLimitsLayer`] never answers a request: it inserts a [`SessionLimits`] into
//! the request extensions, and the WebSocket upgrade hands it to the connection engine,
//! which closes the socket when a limit is hit (1000 idle timeout, 1001 max age, 1008
//! message rate, 1009 message too big) and tells the handler's `on_close` which.
//! Mount different layers on different routes to give them different limits.
//!
//! A max age with jitter closes each socket at an age drawn once when it opens, between
//! `max_age × (1 − jitter)` and `max_age`: sockets opened in the same second are spread
//! over the window instead of all reconnecting at once.
//!
//! [`SessionLimits`]: crate::SessionLimits
//!
//! # Example
//!
//! ```
//! use estuary_middleware::session_limits::SessionLimitsLayer;
//! use estuary_middleware::{MessageRate, SessionLimits};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limits = SessionLimitsLayer::new()
//!     .with_idle_timeout(Duration::from_secs(120))
//!     .with_max_age(Duration::from_secs(3600))
//!     .with_max_age_jitter(0.1)
//!     .with_message_rate(MessageRate::new(100, Duration::from_secs(1)))
//!     .with_max_message_size(1 << 20);
//! let service = ServiceBuilder::new()
//!     .layer(limits)
//!     .service(service_fn(|request: Request<()>| async move {
//!         // The WebSocket upgrade reads them here and hands them to the engine.
//!         let limits = request.extensions().get::<SessionLimits>().copied().unwrap();
//!         assert_eq!(limits.idle_timeout, Some(Duration::from_secs(120)));
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("socket"))))
//!     }));
//!
//! service.oneshot(Request::new(())).await.unwrap();
//! # }
//! ```

mod service;

pub use service::{SessionLimitsLayer, SetSessionLimits};
