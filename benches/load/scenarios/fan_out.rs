//! Fan-out: one message to ten thousand subscribers of a channel, and how long until the
//! last of them has it.
//!
//! Ten thousand quiet connections subscribe (Estuary: the chat's `/ws?join=fanout`, on the
//! hub; tokio-tungstenite: a `tokio::sync::broadcast` room), then a publisher, a member
//! too, sends one message at a time: `{"type":"say","channel":"fanout",...}`, which the
//! chat delivers to every member and the room broadcasts as it is. Each message is timed
//! from the publisher's write to the moment the client has read it on the last
//! subscriber; the next goes out only then. After warm-up messages, the median over the
//! measured ones counts, and deliveries per second are subscribers over that time.
//!
//! The client reads all subscribers on its one core, a task per socket; the publisher's own
//! copies pile up unread in its socket buffer, a few hundred bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::{open_quiet_connections, Outcome};
use crate::client::{Compression, Connection};
use crate::cpu;
use crate::frames::text_frame;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target};

/// Settings of [`super::Scenario::FanOut`].
#[derive(Debug, Clone)]
pub struct FanOutSettings {
    pub subscribers: usize,
    /// Subscribers being opened at once.
    pub concurrency: usize,
    /// Messages sent before the measured ones.
    pub warmup_messages: usize,
    /// Messages measured.
    pub messages: usize,
    /// How long one message may take to reach every subscriber.
    pub delivery_timeout: Duration,
}

impl FanOutSettings {
    /// 10,000 subscribers; 2 warm-up messages, then 11 measured (`quick`: 1, then 5).
    pub fn new(quick: bool) -> Self {
        Self {
            subscribers: 10_000,
            concurrency: 32,
            warmup_messages: if quick { 1 } else { 2 },
            messages: if quick { 5 } else { 11 },
            delivery_timeout: Duration::from_secs(10),
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            subscribers: 50,
            concurrency: 8,
            warmup_messages: 1,
            messages: 2,
            delivery_timeout: Duration::from_secs(5),
        }
    }
}

/// Median time from the publisher's write to the last subscriber's read.
const LAST_DELIVERY: Metric = Metric {
    key: "fan_out_last_delivery_ms",
    label: "fan-out to 10k: last delivery ms",
    better: Better::Lower,
    decimals: 1,
    in_table: true,
    reference: ServerKind::Tungstenite,
};

/// Subscribers over the median last-delivery time.
const DELIVERIES: Metric = Metric {
    key: "fan_out_deliveries_per_s",
    label: "fan-out deliveries/s",
    better: Better::Higher,
    decimals: 0,
    in_table: true,
    reference: ServerKind::Tungstenite,
};

/// Median time from the publisher's write to the first subscriber's read.
const FIRST_DELIVERY: Metric = Metric {
    key: "fan_out_first_delivery_ms",
    label: "fan-out first delivery ms",
    better: Better::Lower,
    decimals: 2,
    in_table: false,
    reference: ServerKind::Tungstenite,
};

/// The server process's CPU time over the measured messages, as a share of one core.
const SERVER_CPU: Metric = Metric {
    key: "fan_out_server_cpu_percent",
    label: "fan-out server CPU %",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::Tungstenite,
};

/// The load client's CPU time over the measured messages, as a share of one core.
const CLIENT_CPU: Metric = Metric {
    key: "fan_out_client_cpu_percent",
    label: "fan-out client CPU %",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::Tungstenite,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[
    &LAST_DELIVERY,
    &DELIVERIES,
    &FIRST_DELIVERY,
    &SERVER_CPU,
    &CLIENT_CPU,
];

/// What one fan-out run found.
pub struct FanOut {
    /// The median time from the publisher's write to the first subscriber's read.
    pub first: Duration,
    /// The median time from the publisher's write to the last subscriber's read.
    pub last: Duration,
    /// Subscribers over the median last-delivery time.
    pub deliveries_per_s: f64,
    /// Bytes the subscribers read per delivery, frame headers included.
    pub wire_bytes: f64,
    /// The share of measured deliveries that came compressed.
    pub compressed_share: f64,
    /// Server CPU time per delivery.
    pub server_cpu_per_delivery: Duration,
    /// CPU use over the measured messages.
    pub cpu: cpu::CpuUse,
}

/// Subscribes, publishes, and times each message's way to every subscriber.
pub async fn run(target: &Target, settings: &FanOutSettings) -> anyhow::Result<Outcome> {
    let run = measure(target, settings, Compression::Off, "fan-out message").await?;
    let measurements = vec![
        Measurement {
            metric: &LAST_DELIVERY,
            value: millis(run.last),
        },
        Measurement {
            metric: &DELIVERIES,
            value: run.deliveries_per_s,
        },
        Measurement {
            metric: &FIRST_DELIVERY,
            value: millis(run.first),
        },
        Measurement {
            metric: &SERVER_CPU,
            value: run.cpu.server,
        },
        Measurement {
            metric: &CLIENT_CPU,
            value: run.cpu.client,
        },
    ];
    Ok(Outcome {
        measurements,
        warnings: run.cpu.contention().into_iter().collect(),
    })
}

/// One fan-out run: subscribers that offer `compression` or not, and messages whose text
/// is `text` and the message's number.
pub async fn measure(
    target: &Target,
    settings: &FanOutSettings,
    compression: Compression,
    text: &str,
) -> anyhow::Result<FanOut> {
    let route = target
        .kind
        .fan_out_route()
        .with_context(|| format!("{} has no fan-out route", target.kind.name()))?;
    let subscribers = open_quiet_connections(
        target,
        route,
        settings.subscribers,
        settings.concurrency,
        compression,
        "fan-out",
    )
    .await?;
    let mut publisher =
        Connection::open_quiet(target.addr, route.path, route.greeting, Compression::Off)
            .await
            .context("opening the publisher")?;

    let deliveries = Arc::new(Deliveries::default());
    let mut readers = JoinSet::new();
    let read_wait =
        settings.delivery_timeout * (settings.warmup_messages + settings.messages) as u32;
    for subscriber in subscribers {
        readers.spawn(read_deliveries(
            subscriber,
            Arc::clone(&deliveries),
            read_wait,
        ));
    }

    let count = settings.subscribers as u64;
    let mut meter = None;
    let mut measured_from = (0, 0);
    let (mut first, mut last) = (Vec::new(), Vec::new());
    for message in 0..settings.warmup_messages + settings.messages {
        let measured = message >= settings.warmup_messages;
        if message == settings.warmup_messages {
            meter = Some(cpu::CpuMeter::start(target.pid)?);
            measured_from = deliveries.bytes_and_compressed();
        }
        let frame = text_frame(&format!(
            r#"{{"type":"say","channel":"fanout","text":"{text} {message}"}}"#
        ));
        let goal = count * (message as u64 + 1);
        deliveries.expect(goal);
        let sent = Instant::now();
        publisher.send(&frame).await?;
        let (first_at, last_at) = timeout(settings.delivery_timeout, deliveries.reached(goal))
            .await
            .with_context(|| {
                format!(
                    "message {} reached {} of {count} subscribers within {:?}",
                    message + 1,
                    deliveries.count() - (goal - count),
                    settings.delivery_timeout
                )
            })?;
        if let Some(ended) = readers.try_join_next() {
            ended.context("a subscriber task panicked")??;
            bail!("a subscriber stopped reading");
        }
        let (to_first, to_last) = (first_at - sent, last_at - sent);
        eprintln!(
            "    fan-out: {} message {}/{}{}: first delivery {:.2} ms, last {:.1} ms",
            target.kind.name(),
            message + 1,
            settings.warmup_messages + settings.messages,
            if measured { "" } else { " (warm-up)" },
            millis(to_first),
            millis(to_last)
        );
        if measured {
            first.push(to_first);
            last.push(to_last);
        }
    }
    let cpu_use = meter.context("there was no measured message")?.stop()?;
    let measured_to = deliveries.bytes_and_compressed();
    readers.abort_all();
    ensure!(
        deliveries.count() == count * (settings.warmup_messages + settings.messages) as u64,
        "subscribers got {} messages, expected one per message each",
        deliveries.count()
    );

    first.sort_unstable();
    last.sort_unstable();
    let median_last = last[last.len() / 2];
    let delivered = (count * settings.messages as u64) as f64;
    Ok(FanOut {
        first: first[first.len() / 2],
        last: median_last,
        deliveries_per_s: count as f64 / median_last.as_secs_f64(),
        wire_bytes: (measured_to.0 - measured_from.0) as f64 / delivered,
        compressed_share: (measured_to.1 - measured_from.1) as f64 / delivered,
        server_cpu_per_delivery: cpu_use.server_time.div_f64(delivered),
        cpu: cpu_use,
    })
}

/// Reads a subscriber's messages into `deliveries` until aborted, or until nothing arrives
/// for `wait`.
async fn read_deliveries(
    mut subscriber: Connection,
    deliveries: Arc<Deliveries>,
    wait: Duration,
) -> anyhow::Result<()> {
    loop {
        let (bytes, compressed) = (subscriber.bytes_read(), subscriber.compressed_replies());
        let arrived = subscriber.recv(wait).await?;
        deliveries.read(
            subscriber.bytes_read() - bytes,
            subscriber.compressed_replies() - compressed,
        );
        if arrived > 0 {
            deliveries.arrived(arrived);
        }
    }
}

/// Messages the subscribers have read so far, and when the current one's first and last
/// copies arrived.
#[derive(Debug, Default)]
struct Deliveries {
    state: Mutex<DeliveryState>,
    /// Woken when the goal is reached.
    done: Notify,
    /// Bytes the subscribers read, and compressed messages among what they read.
    bytes: AtomicU64,
    compressed: AtomicU64,
}

#[derive(Debug, Default)]
struct DeliveryState {
    count: u64,
    /// The count at which the current message has reached every subscriber.
    goal: u64,
    /// The count before the current message.
    start: u64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

impl Deliveries {
    /// Counts what one subscriber's read brought.
    fn read(&self, bytes: u64, compressed: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.compressed.fetch_add(compressed, Ordering::Relaxed);
    }

    fn bytes_and_compressed(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.compressed.load(Ordering::Relaxed),
        )
    }

    /// Starts timing a message, which is delivered when the count reaches `goal`.
    fn expect(&self, goal: u64) {
        let mut state = self
            .state
            .lock()
            .expect("no thread panics holding the lock");
        state.start = state.count;
        state.goal = goal;
        state.first_at = None;
        state.last_at = None;
    }

    /// Counts `messages` just read by one subscriber.
    fn arrived(&self, messages: u64) {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .expect("no thread panics holding the lock");
        let before = state.count;
        state.count += messages;
        if before == state.start {
            state.first_at = Some(now);
        }
        if before < state.goal && state.count >= state.goal {
            state.last_at = Some(now);
            self.done.notify_one();
        }
    }

    fn count(&self) -> u64 {
        self.state
            .lock()
            .expect("no thread panics holding the lock")
            .count
    }

    /// Waits until the count reaches `goal`: when the first and the last copy arrived.
    async fn reached(&self, goal: u64) -> (Instant, Instant) {
        loop {
            {
                let state = self
                    .state
                    .lock()
                    .expect("no thread panics holding the lock");
                if state.count >= goal {
                    if let (Some(first), Some(last)) = (state.first_at, state.last_at) {
                        return (first, last);
                    }
                }
            }
            self.done.notified().await;
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
