//! The scenarios: what the load client does to a server, and what it measures.
//!
//! A scenario takes a [`Target`] (a running server's address and process id) and returns
//! one [`Measurement`] per [`Metric`] it declares. Adding one (idle bytes per connection,
//! handshakes per second, fan-out to many subscribers) is a file here with its settings,
//! metrics and `run`, and a [`Scenario`] variant; the rounds, the table and the JSON pick
//! it up.

mod echo;
mod ping_pong;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use tokio::time::timeout;

use crate::metric::{Measurement, Metric};
use crate::servers::Target;
pub use echo::EchoSettings;
pub use ping_pong::PingPongSettings;

/// How long a connection may wait for any reply before the scenario fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long and how hard each scenario runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rounds: usize,
    /// Runs of one scenario against one server in a round, when the first ones shared
    /// their cores with other work.
    pub attempts: usize,
    pub echo: EchoSettings,
    pub ping_pong: PingPongSettings,
}

impl Settings {
    /// The full run, or the `quick` one; `rounds` overrides the number of rounds (3, or 1
    /// when `quick`).
    pub fn new(quick: bool, rounds: Option<usize>) -> anyhow::Result<Self> {
        let rounds = rounds.unwrap_or(if quick { 1 } else { 3 });
        ensure!(rounds > 0, "--rounds must be at least 1");
        Ok(Self {
            rounds,
            attempts: 2,
            echo: EchoSettings::new(quick),
            ping_pong: PingPongSettings::new(quick),
        })
    }

    /// A run just long enough to show that every scenario works, for the smoke test.
    pub fn smoke() -> Self {
        Self {
            rounds: 1,
            attempts: 1,
            echo: EchoSettings::smoke(),
            ping_pong: PingPongSettings::smoke(),
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

/// A way of loading a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Many connections, each with several messages in flight: messages per second.
    Echo,
    /// One connection, one message in flight: round-trip latency.
    PingPong,
}

impl Scenario {
    /// Every scenario, in the order rounds run them and the table lists them.
    pub const ALL: [Scenario; 2] = [Scenario::Echo, Scenario::PingPong];

    /// The scenario's name in progress messages and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "pipelined echo",
            Scenario::PingPong => "ping-pong latency",
        }
    }

    /// The metrics the scenario reports, in order.
    pub fn metrics(self) -> &'static [&'static Metric] {
        match self {
            Scenario::Echo => echo::METRICS,
            Scenario::PingPong => ping_pong::METRICS,
        }
    }

    /// Runs the scenario once against `target`, within a time limit derived from `settings`.
    pub async fn run(self, target: &Target, settings: &Settings) -> anyhow::Result<Outcome> {
        let limit = self.time_limit(settings);
        let run = async {
            match self {
                Scenario::Echo => echo::run(target, &settings.echo).await,
                Scenario::PingPong => ping_pong::run(target, &settings.ping_pong).await,
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
        }
    }
}
