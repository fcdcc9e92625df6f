//! The WebSocket protocol, free of I/O and of tokio: messages, close codes and their
//! validation, the frame codec for both roles, incremental UTF-8 validation, and frames
//! prepared once for many connections.
//!
//! Everything else in the crate builds on this module; it imports nothing of the crate.

mod close;
pub(crate) mod codec;
mod message;
mod prepared;
mod utf8;

pub(crate) use close::validate_outgoing;
pub use close::{close_code, CloseError, CloseReason, ProtocolError, MAX_CLOSE_REASON};
pub use message::{Message, Utf8Bytes};
pub use prepared::Prepared;
