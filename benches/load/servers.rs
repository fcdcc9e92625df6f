//! The servers under test: which there are, how each is built and started, and the guard
//! that stops it.
//!
//! Every server is its own process pinned to [`cpu::SERVER_CPU`]: Estuary's example
//! server binary, and this benchmark binary again in `--serve` mode for each baseline.
//! Servers start once, side by side, and stay up for all rounds; a [`ServerProcess`] kills
//! its process when dropped, on a normal exit and on a panic alike.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::report::Report;
use crate::{baseline_fastwebsockets, baseline_tungstenite, cpu};

/// The route every server echoes on.
pub const ECHO_PATH: &str = "/echo";

/// How long a server may take from spawn to accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A server the benchmark can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum ServerKind {
    /// Estuary's example server (`examples/server.rs`).
    Estuary,
    /// The raw fastwebsockets echo server in this benchmark.
    Fastwebsockets,
    /// The tokio-tungstenite echo server in this benchmark.
    Tungstenite,
}

impl ServerKind {
    /// The name used in `--servers`, the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Estuary => "estuary",
            ServerKind::Fastwebsockets => "fastwebsockets",
            ServerKind::Tungstenite => "tungstenite",
        }
    }
}

/// A baseline echo server, run by `load --serve NAME --bind ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    Fastwebsockets,
    Tungstenite,
}

impl Baseline {
    /// Serves echo on `addr` until killed.
    pub fn serve(self, addr: SocketAddr) -> anyhow::Result<()> {
        match self {
            Baseline::Fastwebsockets => baseline_fastwebsockets::serve(addr),
            Baseline::Tungstenite => baseline_tungstenite::serve(addr),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Baseline::Fastwebsockets => "fastwebsockets",
            Baseline::Tungstenite => "tungstenite",
        }
    }
}

/// Where the workspace and its build output are.
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    /// `CARGO_TARGET_DIR` when set, else `<root>/target`.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// The workspace this benchmark was built from.
    pub fn discover() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Self { root, target_dir }
    }
}

/// What a scenario needs to know about a running server.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    /// The server's process id, for scenarios that read its CPU or memory use.
    pub pid: u32,
}

/// A running server process, killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    kind: ServerKind,
    addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Spawns `command` (which must listen on `addr`), pinned to the server core, and waits
    /// until it accepts connections.
    fn spawn(kind: ServerKind, mut command: Command, addr: SocketAddr) -> anyhow::Result<Self> {
        // A server's stdout would interleave with the table; its output goes to stderr.
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr for a server's output")?;
        command.stdin(Stdio::null()).stdout(Stdio::from(stderr));
        cpu::pin_child(&mut command, cpu::SERVER_CPU);
        let child = command
            .spawn()
            .with_context(|| format!("spawning the {} server: {command:?}", kind.name()))?;
        let mut server = Self { kind, addr, child };
        server.wait_until_listening()?;
        Ok(server)
    }

    fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "the {} server did not listen on {} within {STARTUP_TIMEOUT:?}",
                    self.kind.name(),
                    self.addr
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("checking on the {} server", self.kind.name()))?;
        match status {
            Some(status) => bail!("the {} server exited: {status}", self.kind.name()),
            None => Ok(()),
        }
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            path: ECHO_PATH,
            pid: self.child.id(),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The process may have exited already; either way it must be reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds what needs building and starts every server in `kinds`.
///
/// Estuary's example server is skipped, loudly and in the report, when it does not build;
/// any other failure to start a server is an error.
pub fn start(
    kinds: &[ServerKind],
    workspace: &Workspace,
    report: &mut Report,
) -> anyhow::Result<Vec<ServerProcess>> {
    let mut servers = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let addr = free_loopback_addr()?;
        let command = match kind {
            ServerKind::Estuary => match build_estuary(workspace) {
                Ok(program) => {
                    let mut command = Command::new(program);
                    command.arg("--bind").arg(addr.to_string());
                    command
                }
                Err(error) => {
                    eprintln!();
                    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                    eprintln!("!! SKIPPING estuary: the example server does not build:");
                    eprintln!("!!   {error:#}");
                    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                    eprintln!();
                    report.record_skipped(kind, &error);
                    continue;
                }
            },
            ServerKind::Fastwebsockets => baseline_command(Baseline::Fastwebsockets, addr)?,
            ServerKind::Tungstenite => baseline_command(Baseline::Tungstenite, addr)?,
        };
        eprintln!("starting {} on {addr}", kind.name());
        servers.push(ServerProcess::spawn(kind, command, addr)?);
    }
    Ok(servers)
}

/// This benchmark binary, in `--serve` mode.
fn baseline_command(baseline: Baseline, addr: SocketAddr) -> anyhow::Result<Command> {
    let program = std::env::current_exe().context("locating the benchmark binary")?;
    let mut command = Command::new(program);
    command
        .arg("--serve")
        .arg(baseline.name())
        .arg("--bind")
        .arg(addr.to_string());
    Ok(command)
}

/// Builds `examples/server.rs` in release mode and returns the binary's path.
fn build_estuary(workspace: &Workspace) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the estuary example server (cargo build --release --example server)");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--example", "server"])
        .current_dir(&workspace.root)
        .env("CARGO_TARGET_DIR", &workspace.target_dir)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("cargo build --release --example server: {status}");
    }
    let program = workspace
        .target_dir
        .join("release")
        .join("examples")
        .join("server");
    if !program.is_file() {
        bail!("the build succeeded but {} is missing", program.display());
    }
    Ok(program)
}

/// A loopback address with a port that was free a moment ago.
///
/// Another process could take the port before the server binds it; on a benchmark machine
/// that is rare, and the server then fails loudly at startup.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    listener
        .local_addr()
        .context("reading the free port's address")
}
