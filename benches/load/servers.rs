//! The servers under test: which there are, how each is built and started, and the guard
//! that stops it.
//!
//! Every server is its own process pinned to [`cpu::SERVER_CPU`]: Estuary's example
//! server binary with `configs/full-stack.toml`, and this benchmark binary again in
//! `--serve` mode for the bare Estuary server and each baseline. Servers start once, side
//! by side, and stay up for all rounds (a scenario that measures memory gets a fresh
//! process, see [`ServerProcess::restart`]); a [`ServerProcess`] kills its process when
//! dropped, on a normal exit and on a panic alike.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::report::Report;
use crate::{baseline_axum, baseline_fastwebsockets, baseline_tungstenite, cpu, estuary_bare};

/// The route every server echoes on.
pub const ECHO_PATH: &str = "/echo";

/// The example server's config: every layer on, none of them limiting the benchmark.
const FULL_STACK_CONFIG: &str = "benches/load/configs/full-stack.toml";

/// How long a server may take from spawn to accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A server the benchmark can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum ServerKind {
    /// Estuary's example server (`examples/server`) with every layer on
    /// (`configs/full-stack.toml`): origin check, rate limit, connection cap, Basic auth,
    /// session limits, and the chat on the hub.
    Estuary,
    /// `estuary::Server` serving a bare `WebSocketService` echo: no layer at all.
    EstuaryBare,
    /// The raw fastwebsockets echo server in this benchmark.
    Fastwebsockets,
    /// The tokio-tungstenite echo server in this benchmark, with a broadcast fan-out route.
    Tungstenite,
    /// The axum `WebSocketUpgrade` echo server in this benchmark.
    Axum,
}

impl ServerKind {
    /// The name used in `--servers`, the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Estuary => "estuary",
            ServerKind::EstuaryBare => "estuary-bare",
            ServerKind::Fastwebsockets => "fastwebsockets",
            ServerKind::Tungstenite => "tungstenite",
            ServerKind::Axum => "axum",
        }
    }

    /// Where an idle connection goes. For Estuary that is the chat, joining one channel:
    /// an authenticated connection registered in the hub, as an application's would be.
    /// Everywhere else, the bare echo socket.
    pub fn idle_route(self) -> Route {
        match self {
            ServerKind::Estuary => Route {
                path: "/ws?join=idle",
                greeting: 2,
            },
            _ => Route {
                path: ECHO_PATH,
                greeting: 0,
            },
        }
    }

    /// Where a subscriber of the fan-out goes, for the servers that have a fan-out:
    /// Estuary's chat channel on the hub, and tokio-tungstenite's broadcast channel.
    pub fn fan_out_route(self) -> Option<Route> {
        match self {
            ServerKind::Estuary => Some(Route {
                path: "/ws?join=fanout",
                greeting: 2,
            }),
            ServerKind::Tungstenite => Some(Route {
                path: baseline_tungstenite::FAN_OUT_PATH,
                greeting: 1,
            }),
            _ => None,
        }
    }

    /// The server this binary runs in `--serve` mode, for all but the example server.
    fn built_in(self) -> Option<BuiltIn> {
        match self {
            ServerKind::Estuary => None,
            ServerKind::EstuaryBare => Some(BuiltIn::EstuaryBare),
            ServerKind::Fastwebsockets => Some(BuiltIn::Fastwebsockets),
            ServerKind::Tungstenite => Some(BuiltIn::Tungstenite),
            ServerKind::Axum => Some(BuiltIn::Axum),
        }
    }
}

/// A WebSocket route of a server under test.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Path and query of the upgrade request.
    pub path: &'static str,
    /// How many messages the server sends on its own right after the upgrade.
    pub greeting: u64,
}

/// A server built into this benchmark binary, run by `load --serve NAME --bind ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuiltIn {
    EstuaryBare,
    Fastwebsockets,
    Tungstenite,
    Axum,
    /// A node on a Redis backplane (`--redis URL`) or in-process, for the hub scenarios.
    EstuaryNode,
}

impl BuiltIn {
    /// Serves on `addr` until killed.
    pub fn serve(self, addr: SocketAddr) -> anyhow::Result<()> {
        match self {
            BuiltIn::EstuaryBare => estuary_bare::serve(addr),
            BuiltIn::Fastwebsockets => baseline_fastwebsockets::serve(addr),
            BuiltIn::Tungstenite => baseline_tungstenite::serve(addr),
            BuiltIn::Axum => baseline_axum::serve(addr),
            BuiltIn::EstuaryNode => crate::estuary_node::serve(addr, None, false),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BuiltIn::EstuaryBare => "estuary-bare",
            BuiltIn::Fastwebsockets => "fastwebsockets",
            BuiltIn::Tungstenite => "tungstenite",
            BuiltIn::Axum => "axum",
            BuiltIn::EstuaryNode => "estuary-node",
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
    pub kind: ServerKind,
    pub addr: SocketAddr,
    /// The server's process id, for scenarios that read its CPU or memory use.
    pub pid: u32,
}

/// How to start a server: a program and its arguments, to which `--bind ADDR` is added.
#[derive(Debug, Clone)]
struct Recipe {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(&'static str, &'static str)>,
}

impl Recipe {
    fn command(&self, addr: SocketAddr) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg("--bind")
            .arg(addr.to_string())
            .envs(self.env.iter().copied());
        command
    }
}

/// A running server process, killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    kind: ServerKind,
    addr: SocketAddr,
    child: Child,
    recipe: Recipe,
}

impl ServerProcess {
    /// Starts `recipe` on a free loopback port, pinned to the server core, and waits until
    /// it accepts connections.
    fn spawn(kind: ServerKind, recipe: Recipe) -> anyhow::Result<Self> {
        let addr = free_loopback_addr()?;
        let mut command = recipe.command(addr);
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
        let mut server = Self {
            kind,
            addr,
            child,
            recipe,
        };
        server.wait_until_listening()?;
        Ok(server)
    }

    /// Stops the process and starts a new one: a server that has never held a connection,
    /// for scenarios that measure memory (an allocator keeps what earlier scenarios freed
    /// and hands it out again, so growth on an old process would be too small).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        *self = Self::spawn(self.kind, self.recipe.clone())?;
        Ok(())
    }

    fn stop(&mut self) {
        // The process may have exited already; either way it must be reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
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
            kind: self.kind,
            addr: self.addr,
            pid: self.child.id(),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
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
        let recipe = match kind.built_in() {
            Some(built_in) => built_in_recipe(built_in)?,
            None => match build_estuary(workspace) {
                Ok(program) => Recipe {
                    program,
                    args: vec![
                        "--config".into(),
                        workspace.root.join(FULL_STACK_CONFIG).into(),
                    ],
                    // Nothing at info level per connection today; a RUST_LOG=debug left in
                    // the environment must not turn the benchmark into a logging test.
                    env: vec![("RUST_LOG", "warn")],
                },
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
        };
        let server = ServerProcess::spawn(kind, recipe)?;
        eprintln!("started {} on {}", kind.name(), server.addr);
        servers.push(server);
    }
    Ok(servers)
}

/// This benchmark binary, in `--serve` mode.
fn built_in_recipe(built_in: BuiltIn) -> anyhow::Result<Recipe> {
    Ok(Recipe {
        program: std::env::current_exe().context("locating the benchmark binary")?,
        args: vec!["--serve".into(), built_in.name().into()],
        env: Vec::new(),
    })
}

/// Builds `examples/server.rs` in release mode and returns the binary's path.
fn build_estuary(workspace: &Workspace) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the estuary example server (cargo build --release --example server)");
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "--example", "server"])
        .current_dir(&workspace.root)
        .env("CARGO_TARGET_DIR", &workspace.target_dir)
        .stdout(Stdio::null());
    // Set by `cargo bench` for this benchmark; ring's build script watches
    // CARGO_MANIFEST_DIR and would rebuild half the tree if it saw it change.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_MANIFEST_") {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
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
