//! Handshakes per second through the example server's whole layer stack (origin check,
//! rate limit, connection cap, Basic auth, session limits) against the same server with
//! nothing enabled in its config.
//!
//! ```text
//! cargo bench --bench handshake                 # defaults: 4000 handshakes x 7 rounds, 32 at once
//! cargo bench --bench handshake -- 2000 3 16    # handshakes per round, rounds, concurrency
//! ```
//!
//! Each server is the release build of `examples/server`, pinned to core 0 with
//! `taskset -c 0`; this load client pins itself to core 1 and runs on one thread. A
//! handshake is: connect, send the upgrade request, read the 101, send a close frame, read
//! the server's close frame and its end of stream. Rounds alternate between the two
//! servers, after one warm-up round each; the figures are medians. It prints the ratio
//! (target: at least 0.9) and writes `target/bench/handshake.json`.
//!
//! "Nothing enabled" still runs the layers the example server always has (health route,
//! path routing, the connection cap at its default, session limits with no limit set), so
//! the ratio prices what the config switches on: auth, rate limit, origin check and the
//! per-connection limits.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Every knob the config switches on, none of them limiting the benchmark itself.
const FULL_STACK: &str = r#"
max_connections = 10000
max_connection_age = "1h"
idle_timeout = "120s"
max_message_size = 1048576
allowed_origins = ["http://bench.example"]
[transmission_limit]
capacity = 50
duration = "2s"
[rate_limit]
per_second = 1000000
burst = 1000000
[auth]
mode = "basic"
users = { alice = "wonderland" }
"#;

/// Nothing the config can switch off is on.
const NOTHING_ENABLED: &str = r#"
idle_timeout = "infinity"
"#;

/// The same request for both servers; the bare one ignores the credentials and origin.
const REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://bench.example\r\nAuthorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n\r\n";

/// A masked close frame, code 1000.
const CLOSE: [u8; 8] = [0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xe8 ^ 0x22];

/// Client source addresses 127.0.0.2..=127.0.0.61 in turn, so that TIME_WAIT on one
/// address's ports never runs the client out of ports.
const SOURCES: u8 = 60;

struct Settings {
    handshakes: usize,
    rounds: usize,
    concurrency: usize,
}

fn main() -> anyhow::Result<()> {
    let settings = settings()?;
    let binary = build_example_server()?;
    let target_dir = target_dir()?;
    let configs = target_dir.join("bench");
    std::fs::create_dir_all(&configs)?;

    let full = Server::start(&binary, &configs.join("handshake-full.toml"), FULL_STACK)?;
    let bare = Server::start(
        &binary,
        &configs.join("handshake-bare.toml"),
        NOTHING_ENABLED,
    )?;
    pin_to_core(1)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    eprintln!(
        "{} handshakes per round, {} at once, {} rounds (+1 warm-up) per server",
        settings.handshakes, settings.concurrency, settings.rounds
    );
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..=settings.rounds {
        for (i, server) in [&bare, &full].into_iter().enumerate() {
            let rate = runtime.block_on(run_round(server.addr, &settings))?;
            let name = ["bare", "full"][i];
            if round == 0 {
                eprintln!("warm-up {name}: {rate:.0} handshakes/s");
            } else {
                eprintln!("round {round} {name}: {rate:.0} handshakes/s");
                rates[i].push(rate);
            }
        }
    }
    drop((full, bare));

    let bare_median = median(&mut rates[0]);
    let full_median = median(&mut rates[1]);
    let ratio = full_median / bare_median;
    println!("handshakes/s, median of {} rounds:", settings.rounds);
    println!("  nothing enabled  {bare_median:>8.0}");
    println!("  full stack       {full_median:>8.0}");
    println!(
        "  ratio            {ratio:>8.3}  (target >= 0.9: {})",
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
    let report = serde_json::json!({
        "benchmark": "handshake",
        "unit": "handshakes/s",
        "handshakes_per_round": settings.handshakes,
        "rounds": settings.rounds,
        "concurrency": settings.concurrency,
        "server_core": 0,
        "client_core": 1,
        "nothing_enabled": { "median": bare_median, "rounds": rates[0] },
        "full_stack": { "median": full_median, "rounds": rates[1] },
        "ratio": ratio,
        "target_ratio": 0.9,
    });
    let path = configs.join("handshake.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

fn settings() -> anyhow::Result<Settings> {
    // `cargo bench` passes `--bench`; numbers are ours.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .map(|arg| arg.parse().with_context(|| format!("not a number: {arg}")))
        .collect::<anyhow::Result<_>>()?;
    let get = |i: usize, default: usize| numbers.get(i).copied().unwrap_or(default).max(1);
    Ok(Settings {
        handshakes: get(0, 4000),
        rounds: get(1, 7),
        concurrency: get(2, 32),
    })
}

/// `settings.handshakes` handshakes, `settings.concurrency` at a time: handshakes per second.
async fn run_round(addr: SocketAddr, settings: &Settings) -> anyhow::Result<f64> {
    let per_task = settings.handshakes / settings.concurrency;
    let started = Instant::now();
    let tasks: Vec<_> = (0..settings.concurrency)
        .map(|task| {
            tokio::spawn(async move {
                for n in 0..per_task {
                    let source = 2 + ((task * per_task + n) % usize::from(SOURCES)) as u8;
                    handshake(Ipv4Addr::new(127, 0, 0, source).into(), addr).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((per_task * settings.concurrency) as f64 / started.elapsed().as_secs_f64())
}

/// Connect, upgrade, close.
async fn handshake(from: IpAddr, addr: SocketAddr) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    bind_address_no_port(&socket)?;
    socket.bind(SocketAddr::new(from, 0))?;
    let mut stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(REQUEST).await?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            bail!("the server closed during the handshake");
        }
        len += n;
    }
    if !buf.starts_with(b"HTTP/1.1 101") {
        bail!(
            "expected 101, got: {}",
            String::from_utf8_lossy(&buf[..len])
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    stream.write_all(&CLOSE).await?;
    // The server's close frame, then its end of stream.
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}

/// IP_BIND_ADDRESS_NO_PORT: `connect` picks the port, free as a (source, destination)
/// pair, instead of `bind` looking for a port free on its own, which gets slower with
/// every TIME_WAIT socket the earlier rounds left behind.
fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a c_int option value that outlives the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// An example server pinned to core 0, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(binary: &Path, config: &Path, toml: &str) -> anyhow::Result<Server> {
        std::fs::File::create(config)?.write_all(toml.as_bytes())?;
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(binary)
            .arg("--config")
            .arg(config)
            .args(["--bind", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,server=info")
            .stdout(Stdio::piped())
            .spawn()
            .context("start the example server under taskset (util-linux)")?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = loop {
            let Some(line) = lines.next().transpose()? else {
                bail!("the example server exited before listening");
            };
            if let Some(addr) = line.split("addr=").nth(1) {
                break addr.trim().parse()?;
            }
        };
        // Keep draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the example server in release mode: its executable.
fn build_example_server() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the example server (cargo build --release --example server)");
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--example",
            "server",
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit());
    // Set by `cargo bench` for us; ring's build script watches CARGO_MANIFEST_DIR and
    // would rebuild half the tree if it saw it change.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_MANIFEST_") {
            command.env_remove(name.as_ref());
        }
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!("cargo build --release --example server failed");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "server")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo reported no executable for the example server")
}

/// The target directory: this bench runs from `<target>/release/deps/`.
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("the bench executable is not in <target>/<profile>/deps")
}

/// Runs this process (and the threads it starts from now on) on `core` only.
fn pin_to_core(core: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only
    // read and write that local set.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        bail!(
            "cannot pin the load client to core {core}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
