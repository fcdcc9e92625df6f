//! Channel history: how many publications per second reach every member of a channel,
//! with history on (each publication takes a position, goes into the channel's stream and
//! reaches its members through the handler's `on_publication`, formatted once with its
//! offset) against off (a plain channel: one frame, written as it is), side by side on the
//! same node. In-process ([`Scenario::History`](super::Scenario::History)): one node, its
//! stream in memory. On Redis ([`Scenario::HistoryRedis`](super::Scenario::HistoryRedis)):
//! two nodes on one Redis, the publisher on node A and the members on both; with history,
//! every publication is one script that appends to the channel's Redis Stream and
//! publishes, and every member, node A's too, gets it from Redis.
//!
//! A publisher keeps a window of lines in flight (sent, not yet read by the slowest
//! member); the rate is lines over the time until every member has read every one. The
//! nodes are this binary's `estuary-node` (channels `h-*` keep history), so the scenario
//! runs in the `estuary-bare` column. The target: history on at least half the rate of
//! history off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::Outcome;
use crate::backplane::{NodeProcess, RedisProcess};
use crate::client::{Compression, Connection};
use crate::cpu;
use crate::frames::text_frame;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target};

/// Settings of the history scenarios.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Members of the channel (on Redis, split between the two nodes).
    pub members: usize,
    /// Lines sent and not yet read by every member, at most.
    pub window: usize,
    pub warmup_messages: usize,
    pub messages: usize,
    pub payload_len: usize,
    /// How long the members may go without reading anything.
    pub delivery_timeout: Duration,
}

impl HistorySettings {
    /// 10 members, 1,000 lines in flight; 5,000 lines of warm-up, then 100,000 measured
    /// in each mode (`quick`: 30,000).
    pub fn new(quick: bool) -> Self {
        Self {
            members: 10,
            window: 1000,
            warmup_messages: 5000,
            messages: if quick { 30_000 } else { 100_000 },
            payload_len: 64,
            delivery_timeout: Duration::from_secs(10),
        }
    }

    /// Just enough to show that the scenarios work.
    pub fn smoke() -> Self {
        Self {
            members: 4,
            warmup_messages: 200,
            messages: 2000,
            ..Self::new(true)
        }
    }
}

const MEMORY_OFF: Metric = Metric {
    key: "history_in_process_off_per_s",
    label: "channel publish rate, history off/s",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

const MEMORY_ON: Metric = Metric {
    key: "history_in_process_on_per_s",
    label: "channel publish rate, history on/s",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

const MEMORY_RATIO: Metric = Metric {
    key: "history_in_process_on_over_off",
    label: "channel history on ÷ off, in-process (≥ 0.5)",
    better: Better::Neither,
    decimals: 2,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

const REDIS_OFF: Metric = Metric {
    key: "history_redis_off_per_s",
    label: "channel publish rate on redis, 2 nodes, history off/s",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

const REDIS_ON: Metric = Metric {
    key: "history_redis_on_per_s",
    label: "channel publish rate on redis, 2 nodes, history on/s",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

const REDIS_RATIO: Metric = Metric {
    key: "history_redis_on_over_off",
    label: "channel history on ÷ off, on redis (≥ 0.5)",
    better: Better::Neither,
    decimals: 2,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// The in-process scenario's metrics, in table order.
pub const IN_PROCESS_METRICS: &[&Metric] = &[&MEMORY_OFF, &MEMORY_ON, &MEMORY_RATIO];

/// The Redis scenario's metrics, in table order.
pub const REDIS_METRICS: &[&Metric] = &[&REDIS_OFF, &REDIS_ON, &REDIS_RATIO];

/// One node, its history in memory.
pub async fn run_in_process(
    _target: &Target,
    settings: &HistorySettings,
) -> anyhow::Result<Outcome> {
    let node = NodeProcess::in_process(cpu::SERVER_CPU)?;
    let nodes = [node.addr];
    let (off, on) = side_by_side(&nodes, node.addr, settings, "in-process").await?;
    Ok(outcome([&MEMORY_OFF, &MEMORY_ON, &MEMORY_RATIO], off, on))
}

/// Two nodes on one Redis, the publisher on the first.
pub async fn run_on_redis(_target: &Target, settings: &HistorySettings) -> anyhow::Result<Outcome> {
    let redis = RedisProcess::start()?;
    let url = format!("redis://{}/", redis.addr);
    let node_a = NodeProcess::start(&url, false, cpu::SERVER_CPU)?;
    let node_b = NodeProcess::start(&url, false, cpu::SERVER_CPU)?;
    let nodes = [node_a.addr, node_b.addr];
    let (off, on) = side_by_side(&nodes, node_a.addr, settings, "on redis").await?;
    Ok(outcome([&REDIS_OFF, &REDIS_ON, &REDIS_RATIO], off, on))
}

fn outcome(metrics: [&'static Metric; 3], off: f64, on: f64) -> Outcome {
    Outcome {
        measurements: vec![
            Measurement {
                metric: metrics[0],
                value: off,
            },
            Measurement {
                metric: metrics[1],
                value: on,
            },
            Measurement {
                metric: metrics[2],
                value: on / off,
            },
        ],
        warnings: Vec::new(),
    }
}

/// The rate with history off, then on: each on its own channel of the same nodes.
async fn side_by_side(
    nodes: &[SocketAddr],
    publisher: SocketAddr,
    settings: &HistorySettings,
    place: &str,
) -> anyhow::Result<(f64, f64)> {
    let off = rate(nodes, publisher, "plain-bench", settings)
        .await
        .context("with history off")?;
    let on = rate(nodes, publisher, "h-bench", settings)
        .await
        .context("with history on")?;
    eprintln!(
        "    history: {place}: {off:.0} lines/s to every member with history off, {on:.0} on \
         ({:.2}x)",
        on / off
    );
    Ok((off, on))
}

/// Lines per second that reach every member of `channel`: the members on `nodes` in
/// turn, the publisher on `publisher`.
async fn rate(
    nodes: &[SocketAddr],
    publisher: SocketAddr,
    channel: &str,
    settings: &HistorySettings,
) -> anyhow::Result<f64> {
    let read = Arc::new(Reads {
        counts: (0..settings.members).map(|_| AtomicU64::new(0)).collect(),
        progress: Notify::new(),
    });
    let mut readers = JoinSet::new();
    for member in 0..settings.members {
        let addr = nodes[member % nodes.len()];
        let connection =
            Connection::open_quiet(addr, &format!("/?join={channel}"), 1, Compression::Off)
                .await
                .with_context(|| format!("opening member {member}"))?;
        readers.spawn(read_into(connection, read.clone(), member));
    }
    let mut sender = Connection::open_quiet(publisher, "/", 1, Compression::Off)
        .await
        .context("opening the publisher")?;
    let frame = text_frame(&format!("{channel} {}", "h".repeat(settings.payload_len)));
    pump(
        &mut sender,
        &read,
        &frame,
        settings.warmup_messages,
        settings,
    )
    .await
    .context("warming up")?;
    let started = Instant::now();
    pump(&mut sender, &read, &frame, settings.messages, settings).await?;
    let took = started.elapsed();
    if let Some(ended) = readers.try_join_next() {
        ended.context("a member's reader panicked")??;
    }
    readers.abort_all();
    Ok(settings.messages as f64 / took.as_secs_f64())
}

/// What the members have read, each, and a wake-up when any reads more.
struct Reads {
    counts: Vec<AtomicU64>,
    progress: Notify,
}

impl Reads {
    fn slowest(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

async fn read_into(
    mut connection: Connection,
    reads: Arc<Reads>,
    member: usize,
) -> anyhow::Result<()> {
    loop {
        let arrived = connection.recv(Duration::from_secs(60)).await?;
        reads.counts[member].fetch_add(arrived, Ordering::Relaxed);
        reads.progress.notify_one();
    }
}

/// Sends `messages` lines, at most `settings.window` ahead of the slowest member, until
/// every member has read every one.
async fn pump(
    sender: &mut Connection,
    reads: &Reads,
    frame: &[u8],
    messages: usize,
    settings: &HistorySettings,
) -> anyhow::Result<()> {
    let burst: Vec<u8> = frame.repeat(256);
    let base = reads.slowest();
    let mut sent = 0usize;
    loop {
        let read = (reads.slowest() - base) as usize;
        if read >= messages {
            ensure!(
                read == messages,
                "the slowest member read {read} lines of {messages}: some twice"
            );
            return Ok(());
        }
        while sent < messages && sent - read < settings.window {
            let n = (messages - sent)
                .min(settings.window - (sent - read))
                .min(256);
            sender.send(&burst[..n * frame.len()]).await?;
            sent += n;
        }
        tokio::time::timeout(settings.delivery_timeout, reads.progress.notified())
            .await
            .with_context(|| {
                format!("{read} of {messages} lines had reached every member; the rest were lost")
            })?;
    }
}
