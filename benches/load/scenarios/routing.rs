//! Routing by interest: the CPU a node spends per message it delivers, when its sessions
//! are in 1 of 10 busy channels, with interest routing (the node subscribes to its one
//! channel) against broadcast routing (every node receives every channel's traffic and
//! keeps what it needs), side by side.
//!
//! Two nodes on one Redis: the measured node holds the members of channel 0; the other
//! node, pinned to the client's core, holds one member of each of channels 1 to 9 and
//! the publishers, which say a line in every channel at a steady rate. The measured node's
//! CPU time over the window, divided by the lines its members received, is the figure;
//! each mode gets a fresh Redis and fresh nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use tokio::task::JoinSet;

use super::Outcome;
use crate::backplane::{NodeProcess, RedisProcess};
use crate::client::{Compression, Connection};
use crate::cpu;
use crate::frames::text_frame;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target};

/// Settings of [`super::Scenario::Routing`].
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub channels: usize,
    /// Members of channel 0 on the measured node.
    pub members: usize,
    /// Lines per second said in each channel.
    pub rate_per_channel: u32,
    pub warmup: Duration,
    pub window: Duration,
    pub payload_len: usize,
}

impl RoutingSettings {
    /// 10 channels at 1,000 lines/s each, 1 member on the measured node; 2 s of warm-up,
    /// then 10 s measured (`quick`: 4 s).
    pub fn new(quick: bool) -> Self {
        Self {
            channels: 10,
            members: 1,
            rate_per_channel: 1000,
            warmup: Duration::from_secs(2),
            window: Duration::from_secs(if quick { 4 } else { 10 }),
            payload_len: 64,
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            rate_per_channel: 200,
            warmup: Duration::from_millis(300),
            window: Duration::from_millis(700),
            ..Self::new(true)
        }
    }
}

const INTEREST: Metric = Metric {
    key: "routing_interest_cpu_us_per_delivery",
    label: "1 of 10 channels: node CPU µs/delivery, interest",
    better: Better::Neither,
    decimals: 1,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

const BROADCAST: Metric = Metric {
    key: "routing_broadcast_cpu_us_per_delivery",
    label: "1 of 10 channels: node CPU µs/delivery, broadcast",
    better: Better::Neither,
    decimals: 1,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

const RATIO: Metric = Metric {
    key: "routing_interest_over_broadcast",
    label: "1 of 10 channels: interest ÷ broadcast (≤ 0.2)",
    better: Better::Neither,
    decimals: 2,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[&INTEREST, &BROADCAST, &RATIO];

pub async fn run(_target: &Target, settings: &RoutingSettings) -> anyhow::Result<Outcome> {
    let interest = cpu_per_delivery(false, settings)
        .await
        .context("with interest routing")?;
    let broadcast = cpu_per_delivery(true, settings)
        .await
        .context("with broadcast routing")?;
    eprintln!(
        "    routing: {interest:.1} µs/delivery with interest, {broadcast:.1} with broadcast \
         ({:.2}x)",
        interest / broadcast
    );
    Ok(Outcome {
        measurements: vec![
            Measurement {
                metric: &INTEREST,
                value: interest,
            },
            Measurement {
                metric: &BROADCAST,
                value: broadcast,
            },
            Measurement {
                metric: &RATIO,
                value: interest / broadcast,
            },
        ],
        warnings: Vec::new(),
    })
}

/// Reads a member's lines until aborted, counting them into `count`.
async fn read(mut connection: Connection, count: Option<Arc<AtomicU64>>) -> anyhow::Result<()> {
    loop {
        let arrived = connection.recv(Duration::from_secs(30)).await?;
        if let Some(count) = &count {
            count.fetch_add(arrived, Ordering::Relaxed);
        }
    }
}

/// The measured node's CPU microseconds per line its members received, in one mode.
async fn cpu_per_delivery(broadcast: bool, settings: &RoutingSettings) -> anyhow::Result<f64> {
    let redis = RedisProcess::start()?;
    let url = format!("redis://{}/", redis.addr);
    let measured = NodeProcess::start(&url, broadcast, cpu::SERVER_CPU)?;
    let other = NodeProcess::start(&url, broadcast, cpu::CLIENT_CPU)?;

    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = JoinSet::new();
    for _ in 0..settings.members {
        let member =
            Connection::open_quiet(measured.addr, "/?join=busy-0", 1, Compression::Off).await?;
        readers.spawn(read(member, Some(delivered.clone())));
    }
    for channel in 1..settings.channels {
        let path = format!("/?join=busy-{channel}");
        let member = Connection::open_quiet(other.addr, &path, 1, Compression::Off).await?;
        readers.spawn(read(member, None));
    }

    // Every 10 ms, each channel's share of lines, from one publisher on the other node.
    let mut publisher = Connection::open_quiet(other.addr, "/", 1, Compression::Off).await?;
    let per_tick = (settings.rate_per_channel / 100).max(1) as usize;
    let mut burst = Vec::new();
    for channel in 0..settings.channels {
        let frame = text_frame(&format!(
            "busy-{channel} {}",
            "b".repeat(settings.payload_len)
        ));
        for _ in 0..per_tick {
            burst.extend_from_slice(&frame);
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let warmup_until = tokio::time::Instant::now() + settings.warmup;
    while tokio::time::Instant::now() < warmup_until {
        tick.tick().await;
        publisher.send(&burst).await?;
    }
    let before = delivered.load(Ordering::Relaxed);
    let meter = cpu::CpuMeter::start(measured.pid())?;
    let until = tokio::time::Instant::now() + settings.window;
    while tokio::time::Instant::now() < until {
        tick.tick().await;
        publisher.send(&burst).await?;
    }
    let cpu_use = meter.stop()?;
    let deliveries = delivered.load(Ordering::Relaxed) - before;
    if let Some(ended) = readers.try_join_next() {
        ended.context("a member's reader panicked")??;
    }
    readers.abort_all();
    ensure!(
        deliveries > 0,
        "the measured node's members received nothing"
    );
    let expected = settings.window.as_secs_f64()
        * f64::from(settings.rate_per_channel)
        * settings.members as f64;
    ensure!(
        deliveries as f64 > expected * 0.8,
        "the members received {deliveries} lines, {expected:.0} were said in their channel: \
         the node did not keep up, so its CPU per delivery means nothing"
    );
    Ok(cpu_use.server_time.as_secs_f64() * 1e6 / deliveries as f64)
}
