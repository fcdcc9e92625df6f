//! Pipelined echo: throughput with many connections, each with several messages in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tokio::task::JoinSet;
use tokio::time::sleep;

use super::{Outcome, REPLY_TIMEOUT};
use crate::client::Connection;
use crate::cpu;
use crate::frames::EncodedFrames;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target, ECHO_PATH};

/// How many replies an echo connection waits for before refilling, so that 12 to 16 of its
/// messages are in flight. Refilling on every reply costs the client a write per message
/// whenever a server writes its replies one at a time (both baselines do): the client then
/// used 90-97% of its core against them, as much as the server it measured; with batches of
/// 4 it uses about 80%, and the baselines' own cores are the bottleneck.
const REFILL_BATCH: usize = 4;

/// Settings of [`super::Scenario::Echo`].
#[derive(Debug, Clone)]
pub struct EchoSettings {
    pub connections: usize,
    /// Messages sent at the start on each connection, and most in flight after.
    pub in_flight: usize,
    /// Replies a connection waits for before it sends as many new messages in one write.
    pub refill_batch: usize,
    pub payload_len: usize,
    pub warmup: Duration,
    pub window: Duration,
}

impl EchoSettings {
    /// 64 connections with 16 messages of 32 bytes in flight on each (refilled 4 at a time),
    /// measured over 5 s (2 s when `quick`) after 1 s of warm-up.
    pub fn new(quick: bool) -> Self {
        Self {
            connections: 64,
            in_flight: 16,
            refill_batch: REFILL_BATCH,
            payload_len: 32,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(if quick { 2 } else { 5 }),
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            connections: 4,
            in_flight: 4,
            refill_batch: 2,
            payload_len: 32,
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(300),
        }
    }
}

/// Echoes per second over all connections.
const THROUGHPUT: Metric = Metric {
    key: "echo_msgs_per_s",
    label: "echo msgs/s",
    better: Better::Higher,
    decimals: 0,
    in_table: true,
    reference: ServerKind::Fastwebsockets,
};

/// The server process's CPU time over the window, as a share of one core.
const SERVER_CPU: Metric = Metric {
    key: "echo_server_cpu_percent",
    label: "echo server CPU %",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::Fastwebsockets,
};

/// The load client's CPU time over the window, as a share of one core: near 100, the
/// client is the bottleneck.
const CLIENT_CPU: Metric = Metric {
    key: "echo_client_cpu_percent",
    label: "echo client CPU %",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::Fastwebsockets,
};

/// How busy the server's core was over the window, whoever used it.
const SERVER_CORE_BUSY: Metric = Metric {
    key: "echo_server_core_busy_percent",
    label: "echo server core busy %",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::Fastwebsockets,
};

/// How busy the client's core was over the window, whoever used it.
const CLIENT_CORE_BUSY: Metric = Metric {
    key: "echo_client_core_busy_percent",
    label: "echo client core busy %",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::Fastwebsockets,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[
    &THROUGHPUT,
    &SERVER_CPU,
    &CLIENT_CPU,
    &SERVER_CORE_BUSY,
    &CLIENT_CORE_BUSY,
];

/// Pipelined echo: `connections` sockets, each sending `in_flight` messages and then a new
/// one for every reply (in batches of `refill_batch`), replies counted over a fixed window
/// after a warm-up; with the CPU share the server and the client used during the window, and how
/// busy their cores were (that includes loopback softirq work, and anything else running).
pub async fn run(target: &Target, settings: &EchoSettings) -> anyhow::Result<Outcome> {
    let frames = Arc::new(EncodedFrames::binary(
        settings.payload_len,
        settings.in_flight,
    ));
    let replies = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + settings.warmup + settings.window + REPLY_TIMEOUT;

    let mut connections = Vec::with_capacity(settings.connections);
    for index in 0..settings.connections {
        let connection = Connection::open(target.addr, ECHO_PATH)
            .await
            .with_context(|| format!("opening echo connection {index}"))?;
        connections.push(connection);
    }
    let mut tasks = JoinSet::new();
    for connection in connections {
        tasks.spawn(keep_in_flight(
            connection,
            Arc::clone(&frames),
            settings.clone(),
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

    let messages = end_count - start_count;
    ensure!(
        messages > 0,
        "no echo arrived during the measurement window"
    );
    let measurements = vec![
        Measurement {
            metric: &THROUGHPUT,
            value: messages as f64 / (end - start).as_secs_f64(),
        },
        Measurement {
            metric: &SERVER_CPU,
            value: cpu_use.server,
        },
        Measurement {
            metric: &CLIENT_CPU,
            value: cpu_use.client,
        },
        Measurement {
            metric: &SERVER_CORE_BUSY,
            value: cpu_use.server_core,
        },
        Measurement {
            metric: &CLIENT_CORE_BUSY,
            value: cpu_use.client_core,
        },
    ];
    Ok(Outcome {
        measurements,
        warnings: cpu_use.contention().into_iter().collect(),
    })
}

/// One echo connection: sends `in_flight` messages, then, each time `refill_batch` replies
/// or more have arrived, as many new messages, until aborted or `deadline`.
async fn keep_in_flight(
    mut connection: Connection,
    frames: Arc<EncodedFrames>,
    settings: EchoSettings,
    replies: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<()> {
    connection.send(frames.first(settings.in_flight)).await?;
    let mut unanswered = 0;
    while Instant::now() < deadline {
        let arrived = connection.recv(REPLY_TIMEOUT).await?;
        let arrived = usize::try_from(arrived).unwrap_or(usize::MAX);
        let outstanding = settings.in_flight - unanswered;
        ensure!(
            arrived <= outstanding,
            "{arrived} replies arrived with only {outstanding} messages in flight"
        );
        replies.fetch_add(arrived as u64, Ordering::Relaxed);
        unanswered += arrived;
        if unanswered >= settings.refill_batch {
            connection.send(frames.first(unanswered)).await?;
            unanswered = 0;
        }
    }
    Ok(())
}

/// Fails with the first connection task that has ended: during the measurement every one
/// of them should be running.
fn fail_if_any_stopped(tasks: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    if let Some(ended) = tasks.try_join_next() {
        ended.context("an echo connection task panicked")??;
        bail!("an echo connection stopped before the measurement ended");
    }
    Ok(())
}
