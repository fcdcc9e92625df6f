use bytes::{Bytes, BytesMut};

use super::codec::{encode_frame, OpCode};
use super::message::Message;

/// A server frame encoded once, to be written as-is to any number of sockets.
///
/// Fan-out encodes the header and payload into one shared [`Bytes`]; every recipient's
/// queue holds a reference to the same bytes, not a copy.
///
/// ```
/// use estuary::{Message, Prepared};
///
/// let frame = Prepared::new(&Message::text("hi"));
/// assert_eq!(frame.as_bytes().as_ref(), &[0x81, 0x02, b'h', b'i']);
/// let same = frame.clone(); // no copy of the payload
/// assert_eq!(same.as_bytes().as_ptr(), frame.as_bytes().as_ptr());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared(Bytes);

impl Prepared {
    /// Encodes `message` as a single unmasked (server) frame.
    pub fn new(message: &Message) -> Self {
        let opcode = match message {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        };
        let payload = message.as_bytes();
        let mut out = BytesMut::with_capacity(payload.len() + 10);
        encode_frame(&mut out, opcode, payload, None);
        Prepared(out.freeze())
    }

    /// The encoded frame, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Whether the frame is text, and its payload (after the header).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn message_payload(&self) -> (bool, &[u8]) {
        let bytes = &self.0;
        let header = match bytes[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        (bytes[0] & 0x0F == OpCode::Text as u8, &bytes[header..])
    }

    /// The size of the encoded frame in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a frame has at least a two-byte header.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Message> for Prepared {
    fn from(message: Message) -> Self {
        Prepared::new(&message)
    }
}
