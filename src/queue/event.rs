use std::any::Any;
use std::fmt;

use bytes::Bytes;

/// A server-side event for one connection: it arrives in the handler's `on_event`, not at
/// the client: a kick, a changed permission, a notice to pass on in the application's own
/// words.
///
/// An event is either a Rust value sent in-process through a `SessionHandle`, or JSON sent
/// through the `Hub` (which can cross nodes).
///
/// ```
/// use estuary::Event;
///
/// struct Kick { reason: &'static str }
///
/// let info = Event::new(Kick { reason: "spam" });
/// assert!(info.is::<Kick>());
/// let kick: Kick = info.downcast().ok().unwrap();
/// assert_eq!(kick.reason, "spam");
///
/// let event = Event::from_json(&serde_json::json!({"type": "kick"})).unwrap();
/// let value: serde_json::Value = event.json().unwrap();
/// assert_eq!(value["type"], "kick");
/// ```
pub struct Event(Inner);

enum Inner {
    Value(Box<dyn Any + Send>),
    Json(Bytes),
}

impl Event {
    /// Wraps any value as an event.
    pub fn new<T: Any + Send>(value: T) -> Self {
        Event(Inner::Value(Box::new(value)))
    }

    /// An event holding `value` serialized as JSON.
    pub fn from_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Event(Inner::Json(serde_json::to_vec(value)?.into())))
    }

    /// An event holding JSON bytes (shared between recipients, not copied).
    pub(crate) fn json_bytes(bytes: Bytes) -> Self {
        Event(Inner::Json(bytes))
    }

    /// What the event counts against its connection's queue bound, in bytes: its JSON, or
    /// the size of the Rust value (not what the value points to), plus a fixed 64 for the
    /// queue's own bookkeeping.
    ///
    /// ```
    /// let event = estuary::Event::from_json(&"hello").unwrap();
    /// assert_eq!(event.cost(), 7 + 64);
    /// assert_eq!(estuary::Event::new(0u64).cost(), 8 + 64);
    /// ```
    pub fn cost(&self) -> usize {
        64 + match &self.0 {
            Inner::Value(value) => std::mem::size_of_val(&**value),
            Inner::Json(bytes) => bytes.len(),
        }
    }

    /// Whether the event holds a `T`.
    pub fn is<T: Any>(&self) -> bool {
        matches!(&self.0, Inner::Value(v) if v.is::<T>())
    }

    /// A reference to the event, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match &self.0 {
            Inner::Value(v) => v.downcast_ref(),
            Inner::Json(_) => None,
        }
    }

    /// Takes the event out, if it is a `T`; otherwise gives it back.
    pub fn downcast<T: Any>(self) -> Result<T, Event> {
        match self.0 {
            Inner::Value(v) => v.downcast().map(|b| *b).map_err(|v| Event(Inner::Value(v))),
            json => Err(Event(json)),
        }
    }

    /// The raw JSON, if this is a JSON event.
    pub fn as_json(&self) -> Option<&[u8]> {
        match &self.0 {
            Inner::Json(bytes) => Some(bytes),
            Inner::Value(_) => None,
        }
    }

    /// Parses a JSON event as `T`.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        match &self.0 {
            Inner::Json(bytes) => serde_json::from_slice(bytes),
            Inner::Value(_) => Err(serde::de::Error::custom(
                "this event is a Rust value, not JSON: use downcast_ref",
            )),
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Json(bytes) => f
                .debug_tuple("Event")
                .field(&String::from_utf8_lossy(bytes))
                .finish(),
            Inner::Value(_) => f.debug_tuple("Event").finish_non_exhaustive(),
        }
    }
}
