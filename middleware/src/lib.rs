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
//! | [`origin`] | [`OriginLayer`](origin::OriginLayer) | 403 for an origin not on the allow-list |
//! | [`rate_limit`] | [`RateLimitLayer`](rate_limit::RateLimitLayer) | 429 + `Retry-After` |
//! | [`conn_limit`] | [`ConnectionLimitLayer`](conn_limit::ConnectionLimitLayer) | 503 + `Retry-After` when full |
//! | [`auth`] | [`AuthLayer`](auth::AuthLayer) | 401 + `WWW-Authenticate`, or 403 |
//! | [`session_limits`] | [`SessionLimitsLayer`](session_limits::SessionLimitsLayer) | never: it only inserts [`SessionLimits`] |
//!
//! Every answer is a short `text/plain` reason; see [`response`] for how the layers stay
//! generic over the inner body.

#![warn(missing_docs)]

pub mod auth;
pub mod conn_limit;
pub mod extensions;
pub mod health;
pub mod origin;
pub mod rate_limit;
pub mod response;
pub mod session_limits;

#[cfg(test)]
mod test_util;

pub use extensions::{ConnectionPermit, Identity, MessageRate, PeerAddr, SessionLimits};
pub use response::ResponseBody;
