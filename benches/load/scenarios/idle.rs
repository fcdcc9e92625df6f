//! Idle memory: how much resident memory a server holds per open, quiet connection.
//!
//! The server is a fresh process (an allocator hands out again what earlier scenarios freed,
//! which would hide the growth). A few warm-up connections go first, so that code pages and
//! one-time allocations (the runtime's, the hub's first channel) are not charged to the ten
//! thousand; then RSS is read once it has settled, the connections open, RSS is read again
//! once it has settled, and the growth is divided by the number of connections.
//!
//! Estuary's connections are what an application's would be: authenticated (Basic), in the
//! hub, one channel joined, the welcome and joined messages read, so that nothing is pending
//! on either side. The other servers' connections are bare echo sockets.

use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::{open_quiet_connections, Outcome};
use crate::client::Compression;
use crate::memory::{memory, Memory};
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target};

/// Settings of [`super::Scenario::Idle`].
#[derive(Debug, Clone)]
pub struct IdleSettings {
    /// Connections measured.
    pub sockets: usize,
    /// Connections opened, and kept, before the first reading.
    pub warmup_sockets: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// How often RSS is read while it settles.
    pub settle_poll: Duration,
    /// RSS has settled when it moved less than [`SETTLED_BYTES`] over this long.
    pub settle_window: Duration,
    /// The longest wait for RSS to settle; after it, the last reading counts.
    pub settle_limit: Duration,
}

/// How little RSS may move over a settle window to count as settled.
const SETTLED_BYTES: u64 = 64 * 1024;

impl IdleSettings {
    /// 10,000 sockets after 100 warm-up ones, opened 32 at a time (`quick` changes nothing:
    /// the figure is defined at 10,000).
    pub fn new(_quick: bool) -> Self {
        Self {
            sockets: 10_000,
            warmup_sockets: 100,
            concurrency: 32,
            settle_poll: Duration::from_millis(250),
            settle_window: Duration::from_secs(1),
            settle_limit: Duration::from_secs(15),
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            sockets: 50,
            warmup_sockets: 5,
            concurrency: 8,
            settle_poll: Duration::from_millis(25),
            settle_window: Duration::from_millis(100),
            settle_limit: Duration::from_millis(300),
        }
    }
}

/// RSS growth per connection.
const BYTES_PER_CONNECTION: Metric = Metric {
    key: "idle_bytes_per_conn",
    label: "idle bytes/conn @10k sockets",
    better: Better::Lower,
    decimals: 0,
    in_table: true,
    reference: ServerKind::Fastwebsockets,
};

/// Growth of anonymous RSS (the heap and stacks, without file-backed pages) per connection.
const ANON_BYTES_PER_CONNECTION: Metric = Metric {
    key: "idle_anon_bytes_per_conn",
    label: "idle anonymous bytes/conn",
    better: Better::Lower,
    decimals: 0,
    in_table: false,
    reference: ServerKind::Fastwebsockets,
};

/// The server's RSS before the measured connections opened, in bytes.
const RSS_BEFORE: Metric = Metric {
    key: "idle_rss_before_bytes",
    label: "idle RSS before",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::Fastwebsockets,
};

/// The server's RSS with every measured connection open, in bytes.
const RSS_AFTER: Metric = Metric {
    key: "idle_rss_after_bytes",
    label: "idle RSS after",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::Fastwebsockets,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[
    &BYTES_PER_CONNECTION,
    &ANON_BYTES_PER_CONNECTION,
    &RSS_BEFORE,
    &RSS_AFTER,
];

/// RSS growth per connection, with permessage-deflate negotiated on every one: Estuary
/// alone, to compare with its own plain row.
const DEFLATE_BYTES_PER_CONNECTION: Metric = Metric {
    key: "idle_deflate_bytes_per_conn",
    label: "idle bytes/conn @10k, permessage-deflate",
    better: Better::Neither,
    decimals: 0,
    in_table: true,
    reference: ServerKind::Estuary,
};

/// Every metric of the compressed variant, in table order.
pub const DEFLATE_METRICS: &[&Metric] = &[&DEFLATE_BYTES_PER_CONNECTION];

/// What one idle run found.
struct Idle {
    before: Memory,
    after: Memory,
    sockets: usize,
}

impl Idle {
    fn per_connection(&self, field: impl Fn(&Memory) -> u64) -> f64 {
        (field(&self.after) as f64 - field(&self.before) as f64) / self.sockets as f64
    }
}

/// Opens the warm-up and the measured connections and reports the memory they cost.
pub async fn run(target: &Target, settings: &IdleSettings) -> anyhow::Result<Outcome> {
    let idle = measure(target, settings, Compression::Off).await?;
    let measurements = vec![
        Measurement {
            metric: &BYTES_PER_CONNECTION,
            value: idle.per_connection(|m| m.rss),
        },
        Measurement {
            metric: &ANON_BYTES_PER_CONNECTION,
            value: idle.per_connection(|m| m.anon),
        },
        Measurement {
            metric: &RSS_BEFORE,
            value: idle.before.rss as f64,
        },
        Measurement {
            metric: &RSS_AFTER,
            value: idle.after.rss as f64,
        },
    ];
    // Memory is not CPU time: other work on the cores does not make these figures noise.
    Ok(Outcome {
        measurements,
        warnings: Vec::new(),
    })
}

/// The same with permessage-deflate offered by every connection (and accepted: Estuary's
/// default shared mode keeps no compression state on an idle connection).
pub async fn run_deflate(target: &Target, settings: &IdleSettings) -> anyhow::Result<Outcome> {
    let idle = measure(target, settings, Compression::Offered).await?;
    Ok(Outcome {
        measurements: vec![Measurement {
            metric: &DEFLATE_BYTES_PER_CONNECTION,
            value: idle.per_connection(|m| m.rss),
        }],
        warnings: Vec::new(),
    })
}

async fn measure(
    target: &Target,
    settings: &IdleSettings,
    compression: Compression,
) -> anyhow::Result<Idle> {
    let route = target.kind.idle_route();
    let warmup = open_quiet_connections(
        target,
        route,
        settings.warmup_sockets,
        settings.concurrency,
        compression,
        "idle warm-up",
    )
    .await?;
    let before = settled_memory(target.pid, settings).await?;
    let connections = open_quiet_connections(
        target,
        route,
        settings.sockets,
        settings.concurrency,
        compression,
        "idle",
    )
    .await?;
    let after = settled_memory(target.pid, settings).await?;
    eprintln!(
        "    idle: {} RSS {:.1} MB -> {:.1} MB with {} more sockets",
        target.kind.name(),
        before.rss as f64 / 1e6,
        after.rss as f64 / 1e6,
        connections.len()
    );
    drop(connections);
    drop(warmup);
    Ok(Idle {
        before,
        after,
        sockets: settings.sockets,
    })
}

/// Reads the memory of process `pid` until RSS has moved less than [`SETTLED_BYTES`] over
/// a settle window, or the settle limit has passed.
pub(super) async fn settled_memory(pid: u32, settings: &IdleSettings) -> anyhow::Result<Memory> {
    let started = Instant::now();
    let readings_per_window =
        (settings.settle_window.as_millis() / settings.settle_poll.as_millis().max(1)) as usize;
    let mut readings = vec![memory(pid)?];
    loop {
        sleep(settings.settle_poll).await;
        readings.push(memory(pid)?);
        let window = &readings[readings.len().saturating_sub(readings_per_window + 1)..];
        let (low, high) = window.iter().fold((u64::MAX, 0), |(low, high), m| {
            (low.min(m.rss), high.max(m.rss))
        });
        if window.len() > readings_per_window && high - low < SETTLED_BYTES {
            break;
        }
        if started.elapsed() >= settings.settle_limit {
            eprintln!(
                "    idle: RSS still moving after {:?} ({:.1} MB to {:.1} MB); taking the last reading",
                settings.settle_limit,
                low as f64 / 1e6,
                high as f64 / 1e6
            );
            break;
        }
    }
    Ok(*readings.last().expect("at least one reading was taken"))
}
