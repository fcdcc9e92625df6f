//! Cross-node throughput: a publisher on node A, a member of the channel on node B, and
//! 1 ms added each way between the nodes and Redis (a [`DelayProxy`]); deliveries per
//! second from A to B, against what a publisher manages that waits for each publish's
//! round trip through the same proxy (which is what the backplane did before it
//! pipelined its outbox).
//!
//! The publisher keeps a window of messages in flight (sent, not yet delivered at B), well
//! under what the delivery deadline would drop, and every message must arrive. The
//! scenario starts its own Redis, proxy and two nodes (`estuary-node`, built into this
//! binary with the `redis` feature); it runs in the `estuary-bare` column, the Estuary
//! built into the benchmark.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use super::Outcome;
use crate::backplane::{serial_publishes_per_s, DelayProxy, NodeProcess, RedisProcess};
use crate::client::{Compression, Connection};
use crate::cpu;
use crate::frames::text_frame;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target};

/// Settings of [`super::Scenario::CrossNode`].
#[derive(Debug, Clone)]
pub struct CrossNodeSettings {
    /// Added between the nodes and Redis, each way.
    pub delay: Duration,
    pub warmup_messages: usize,
    pub messages: usize,
    /// Messages sent and not yet delivered, at most.
    pub window: usize,
    pub payload_len: usize,
    /// Publishes of the serial baseline.
    pub serial_publishes: usize,
    /// How long the last message may take to arrive.
    pub delivery_timeout: Duration,
}

impl CrossNodeSettings {
    /// 1 ms each way; 200,000 messages of 64 bytes, 4,096 in flight (`quick`: 50,000).
    pub fn new(quick: bool) -> Self {
        Self {
            delay: Duration::from_millis(1),
            warmup_messages: 10_000,
            messages: if quick { 50_000 } else { 200_000 },
            window: 4096,
            payload_len: 64,
            serial_publishes: if quick { 200 } else { 500 },
            delivery_timeout: Duration::from_secs(10),
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            warmup_messages: 200,
            messages: 2_000,
            serial_publishes: 20,
            ..Self::new(true)
        }
    }
}

/// Messages from A delivered at B per second.
const DELIVERIES: Metric = Metric {
    key: "cross_node_deliveries_per_s",
    label: "cross-node deliveries/s, +1 ms to redis",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// Publishes per second, one round trip at a time, through the same proxy.
const SERIAL: Metric = Metric {
    key: "cross_node_serial_publishes_per_s",
    label: "cross-node: one publish per round trip/s",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// The first over the second: what pipelining the outbox buys (target: at least 50).
const SPEEDUP: Metric = Metric {
    key: "cross_node_pipelined_over_serial",
    label: "cross-node: pipelined ÷ serial (≥ 50)",
    better: Better::Neither,
    decimals: 1,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// Node A's CPU time over the measured messages, as a share of one core.
const NODE_A_CPU: Metric = Metric {
    key: "cross_node_sender_cpu_percent",
    label: "cross-node sending node CPU %",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::EstuaryBare,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[&DELIVERIES, &SERIAL, &SPEEDUP, &NODE_A_CPU];

pub async fn run(_target: &Target, settings: &CrossNodeSettings) -> anyhow::Result<Outcome> {
    let redis = RedisProcess::start()?;
    let proxy = DelayProxy::start(redis.addr, settings.delay)?;
    let url = format!("redis://{}/", proxy.addr);
    let node_a = NodeProcess::start(&url, false, cpu::SERVER_CPU)?;
    let node_b = NodeProcess::start(&url, false, cpu::SERVER_CPU)?;
    let mut member = Connection::open_quiet(node_b.addr, "/?join=cross", 1, Compression::Off)
        .await
        .context("opening the member on node B")?;
    let mut publisher = Connection::open_quiet(node_a.addr, "/", 1, Compression::Off)
        .await
        .context("opening the publisher on node A")?;
    let frame = text_frame(&format!("cross {}", "m".repeat(settings.payload_len)));

    pump(
        &mut publisher,
        &mut member,
        &frame,
        settings.warmup_messages,
        settings,
    )
    .await
    .context("warming up")?;
    let meter = cpu::CpuMeter::start(node_a.pid())?;
    let took = pump(
        &mut publisher,
        &mut member,
        &frame,
        settings.messages,
        settings,
    )
    .await?;
    let cpu_use = meter.stop()?;
    let pipelined = settings.messages as f64 / took.as_secs_f64();

    let (proxy_addr, count, len) = (proxy.addr, settings.serial_publishes, settings.payload_len);
    let serial =
        tokio::task::spawn_blocking(move || serial_publishes_per_s(proxy_addr, count, len))
            .await
            .context("the serial publisher panicked")??;
    eprintln!(
        "    cross-node: {pipelined:.0} deliveries/s pipelined, {serial:.0} publishes/s serial \
         ({:.1}x)",
        pipelined / serial
    );
    Ok(Outcome {
        measurements: vec![
            Measurement {
                metric: &DELIVERIES,
                value: pipelined,
            },
            Measurement {
                metric: &SERIAL,
                value: serial,
            },
            Measurement {
                metric: &SPEEDUP,
                value: pipelined / serial,
            },
            Measurement {
                metric: &NODE_A_CPU,
                value: cpu_use.server,
            },
        ],
        warnings: Vec::new(),
    })
}

/// Sends `messages` from the publisher, at most `settings.window` ahead of what the member
/// has received, until the member has every one; how long that took.
async fn pump(
    publisher: &mut Connection,
    member: &mut Connection,
    frame: &[u8],
    messages: usize,
    settings: &CrossNodeSettings,
) -> anyhow::Result<Duration> {
    // Up to 256 frames per write.
    let burst: Vec<u8> = frame.repeat(256);
    let started = Instant::now();
    let (mut sent, mut received) = (0usize, 0usize);
    while received < messages {
        while sent < messages && sent - received < settings.window {
            let n = (messages - sent)
                .min(settings.window - (sent - received))
                .min(256);
            publisher.send(&burst[..n * frame.len()]).await?;
            sent += n;
        }
        let arrived = member
            .recv(settings.delivery_timeout)
            .await
            .with_context(|| {
                format!("{received} of {messages} messages had reached node B; the rest were lost")
            })?;
        received += arrived as usize;
    }
    ensure!(
        received == messages,
        "{received} deliveries for {messages} messages"
    );
    Ok(started.elapsed())
}
