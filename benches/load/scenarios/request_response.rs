//! Request/response: many connections, each with exactly one message in flight, at several
//! message sizes; and the server's peak memory while it does that with 16 KiB messages.
//!
//! This is the shape most traffic has (a client asks, waits for the answer, asks again):
//! nothing to coalesce, so what counts is the cost of one read, one message and one write.
//! The server is a fresh process, and the 16 KiB run goes first, so that its peak RSS
//! (`VmHWM`) is that run's and no earlier scenario's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tokio::task::JoinSet;
use tokio::time::sleep;

use super::{Outcome, REPLY_TIMEOUT};
use crate::client::{Compression, Connection};
use crate::cpu;
use crate::frames::EncodedFrames;
use crate::memory::memory;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target, ECHO_PATH};

/// Settings of [`super::Scenario::RequestResponse`].
#[derive(Debug, Clone)]
pub struct RequestResponseSettings {
    pub connections: usize,
    /// The sizes to run, a subset of [`SIZES`].
    pub sizes: Vec<usize>,
    pub warmup: Duration,
    pub window: Duration,
}

impl RequestResponseSettings {
    /// 500 connections, measured over 3 s per size (1.5 s when `quick`) after 1 s of
    /// warm-up, at each of `sizes`.
    pub fn new(quick: bool, sizes: &[usize]) -> anyhow::Result<Self> {
        for size in sizes {
            ensure!(
                SIZES.iter().any(|known| known.bytes == *size),
                "--rr-sizes: {size} is not one of 512, 16384, 65536"
            );
        }
        Ok(Self {
            connections: 500,
            sizes: sizes.to_vec(),
            warmup: Duration::from_secs(1),
            window: Duration::from_millis(if quick { 1_500 } else { 3_000 }),
        })
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            connections: 8,
            sizes: SIZES.iter().map(|size| size.bytes).collect(),
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(200),
        }
    }
}

/// One message size and its metrics.
struct Size {
    bytes: usize,
    rate: &'static Metric,
    server_cost: &'static Metric,
    client_cpu: &'static Metric,
}

/// The message sizes, in the order they run: 16 KiB first, for its peak RSS.
const SIZES: [Size; 3] = [
    Size {
        bytes: 16 * 1024,
        rate: &RATE_16K,
        server_cost: &COST_16K,
        client_cpu: &CPU_16K,
    },
    Size {
        bytes: 512,
        rate: &RATE_512,
        server_cost: &COST_512,
        client_cpu: &CPU_512,
    },
    Size {
        bytes: 64 * 1024,
        rate: &RATE_64K,
        server_cost: &COST_64K,
        client_cpu: &CPU_64K,
    },
];

const fn rate(key: &'static str, label: &'static str) -> Metric {
    Metric {
        key,
        label,
        better: Better::Higher,
        decimals: 0,
        in_table: true,
        reference: ServerKind::Fastwebsockets,
    }
}

/// Server CPU time per message: unlike messages per second, it holds still when other
/// work shares the machine.
const fn cost(key: &'static str, label: &'static str) -> Metric {
    Metric {
        key,
        label,
        better: Better::Lower,
        decimals: 1,
        in_table: true,
        reference: ServerKind::Fastwebsockets,
    }
}

const fn client_cpu(key: &'static str, label: &'static str) -> Metric {
    Metric {
        key,
        label,
        better: Better::Neither,
        decimals: 0,
        in_table: false,
        reference: ServerKind::Fastwebsockets,
    }
}

const RATE_512: Metric = rate("rr_512_msgs_per_s", "req/resp 500 × 512 B msgs/s");
const RATE_16K: Metric = rate("rr_16k_msgs_per_s", "req/resp 500 × 16 KiB msgs/s");
const RATE_64K: Metric = rate("rr_64k_msgs_per_s", "req/resp 500 × 64 KiB msgs/s");
const COST_512: Metric = cost(
    "rr_512_server_us_per_msg",
    "req/resp 512 B server CPU µs/msg",
);
const COST_16K: Metric = cost(
    "rr_16k_server_us_per_msg",
    "req/resp 16 KiB server CPU µs/msg",
);
const COST_64K: Metric = cost(
    "rr_64k_server_us_per_msg",
    "req/resp 64 KiB server CPU µs/msg",
);
const CPU_512: Metric = client_cpu("rr_512_client_cpu_percent", "req/resp 512 B client CPU %");
const CPU_16K: Metric = client_cpu("rr_16k_client_cpu_percent", "req/resp 16 KiB client CPU %");
const CPU_64K: Metric = client_cpu("rr_64k_client_cpu_percent", "req/resp 64 KiB client CPU %");

/// The server's peak resident memory over the 16 KiB run.
const PEAK_RSS_16K: Metric = Metric {
    key: "rr_16k_peak_rss_mb",
    label: "req/resp 16 KiB peak server RSS MB",
    better: Better::Lower,
    decimals: 1,
    in_table: true,
    reference: ServerKind::Fastwebsockets,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[
    &RATE_512,
    &RATE_16K,
    &RATE_64K,
    &COST_512,
    &COST_16K,
    &COST_64K,
    &PEAK_RSS_16K,
    &CPU_512,
    &CPU_16K,
    &CPU_64K,
];

/// Request/response at every size in [`SIZES`], on a fresh server.
pub async fn run(target: &Target, settings: &RequestResponseSettings) -> anyhow::Result<Outcome> {
    let mut measurements = Vec::new();
    let mut warnings = Vec::new();
    for size in SIZES
        .iter()
        .filter(|size| settings.sizes.contains(&size.bytes))
    {
        let frame = EncodedFrames::binary(size.bytes, 1);
        let (rate, cpu_use) =
            in_flight(target, settings, frame, size.bytes, Compression::Off).await?;
        if size.rate.key == RATE_16K.key {
            let peak = memory(target.pid)?.peak;
            measurements.push(Measurement {
                metric: &PEAK_RSS_16K,
                value: peak as f64 / 1e6,
            });
        }
        measurements.push(Measurement {
            metric: size.rate,
            value: rate,
        });
        measurements.push(Measurement {
            metric: size.server_cost,
            value: cpu_use.server / 100.0 / rate * 1e6,
        });
        measurements.push(Measurement {
            metric: size.client_cpu,
            value: cpu_use.client,
        });
        warnings.extend(cpu_use.contention());
        // The connections of this size are closing on the server; let them finish before
        // the next size is measured.
        cpu::wait_until_quiet(target.pid, Duration::from_secs(10)).await?;
    }
    Ok(Outcome {
        measurements,
        warnings,
    })
}

/// Runs `settings.connections` connections with one `frame` (a message of `size` bytes)
/// in flight each, offering `compression` or not; replies per second over the window, and
/// the CPU the two sides used meanwhile.
pub async fn in_flight(
    target: &Target,
    settings: &RequestResponseSettings,
    frame: EncodedFrames,
    size: usize,
    compression: Compression,
) -> anyhow::Result<(f64, cpu::CpuUse)> {
    let frame = Arc::new(frame);
    let replies = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + settings.warmup + settings.window + REPLY_TIMEOUT;
    // Room for a whole reply, header included, in one read.
    let buffer = (size + 16).max(16 * 1024);
    let mut connections = Vec::with_capacity(settings.connections);
    for index in 0..settings.connections {
        let connection = Connection::open_with_buffer(target.addr, ECHO_PATH, buffer, compression)
            .await
            .with_context(|| format!("opening request/response connection {index}"))?;
        connections.push(connection);
    }
    let mut tasks = JoinSet::new();
    for connection in connections {
        tasks.spawn(one_in_flight(
            connection,
            Arc::clone(&frame),
            Arc::clone(&replies),
            deadline,
        ));
    }
    sleep(settings.warmup).await;
    fail_if_any_stopped(&mut tasks)?;
    let meter = cpu::CpuMeter::start(target.pid)?;
    let (start_count, start) = (replies.load(Ordering::Relaxed), Instant::now());
    sleep(settings.window).await;
    let (end_count, end) = (replies.load(Ordering::Relaxed), Instant::now());
    let cpu_use = meter.stop()?;
    fail_if_any_stopped(&mut tasks)?;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let messages = end_count - start_count;
    ensure!(
        messages > 0,
        "no reply arrived during the {size}-byte measurement window"
    );
    Ok((messages as f64 / (end - start).as_secs_f64(), cpu_use))
}

/// One connection: sends a message, waits for its whole reply, sends the next, until
/// aborted or `deadline`.
async fn one_in_flight(
    mut connection: Connection,
    frame: Arc<EncodedFrames>,
    replies: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<()> {
    while Instant::now() < deadline {
        connection.send(frame.first(1)).await?;
        let mut arrived = 0;
        while arrived == 0 {
            arrived = connection.recv(REPLY_TIMEOUT).await?;
        }
        ensure!(
            arrived == 1,
            "{arrived} replies arrived with one message in flight"
        );
        replies.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Fails with the first connection task that has ended: during the measurement every one
/// of them should be running.
fn fail_if_any_stopped(tasks: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    if let Some(ended) = tasks.try_join_next() {
        ended.context("a request/response connection task panicked")??;
        bail!("a request/response connection stopped before the measurement ended");
    }
    Ok(())
}
