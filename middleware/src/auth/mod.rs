//! Authenticate WebSocket handshakes: Basic, Bearer, a query token, or your own check.
//!
//! [`AuthLayer`] asks an [`Authenticate`] implementation who a request is. It sees an
//! [`AuthRequest`]: headers, percent-decoded query parameters, the `Authorization`
//! credentials already parsed (`None` when absent or malformed, never a panic) and the
//! peer address. On success the [`Identity`](crate::Identity) goes into the request
//! extensions, where the WebSocket upgrade takes it into the session; otherwise the
//! [`AuthError`] is the answer: 401 with a `WWW-Authenticate` challenge, 403, or any
//! status with extra headers, always with a short reason as the body.
//!
//! Ready-made: [`BasicUsers`], [`BearerTokens`], [`QueryToken`] (browsers cannot set
//! headers on a WebSocket), [`auth_fn`] for a closure, and [`Authenticate::or`] to accept
//! either of two.
//!
//! # Example
//!
//! ```
//! use estuary_middleware::auth::{AuthLayer, Authenticate, BearerTokens, QueryToken};
//! use estuary_middleware::Identity;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use std::convert::Infallible;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let header = BearerTokens::new("chat").with_token("s3cret", "alice");
//! let query = QueryToken::new("chat").with_token("s3cret", "alice");
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new(header.or(query)))
//!     .service(service_fn(|request: Request<()>| async move {
//!         let identity = request.extensions().get::<Identity>().unwrap();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
//!             "hello {}",
//!             identity.user_id()
//!         )))))
//!     }));
//!
//! let request = Request::get("/ws?access_token=s3cret").body(()).unwrap();
//! let response = service.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let response = service.oneshot(Request::get("/ws").body(()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="chat""#);
//! # }
//! ```

mod authenticate;
mod authenticators;
mod error;
mod request;
mod service;

pub use authenticate::{auth_fn, AuthFn, Authenticate, Or};
pub use authenticators::{BasicUsers, BearerTokens, QueryToken};
pub use error::AuthError;
pub use headers::authorization::{Basic, Bearer};
pub use request::AuthRequest;
pub use service::{Auth, AuthLayer, ResponseFuture};
