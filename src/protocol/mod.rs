//! The WebSocket protocol, free of I/O and of tokio: messages, close codes and their
//! validation, the frame codec for both roles, incremental UTF-8 validation, and frames
//! prepared once for many connections, and typed messages (JSON, MessagePack).
//!
//! Everything else in the crate builds on this module; it imports nothing of the crate.

mod close;
pub(crate) mod codec;
pub(crate) mod deflate;
mod message;
mod prepared;
mod typed;
mod utf8;

use bytes::BytesMut;

pub(crate) use close::validate_outgoing;
pub use close::{close_code, CloseError, CloseReason, ProtocolError, MAX_CLOSE_REASON};
pub use deflate::{DeflateConfig, DeflateMode};
pub use message::{Message, Utf8Bytes};
pub use prepared::Prepared;
pub use typed::{Codec, DecodeError, DecodeErrorKind, EncodeError};

/// Makes room for at least `want` more bytes in `buf`, reusing its allocation when every
/// frame split off it is gone, and growing it to exactly what is needed otherwise.
pub(crate) fn make_room(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() >= want || buf.try_reclaim(want) {
        return;
    }
    let mut grown = BytesMut::with_capacity(buf.len() + want);
    grown.extend_from_slice(buf);
    *buf = grown;
}
