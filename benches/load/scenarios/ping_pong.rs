//! Ping-pong: round-trip latency with one connection and one message in flight.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use super::{Outcome, REPLY_TIMEOUT};
use crate::client::Connection;
use crate::cpu;
use crate::frames::EncodedFrames;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target, ECHO_PATH};

/// Settings of [`super::Scenario::PingPong`].
#[derive(Debug, Clone)]
pub struct PingPongSettings {
    pub payload_len: usize,
    /// Round trips before the measured ones, in each pass.
    pub warmup_round_trips: usize,
    /// Round trips measured in each pass.
    pub round_trips: usize,
    /// Passes per round, taking turns with the other servers'; the round's value is their
    /// median. A pass lasts a tenth of a second, and on a shared machine one server's
    /// unlucky tenth of a second would otherwise be its whole round.
    pub passes: usize,
}

impl PingPongSettings {
    /// 32-byte messages, 5 passes of 4,000 round trips (`quick`: 2 of 2,500), each after
    /// 500 of warm-up.
    pub fn new(quick: bool) -> Self {
        Self {
            payload_len: 32,
            warmup_round_trips: 500,
            round_trips: if quick { 2_500 } else { 4_000 },
            passes: if quick { 2 } else { 5 },
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            payload_len: 32,
            warmup_round_trips: 50,
            round_trips: 200,
            passes: 1,
        }
    }
}

/// Median round-trip time.
const P50: Metric = Metric {
    key: "ping_pong_p50_us",
    label: "ping-pong p50 µs",
    better: Better::Lower,
    decimals: 1,
    in_table: true,
    reference: ServerKind::Fastwebsockets,
};

/// 99th-percentile round-trip time.
const P99: Metric = Metric {
    key: "ping_pong_p99_us",
    label: "ping-pong p99 µs",
    better: Better::Lower,
    decimals: 1,
    in_table: true,
    reference: ServerKind::Fastwebsockets,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[&P50, &P99];

/// Ping-pong: one connection, one message at a time; the latency of each round trip after
/// a warm-up, as its median and 99th percentile.
pub async fn run(target: &Target, settings: &PingPongSettings) -> anyhow::Result<Outcome> {
    let frame = EncodedFrames::binary(settings.payload_len, 1);
    let mut connection = Connection::open(target.addr, ECHO_PATH)
        .await
        .context("opening the ping-pong connection")?;
    let mut latencies = Vec::with_capacity(settings.round_trips);
    let mut meter = None;
    for round_trip in 0..settings.warmup_round_trips + settings.round_trips {
        if round_trip == settings.warmup_round_trips {
            meter = Some(cpu::CpuMeter::start(target.pid)?);
        }
        let start = Instant::now();
        connection.send(frame.first(1)).await?;
        let mut arrived = 0;
        while arrived == 0 {
            arrived = connection.recv(REPLY_TIMEOUT).await?;
        }
        let latency = start.elapsed();
        ensure!(
            arrived == 1,
            "{arrived} replies arrived with one message in flight"
        );
        if round_trip >= settings.warmup_round_trips {
            latencies.push(latency);
        }
    }
    let warnings = match meter {
        Some(meter) => meter.stop()?.contention().into_iter().collect(),
        None => Vec::new(),
    };
    latencies.sort_unstable();
    let measurements = vec![
        Measurement {
            metric: &P50,
            value: micros(percentile(&latencies, 0.50)),
        },
        Measurement {
            metric: &P99,
            value: micros(percentile(&latencies, 0.99)),
        },
    ];
    Ok(Outcome {
        measurements,
        warnings,
    })
}

/// The `fraction` percentile of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
