//! Tower layers for WebSocket servers, re-exported by `estuary` as `estuary::middleware`.
//!
//! Every layer here is a plain [`tower_layer::Layer`] over `http::Request<B>` for any body
//! `B`: it knows HTTP, not WebSocket frames. Layers talk to the connection that follows
//! them only through the typed values in [`extensions`], which the WebSocket upgrade moves
//! into the session so that they live exactly as long as the socket.

#![warn(missing_docs)]

pub mod extensions;

pub use extensions::{ConnectionPermit, Identity, MessageRate, SessionLimits};
