//! The MessagePack codec: rmp-serde, in binary messages.

use std::io;

use rmp_serde::decode::Error;
use serde::de::DeserializeOwned;

use super::{Codec, DecodeError, DecodeErrorKind};
use crate::protocol::Message;

/// How deeply arrays and maps may nest.
const MAX_DEPTH: usize = 128;

pub(super) fn decode<T: DeserializeOwned>(message: &Message) -> Result<T, DecodeError> {
    let Message::Binary(bytes) = message else {
        return Err(DecodeError::wrong_kind(Codec::MsgPack, message));
    };
    // A reader over the slice, not the borrowing decoder: it tells how much is left, and
    // it reads a string or byte array only as far as the bytes go, whatever length the
    // input claims.
    let mut deserializer = rmp_serde::Deserializer::new(&bytes[..]);
    // rmp-serde's own limit (1024 levels) overflows a 2 MiB task stack in a debug build,
    // which a client could send on purpose; serde_json stops at 128 too.
    deserializer.set_max_depth(MAX_DEPTH);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| error(e.inner()).at(e.path()))?;
    let left = deserializer.get_ref().len();
    if left > 0 {
        let detail = format!("{left} bytes after the value");
        return Err(DecodeError::new(
            Codec::MsgPack,
            DecodeErrorKind::TrailingBytes,
            detail,
        ));
    }
    Ok(value)
}

fn error(error: &Error) -> DecodeError {
    let (kind, detail) = match error {
        Error::InvalidMarkerRead(e) | Error::InvalidDataRead(e)
            if e.kind() == io::ErrorKind::UnexpectedEof =>
        {
            (
                DecodeErrorKind::Truncated,
                "the message ends inside a value".to_owned(),
            )
        }
        Error::InvalidMarkerRead(e) | Error::InvalidDataRead(e) => {
            (DecodeErrorKind::Syntax, e.to_string())
        }
        // What serde could not take at all: the reserved 0xc1, an extension type.
        Error::TypeMismatch(marker) => (
            DecodeErrorKind::Syntax,
            format!("unexpected MessagePack marker {marker:?}"),
        ),
        Error::Utf8Error(e) => (
            DecodeErrorKind::Syntax,
            format!("a string is not UTF-8: {e}"),
        ),
        Error::DepthLimitExceeded => (
            DecodeErrorKind::Syntax,
            format!("the value is nested more than {MAX_DEPTH} deep"),
        ),
        // serde's own account: missing field, invalid type, unknown variant.
        Error::Syntax(detail) | Error::Uncategorized(detail) => {
            (DecodeErrorKind::Data, detail.clone())
        }
        Error::OutOfRange | Error::LengthMismatch(_) => (DecodeErrorKind::Data, error.to_string()),
    };
    DecodeError::new(Codec::MsgPack, kind, detail)
}
