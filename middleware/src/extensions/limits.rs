use std::time::Duration;

/// Per-connection limits that the connection engine enforces.
///
/// A session-limits layer inserts this into the request extensions; the engine reads it
/// when the socket opens. Each limit, when hit, closes the socket with a close code and a
/// reason, and the handler's `on_close` learns which one:
///
/// | limit | close code | reason |
/// |---|---|---|
/// | `idle_timeout` | 1000 | "idle timeout" |
/// | `max_age` | 1001 | "max connection age reached" |
/// | `message_rate` | 1008 | "message rate limit exceeded" |
/// | `max_message_size` | 1009 | "message too big" |
///
/// `None` means "no limit from this layer" (the engine's own configuration applies).
///
/// ```
/// use estuary_middleware::{MessageRate, SessionLimits};
/// use std::time::Duration;
///
/// let limits = SessionLimits::default()
///     .with_idle_timeout(Duration::from_secs(120))
///     .with_max_age(Duration::from_secs(3600))
///     .with_message_rate(MessageRate::new(100, Duration::from_secs(1)))
///     .with_max_message_size(1 << 20);
/// assert_eq!(limits.message_rate.unwrap().capacity, 100);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// Close the socket after this long without a frame from the peer.
    pub idle_timeout: Option<Duration>,
    /// Close the socket this long after it opened, whatever it is doing.
    pub max_age: Option<Duration>,
    /// At most `capacity` frames from the peer per `duration`.
    pub message_rate: Option<MessageRate>,
    /// The largest message (all fragments together) the peer may send, in bytes.
    pub max_message_size: Option<usize>,
}

impl SessionLimits {
    /// Sets the idle timeout.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Sets the max connection age.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Sets the message rate.
    pub fn with_message_rate(mut self, rate: MessageRate) -> Self {
        self.message_rate = Some(rate);
        self
    }

    /// Sets the max message size in bytes.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self
    }
}

/// At most `capacity` frames per `duration`.
///
/// ```
/// use estuary_middleware::MessageRate;
/// use std::time::Duration;
///
/// let rate = MessageRate::new(50, Duration::from_secs(2));
/// assert_eq!(rate.capacity, 50);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRate {
    /// How many frames fit in one window.
    pub capacity: u32,
    /// The window length.
    pub duration: Duration,
}

impl MessageRate {
    /// `capacity` frames per `duration`.
    pub fn new(capacity: u32, duration: Duration) -> Self {
        Self { capacity, duration }
    }
}
