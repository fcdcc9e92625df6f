use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::codec::{FrameHeader, OpCode};
use super::deflate::{compress_alone, Setting};
use super::message::Message;

/// A server frame encoded once, to be written as-is to any number of sockets.
///
/// The header is encoded once and kept apart from the payload: every recipient's queue
/// holds the same payload bytes, not a copy, and a large payload goes to each socket from
/// those bytes (a vectored write) instead of being copied behind its header. With
/// permessage-deflate, the payload is compressed once per compression setting, the first
/// time a connection with that setting writes it, and every other such connection sends
/// those compressed bytes.
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
#[derive(Debug, Clone)]
pub struct Prepared {
    message: Message,
    header: FrameHeader,
    /// The compressed payload by setting, shared by every clone.
    compressed: Arc<Mutex<Vec<Compressed>>>,
}

/// The payload compressed with one setting; `None` when that did not make it smaller.
type Compressed = (Setting, Option<Bytes>);

impl PartialEq for Prepared {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Prepared {}

impl Prepared {
    /// Encodes `message` as a single unmasked (server) frame.
    pub fn new(message: impl Into<Message>) -> Self {
        let message = message.into();
        let header = FrameHeader::new(true, false, OpCode::of(&message), message.len(), None);
        Prepared {
            message,
            header,
            compressed: Arc::default(),
        }
    }

    /// The payload compressed with `setting` (no context takeover), compressed by the
    /// first caller and shared by every clone; `None` when compressing does not shrink it.
    pub(crate) fn compressed(&self, setting: Setting) -> Option<Bytes> {
        // Held while compressing: a connection on another thread that needs the same
        // setting waits for this compression rather than doing it again.
        let mut cache = self
            .compressed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, compressed)) = cache.iter().find(|(s, _)| *s == setting) {
            return compressed.clone();
        }
        let compressed = compress_alone(setting, self.payload());
        cache.push((setting, compressed.clone()));
        compressed
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
