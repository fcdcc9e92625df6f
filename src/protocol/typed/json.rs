//! The JSON codec: serde_json, in text messages.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::{Codec, DecodeError, DecodeErrorKind};
use crate::protocol::Message;

pub(super) fn decode<T: DeserializeOwned>(message: &Message) -> Result<T, DecodeError> {
    let Message::Text(text) = message else {
        return Err(DecodeError::wrong_kind(Codec::Json, message));
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| error(e.inner()).at(e.path()))?;
    deserializer.end().map_err(|e| error(&e))?;
    Ok(value)
}

fn error(error: &serde_json::Error) -> DecodeError {
    let kind = match error.classify() {
        Category::Eof => DecodeErrorKind::Truncated,
        Category::Data => DecodeErrorKind::Data,
        Category::Syntax if error.to_string().starts_with("trailing characters") => {
            DecodeErrorKind::TrailingBytes
        }
        Category::Syntax | Category::Io => DecodeErrorKind::Syntax,
    };
    DecodeError::new(Codec::Json, kind, error.to_string())
}
