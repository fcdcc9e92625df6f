//! The example server binary (`examples/server/`), run as a user runs it: built once per
//! test binary with `cargo build --example server`, started with a temporary config file.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::STEP;

/// The example server's executable, built on first use.
///
/// Cargo builds examples for `cargo test` but not for `cargo test --test NAME`, and an
/// executable left over from an earlier build may be stale, so this asks cargo itself:
/// a no-op when the example is fresh. It asks for the features this test was built with,
/// so that `cargo test --all-features` finds the example already built.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--example", "server", "--message-format=json"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit());
        // `cargo test` sets these for the test; build scripts that watch them (ring
        // watches CARGO_MANIFEST_DIR) would see a change and rebuild half the tree.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&name.as_ref())
            {
                cargo.env_remove(name.as_ref());
            }
        }
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let features = [
            ("client", cfg!(feature = "client")),
            ("tls", cfg!(feature = "tls")),
            ("redis", cfg!(feature = "redis")),
            ("metrics", cfg!(feature = "metrics")),
        ];
        let on: Vec<&str> = features
            .iter()
            .filter_map(|&(name, on)| on.then_some(name))
            .collect();
        if !on.is_empty() {
            cargo.arg("--features").arg(on.join(","));
        }
        let output = cargo.output().expect("run cargo build --example server");
        assert!(
            output.status.success(),
            "cargo build --example server failed"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["target"]["name"] == "server")
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the example server's executable")
    })
}

/// A config file that lives as long as the value.
pub fn config_file(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a temporary config file");
    file.write_all(toml.as_bytes()).expect("write the config");
    file
}

/// A running example server, killed when dropped.
pub struct ExampleServer {
    child: Child,
    /// The address it logged as listening on.
    pub addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    /// Reads stdout into `stdout` until the server exits.
    reader: Option<std::thread::JoinHandle<()>>,
    _config: Option<tempfile::NamedTempFile>,
}

impl ExampleServer {
    /// Starts the server with `toml` as its config file and `args` after it, and waits for
    /// its "listening" log line.
    pub fn start(toml: &str, args: &[&str]) -> ExampleServer {
        Self::try_start(Some(toml), args).unwrap_or_else(|(status, stderr)| {
            panic!("the example server exited with {status}:\n{stderr}")
        })
    }

    /// Like [`ExampleServer::start`], with no config file at all.
    pub fn start_with_defaults(args: &[&str]) -> ExampleServer {
        Self::try_start(None, args).unwrap_or_else(|(status, stderr)| {
            panic!("the example server exited with {status}:\n{stderr}")
        })
    }

    /// Like [`ExampleServer::start`], or the exit status and stderr of a server that
    /// stopped instead of listening.
    pub fn try_start(
        toml: Option<&str>,
        args: &[&str],
    ) -> Result<ExampleServer, (ExitStatus, String)> {
        Self::try_start_logging(toml, args, None)
    }

    /// Like [`ExampleServer::start`], with `RUST_LOG` set to `filter` ("trace", say).
    pub fn start_logging(toml: &str, args: &[&str], filter: &str) -> ExampleServer {
        Self::try_start_logging(Some(toml), args, Some(filter)).unwrap_or_else(
            |(status, stderr)| panic!("the example server exited with {status}:\n{stderr}"),
        )
    }

    fn try_start_logging(
        toml: Option<&str>,
        args: &[&str],
        rust_log: Option<&str>,
    ) -> Result<ExampleServer, (ExitStatus, String)> {
        let config = toml.map(config_file);
        let mut command = Command::new(binary());
        if let Some(config) = &config {
            command.arg("--config").arg(config.path());
        }
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example server");
        let stdout = Arc::new(Mutex::new(String::new()));
        let (listening, addr) = mpsc::channel();
        let reader = BufReader::new(child.stdout.take().expect("piped stdout"));
        let log = stdout.clone();
        // Reads every line, so that the server never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    if line.contains("listening") {
                        let _ = listening.send(addr.trim().parse::<SocketAddr>());
                    }
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(addr) = addr.recv_timeout(Duration::from_millis(20)) {
                let addr = addr.expect("a socket address in the listening line");
                return Ok(ExampleServer {
                    child,
                    addr,
                    stdout,
                    reader: Some(reader),
                    _config: config,
                });
            }
            if let Some(status) = child.try_wait().expect("poll the example server") {
                let mut stderr = String::new();
                let _ = std::io::Read::read_to_string(
                    child.stderr.as_mut().expect("piped stderr"),
                    &mut stderr,
                );
                return Err((status, stderr));
            }
            assert!(
                Instant::now() < deadline,
                "the example server did not listen within {STEP:?}"
            );
        }
    }

    /// `ws://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The server's process id (for its memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends SIGTERM, waits for the process to exit, and returns everything it logged:
    /// unlike [`ExampleServer::logs`], no line can still be on its way.
    pub fn terminate_with_logs(mut self) -> (ExitStatus, String) {
        let status = self.stop();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader never panics");
        }
        (status, self.logs())
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.stop()
    }

    fn stop(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit pid_t");
        // SAFETY: kill(2) with a pid this test started and has not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the example server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {STEP:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the server with `toml`, expecting it to refuse to start: its stderr.
pub fn startup_error(toml: &str) -> String {
    match ExampleServer::try_start(Some(toml), &["--bind", "127.0.0.1:0"]) {
        Ok(server) => panic!(
            "the example server started on {} with this config:\n{toml}",
            server.addr
        ),
        Err((status, stderr)) => {
            assert_eq!(status.code(), Some(1), "exit status; stderr: {stderr}");
            stderr
        }
    }
}
