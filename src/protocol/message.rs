use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use super::typed::{Codec, DecodeError, EncodeError};

/// A whole WebSocket message, reassembled from its fragments and validated.
///
/// Payloads are [`Bytes`], so a message can be kept, forwarded or echoed without a copy.
///
/// ```
/// use estuary::Message;
///
/// let msg = Message::text("hello");
/// assert_eq!(msg.as_text(), Some("hello"));
/// assert_eq!(Message::binary(vec![1, 2, 3]).as_bytes(), &[1, 2, 3]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; always valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message::Binary(data.into())
    }

    /// A text message holding `value` as JSON: the JSON codec's short form,
    /// [`Codec::Json.encode(value)`](crate::Codec::encode).
    ///
    /// ```
    /// let msg = estuary::Message::json(&serde_json::json!({"n": 1})).unwrap();
    /// assert_eq!(msg.as_text(), Some(r#"{"n":1}"#));
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, EncodeError> {
        Codec::Json.encode(value)
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The payload as shared bytes: cloning them copies nothing.
    ///
    /// ```
    /// let msg = estuary::Message::binary(vec![1, 2, 3]);
    /// let payload = msg.payload().clone();
    /// assert_eq!(payload.as_ptr(), msg.payload().as_ptr());
    /// ```
    pub fn payload(&self) -> &Bytes {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
        }
    }

    /// The payload bytes, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
        }
    }

    /// Parses a text message as JSON: the JSON codec's short form,
    /// [`Codec::Json.decode(self)`](crate::Codec::decode). A binary message is a
    /// [`DecodeErrorKind::WrongKind`](crate::DecodeErrorKind::WrongKind) error.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Join { channel: String }
    ///
    /// let join: Join = estuary::Message::text(r#"{"channel":"lobby"}"#).parse_json().unwrap();
    /// assert_eq!(join.channel, "lobby");
    /// ```
    pub fn parse_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        Codec::Json.decode(self)
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text.into())
    }
}

impl From<&'static str> for Message {
    fn from(text: &'static str) -> Self {
        Message::Text(text.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message::Binary(data.into())
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Message::Binary(data)
    }
}

/// Bytes that are guaranteed to be UTF-8: the payload of a text message.
///
/// ```
/// use estuary::Utf8Bytes;
///
/// let text = Utf8Bytes::from("héllo");
/// assert_eq!(&*text, "héllo");
/// assert!(Utf8Bytes::try_from(bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes that the caller has validated.
    ///
    /// # Safety
    ///
    /// `bytes` must be valid UTF-8.
    pub(crate) unsafe fn from_bytes_unchecked(bytes: Bytes) -> Self {
        Utf8Bytes(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or requires UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Unwraps the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(s.into())
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}
