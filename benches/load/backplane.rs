//! What the cross-node scenarios start: a `redis-server`, a proxy that delays every byte
//! between the nodes and Redis, and Estuary nodes on it (this binary in
//! `--serve estuary-node` mode, see [`crate::estuary_node`]). Each is killed when dropped.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::cpu;

/// How long a process may take to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` on a free loopback port, without persistence.
#[derive(Debug)]
pub struct RedisProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl RedisProcess {
    pub fn start() -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = command.spawn().context(
            "starting redis-server: the cross-node scenarios need it \
             (apt package redis-server; scripts/test.sh installs it)",
        )?;
        let mut redis = Self { addr, child };
        wait_until_listening("redis-server", addr, &mut redis.child)?;
        Ok(redis)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of `upstream` that holds every chunk of bytes, in each direction,
/// for `delay` before passing it on: a network between the nodes and Redis. It delays
/// without serializing, so a pipeline of many commands crosses in one delay, as on a real
/// network. It runs on a thread and runtime of its own, so that the load client's work
/// does not add to the delay.
#[derive(Debug)]
pub struct DelayProxy {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl DelayProxy {
    pub fn start(upstream: SocketAddr, delay: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the delay proxy")?;
        listener
            .set_nonblocking(true)
            .context("making the delay proxy's listener non-blocking")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("delay-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the delay proxy");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("the proxy's listener on the runtime");
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, upstream, delay) => {}
                    }
                });
            })
            .context("starting the delay proxy's thread")?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, upstream: SocketAddr, delay: Duration) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                delayed(client_read, server_write, delay),
                delayed(server_read, client_write, delay),
            );
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at = tokio::time::Instant::now() + delay;
                    if chunks.send((at, buffer[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// An Estuary node (`load --serve estuary-node`) on the Redis at `redis_url` (or
/// in-process), pinned to `cpu`.
#[derive(Debug)]
pub struct NodeProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl NodeProcess {
    pub fn start(redis_url: &str, broadcast: bool, cpu_index: usize) -> anyhow::Result<Self> {
        Self::spawn(Some(redis_url), broadcast, cpu_index)
    }

    /// A node with an in-process hub, pinned to `cpu`.
    pub fn in_process(cpu_index: usize) -> anyhow::Result<Self> {
        Self::spawn(None, false, cpu_index)
    }

    fn spawn(redis_url: Option<&str>, broadcast: bool, cpu_index: usize) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let mut command = Command::new(std::env::current_exe().context("locating this binary")?);
        command.args(["--serve", "estuary-node", "--bind", &addr.to_string()]);
        if let Some(url) = redis_url {
            command.args(["--redis", url]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Nothing at info level per message; a RUST_LOG=debug must not turn the
            // measurement into a logging test.
            .env("RUST_LOG", "warn");
        if broadcast {
            command.arg("--broadcast");
        }
        cpu::pin_child(&mut command, cpu_index);
        let child = command.spawn().context("spawning an estuary node")?;
        let mut node = Self { addr, child };
        wait_until_listening("estuary node", addr, &mut node.child)?;
        Ok(node)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `count` messages through `redis` one at a time, each after the previous
/// one's reply: what a publisher that waits for every round trip manages. Publishes per
/// second.
pub fn serial_publishes_per_s(
    redis: SocketAddr,
    count: usize,
    payload_len: usize,
) -> anyhow::Result<f64> {
    let mut stream =
        TcpStream::connect(redis).context("connecting to redis for serial publishes")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let payload = "p".repeat(payload_len);
    let channel = "estuary-bench:serial";
    let command = format!(
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
        channel.len(),
        payload.len()
    );
    let mut reply = [0u8; 64];
    let started = Instant::now();
    for _ in 0..count {
        io::Write::write_all(&mut stream, command.as_bytes())?;
        // ":0\r\n": no subscriber. Read until the line ends.
        let mut got = 0;
        while !reply[..got].ends_with(b"\r\n") {
            let n = io::Read::read(&mut stream, &mut reply[got..])?;
            ensure!(n > 0, "redis closed the connection");
            got += n;
            ensure!(got < reply.len(), "an unexpected reply to PUBLISH");
        }
        ensure!(
            reply[0] == b':',
            "PUBLISH failed: {:?}",
            String::from_utf8_lossy(&reply[..got])
        );
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}

fn wait_until_listening(what: &str, addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before listening on {addr}: {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            bail!("{what} did not listen on {addr} within {STARTUP_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}
