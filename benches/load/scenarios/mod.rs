//! The scenarios: what the load client does to a server, and what it measures.
//!
//! A scenario takes a [`Target`] (a running server's kind, address and process id) and
//! returns one [`Measurement`] per [`Metric`] it declares. Adding one is a file here with its
//! settings, metrics and `run`, and a [`Scenario`] variant; the rounds, the table, the JSON
//! and the chart pick it up.

mod compression;
mod cross_node;
mod echo;
mod fan_out;
mod handshake;
mod history;
mod http2;
mod idle;
mod ping_pong;
mod request_response;
mod routing;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::{Compression, Connection};
use crate::metric::{Measurement, Metric};
use crate::servers::{Route, ServerKind, Target};
pub use compression::CompressionSettings;
pub use cross_node::CrossNodeSettings;
pub use echo::EchoSettings;
pub use fan_out::FanOutSettings;
pub use handshake::HandshakeSettings;
pub use history::HistorySettings;
pub use http2::Http2Settings;
pub use idle::IdleSettings;
pub use ping_pong::PingPongSettings;
pub use request_response::RequestResponseSettings;
pub use routing::RoutingSettings;

/// How long a connection may wait for any reply before the scenario fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long and how hard each scenario runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rounds: usize,
    /// Runs of one scenario against one server in a round, when the first ones shared
    /// their cores with other work.
    pub attempts: usize,
    /// How long to wait, before each run, for other work to leave the cores.
    pub quiet_wait: Duration,
    pub echo: EchoSettings,
    pub ping_pong: PingPongSettings,
    pub request_response: RequestResponseSettings,
    pub idle: IdleSettings,
    pub handshake: HandshakeSettings,
    pub fan_out: FanOutSettings,
    pub compression: CompressionSettings,
    pub cross_node: CrossNodeSettings,
    pub routing: RoutingSettings,
    pub http2: Http2Settings,
    pub history: HistorySettings,
}

impl Settings {
    /// The full run, or the `quick` one; `rounds` overrides the number of rounds (3, or 1
    /// when `quick`).
    pub fn new(quick: bool, rounds: Option<usize>, rr_sizes: &[usize]) -> anyhow::Result<Self> {
        let rounds = rounds.unwrap_or(if quick { 1 } else { 3 });
        ensure!(rounds > 0, "--rounds must be at least 1");
        let fan_out = FanOutSettings::new(quick);
        let request_response = RequestResponseSettings::new(quick, rr_sizes)?;
        Ok(Self {
            rounds,
            attempts: 3,
            quiet_wait: Duration::from_secs(30),
            echo: EchoSettings::new(quick),
            ping_pong: PingPongSettings::new(quick),
            compression: CompressionSettings::new(
                fan_out.clone(),
                RequestResponseSettings::new(quick, &[])?,
            ),
            request_response,
            idle: IdleSettings::new(quick),
            handshake: HandshakeSettings::new(quick),
            fan_out,
            cross_node: CrossNodeSettings::new(quick),
            routing: RoutingSettings::new(quick),
            http2: Http2Settings::new(quick),
            history: HistorySettings::new(quick),
        })
    }

    /// A run just long enough to show that every scenario works, for the smoke test.
    pub fn smoke() -> Self {
        Self {
            rounds: 1,
            attempts: 1,
            quiet_wait: Duration::ZERO,
            echo: EchoSettings::smoke(),
            ping_pong: PingPongSettings::smoke(),
            request_response: RequestResponseSettings::smoke(),
            idle: IdleSettings::smoke(),
            handshake: HandshakeSettings::smoke(),
            fan_out: FanOutSettings::smoke(),
            compression: CompressionSettings::new(
                FanOutSettings::smoke(),
                RequestResponseSettings::smoke(),
            ),
            cross_node: CrossNodeSettings::smoke(),
            routing: RoutingSettings::smoke(),
            http2: Http2Settings::smoke(),
            history: HistorySettings::smoke(),
        }
    }
}

/// What one run of a scenario found.
#[derive(Debug)]
pub struct Outcome {
    /// One per metric of the scenario.
    pub measurements: Vec<Measurement>,
    /// Reasons to doubt the measurements, such as other processes using the cores.
    pub warnings: Vec<String>,
}

impl Outcome {
    /// One outcome for several passes: each metric's median over them, and every warning.
    pub fn median_of(passes: Vec<Outcome>) -> Outcome {
        let metrics: Vec<&'static Metric> = passes
            .first()
            .map(|pass| pass.measurements.iter().map(|m| m.metric).collect())
            .unwrap_or_default();
        let measurements = metrics
            .into_iter()
            .filter_map(|metric| {
                let values: Vec<f64> = passes
                    .iter()
                    .flat_map(|pass| &pass.measurements)
                    .filter(|m| m.metric.key == metric.key)
                    .map(|m| m.value)
                    .collect();
                let value = crate::report::median(&values)?;
                Some(Measurement { metric, value })
            })
            .collect();
        let warnings = passes.into_iter().flat_map(|pass| pass.warnings).collect();
        Outcome {
            measurements,
            warnings,
        }
    }
}

/// A way of loading a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Many connections, each with several messages in flight: messages per second.
    Echo,
    /// One connection, one message in flight: round-trip latency.
    PingPong,
    /// Many connections, one message in flight on each, at several sizes: messages per
    /// second, and peak memory.
    RequestResponse,
    /// Ten thousand connections doing nothing: the server's memory per connection.
    Idle,
    /// Connect, upgrade, close, many at once: handshakes per second.
    Handshake,
    /// One message to ten thousand subscribers: time to the last delivery.
    FanOut,
    /// permessage-deflate on and off (Estuary only): fan-out and request/response of JSON.
    Compression,
    /// Ten thousand quiet connections with permessage-deflate negotiated (Estuary only).
    IdleDeflate,
    /// Node A to node B through Redis with 1 ms added each way: deliveries per second,
    /// against one publish per round trip (needs the `redis` feature).
    CrossNode,
    /// A node in 1 of 10 busy channels: CPU per delivered message, interest routing
    /// against broadcast (needs the `redis` feature).
    Routing,
    /// WebSockets as streams of one HTTP/2 connection: opens per second against HTTP/1.1
    /// handshakes, and idle bytes per stream.
    Http2,
    /// A channel's publish rate to its members with history on against off, in-process.
    History,
    /// The same on two nodes on Redis (needs the `redis` feature).
    HistoryRedis,
}

impl Scenario {
    /// Every scenario, in the order rounds run them and the table lists them.
    pub const ALL: [Scenario; 13] = [
        Scenario::Echo,
        Scenario::PingPong,
        Scenario::RequestResponse,
        Scenario::Idle,
        Scenario::Handshake,
        Scenario::FanOut,
        Scenario::Compression,
        Scenario::IdleDeflate,
        Scenario::CrossNode,
        Scenario::Routing,
        Scenario::Http2,
        Scenario::History,
        Scenario::HistoryRedis,
    ];

    /// The scenario's name in progress messages and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "pipelined echo",
            Scenario::PingPong => "ping-pong latency",
            Scenario::RequestResponse => "request/response",
            Scenario::Idle => "idle memory",
            Scenario::Handshake => "handshakes",
            Scenario::FanOut => "fan-out",
            Scenario::Compression => "compression",
            Scenario::IdleDeflate => "idle memory, compressed",
            Scenario::CrossNode => "cross-node throughput",
            Scenario::Routing => "interest routing",
            Scenario::Http2 => "websockets over HTTP/2",
            Scenario::History => "channel history",
            Scenario::HistoryRedis => "channel history on redis",
        }
    }

    /// The metrics the scenario reports, in order.
    pub fn metrics(self) -> &'static [&'static Metric] {
        match self {
            Scenario::Echo => echo::METRICS,
            Scenario::PingPong => ping_pong::METRICS,
            Scenario::RequestResponse => request_response::METRICS,
            Scenario::Idle => idle::METRICS,
            Scenario::Handshake => handshake::METRICS,
            Scenario::FanOut => fan_out::METRICS,
            Scenario::Compression => compression::METRICS,
            Scenario::IdleDeflate => idle::DEFLATE_METRICS,
            Scenario::CrossNode => cross_node::METRICS,
            Scenario::Routing => routing::METRICS,
            Scenario::Http2 => http2::METRICS,
            Scenario::History => history::IN_PROCESS_METRICS,
            Scenario::HistoryRedis => history::REDIS_METRICS,
        }
    }

    /// Whether the scenario has something to measure on `server`: fan-out needs a server
    /// with a channel to subscribe to, WebSockets over HTTP/2 one that offers them; the
    /// cross-node scenarios start Estuary nodes of
    /// their own, built into this binary (so they show in the `estuary-bare` column), and
    /// need the `redis` feature.
    pub fn runs_on(self, server: ServerKind) -> bool {
        match self {
            Scenario::FanOut => server.fan_out_route().is_some(),
            // Compression is Estuary's alone; its example server accepts it by default.
            Scenario::Compression | Scenario::IdleDeflate => server == ServerKind::Estuary,
            Scenario::CrossNode | Scenario::Routing | Scenario::HistoryRedis => {
                server == ServerKind::EstuaryBare && cfg!(feature = "redis")
            }
            Scenario::History => server == ServerKind::EstuaryBare,
            Scenario::Http2 => matches!(server, ServerKind::Estuary | ServerKind::EstuaryBare),
            _ => true,
        }
    }

    /// Whether the scenario needs the `redis` feature, which this build lacks.
    pub fn needs_redis_feature(self) -> bool {
        matches!(
            self,
            Scenario::CrossNode | Scenario::Routing | Scenario::HistoryRedis
        ) && !cfg!(feature = "redis")
    }

    /// How many times a round runs the scenario against each server, the servers taking
    /// turns; the round's value of each metric is the median over the passes.
    pub fn passes(self, settings: &Settings) -> usize {
        match self {
            Scenario::PingPong => settings.ping_pong.passes.max(1),
            Scenario::Handshake => settings.handshake.passes.max(1),
            _ => 1,
        }
    }

    /// Whether the scenario wants a server process that has never served anything.
    pub fn wants_fresh_server(self) -> bool {
        matches!(
            self,
            Scenario::Idle | Scenario::IdleDeflate | Scenario::RequestResponse | Scenario::Http2
        )
    }

    /// Runs the scenario once against `target`, within a time limit derived from `settings`.
    pub async fn run(self, target: &Target, settings: &Settings) -> anyhow::Result<Outcome> {
        let limit = self.time_limit(settings);
        let run = async {
            match self {
                Scenario::Echo => echo::run(target, &settings.echo).await,
                Scenario::PingPong => ping_pong::run(target, &settings.ping_pong).await,
                Scenario::RequestResponse => {
                    request_response::run(target, &settings.request_response).await
                }
                Scenario::Idle => idle::run(target, &settings.idle).await,
                Scenario::Handshake => handshake::run(target, &settings.handshake).await,
                Scenario::FanOut => fan_out::run(target, &settings.fan_out).await,
                Scenario::Compression => compression::run(target, &settings.compression).await,
                Scenario::IdleDeflate => idle::run_deflate(target, &settings.idle).await,
                Scenario::CrossNode => cross_node::run(target, &settings.cross_node).await,
                Scenario::Routing => routing::run(target, &settings.routing).await,
                Scenario::Http2 => http2::run(target, &settings.http2).await,
                Scenario::History => history::run_in_process(target, &settings.history).await,
                Scenario::HistoryRedis => history::run_on_redis(target, &settings.history).await,
            }
        };
        timeout(limit, run)
            .await
            .with_context(|| format!("{} did not finish within {limit:?}", self.name()))?
    }

    /// A generous bound on one run, so that a stalled server fails instead of hanging.
    fn time_limit(self, settings: &Settings) -> Duration {
        let setup = Duration::from_secs(30);
        match self {
            Scenario::Echo => setup + settings.echo.warmup + settings.echo.window,
            Scenario::PingPong => setup + Duration::from_secs(60),
            Scenario::RequestResponse => {
                let rr = &settings.request_response;
                setup * 3 + (rr.warmup + rr.window + Duration::from_secs(10)) * 3
            }
            Scenario::Idle | Scenario::IdleDeflate => {
                setup + Duration::from_secs(90) + settings.idle.settle_limit
            }
            Scenario::Handshake => setup + Duration::from_secs(120),
            Scenario::Http2 => setup * 2 + Duration::from_secs(120),
            Scenario::FanOut => {
                let messages = settings.fan_out.warmup_messages + settings.fan_out.messages;
                setup
                    + Duration::from_secs(90)
                    + settings.fan_out.delivery_timeout * messages as u32
            }
            Scenario::Compression => {
                let fan_out = &settings.compression.fan_out;
                let messages = fan_out.warmup_messages + fan_out.messages;
                let rr = &settings.compression.request_response;
                2 * (setup + Duration::from_secs(90) + fan_out.delivery_timeout * messages as u32)
                    + 2 * (setup + rr.warmup + rr.window + Duration::from_secs(10))
            }
            Scenario::CrossNode => setup + Duration::from_secs(120),
            Scenario::Routing => {
                let routing = &settings.routing;
                setup + 2 * (routing.warmup + routing.window) + Duration::from_secs(60)
            }
            Scenario::History | Scenario::HistoryRedis => setup * 2 + Duration::from_secs(120),
        }
    }
}

/// How often opening thousands of sockets says how far it got.
const PROGRESS_EVERY: usize = 2_000;

/// Opens `count` quiet connections (see [`Connection::open_quiet`]) to `route` on
/// `target`, `concurrency` at a time, saying on stderr how far it got.
async fn open_quiet_connections(
    target: &Target,
    route: Route,
    count: usize,
    concurrency: usize,
    compression: Compression,
    scenario: &str,
) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(count);
    let mut opening = JoinSet::new();
    let mut started = 0;
    while connections.len() < count {
        while started < count && opening.len() < concurrency.max(1) {
            let addr = target.addr;
            opening.spawn(async move {
                Connection::open_quiet(addr, route.path, route.greeting, compression)
                    .await
                    .with_context(|| format!("opening socket {} of {count}", started + 1))
            });
            started += 1;
        }
        let opened = opening
            .join_next()
            .await
            .context("a socket was being opened")?
            .context("a task opening a socket panicked")??;
        connections.push(opened);
        let open = connections.len();
        if open % PROGRESS_EVERY == 0 || open == count {
            eprintln!(
                "    {scenario}: {} {open}/{count} sockets",
                target.kind.name()
            );
        }
    }
    ensure!(
        opening.is_empty(),
        "sockets still opening after {count} were open"
    );
    Ok(connections)
}
