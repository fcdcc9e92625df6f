//! Real `redis-server` processes on free loopback ports, for the backplane tests: one
//! server (stopped, killed and restarted at will), and a Redis Cluster of masters.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (free a moment ago).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// `rediss://` instead of `redis://`.
    tls: bool,
}

impl RedisServer {
    /// Starts redis-server on a free port (no persistence).
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts redis-server with extra arguments (`--requirepass`, ...).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            tls: false,
        };
        server.restart();
        server
    }

    /// Starts redis-server speaking only TLS, with this certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            port,
            args: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-ca-cert-file".into(),
                ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            child: None,
            tls: true,
        };
        server.restart();
        server
    }

    /// A connection of the test's own, for looking into (or tampering with) what the
    /// nodes keep.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub fn url(&self) -> String {
        match self.tls {
            true => format!("rediss://localhost:{}/", self.port),
            false => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Stops the process with SIGSTOP: it holds its sockets and answers nothing.
    pub fn pause(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    /// Resumes a paused server with SIGCONT.
    pub fn resume(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with empty data.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        if !self.tls {
            command.args(["--port", &self.port.to_string()]);
        }
        command
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.args);
        self.child = Some(spawn(command));
        wait_for_port(self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused process takes SIGKILL too.
        self.kill();
    }
}

/// A Redis Cluster of masters without replicas, each a `redis-server` on its own port with
/// its node file in a directory of the cluster's own; killed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` servers and joins them into one cluster with `redis-cli --cluster
    /// create`, then waits until every node reports the cluster ok.
    pub fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("a directory for the cluster's node files");
        let ports: Vec<u16> = (0..masters).map(|_| free_port()).collect();
        let mut cluster = RedisCluster {
            children: ports.iter().map(|_| None).collect(),
            ports,
            dir,
        };
        for node in 0..masters {
            cluster.start_node(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_ok();
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every master.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// Kills master `node` and starts it again from its node file: the same id and slots,
    /// and no data.
    pub fn restart_node(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.start_node(node);
        self.wait_until_ok();
    }

    /// Runs `redis-cli -p PORT args...` against master `node`: its output.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        cli(self.ports[node], args)
    }

    /// Which master serves the slot of `key`.
    pub fn node_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .cli(0, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        (0..self.ports.len())
            .find(|&node| {
                // The node's own slot ranges, from CLUSTER NODES ("myself").
                let nodes = self.cli(node, &["CLUSTER", "NODES"]);
                let me = nodes
                    .lines()
                    .find(|line| line.contains("myself"))
                    .expect("CLUSTER NODES lists this node");
                me.split_whitespace().skip(8).any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    match (from.parse::<u16>(), to.parse::<u16>()) {
                        (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                        _ => false,
                    }
                })
            })
            .expect("some master serves every slot")
    }

    fn start_node(&mut self, node: usize) {
        let port = self.ports[node];
        let file: PathBuf = self.dir.path().join(format!("nodes-{port}.conf"));
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .arg("--cluster-config-file")
            .arg(&file)
            .current_dir(self.dir.path());
        self.children[node] = Some(spawn(command));
        wait_for_port(port);
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in 0..self.ports.len() {
            while !self
                .cli(node, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not report ok within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `redis-cli -p port args...`: its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): scripts/test.sh installs it (apt package redis-server)")
        })
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pids fit pid_t");
    // SAFETY: kill(2) with a pid this test started and has not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {signal}");
}
