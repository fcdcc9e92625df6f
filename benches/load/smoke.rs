//! What `cargo test` runs of this target: the client's frame checks, then every scenario,
//! briefly, against the servers built into this binary (Estuary's example server is left
//! out: building it in release mode is a benchmark's job, not a test's).
//!
//! A `harness = false` target is run by `cargo test --all-targets` as a plain program
//! without the `--bench` flag; this is what keeps that from starting a full benchmark.

use anyhow::{bail, Context as _};

use crate::machine::Machine;
use crate::report::Report;
use crate::scenarios::{Scenario, Settings};
use crate::servers::{self, ServerKind, Workspace};
use crate::{cpu, frames};

/// Runs the checks and the short scenarios; fails if any of them does.
pub fn run(workspace: &Workspace) -> anyhow::Result<()> {
    let mut passed = 0;
    let mut failed = 0;
    for (name, check) in frames::checks::ALL {
        match check() {
            Ok(()) => {
                eprintln!("check {name} ... ok");
                passed += 1;
            }
            Err(error) => {
                eprintln!("check {name} ... FAILED: {error:#}");
                failed += 1;
            }
        }
    }

    let settings = Settings::smoke();
    let kinds = [
        ServerKind::EstuaryBare,
        ServerKind::Fastwebsockets,
        ServerKind::Tungstenite,
        ServerKind::Axum,
    ];
    let scenarios = Scenario::ALL;
    let mut report = Report::new(&settings, &kinds, &scenarios, Machine::describe());
    let mut servers = servers::start(&kinds, workspace, &mut report)?;
    // Pinned like the benchmark, so that the scenarios' CPU accounting means the same.
    if let Err(error) = cpu::pin_current_thread(cpu::CLIENT_CPU) {
        eprintln!(
            "could not pin the load client to CPU {}: {error}",
            cpu::CLIENT_CPU
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the load client's tokio runtime")?;
    runtime.block_on(crate::run_rounds(
        &mut servers,
        &scenarios,
        &settings,
        &mut report,
    ));
    drop(servers);
    eprintln!("{}", report.table());

    let runs = scenarios
        .iter()
        .map(|scenario| kinds.iter().filter(|&&kind| scenario.runs_on(kind)).count())
        .sum::<usize>()
        * settings.rounds;
    failed += report.failure_count();
    passed += runs - report.failure_count();
    println!("load benchmark smoke test: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} smoke check(s) failed");
    }
    Ok(())
}
