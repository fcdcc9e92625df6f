//! Typed values that layers put into `http::Extensions` for the connection to read.
//!
//! The WebSocket upgrade moves the request's extensions into the session, so an
//! [`Identity`] or a [`ConnectionPermit`] inserted by a layer lives exactly as long as the
//! socket, and [`SessionLimits`] configure the connection engine. [`PeerAddr`] goes the
//! other way: the server inserts it so that layers know who is calling.

mod identity;
mod limits;
mod peer;
mod permit;

pub use identity::Identity;
pub use limits::{MessageRate, SessionLimits};
pub use peer::PeerAddr;
pub use permit::ConnectionPermit;
