//! Typed messages: a value of the application's own type, in and out of a [`Message`],
//! as JSON or MessagePack, with errors that say what was wrong with the input.

mod error;
mod json;
#[cfg(feature = "msgpack")]
mod msgpack;
#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::{DecodeError, DecodeErrorKind, EncodeError};

use super::Message;

/// How typed values travel in messages: JSON in text messages, or MessagePack in binary
/// ones (feature `msgpack`).
///
/// A client picks one by offering it as a subprotocol (`Sec-WebSocket-Protocol: json` or
/// `msgpack`); the handler accepts it with [`Codec::select`] in
/// [`Handler::select_protocol`](crate::Handler::select_protocol) and finds it again with
/// [`Conn::codec`](crate::Conn::codec). Decoding never panics: bad input is a
/// [`DecodeError`] that says what was wrong, for the application to answer as it likes
/// (a reply, or [`DecodeError::close_code`] and [`DecodeError::close_reason`]).
///
/// ```
/// use estuary::{Codec, Conn, Handler, Message};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Sum { sum: i64 }
///
/// #[derive(Clone)]
/// struct Calculator;
///
/// impl Handler for Calculator {
///     fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
///         Codec::select(offered)
///     }
///
///     async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
///         // Clients that named no codec speak JSON.
///         let codec = conn.codec().unwrap_or(Codec::Json);
///         match codec.decode::<Add>(&msg) {
///             Ok(Add { a, b }) => {
///                 let _ = conn.send_value(codec, &Sum { sum: a + b });
///             }
///             Err(error) => {
///                 let _ = conn.close(error.close_code(), &error.close_reason());
///             }
///         }
///     }
/// }
///
/// let json = Codec::Json.encode(&Sum { sum: 3 }).unwrap();
/// assert_eq!(json.as_text(), Some(r#"{"sum":3}"#));
/// let error = Codec::Json.decode::<Sum>(&Message::text(r#"{"total":3}"#)).unwrap_err();
/// assert_eq!(error.to_string(), "json: missing field `sum` at line 1 column 11");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (serde_json), in text messages; subprotocol `json`.
    Json,
    /// MessagePack (rmp-serde, structs as maps with field names), in binary messages;
    /// subprotocol `msgpack`.
    #[cfg(feature = "msgpack")]
    MsgPack,
}

impl Codec {
    /// Every codec this build has, in order of preference.
    pub const ALL: &'static [Codec] = &[
        Codec::Json,
        #[cfg(feature = "msgpack")]
        Codec::MsgPack,
    ];

    /// The subprotocol a client names to pick this codec: `json` or `msgpack`.
    ///
    /// ```
    /// assert_eq!(estuary::Codec::Json.protocol(), "json");
    /// ```
    pub fn protocol(self) -> &'static str {
        match self {
            Codec::Json => "json",
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => "msgpack",
        }
    }

    /// The codec a subprotocol names, if any (exact, lowercase: subprotocol names are
    /// case-sensitive tokens).
    ///
    /// ```
    /// use estuary::Codec;
    ///
    /// assert_eq!(Codec::from_protocol("json"), Some(Codec::Json));
    /// assert_eq!(Codec::from_protocol("chat.v2"), None);
    /// ```
    pub fn from_protocol(protocol: &str) -> Option<Codec> {
        Codec::ALL
            .iter()
            .copied()
            .find(|codec| codec.protocol() == protocol)
    }

    /// The first subprotocol in the client's offer that names a codec: what
    /// [`Handler::select_protocol`](crate::Handler::select_protocol) returns to negotiate
    /// one.
    ///
    /// ```
    /// use estuary::Codec;
    ///
    /// assert_eq!(Codec::select(&["chat.v2", "json"]), Some("json"));
    /// assert_eq!(Codec::select(&["chat.v2"]), None);
    /// ```
    pub fn select<'a>(offered: &[&'a str]) -> Option<&'a str> {
        offered
            .iter()
            .copied()
            .find(|protocol| Codec::from_protocol(protocol).is_some())
    }

    /// `value` as a message: JSON text, or MessagePack binary.
    ///
    /// Fails only for values the format cannot hold (a map with non-string keys in
    /// JSON, a `Serialize` impl that returns an error).
    ///
    /// ```
    /// let msg = estuary::Codec::Json.encode(&serde_json::json!({"n": 1})).unwrap();
    /// assert_eq!(msg.as_text(), Some(r#"{"n":1}"#));
    /// ```
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Message, EncodeError> {
        match self {
            Codec::Json => serde_json::to_string(value)
                .map(Message::from)
                .map_err(|e| EncodeError::new(self, e)),
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => rmp_serde::to_vec_named(value)
                .map(Message::from)
                .map_err(|e| EncodeError::new(self, e)),
        }
    }

    /// The message as a `T`, or what was wrong with it: a message of the other kind
    /// (binary for JSON, text for MessagePack), a truncated or malformed one, bytes after
    /// the value, or a value of another shape (with the path to the field).
    ///
    /// ```
    /// use estuary::{Codec, DecodeErrorKind, Message};
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Join { channel: String }
    ///
    /// let join: Join = Codec::Json.decode(&Message::text(r#"{"channel":"lobby"}"#)).unwrap();
    /// assert_eq!(join.channel, "lobby");
    ///
    /// let error = Codec::Json.decode::<Join>(&Message::text(r#"{"channel":7}"#)).unwrap_err();
    /// assert_eq!(error.kind(), DecodeErrorKind::Data);
    /// assert_eq!(
    ///     error.to_string(),
    ///     "json: channel: invalid type: integer `7`, expected a string at line 1 column 12"
    /// );
    /// ```
    pub fn decode<T: DeserializeOwned>(self, message: &Message) -> Result<T, DecodeError> {
        match self {
            Codec::Json => json::decode(message),
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => msgpack::decode(message),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.protocol())
    }
}
