use std::time::Duration;

use super::error::ConnectError;
use crate::protocol::DeflateConfig;

/// How a [`Client`](super::Client) connects, keeps its connection alive and reconnects. A
/// plain struct with documented defaults.
///
/// ```
/// use estuary::client::{Backoff, ClientConfig, WhileReconnecting};
/// use std::time::Duration;
///
/// let config = ClientConfig::default()
///     .with_connect_timeout(Duration::from_secs(5))
///     .with_max_message_size(1 << 20)
///     .with_keepalive(Some(Duration::from_secs(15)), Duration::from_secs(5))
///     .with_backoff(Backoff::default().with_max(Duration::from_secs(10)))
///     .with_while_reconnecting(WhileReconnecting::Fail);
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long the TCP connect, the TLS handshake and the HTTP upgrade may take
    /// together. Default 10 s.
    pub connect_timeout: Duration,
    /// The largest message (all fragments) the server may send; over it, close 1009.
    /// Default 64 MiB.
    pub max_message_size: usize,
    /// Send a keep-alive ping this long after the connection opened or the last pong
    /// arrived. Default 30 s; `None` turns keep-alive off.
    pub keepalive_interval: Option<Duration>,
    /// How long a keep-alive ping may go unanswered before the connection counts as dead
    /// and is dropped (reason `Idle`). Default 20 s.
    pub keepalive_timeout: Duration,
    /// How long the close handshake may take: from our close frame (or our answer to the
    /// server's) until the server closes the TCP connection. Default 5 s.
    pub close_timeout: Duration,
    /// The most message bytes that may wait to be written. Default 8 MiB.
    pub max_queued_bytes: usize,
    /// What sends do while the client is not connected. Default
    /// [`WhileReconnecting::Queue`].
    pub while_reconnecting: WhileReconnecting,
    /// The delays between reconnect attempts. Default [`Backoff::default`].
    pub backoff: Backoff,
    /// permessage-deflate (RFC 7692), offered to the server; `None` offers nothing.
    /// Default off.
    pub compression: Option<DeflateConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            max_queued_bytes: 8 << 20,
            while_reconnecting: WhileReconnecting::Queue,
            backoff: Backoff::default(),
            compression: None,
        }
    }
}

impl ClientConfig {
    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the max message size in bytes.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the keep-alive ping interval (`None`: off) and the pong deadline.
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Sets the close handshake timeout.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets the bound on queued message bytes.
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets what sends do while the client is not connected.
    pub fn with_while_reconnecting(mut self, policy: WhileReconnecting) -> Self {
        self.while_reconnecting = policy;
        self
    }

    /// Offers permessage-deflate with these settings.
    ///
    /// ```
    /// use estuary::client::ClientConfig;
    /// use estuary::DeflateConfig;
    ///
    /// let config = ClientConfig::default().with_compression(DeflateConfig::default());
    /// assert!(config.compression.is_some());
    /// ```
    pub fn with_compression(mut self, deflate: DeflateConfig) -> Self {
        self.compression = Some(deflate);
        self
    }

    /// Sets the reconnect backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks the values that have a range, naming the field in the error.
    pub(crate) fn validate(&self) -> Result<(), ConnectError> {
        let invalid = |what: String| Err(ConnectError::Config(what));
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must be above zero".into());
        }
        if self.max_message_size == 0 {
            return invalid("max_message_size must be above zero".into());
        }
        if self.keepalive_interval.is_some_and(|i| i.is_zero()) {
            return invalid("keepalive_interval must be above zero (None turns it off)".into());
        }
        if self.keepalive_interval.is_some() && self.keepalive_timeout.is_zero() {
            return invalid("keepalive_timeout must be above zero".into());
        }
        if let Some(Err(why)) = self.compression.as_ref().map(DeflateConfig::validate) {
            return invalid(format!("compression: {why}"));
        }
        self.backoff.validate()
    }
}

/// What [`Client::send`](super::Client::send) does while the client is not connected
/// (connecting again, or closing a connection it will replace).
///
/// ```
/// use estuary::client::{ClientConfig, WhileReconnecting};
///
/// let config = ClientConfig::default().with_while_reconnecting(WhileReconnecting::Fail);
/// assert_eq!(config.while_reconnecting, WhileReconnecting::Fail);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhileReconnecting {
    /// Keep sends in the queue, up to [`ClientConfig::max_queued_bytes`], and write them
    /// once connected again (the default). Over the bound a send fails with
    /// [`SendError::QueueFull`](super::SendError::QueueFull).
    #[default]
    Queue,
    /// Fail sends at once with [`SendError::NotConnected`](super::SendError::NotConnected),
    /// and drop what was still queued when the connection went down.
    Fail,
}

/// Exponential backoff with jitter, capped: the delay before reconnect attempt `n`
/// (counting from 0) is `initial * multiplier^n`, at most `max`, less a random fraction of
/// up to `jitter` of it, so that many clients cut off at once do not return at once.
///
/// ```
/// use estuary::client::Backoff;
/// use std::time::Duration;
///
/// let backoff = Backoff::default()
///     .with_initial(Duration::from_millis(100))
///     .with_max(Duration::from_secs(1))
///     .with_multiplier(2.0)
///     .with_jitter(0.0);
/// assert_eq!(backoff.delay(0), Duration::from_millis(100));
/// assert_eq!(backoff.delay(2), Duration::from_millis(400));
/// assert_eq!(backoff.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The delay before the first reconnect attempt. Default 500 ms.
    pub initial: Duration,
    /// The longest delay. Default 30 s.
    pub max: Duration,
    /// What each failed attempt multiplies the delay by; at least 1. Default 2.
    pub multiplier: f64,
    /// The largest fraction (0 to 1) taken off each delay at random. Default 0.2.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Sets the first delay.
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the longest delay.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the factor between one delay and the next.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the random fraction taken off each delay.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before reconnect attempt `attempt` (0 is the first), with fresh jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let spread = if self.jitter > 0.0 {
            rand::random::<f64>()
        } else {
            0.0
        };
        self.delay_with(attempt, spread)
    }

    /// The delay for `attempt` with the jitter's random draw fixed at `spread` (0 to 1).
    fn delay_with(&self, attempt: u32, spread: f64) -> Duration {
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        // Infinity and NaN cannot come out of validated values, but `min` keeps the cap
        // either way.
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * (1.0 - self.jitter * spread))
    }

    fn validate(&self) -> Result<(), ConnectError> {
        let problem = if self.initial.is_zero() {
            "backoff.initial must be above zero".to_string()
        } else if self.max < self.initial {
            format!(
                "backoff.max ({:?}) must be at least backoff.initial ({:?})",
                self.max, self.initial
            )
        } else if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            format!(
                "backoff.multiplier must be a number of at least 1, got {}",
                self.multiplier
            )
        } else if !(0.0..=1.0).contains(&self.jitter) {
            format!(
                "backoff.jitter must be between 0 and 1, got {}",
                self.jitter
            )
        } else {
            return Ok(());
        };
        Err(ConnectError::Config(problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::default()
            .with_initial(Duration::from_millis(100))
            .with_max(Duration::from_secs(2))
            .with_multiplier(2.0)
            .with_jitter(0.2)
    }

    #[test]
    fn delays_grow_by_the_multiplier_until_the_cap() {
        let b = backoff();
        let delays: Vec<_> = (0..7).map(|n| b.delay_with(n, 0.0)).collect();
        let ms = |d: &Duration| d.as_millis();
        assert_eq!(
            delays.iter().map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1600, 2000, 2000]
        );
        assert_eq!(b.delay_with(u32::MAX, 0.0), Duration::from_secs(2));
    }

    #[test]
    fn jitter_only_shortens_and_keeps_delays_growing() {
        let b = backoff();
        // Below the cap, the next delay's shortest draw beats this one's longest.
        for attempt in 0..4 {
            let longest = b.delay_with(attempt, 0.0);
            let shortest = b.delay_with(attempt, 1.0);
            assert_eq!(shortest, longest.mul_f64(0.8));
            assert!(b.delay_with(attempt + 1, 1.0) > longest);
            let drawn = b.delay(attempt);
            assert!(shortest <= drawn && drawn <= longest, "{drawn:?}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let cases = [
            (backoff().with_multiplier(0.5), "backoff.multiplier"),
            (backoff().with_multiplier(f64::NAN), "backoff.multiplier"),
            (backoff().with_jitter(1.5), "backoff.jitter"),
            (backoff().with_initial(Duration::ZERO), "backoff.initial"),
            (backoff().with_max(Duration::from_millis(10)), "backoff.max"),
        ];
        for (b, field) in cases {
            let error = b.validate().unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        }
        let config = ClientConfig::default().with_keepalive(Some(Duration::ZERO), Duration::ZERO);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("keepalive_interval"), "{error}");
    }
}
