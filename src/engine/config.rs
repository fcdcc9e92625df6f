use std::time::Duration;

use estuary_middleware::SessionLimits;

use crate::protocol::DeflateConfig;
use crate::queue::SlowConsumerPolicy;

/// How the connection engine runs a socket. A plain struct with documented defaults.
///
/// Per-connection limits inserted by `SessionLimitsLayer` override [`WebSocketConfig::limits`]
/// field by field.
///
/// ```
/// use estuary::WebSocketConfig;
/// use std::time::Duration;
///
/// let config = WebSocketConfig::default()
///     .with_max_message_size(1 << 20)
///     .with_keepalive(Some(Duration::from_secs(15)), Duration::from_secs(10));
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// The largest message (all fragments) a peer may send; over it, close 1009.
    /// Default 64 MiB.
    pub max_message_size: usize,
    /// Send a ping after this long without hearing from the peer. Default 30 s; `None`
    /// turns keep-alive off.
    pub keepalive_interval: Option<Duration>,
    /// How long a keep-alive ping may go unanswered before the connection is closed as
    /// idle. Default 20 s.
    pub keepalive_timeout: Duration,
    /// How long to wait for the peer's close frame (and for the socket to drain) after
    /// the engine sent its own. Default 5 s.
    pub close_timeout: Duration,
    /// The most bytes that may wait in a connection's outbound queue. Default 8 MiB.
    pub max_queued_bytes: usize,
    /// What happens when the queue is full. Default [`SlowConsumerPolicy::Disconnect`].
    pub slow_consumer: SlowConsumerPolicy,
    /// Idle timeout, max age, message rate and max message size for every connection,
    /// unless a `SessionLimits` extension on the request says otherwise. Default: none.
    pub limits: SessionLimits,
    /// permessage-deflate (RFC 7692), accepted when a client offers it; `None` turns it
    /// off. Default off: compression costs CPU that only some traffic pays back.
    pub compression: Option<DeflateConfig>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_size: 64 << 20,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            max_queued_bytes: 8 << 20,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            limits: SessionLimits::default(),
            compression: None,
        }
    }
}

impl WebSocketConfig {
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

    /// Sets the outbound queue bound in bytes.
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets the slow-consumer policy.
    pub fn with_slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.slow_consumer = policy;
        self
    }

    /// Accepts permessage-deflate with these settings when a client offers it.
    ///
    /// ```
    /// use estuary::{DeflateConfig, WebSocketConfig};
    ///
    /// let config = WebSocketConfig::default().with_compression(DeflateConfig::default());
    /// assert!(config.compression.is_some());
    /// ```
    pub fn with_compression(mut self, deflate: DeflateConfig) -> Self {
        self.compression = Some(deflate);
        self
    }

    /// Sets the default per-connection limits.
    pub fn with_limits(mut self, limits: SessionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits for one connection: the request's `SessionLimits`, falling back to ours,
    /// with the max age's jitter drawn (once, here: the engine sees only the age it
    /// drew).
    pub(crate) fn limits_for(&self, request: Option<&SessionLimits>) -> SessionLimits {
        let ours = self.limits;
        let merged = match request {
            None => ours,
            Some(theirs) => SessionLimits {
                idle_timeout: theirs.idle_timeout.or(ours.idle_timeout),
                max_age: theirs.max_age.or(ours.max_age),
                max_age_jitter: theirs.max_age_jitter.or(ours.max_age_jitter),
                message_rate: theirs.message_rate.or(ours.message_rate),
                max_message_size: theirs.max_message_size.or(ours.max_message_size),
            },
        };
        let draw = match merged.max_age_jitter {
            Some(jitter) if jitter > 0.0 => rand::random::<f64>(),
            _ => 0.0,
        };
        SessionLimits {
            max_age: merged.connection_max_age(draw),
            max_age_jitter: None,
            ..merged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_draws_its_own_age_within_the_window() {
        let age = Duration::from_secs(100);
        let config = WebSocketConfig::default().with_limits(
            SessionLimits::default()
                .with_max_age(age)
                .with_max_age_jitter(0.4),
        );
        let ages: Vec<Duration> = (0..200)
            .map(|_| config.limits_for(None).max_age.unwrap())
            .collect();
        let window_start = Duration::from_secs(60);
        assert!(
            ages.iter().all(|a| (window_start..=age).contains(a)),
            "{ages:?}"
        );
        // 200 uniform draws over 40 s: each 10 s quarter of the window gets some
        // (the chance that one gets none is 4 × 0.75^200, about 1e-25).
        for quarter in 0..4 {
            let from = window_start + Duration::from_secs(10 * quarter);
            let to = from + Duration::from_secs(10);
            assert!(
                ages.iter().any(|a| (from..=to).contains(a)),
                "no age in {from:?}..{to:?}: {ages:?}"
            );
        }
    }

    #[test]
    fn the_request_jitter_applies_to_the_request_age() {
        let config = WebSocketConfig::default()
            .with_limits(SessionLimits::default().with_max_age(Duration::from_secs(5)));
        let theirs = SessionLimits::default()
            .with_max_age(Duration::from_secs(10))
            .with_max_age_jitter(1.0);
        let limits = config.limits_for(Some(&theirs));
        assert!(limits.max_age.unwrap() <= Duration::from_secs(10));
        assert_eq!(limits.max_age_jitter, None, "the engine gets a drawn age");
        let plain = config.limits_for(None);
        assert_eq!(plain.max_age, Some(Duration::from_secs(5)));
    }
}
