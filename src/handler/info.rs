use std::any::Any;
use std::fmt;

/// A server-side event for one connection: it arrives in the handler's `on_info`, not at
/// the client (Riverside's `handle_info`, Antikythera's `handle_server_message`).
///
/// ```
/// use estuary::Info;
///
/// struct Kick { reason: &'static str }
///
/// let info = Info::new(Kick { reason: "spam" });
/// assert!(info.is::<Kick>());
/// let kick: Kick = info.downcast().ok().unwrap();
/// assert_eq!(kick.reason, "spam");
/// ```
pub struct Info(Box<dyn Any + Send>);

impl Info {
    /// Wraps any value as an event.
    pub fn new<T: Any + Send>(value: T) -> Self {
        Info(Box::new(value))
    }

    /// Whether the event holds a `T`.
    pub fn is<T: Any>(&self) -> bool {
        self.0.is::<T>()
    }

    /// A reference to the event, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// Takes the event out, if it is a `T`; otherwise gives it back.
    pub fn downcast<T: Any>(self) -> Result<T, Info> {
        self.0.downcast().map(|b| *b).map_err(Info)
    }
}

impl fmt::Debug for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Info").finish_non_exhaustive()
    }
}
