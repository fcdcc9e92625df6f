//! What the library counts, through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty and compiles away.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `estuary_connections` | gauge | |
//! | `estuary_handshakes_total` | counter | `outcome`: accepted (101, or 200 over HTTP/2), 400, 401, 403, 426, 429, 501, 503, ... |
//! | `estuary_messages_received_total`, `estuary_messages_sent_total` | counter | |
//! | `estuary_bytes_received_total`, `estuary_bytes_sent_total` | counter | |
//! | `estuary_deflate_plain_bytes_total`, `estuary_deflate_compressed_bytes_total` | counter | `direction`: sent, received |
//! | `estuary_closes_total` | counter | `code`, `reason` (normal, remote, idle, age, rate, too_big, slow_consumer, protocol, shutdown, panic, lost) |
//! | `estuary_hub_deliveries_total` | counter | |
//! | `estuary_backplane_published_total`, `estuary_backplane_received_total` | counter | |
//! | `estuary_backplane_delivered_total`, `estuary_backplane_unneeded_total` | counter | |
//! | `estuary_backplane_echoes_total`, `estuary_backplane_malformed_total` | counter | |
//! | `estuary_backplane_dropped_total` | counter | `reason`: deadline, outbox_full, failed, late |
//! | `estuary_backplane_presence_resyncs_total`, `estuary_backplane_refilled_total` | counter | |
//! | `estuary_backplane_subscriptions` | gauge | |
//! | `estuary_history_stored_total` | counter | |
//! | `estuary_history_recoveries_total` | counter | `outcome`: complete, incomplete |
//! | `estuary_handler_panics_total` | counter | |
//!
//! The backplane's (feature `redis`, one set per node) count deliveries this node
//! published, received from Redis (its own echoes included), delivered to a local session,
//! received with no local recipient (routing waste: zero with interest routing), got back
//! as its own echo, dropped (past the deadline in the outbox, outbox full, failed in Redis,
//! or arrived late), publications of channels with history it missed live and read from
//! their streams instead (refilled), and full presence rewrites; they are added once a second, as
//! `Hub::backplane_stats` has them.
//!
//! Channel history's count publications stored in a channel's stream (on Redis, by the
//! node that published them, once Redis took them), and joins with a position by whether
//! they got everything the client missed (`Hub::history_stats` has the same).
//!
//! Message and byte counts are kept per connection and added to these counters at most
//! every second while it is busy (at once after a quiet spell, and when it closes), so a
//! scrape lags a busy connection by at most that much. The deflate counters cover
//! compressed messages only (permessage-deflate): their size as messages and on the
//! wire, so that their ratio is the compression ratio, per direction.

use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::CloseReason;

/// How stale the traffic counters may get while a connection is busy: it adds its counts
/// at most this often, rather than after every read (with the Prometheus recorder, four
/// counter lookups per read were 7% of the server's CPU in ping-pong).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Wire traffic a connection saw since it last reported.
#[derive(Debug)]
pub(crate) struct Traffic {
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Compressed messages sent: their bytes as messages, and compressed.
    pub(crate) deflated: (u64, u64),
    /// Compressed messages received: their bytes compressed, and inflated.
    pub(crate) inflated: (u64, u64),
    reported: Instant,
}

impl Traffic {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            deflated: (0, 0),
            inflated: (0, 0),
            reported: now,
        }
    }

    /// When the counts waiting are due to be reported; `None` when none wait (or the
    /// `metrics` feature is off).
    pub(crate) fn due(&self) -> Option<Instant> {
        let waiting = self.messages_in | self.messages_out | self.bytes_in | self.bytes_out != 0
            || self.deflated.0 | self.inflated.0 != 0;
        (cfg!(feature = "metrics") && waiting).then(|| self.reported + REPORT_EVERY)
    }

    /// Reports the counts if they are due; true if it did. The first traffic after a
    /// quiet spell is due at once, so only busy connections wait.
    pub(crate) fn report_if_due(&mut self, now: Instant) -> bool {
        let due = self.due().is_some_and(|due| now >= due);
        if due {
            self.flush(now);
        }
        due
    }

    /// Adds the counts to the global counters and resets them.
    pub(crate) fn flush(&mut self, now: Instant) {
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
            let deflate = |name: &'static str, direction: &'static str, n: u64| {
                if n > 0 {
                    metrics::counter!(name, "direction" => direction).increment(n);
                }
            };
            deflate("estuary_deflate_plain_bytes_total", "sent", self.deflated.0);
            deflate(
                "estuary_deflate_compressed_bytes_total",
                "sent",
                self.deflated.1,
            );
            deflate(
                "estuary_deflate_compressed_bytes_total",
                "received",
                self.inflated.0,
            );
            deflate(
                "estuary_deflate_plain_bytes_total",
                "received",
                self.inflated.1,
            );
        }
        *self = Traffic::new(now);
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
        let code = number_label(reason.code());
        metrics::counter!("estuary_closes_total", "code" => code, "reason" => reason_label(reason))
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// A handshake's outcome: "accepted" (101, or 200 to an HTTP/2 extended CONNECT) or the
/// status code it was refused with.
pub(crate) fn handshake(accepted: bool, status: http::StatusCode) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if accepted {
            metrics::SharedString::const_str("accepted")
        } else {
            number_label(status.as_u16())
        };
        metrics::counter!("estuary_handshakes_total", "outcome" => outcome).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (accepted, status);
}

pub(crate) fn hub_delivered(count: usize) {
    #[cfg(feature = "metrics")]
    if count > 0 {
        metrics::counter!("estuary_hub_deliveries_total").increment(count as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// Publications stored in a channel's history.
pub(crate) fn history_stored(count: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!("estuary_history_stored_total").increment(count);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// A join with a position, and whether it got everything it missed.
pub(crate) fn history_recovery(complete: bool) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if complete { "complete" } else { "incomplete" };
        metrics::counter!("estuary_history_recoveries_total", "outcome" => outcome).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = complete;
}

/// Adds `by` to the counter `name`, with one label when given: for the parts above this
/// module (the backplane) that keep their own counts and hand over what was added.
#[cfg(feature = "redis")]
pub(crate) fn count(name: &'static str, label: Option<(&'static str, &'static str)>, by: u64) {
    #[cfg(feature = "metrics")]
    match label {
        Some((key, value)) => metrics::counter!(name, key => value).increment(by),
        None => metrics::counter!(name).increment(by),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (name, label, by);
}

/// Sets the gauge `name`.
#[cfg(feature = "redis")]
pub(crate) fn gauge(name: &'static str, value: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(name).set(value);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, value);
}

pub(crate) fn handler_panicked() {
    #[cfg(feature = "metrics")]
    metrics::counter!("estuary_handler_panics_total").increment(1);
}

/// A status or close code as a label value: the common ones without an allocation,
/// since a label is built for every handshake and every close.
#[cfg(feature = "metrics")]
fn number_label(code: u16) -> metrics::SharedString {
    let known = match code {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        426 => "426",
        429 => "429",
        503 => "503",
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        _ => return metrics::SharedString::from_owned(code.to_string()),
    };
    metrics::SharedString::const_str(known)
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

#[cfg(all(test, feature = "metrics"))]
mod tests {
    #[test]
    fn every_code_is_labelled_with_its_decimal_form() {
        for code in 0..=u16::MAX {
            assert_eq!(&*super::number_label(code), code.to_string(), "code {code}");
        }
    }
}
