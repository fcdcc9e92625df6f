use bytes::Bytes;

use super::codec::{FrameHeader, OpCode};
use super::message::Message;

/// A server frame encoded once, to be written as-is to any number of sockets.
///
/// The header is encoded once and kept apart from the payload: every recipient's queue
/// holds the same payload bytes, not a copy, and a large payload goes to each socket from
/// those bytes (a vectored write) instead of being copied behind its header.
///
/// ```
/// use estuary::{Message, Prepared};
///
/// let frame = Prepared::new(Message::text("hi"));
/// assert_eq!(frame.header(), &[0x81, 0x02]);
/// assert_eq!(frame.payload().as_ref(), b"hi");
/// assert_eq!(frame.len(), 4);
/// let same = frame.clone(); // no copy of the payload
/// assert_eq!(same.payload().as_ptr(), frame.payload().as_ptr());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    message: Message,
    header: FrameHeader,
}

impl Prepared {
    /// Encodes `message` as a single unmasked (server) frame.
    pub fn new(message: impl Into<Message>) -> Self {
        let message = message.into();
        let header = FrameHeader::new(true, false, OpCode::of(&message), message.len(), None);
        Prepared { message, header }
    }

    /// The encoded frame header.
    pub fn header(&self) -> &[u8] {
        self.header.as_bytes()
    }

    /// The payload, shared by every clone.
    pub fn payload(&self) -> &Bytes {
        self.message.payload()
    }

    /// The message this frame carries.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether the frame is text, and its payload.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn message_payload(&self) -> (bool, &[u8]) {
        (self.message.as_text().is_some(), self.message.as_bytes())
    }

    /// The size of the encoded frame in bytes, header included.
    pub fn len(&self) -> usize {
        self.header().len() + self.message.len()
    }

    /// Never true: a frame has at least a two-byte header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl From<Message> for Prepared {
    fn from(message: Message) -> Self {
        Prepared::new(message)
    }
}
