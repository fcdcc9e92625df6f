use std::fmt;

use super::Codec;
use crate::protocol::{close_code, MAX_CLOSE_REASON};

/// What was wrong with a message that [`Codec::decode`] could not read.
///
/// `Display` says it for a person: the codec, the path to the field when there is one,
/// and serde's account (`json: rooms[2]: invalid type: integer `3`, expected a string at
/// line 1 column 14`). It quotes the client's own input at most, so it may go back to the
/// client as it is.
///
/// ```
/// use estuary::{close_code, Codec, DecodeErrorKind, Message};
///
/// let error = Codec::Json.decode::<u32>(&Message::binary(vec![1, 2])).unwrap_err();
/// assert_eq!(error.kind(), DecodeErrorKind::WrongKind);
/// assert_eq!(error.close_code(), close_code::UNSUPPORTED);
/// assert_eq!(error.to_string(), "json: expected a text message, got a binary one");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    codec: Codec,
    kind: DecodeErrorKind,
    path: Option<String>,
    detail: String,
}

/// The kinds of [`DecodeError`].
///
/// ```
/// use estuary::{Codec, DecodeErrorKind, Message};
///
/// let kind = |text: &'static str| Codec::Json.decode::<Vec<u32>>(&Message::text(text)).unwrap_err().kind();
/// assert_eq!(kind("[1, 2"), DecodeErrorKind::Truncated);
/// assert_eq!(kind("[1, two]"), DecodeErrorKind::Syntax);
/// assert_eq!(kind(r#"[1, "2"]"#), DecodeErrorKind::Data);
/// assert_eq!(kind("[1] [2]"), DecodeErrorKind::TrailingBytes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// A binary message for a codec of text messages (JSON), or text for one of binary
    /// messages (MessagePack): most often a client speaking another codec than the one
    /// it negotiated.
    WrongKind,
    /// The message ends inside a value.
    Truncated,
    /// The bytes are not the codec's format at all.
    Syntax,
    /// Well-formed, but not the shape of the type: a missing field, a wrong type, an
    /// unknown variant, a number out of range.
    Data,
    /// A whole value, then more bytes.
    TrailingBytes,
}

impl DecodeError {
    pub(super) fn new(codec: Codec, kind: DecodeErrorKind, detail: impl Into<String>) -> Self {
        Self {
            codec,
            kind,
            path: None,
            detail: detail.into(),
        }
    }

    /// Where in the value it went wrong: serde's path (`rooms[2].name`), when it is not
    /// the value itself.
    pub(super) fn at(mut self, path: &serde_path_to_error::Path) -> Self {
        let path = path.to_string();
        if path != "." {
            self.path = Some(path);
        }
        self
    }

    pub(super) fn wrong_kind(codec: Codec, message: &crate::Message) -> Self {
        let (expected, got) = match message {
            crate::Message::Text(_) => ("binary", "text"),
            crate::Message::Binary(_) => ("text", "binary"),
        };
        let detail = format!("expected a {expected} message, got a {got} one");
        Self::new(codec, DecodeErrorKind::WrongKind, detail)
    }

    /// The codec that could not read the message.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// What kind of wrong it was.
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The path to the field that was wrong (`rooms[2].name`), if not the whole value.
    ///
    /// ```
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Say { text: String }
    ///
    /// let msg = estuary::Message::text(r#"{"text":false}"#);
    /// let error = estuary::Codec::Json.decode::<Say>(&msg).unwrap_err();
    /// assert_eq!(error.path(), Some("text"));
    /// ```
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The close code for closing over this error: 1003 (unsupported data) for a message
    /// of the wrong kind, 1007 (invalid payload data) for the rest.
    ///
    /// ```
    /// use estuary::{close_code, Codec, Message};
    ///
    /// let error = Codec::Json.decode::<u8>(&Message::text("300")).unwrap_err();
    /// assert_eq!(error.close_code(), close_code::INVALID);
    /// ```
    pub fn close_code(&self) -> u16 {
        match self.kind {
            DecodeErrorKind::WrongKind => close_code::UNSUPPORTED,
            _ => close_code::INVALID,
        }
    }

    /// The error as a close reason: its text, cut at a character boundary to fit a close
    /// frame (123 bytes).
    ///
    /// ```
    /// let msg = estuary::Message::text(format!("[{}", "1,".repeat(200)));
    /// let error = estuary::Codec::Json.decode::<Vec<u8>>(&msg).unwrap_err();
    /// assert!(error.close_reason().len() <= estuary::MAX_CLOSE_REASON);
    /// ```
    pub fn close_reason(&self) -> String {
        let mut reason = self.to_string();
        if reason.len() > MAX_CLOSE_REASON {
            let mut end = MAX_CLOSE_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        reason
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {path}: {}", self.codec, self.detail),
            None => write!(f, "{}: {}", self.codec, self.detail),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why [`Codec::encode`] could not write a value: the format cannot hold it (a map with
/// non-string keys in JSON) or its `Serialize` impl failed.
///
/// ```
/// use std::collections::BTreeMap;
///
/// let map = BTreeMap::from([((1, 2), "a tuple key")]);
/// let error = estuary::Codec::Json.encode(&map).unwrap_err();
/// assert_eq!(error.to_string(), "json: cannot encode the value: key must be a string");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    codec: Codec,
    detail: String,
}

impl EncodeError {
    pub(crate) fn new(codec: Codec, error: impl fmt::Display) -> Self {
        Self {
            codec,
            detail: error.to_string(),
        }
    }

    /// The codec that could not encode the value.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: cannot encode the value: {}",
            self.codec, self.detail
        )
    }
}

impl std::error::Error for EncodeError {}
