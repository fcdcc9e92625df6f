//! The load benchmark: Estuary's example server against raw fastwebsockets and
//! tokio-tungstenite echo servers, side by side, in one run, driven by one load client.
//!
//! ```text
//! cargo bench --bench load -- [--servers estuary,fastwebsockets,tungstenite] [--quick] [--rounds N]
//! ```
//!
//! Every server runs in its own process pinned to CPU 0, and this process, the load client,
//! pins itself to CPU 1, so a server is measured against a client that never competes with it
//! for a core. The machine is small and noisy, so each round runs every scenario against
//! every server (in an order rotated per round so that no server always goes first) and the
//! report quotes medians over rounds, with each server's ratio to raw fastwebsockets. Progress
//! goes to stderr as it happens, the table to stdout, and everything to
//! `<target>/bench/load.json`.
//!
//! The same binary is the baseline servers too: `load --serve fastwebsockets --bind ADDR`
//! is what the benchmark spawns for a baseline. And, like a criterion benchmark, run without
//! the `--bench` flag that `cargo bench` passes (as `cargo test --all-targets` runs it), it
//! only smoke-tests itself in a few seconds; see [`smoke`].
//!
//! Layout: [`client`] speaks WebSocket on the client side, [`scenarios`] turns it into
//! measurements, [`servers`] builds, spawns and stops the servers under test, [`report`]
//! gathers samples and prints them. A new scenario is a new [`scenarios::Scenario`] variant.

mod baseline_fastwebsockets;
mod baseline_tungstenite;
mod client;
mod cpu;
mod metric;
mod report;
mod scenarios;
mod servers;
mod smoke;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;

use crate::report::Report;
use crate::scenarios::{Scenario, Settings};
use crate::servers::{Baseline, ServerKind, ServerProcess, Workspace};

/// How busy (0 to 1) a CPU may be before a run without the run being flagged as noisy.
const BUSY_BEFORE_RUN: f64 = 0.1;

/// The pause before running a noisy measurement again, for the other work to go away.
const RETRY_PAUSE: Duration = Duration::from_secs(3);

/// Command-line arguments of the load benchmark (and of its baseline-server mode).
#[derive(Debug, Parser)]
#[command(
    about = "Load benchmark: Estuary vs raw fastwebsockets vs tokio-tungstenite echo servers"
)]
struct Args {
    /// Servers to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "estuary,fastwebsockets,tungstenite"
    )]
    servers: Vec<ServerKind>,

    /// Short run: one round, short measurement windows.
    #[arg(long)]
    quick: bool,

    /// Number of rounds (default: 3, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,

    /// Run a baseline echo server instead of the benchmark (the benchmark spawns these).
    #[arg(long, value_enum, value_name = "BASELINE", requires = "bind")]
    serve: Option<Baseline>,

    /// Address for --serve to listen on.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,

    /// Passed by `cargo bench`: run the benchmark. Without it (under `cargo test`), only
    /// smoke-test the client and the baselines.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(baseline) = args.serve {
        let bind = args.bind.context("--serve needs --bind ADDR")?;
        return baseline.serve(bind);
    }
    if !args.bench {
        return smoke::run(&Workspace::discover());
    }
    run_benchmark(&args)
}

/// Starts the servers, pins the client, runs every round and reports.
fn run_benchmark(args: &Args) -> anyhow::Result<()> {
    let mut kinds: Vec<ServerKind> = Vec::new();
    for kind in &args.servers {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    if kinds.is_empty() {
        bail!("--servers names no server");
    }
    let settings = Settings::new(args.quick, args.rounds)?;
    let workspace = Workspace::discover();
    let mut report = Report::new(&settings, &kinds);

    // Servers start before the client pins itself: building the example server wants both
    // cores, and a server that is skipped must be known before the rounds begin.
    let mut servers = servers::start(&kinds, &workspace, &mut report)?;
    if servers.is_empty() {
        bail!("no server left to measure (see the messages above)");
    }
    note_busy_cores(&mut report);
    if let Err(error) = cpu::pin_current_thread(cpu::CLIENT_CPU) {
        eprintln!(
            "!! could not pin the load client to CPU {}: {error}; results will be noisier",
            cpu::CLIENT_CPU
        );
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the load client's tokio runtime")?;
    runtime.block_on(run_rounds(&mut servers, &settings, &mut report));
    drop(servers);

    println!("{}", report.table());
    let json_path = workspace.target_dir.join("bench").join("load.json");
    write_json(&json_path, &report)?;
    eprintln!("results written to {}", json_path.display());
    Ok(())
}

/// Measures, for a second, how busy the cores are before the rounds begin, and says so
/// loudly when something else is running: figures taken then are noise.
fn note_busy_cores(report: &mut Report) {
    let busy = cpu::CoreTicks::now().and_then(|before| {
        std::thread::sleep(Duration::from_secs(1));
        Ok(cpu::CoreTicks::now()?.busy_since(&before))
    });
    let busy = match busy {
        Ok(busy) => busy,
        Err(error) => {
            eprintln!("!! could not tell how busy the cores are: {error:#}");
            return;
        }
    };
    let percents: Vec<String> = busy
        .iter()
        .enumerate()
        .map(|(cpu, fraction)| format!("CPU {cpu} {:.0}%", fraction * 100.0))
        .collect();
    if busy.iter().any(|&fraction| fraction > BUSY_BEFORE_RUN) {
        eprintln!(
            "!! busy before the run: {}: other processes compete for the cores; \
             expect noisy figures",
            percents.join(", ")
        );
    } else {
        eprintln!("busy before the run: {}", percents.join(", "));
    }
    report.record_busy_before_run(busy);
}

/// Runs every scenario against every live server, `settings.rounds` times.
///
/// A failure is recorded and reported, not fatal: one broken server must not cost the
/// numbers of the others.
pub(crate) async fn run_rounds(
    servers: &mut [ServerProcess],
    settings: &Settings,
    report: &mut Report,
) {
    let count = servers.len();
    for round in 0..settings.rounds {
        for scenario in Scenario::ALL {
            for turn in 0..count {
                let server = &mut servers[(turn + round) % count];
                eprintln!(
                    "[round {}/{}] {} · {}",
                    round + 1,
                    settings.rounds,
                    scenario.name(),
                    server.kind().name()
                );
                measure(server, scenario, settings, round, report).await;
            }
        }
    }
}

/// Runs `scenario` against `server` once and records what it found. A run that shared its
/// cores with other work is run again after a pause, up to [`ATTEMPTS`] runs in all.
async fn measure(
    server: &mut ServerProcess,
    scenario: Scenario,
    settings: &Settings,
    round: usize,
    report: &mut Report,
) {
    let mut attempt = 1;
    let outcome = loop {
        let outcome = match server.check_alive() {
            Ok(()) => scenario.run(&server.target(), settings).await,
            Err(error) => Err(error),
        };
        match &outcome {
            Ok(found) if !found.warnings.is_empty() && attempt < settings.attempts => {
                for warning in &found.warnings {
                    eprintln!("    !! {warning}; measuring again in {RETRY_PAUSE:?}");
                }
                attempt += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            _ => break outcome,
        }
    };
    match outcome {
        Ok(outcome) => {
            let noisy = !outcome.warnings.is_empty();
            for measurement in outcome.measurements {
                eprintln!(
                    "    {}: {}",
                    measurement.metric.label,
                    measurement.metric.format(measurement.value)
                );
                report.record(server.kind(), measurement, noisy);
            }
            for warning in outcome.warnings {
                eprintln!("    !! {warning}");
                report.record_warning(round, scenario, server.kind(), warning);
            }
        }
        Err(error) => {
            eprintln!(
                "!! {} failed on {}: {error:#}",
                scenario.name(),
                server.kind().name()
            );
            report.record_failure(round, scenario, server.kind(), &error);
        }
    }
}

fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .context("the JSON path has a parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&report.json()).context("serializing the results")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
