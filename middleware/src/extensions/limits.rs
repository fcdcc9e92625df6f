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
/// | `max_age` (less up to `max_age_jitter` of it) | 1001 | "max connection age reached" |
/// | `message_rate` | 1008 | "message rate limit exceeded" |
/// | `max_message_size` | 1009 | "message too big" |
///
/// `None` means "no limit from this layer" (the engine's own configuration applies).
///
/// Sockets opened together (after a deploy, or a network blip that reconnected everyone)
/// would all reach `max_age` together and reconnect together. `max_age_jitter` spreads
/// them: each connection's age limit is drawn once, when it opens, uniformly between
/// `max_age × (1 − jitter)` and `max_age`, so `max_age` stays a true maximum.
///
/// ```
/// use estuary_middleware::{MessageRate, SessionLimits};
/// use std::time::Duration;
///
/// let limits = SessionLimits::default()
///     .with_idle_timeout(Duration::from_secs(120))
///     .with_max_age(Duration::from_secs(3600))
///     .with_max_age_jitter(0.1) // each socket closes between 54 and 60 minutes
///     .with_message_rate(MessageRate::new(100, Duration::from_secs(1)))
///     .with_max_message_size(1 << 20);
/// assert_eq!(limits.message_rate.unwrap().capacity, 100);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionLimits {
    /// Close the socket after this long without a frame from the peer.
    pub idle_timeout: Option<Duration>,
    /// Close the socket this long after it opened, whatever it is doing.
    pub max_age: Option<Duration>,
    /// How much earlier than `max_age` a connection may be closed, as a fraction of it
    /// (0 to 1), drawn once per connection. See [`SessionLimits::connection_max_age`].
    pub max_age_jitter: Option<f64>,
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

    /// Spreads the max connection age over `max_age × (1 − fraction)` to `max_age`, drawn
    /// once per connection, so sockets opened together do not all close (and reconnect)
    /// together.
    ///
    /// # Panics
    ///
    /// If `fraction` is not between 0 and 1.
    ///
    /// ```
    /// use estuary_middleware::SessionLimits;
    /// use std::time::Duration;
    ///
    /// let limits = SessionLimits::default()
    ///     .with_max_age(Duration::from_secs(600))
    ///     .with_max_age_jitter(0.5);
    /// assert_eq!(limits.max_age_jitter, Some(0.5));
    /// ```
    pub fn with_max_age_jitter(mut self, fraction: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&fraction),
            "max age jitter must be a fraction between 0 and 1, got {fraction}"
        );
        self.max_age_jitter = Some(fraction);
        self
    }

    /// The age limit of one connection, for a uniform random `draw` between 0 and 1:
    /// `max_age × (1 − jitter × draw)`. The connection engine calls it once, when the
    /// socket opens.
    ///
    /// A jitter outside 0 to 1 (set on the field directly) is clamped into it.
    ///
    /// ```
    /// use estuary_middleware::SessionLimits;
    /// use std::time::Duration;
    ///
    /// let limits = SessionLimits::default()
    ///     .with_max_age(Duration::from_secs(600))
    ///     .with_max_age_jitter(0.5);
    /// assert_eq!(limits.connection_max_age(0.0), Some(Duration::from_secs(600)));
    /// assert_eq!(limits.connection_max_age(1.0), Some(Duration::from_secs(300)));
    /// assert_eq!(SessionLimits::default().connection_max_age(0.3), None);
    /// ```
    pub fn connection_max_age(&self, draw: f64) -> Option<Duration> {
        let age = self.max_age?;
        let jitter = self.max_age_jitter.unwrap_or(0.0);
        let jitter = unit(jitter);
        let draw = unit(draw);
        Some(age.mul_f64(1.0 - jitter * draw))
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

/// `x` clamped into 0 to 1, with NaN as 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(600);

    #[test]
    fn jitter_spreads_ages_over_the_window_below_max_age() {
        let limits = SessionLimits::default()
            .with_max_age(AGE)
            .with_max_age_jitter(0.25);
        let ages: Vec<Duration> = (0..=100)
            .map(|step| limits.connection_max_age(f64::from(step) / 100.0).unwrap())
            .collect();
        let window_start = AGE.mul_f64(0.75);
        assert!(ages.iter().all(|&age| (window_start..=AGE).contains(&age)));
        assert_eq!(ages.first(), Some(&AGE));
        assert_eq!(ages.last(), Some(&window_start));
        assert!(ages.windows(2).all(|pair| pair[0] >= pair[1]));
    }

    #[test]
    fn no_jitter_is_the_max_age_itself() {
        let limits = SessionLimits::default().with_max_age(AGE);
        assert_eq!(limits.connection_max_age(0.9), Some(AGE));
        let zero = limits.with_max_age_jitter(0.0);
        assert_eq!(zero.connection_max_age(0.9), Some(AGE));
    }

    #[test]
    fn out_of_range_values_on_the_fields_are_clamped() {
        let mut limits = SessionLimits::default().with_max_age(AGE);
        limits.max_age_jitter = Some(7.0);
        assert_eq!(limits.connection_max_age(1.0), Some(Duration::ZERO));
        limits.max_age_jitter = Some(f64::NAN);
        assert_eq!(limits.connection_max_age(1.0), Some(AGE));
        limits.max_age_jitter = Some(0.5);
        assert_eq!(limits.connection_max_age(-3.0), Some(AGE));
        assert_eq!(limits.connection_max_age(f64::NAN), Some(AGE));
    }

    #[test]
    #[should_panic(expected = "max age jitter must be a fraction between 0 and 1, got 1.5")]
    fn a_jitter_over_one_is_refused() {
        let _ = SessionLimits::default().with_max_age_jitter(1.5);
    }
}
