//! What the library counts, through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty and compiles away.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `estuary_connections` | gauge | |
//! | `estuary_handshakes_total` | counter | `outcome`: accepted, 400, 401, 403, 426, 429, 503, ... |
//! | `estuary_messages_received_total`, `estuary_messages_sent_total` | counter | |
//! | `estuary_bytes_received_total`, `estuary_bytes_sent_total` | counter | |
//! | `estuary_closes_total` | counter | `code`, `reason` (normal, remote, idle, age, rate, too_big, slow_consumer, protocol, shutdown, panic, lost) |
//! | `estuary_hub_deliveries_total` | counter | |
//! | `estuary_handler_panics_total` | counter | |
//!
//! Counts are added once per read or write batch, not per message, so the hot path does
//! one atomic add per system call at most.

use crate::engine::CloseReason;

/// Wire traffic a connection saw since it last reported.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl Traffic {
    /// Adds the counts to the global counters and resets them.
    pub(crate) fn flush(&mut self) {
        #[cfg(feature = "metrics")]
        {
            let add = |name: &'static str, n: u64| {
                if n > 0 {
                    metrics::counter!(name).increment(n);
                }
            };
            add("estuary_messages_received_total", self.messages_in);
            add("estuary_messages_sent_total", self.messages_out);
            add("estuary_bytes_received_total", self.bytes_in);
            add("estuary_bytes_sent_total", self.bytes_out);
        }
        *self = Traffic::default();
    }
}

pub(crate) fn connection_opened() {
    #[cfg(feature = "metrics")]
    metrics::gauge!("estuary_connections").increment(1.0);
}

pub(crate) fn connection_closed(reason: &CloseReason) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!("estuary_connections").decrement(1.0);
        let code = reason.code().to_string();
        metrics::counter!("estuary_closes_total", "code" => code, "reason" => reason_label(reason))
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// A handshake's outcome: "accepted" or the status code it was refused with.
pub(crate) fn handshake(status: http::StatusCode) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if status == http::StatusCode::SWITCHING_PROTOCOLS {
            "accepted".to_owned()
        } else {
            status.as_u16().to_string()
        };
        metrics::counter!("estuary_handshakes_total", "outcome" => outcome).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = status;
}

pub(crate) fn hub_delivered(count: usize) {
    #[cfg(feature = "metrics")]
    if count > 0 {
        metrics::counter!("estuary_hub_deliveries_total").increment(count as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

pub(crate) fn handler_panicked() {
    #[cfg(feature = "metrics")]
    metrics::counter!("estuary_handler_panics_total").increment(1);
}

#[cfg(feature = "metrics")]
fn reason_label(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::Remote { .. } => "remote",
        CloseReason::Local { .. } => "normal",
        CloseReason::Idle => "idle",
        CloseReason::MaxAge => "age",
        CloseReason::RateLimited => "rate",
        CloseReason::MessageTooBig => "too_big",
        CloseReason::SlowConsumer => "slow_consumer",
        CloseReason::Protocol(_) => "protocol",
        CloseReason::Shutdown => "shutdown",
        CloseReason::HandlerPanic => "panic",
        CloseReason::ConnectionLost => "lost",
    }
}
