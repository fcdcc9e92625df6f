//! The load benchmark: Estuary against raw fastwebsockets, tokio-tungstenite and axum,
//! side by side, in one run, driven by one load client.
//!
//! ```text
//! cargo bench --bench load --features redis -- [--quick] [--rounds N]
//!     [--scenarios echo,ping-pong,request-response,idle,handshake,fan-out,compression,
//!                  idle-deflate,http2,cross-node,routing,history,history-redis]
//!     [--servers estuary,estuary-bare,fastwebsockets,tungstenite,axum]
//! ```
//!
//! The scenarios: pipelined echo (messages per second), ping-pong (round-trip latency),
//! idle memory per connection at 10,000 sockets, handshakes per second, fan-out of one
//! message to 10,000 subscribers, WebSockets over HTTP/2 (opens per second on one
//! connection against HTTP/1.1 handshakes, idle bytes per stream; Estuary only), and
//! across nodes on Redis (feature `redis`; they need
//! `redis-server`): deliveries per second from one node to another with 1 ms added between
//! the nodes and Redis, and a node's CPU per delivery with interest routing against
//! broadcast; and a channel's publish rate with history on against off, in-process and
//! on Redis. `estuary` is the example server with every layer on
//! (`configs/full-stack.toml`), `estuary-bare` a bare `WebSocketService` on
//! `estuary::Server`; the rest are baselines written the way their users write them.
//!
//! Every server runs in its own process pinned to CPU 0, and this process, the load client,
//! pins itself to CPU 1, so a server is measured against a client that never competes with it
//! for a core. The machine is small and noisy, so each round runs every scenario against
//! every server (in an order rotated per round so that no server always goes first) and the
//! report quotes medians over rounds, with each server's ratio to raw fastwebsockets (or to
//! the row's own reference). Progress goes to stderr as it happens, the table to stdout, and
//! everything to `<target>/bench/load.json` and, as a chart, `<target>/bench/load.svg`.
//!
//! The same binary is the built-in servers too: `load --serve fastwebsockets --bind ADDR`
//! is what the benchmark spawns for a baseline. And, like a criterion benchmark, run without
//! the `--bench` flag that `cargo bench` passes (as `cargo test --all-targets` runs it), it
//! only smoke-tests itself in a few seconds; see [`smoke`].
//!
//! Layout: [`client`] and [`frames`] speak WebSocket on the client side, [`scenarios`] turn
//! them into measurements, [`servers`] builds, spawns and stops the servers under test,
//! [`report`] gathers samples and prints them, [`chart`] draws them. A new scenario is a
//! file in `scenarios/` and a [`scenarios::Scenario`] variant.

mod backplane;
mod baseline_axum;
mod baseline_fastwebsockets;
mod baseline_tungstenite;
mod chart;
mod client;
mod cpu;
mod estuary_bare;
mod estuary_node;
mod frames;
mod machine;
mod memory;
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

use crate::machine::Machine;
use crate::report::Report;
use crate::scenarios::{Outcome, Scenario, Settings};
use crate::servers::{BuiltIn, ServerKind, ServerProcess, Workspace};

/// How busy (0 to 1) a CPU may be before a run without the run being flagged as noisy.
const BUSY_BEFORE_RUN: f64 = 0.1;

/// The pause before running a noisy measurement again, for the other work to go away.
const RETRY_PAUSE: Duration = Duration::from_secs(3);

/// How long a server may take to go quiet after a scenario before the next one starts.
const QUIET_LIMIT: Duration = Duration::from_secs(10);

/// Command-line arguments of the load benchmark (and of its built-in-server mode).
#[derive(Debug, Parser)]
#[command(about = "Load benchmark: Estuary vs raw fastwebsockets, tokio-tungstenite and axum")]
struct Args {
    /// Servers to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "estuary,estuary-bare,fastwebsockets,tungstenite,axum"
    )]
    servers: Vec<ServerKind>,

    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "echo,ping-pong,request-response,idle,handshake,fan-out,compression,idle-deflate,http2,cross-node,routing,history,history-redis"
    )]
    scenarios: Vec<Scenario>,

    /// Message sizes of the request/response scenario, comma-separated: any of 512, 16384
    /// and 65536 (to profile one size alone, say).
    #[arg(long, value_delimiter = ',', default_value = "512,16384,65536")]
    rr_sizes: Vec<usize>,

    /// Short run: one round, short measurement windows.
    #[arg(long)]
    quick: bool,

    /// Number of rounds (default: 3, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,

    /// Run a built-in server instead of the benchmark (the benchmark spawns these).
    #[arg(long, value_enum, value_name = "SERVER", requires = "bind")]
    serve: Option<BuiltIn>,

    /// Address for --serve to listen on.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,

    /// The Redis of `--serve estuary-node` (without it, an in-process hub).
    #[arg(long, value_name = "URL", requires = "serve")]
    redis: Option<String>,

    /// `--serve estuary-node` with broadcast routing instead of interest routing.
    #[arg(long, requires = "serve")]
    broadcast: bool,

    /// Passed by `cargo bench`: run the benchmark. Without it (under `cargo test`), only
    /// smoke-test the client and the built-in servers.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any server starts: they inherit it.
    let open_files = machine::raise_open_files_limit()?;
    if let Some(built_in) = args.serve {
        let bind = args.bind.context("--serve needs --bind ADDR")?;
        if built_in == BuiltIn::EstuaryNode {
            return estuary_node::serve(bind, args.redis.as_deref(), args.broadcast);
        }
        return built_in.serve(bind);
    }
    if !args.bench {
        return smoke::run(&Workspace::discover());
    }
    run_benchmark(&args, open_files)
}

/// Starts the servers, pins the client, runs every round and reports.
fn run_benchmark(args: &Args, open_files: u64) -> anyhow::Result<()> {
    let scenarios = dedup(&args.scenarios);
    // A server no chosen scenario runs on is not started, nor shown.
    let kinds: Vec<ServerKind> = dedup(&args.servers)
        .into_iter()
        .filter(|&kind| scenarios.iter().any(|scenario| scenario.runs_on(kind)))
        .collect();
    if kinds.is_empty() {
        bail!("no server left to measure: --servers and --scenarios have nothing in common");
    }
    let settings = Settings::new(args.quick, args.rounds, &args.rr_sizes)?;
    let unbuilt: Vec<&str> = scenarios
        .iter()
        .filter(|scenario| scenario.needs_redis_feature())
        .map(|scenario| scenario.name())
        .collect();
    if !unbuilt.is_empty() {
        eprintln!(
            "!! left out: {} (they need the redis feature: \
             cargo bench --bench load --features redis)",
            unbuilt.join(", ")
        );
    }
    check_open_files(&settings, &scenarios, open_files)?;
    let workspace = Workspace::discover();
    let machine = Machine::describe();
    eprintln!("machine: {}", machine.line());
    let mut report = Report::new(&settings, &kinds, &scenarios, machine);

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
    runtime.block_on(run_rounds(&mut servers, &scenarios, &settings, &mut report));
    drop(servers);

    println!("{}", report.table());
    let dir = workspace.target_dir.join("bench");
    let json = serde_json::to_string_pretty(&report.json()).context("serializing the results")?;
    write(&dir.join("load.json"), json + "\n")?;
    write(&dir.join("load.svg"), chart::svg(&report))?;
    Ok(())
}

/// `items` without repeats, in first-seen order.
fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut unique = Vec::with_capacity(items.len());
    for &item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}

/// Fails early when the open-files limit cannot hold the most sockets a scenario opens.
fn check_open_files(
    settings: &Settings,
    scenarios: &[Scenario],
    open_files: u64,
) -> anyhow::Result<()> {
    let mut most = 0;
    if scenarios.contains(&Scenario::Idle) {
        most = most.max(settings.idle.sockets + settings.idle.warmup_sockets);
    }
    if scenarios.contains(&Scenario::FanOut) {
        most = most.max(settings.fan_out.subscribers + 1);
    }
    // The client's own files, and the few sockets of the servers' startup probes.
    let needed = most as u64 + 100;
    if open_files < needed {
        bail!(
            "the open-files limit is {open_files}, and the scenarios need {needed} sockets \
             open at once: raise the hard limit (ulimit -Hn) or leave out idle and fan-out"
        );
    }
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

/// Runs every scenario against every live server it runs on, `settings.rounds` times.
/// A scenario with several passes per round runs them with the servers taking turns.
///
/// A failure is recorded and reported, not fatal: one broken server must not cost the
/// numbers of the others.
pub(crate) async fn run_rounds(
    servers: &mut [ServerProcess],
    scenarios: &[Scenario],
    settings: &Settings,
    report: &mut Report,
) {
    let count = servers.len();
    for round in 0..settings.rounds {
        for &scenario in scenarios {
            let order: Vec<usize> = (0..count)
                .map(|turn| (turn + round) % count)
                .filter(|&index| scenario.runs_on(servers[index].kind()))
                .collect();
            let passes = scenario.passes(settings);
            // Each server's passes so far, or why one of them failed.
            let mut results: Vec<anyhow::Result<Vec<Outcome>>> =
                order.iter().map(|_| Ok(Vec::new())).collect();
            for pass in 0..passes {
                for (result, &index) in results.iter_mut().zip(&order) {
                    let Ok(outcomes) = result else { continue };
                    let server = &mut servers[index];
                    let of_passes = if passes > 1 {
                        format!(", pass {}/{passes}", pass + 1)
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "[round {}/{}{of_passes}] {} · {}",
                        round + 1,
                        settings.rounds,
                        scenario.name(),
                        server.kind().name()
                    );
                    match measure(server, scenario, settings).await {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(error) => *result = Err(error),
                    }
                }
            }
            for (result, &index) in results.into_iter().zip(&order) {
                let outcome = result.map(Outcome::median_of);
                if passes > 1 {
                    if let Ok(outcome) = &outcome {
                        eprintln!(
                            "  {} · {}, median of {passes} passes:",
                            scenario.name(),
                            servers[index].kind().name()
                        );
                        print_measurements(outcome);
                    }
                }
                record(report, round, scenario, servers[index].kind(), outcome);
            }
        }
    }
}

/// Runs `scenario` against `server` once and prints what it found. A run that shared its
/// cores with other work is run again after a pause, up to [`ATTEMPTS`] runs in all.
async fn measure(
    server: &mut ServerProcess,
    scenario: Scenario,
    settings: &Settings,
) -> anyhow::Result<Outcome> {
    let mut attempt = 1;
    loop {
        wait_for_quiet_cores(settings).await;
        let outcome = match prepare(server, scenario) {
            Ok(()) => scenario.run(&server.target(), settings).await,
            Err(error) => Err(error),
        };
        // Whatever the scenario left the server to tear down must not land on the next
        // measurement.
        if let Err(error) = cpu::wait_until_quiet(server.target().pid, QUIET_LIMIT).await {
            eprintln!("    !! could not tell whether the server went quiet: {error:#}");
        }
        match &outcome {
            Ok(found) if !found.warnings.is_empty() && attempt < settings.attempts => {
                for warning in &found.warnings {
                    eprintln!("    !! {warning}; measuring again in {RETRY_PAUSE:?}");
                }
                attempt += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(found) => {
                print_measurements(found);
                return outcome;
            }
            Err(_) => return outcome,
        }
    }
}

fn print_measurements(outcome: &Outcome) {
    for measurement in &outcome.measurements {
        eprintln!(
            "    {}: {}",
            measurement.metric.label,
            measurement.metric.format(measurement.value)
        );
    }
    for warning in &outcome.warnings {
        eprintln!("    !! {warning}");
    }
}

/// Records one round's outcome of `scenario` on `server`.
fn record(
    report: &mut Report,
    round: usize,
    scenario: Scenario,
    server: ServerKind,
    outcome: anyhow::Result<Outcome>,
) {
    match outcome {
        Ok(outcome) => {
            let noisy = !outcome.warnings.is_empty();
            for measurement in outcome.measurements {
                report.record(round, server, measurement, noisy);
            }
            for warning in outcome.warnings {
                report.record_warning(round, scenario, server, warning);
            }
        }
        Err(error) => {
            eprintln!(
                "!! {} failed on {}: {error:#}",
                scenario.name(),
                server.name()
            );
            report.record_failure(round, scenario, server, &error);
        }
    }
}

/// Waits up to `settings.quiet_wait` for other work to leave the cores, saying so when it
/// has to wait, and loudly when it gave up.
async fn wait_for_quiet_cores(settings: &Settings) {
    if settings.quiet_wait.is_zero() {
        return;
    }
    let started = std::time::Instant::now();
    match cpu::wait_for_quiet_cores(BUSY_BEFORE_RUN, settings.quiet_wait).await {
        Ok(busy) => {
            let waited = started.elapsed();
            let percents: Vec<String> = busy
                .iter()
                .enumerate()
                .map(|(cpu, fraction)| format!("CPU {cpu} {:.0}%", fraction * 100.0))
                .collect();
            if busy.iter().any(|&fraction| fraction >= BUSY_BEFORE_RUN) {
                eprintln!(
                    "    !! other work still busy after {waited:.0?} ({}); measuring anyway",
                    percents.join(", ")
                );
            } else if waited > Duration::from_secs(2) {
                eprintln!("    waited {waited:.0?} for other work to leave the cores");
            }
        }
        Err(error) => eprintln!("    !! could not tell how busy the cores are: {error:#}"),
    }
}

/// Restarts `server` when `scenario` wants a fresh one, or when it has exited: then the
/// run fails, saying how the server ended, and the next run has a server again.
fn prepare(server: &mut ServerProcess, scenario: Scenario) -> anyhow::Result<()> {
    if let Err(exited) = server.check_alive() {
        eprintln!("    !! {exited:#}; starting it again for the next run");
        server
            .restart()
            .with_context(|| format!("starting {} again", server.kind().name()))?;
        return Err(exited);
    }
    if scenario.wants_fresh_server() {
        server.restart().with_context(|| {
            format!(
                "restarting {} for {}",
                server.kind().name(),
                scenario.name()
            )
        })?;
    }
    Ok(())
}

/// Writes `contents` to `path`, creating its directory, and says where.
fn write(path: &Path, contents: String) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .context("an output path has a parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("results written to {}", path.display());
    Ok(())
}
