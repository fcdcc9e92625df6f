//! Handshakes per second: connect, upgrade, close, with many clients at once.
//!
//! A handshake is: connect, send the upgrade request (with Basic credentials and an
//! allowed Origin, so that Estuary's full stack does all its work), read the 101, send a
//! Close frame, read the server's Close and its end of stream. `concurrency` clients do
//! handshakes back to back; after a warm-up batch, each batch's rate is measured and the
//! median batch counts, so that a moment of noise costs one batch, not the run. A round
//! runs several such passes with the servers taking turns, and takes their median.
//!
//! The row compares every server with `estuary-bare` (a bare `WebSocketService`): the
//! ratio in Estuary's cell is what the whole layer stack costs a handshake.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::Outcome;
use crate::client::upgrade_request;
use crate::cpu;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target, ECHO_PATH};

/// Settings of [`super::Scenario::Handshake`].
#[derive(Debug, Clone)]
pub struct HandshakeSettings {
    /// Clients doing handshakes at once.
    pub concurrency: usize,
    /// Handshakes before the measured batches, in each pass.
    pub warmup: usize,
    /// Handshakes per measured batch.
    pub batch: usize,
    /// Measured batches in each pass.
    pub batches: usize,
    /// Passes per round, taking turns with the other servers (see
    /// `PingPongSettings::passes`); the round's value is their median.
    pub passes: usize,
}

impl HandshakeSettings {
    /// 32 clients; 3 passes of 500 warm-up handshakes, then 3 batches of 1,500 (`quick`:
    /// 1 pass of 500, then 3 batches of 1,000).
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                concurrency: 32,
                warmup: 500,
                batch: 1_000,
                batches: 3,
                passes: 1,
            }
        } else {
            Self {
                concurrency: 32,
                warmup: 500,
                batch: 1_500,
                batches: 3,
                passes: 3,
            }
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            concurrency: 4,
            warmup: 8,
            batch: 20,
            batches: 1,
            passes: 1,
        }
    }
}

/// How long one handshake, close included, may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Client source addresses 127.0.0.2 to 127.0.0.61 in turn, so that the TIME_WAIT sockets
/// of one address's ports never run the client out of ports.
const SOURCES: usize = 60;

/// A masked Close frame, code 1000.
const CLOSE: [u8; 8] = [0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xe8 ^ 0x22];

/// Median handshakes per second over the batches.
const RATE: Metric = Metric {
    key: "handshakes_per_s",
    label: "handshakes/s",
    better: Better::Higher,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// The server process's CPU time over the batches, as a share of one core.
const SERVER_CPU: Metric = Metric {
    key: "handshake_server_cpu_percent",
    label: "handshake server CPU %",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::EstuaryBare,
};

/// The load client's CPU time over the batches, as a share of one core.
const CLIENT_CPU: Metric = Metric {
    key: "handshake_client_cpu_percent",
    label: "handshake client CPU %",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::EstuaryBare,
};

/// The server process's CPU time per handshake, in microseconds: what the stack costs,
/// whether or not the client kept the server busy (on two cores, the client's work per
/// handshake is about the server's, so both run near 100%).
const SERVER_CPU_PER_HANDSHAKE: Metric = Metric {
    key: "handshake_server_cpu_us",
    label: "handshake server CPU µs",
    better: Better::Lower,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// The load client's CPU time per handshake, in microseconds.
const CLIENT_CPU_PER_HANDSHAKE: Metric = Metric {
    key: "handshake_client_cpu_us",
    label: "handshake client CPU µs",
    better: Better::Neither,
    decimals: 0,
    in_table: false,
    reference: ServerKind::EstuaryBare,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[
    &RATE,
    &SERVER_CPU,
    &CLIENT_CPU,
    &SERVER_CPU_PER_HANDSHAKE,
    &CLIENT_CPU_PER_HANDSHAKE,
];

/// A warm-up batch, then the measured ones: the median rate, and the CPU both sides used.
pub async fn run(target: &Target, settings: &HandshakeSettings) -> anyhow::Result<Outcome> {
    let request: Arc<[u8]> = upgrade_request(target.addr, ECHO_PATH, "")
        .into_bytes()
        .into();
    let sources = Arc::new(AtomicUsize::new(0));
    run_batch(
        target.addr,
        &request,
        &sources,
        settings.warmup,
        settings.concurrency,
    )
    .await
    .context("warm-up")?;
    let meter = cpu::CpuMeter::start(target.pid)?;
    let mut rates = Vec::with_capacity(settings.batches);
    for batch in 0..settings.batches {
        let rate = run_batch(
            target.addr,
            &request,
            &sources,
            settings.batch,
            settings.concurrency,
        )
        .await
        .with_context(|| format!("batch {}", batch + 1))?;
        eprintln!(
            "    handshakes: {} batch {}/{}: {}/s",
            target.kind.name(),
            batch + 1,
            settings.batches,
            RATE.format(rate)
        );
        rates.push(rate);
    }
    let cpu_use = meter.stop()?;
    let handshakes = (settings.batch * settings.batches) as f64;
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    Ok(Outcome {
        measurements: vec![
            Measurement {
                metric: &RATE,
                value: median,
            },
            Measurement {
                metric: &SERVER_CPU,
                value: cpu_use.server,
            },
            Measurement {
                metric: &CLIENT_CPU,
                value: cpu_use.client,
            },
            Measurement {
                metric: &SERVER_CPU_PER_HANDSHAKE,
                value: cpu_use.server_time.as_secs_f64() * 1e6 / handshakes,
            },
            Measurement {
                metric: &CLIENT_CPU_PER_HANDSHAKE,
                value: cpu_use.client_time.as_secs_f64() * 1e6 / handshakes,
            },
        ],
        warnings: cpu_use.contention().into_iter().collect(),
    })
}

/// `count` handshakes, `concurrency` at a time: handshakes per second.
pub(super) async fn run_batch(
    addr: SocketAddr,
    request: &Arc<[u8]>,
    sources: &Arc<AtomicUsize>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    ensure!(count > 0 && concurrency > 0, "an empty handshake batch");
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for client in 0..concurrency.min(count) {
        // Spread `count` over the clients; the first ones take the remainder.
        let share = count / concurrency + usize::from(client < count % concurrency);
        let (request, sources) = (Arc::clone(request), Arc::clone(sources));
        clients.spawn(async move {
            for _ in 0..share {
                let source = 2 + sources.fetch_add(1, Ordering::Relaxed) % SOURCES;
                let from = Ipv4Addr::new(127, 0, 0, source as u8).into();
                timeout(HANDSHAKE_TIMEOUT, handshake(from, addr, &request))
                    .await
                    .with_context(|| format!("a handshake took over {HANDSHAKE_TIMEOUT:?}"))??;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = clients.join_next().await {
        done.context("a handshake client panicked")??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Connect from `from`, upgrade, close.
async fn handshake(from: IpAddr, addr: SocketAddr, request: &[u8]) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4().context("creating a client socket")?;
    bind_address_no_port(&socket)?;
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("binding a client socket to {from}"))?;
    let mut stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr} from {from}"))?;
    stream.set_nodelay(true)?;
    stream
        .write_all(request)
        .await
        .context("sending the upgrade request")?;
    let mut buffer = [0u8; 2048];
    let mut len = 0;
    while !buffer[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        ensure!(
            len < buffer.len(),
            "upgrade response head over {} bytes",
            buffer.len()
        );
        let read = stream
            .read(&mut buffer[len..])
            .await
            .context("reading the upgrade response")?;
        if read == 0 {
            bail!("the server closed the connection before answering the upgrade");
        }
        len += read;
    }
    if !buffer.starts_with(b"HTTP/1.1 101") {
        let head = String::from_utf8_lossy(&buffer[..len]);
        bail!(
            "upgrade refused: {:?} (wanted HTTP/1.1 101)",
            head.lines().next().unwrap_or("")
        );
    }
    stream.write_all(&CLOSE).await.context("sending Close")?;
    // The server's Close frame, then its end of stream.
    while stream
        .read(&mut buffer)
        .await
        .context("reading the server's Close")?
        > 0
    {}
    Ok(())
}

/// IP_BIND_ADDRESS_NO_PORT: `connect` picks the port, free as a (source, destination)
/// pair, instead of `bind` looking for a port free on its own, which gets slower with
/// every TIME_WAIT socket the earlier batches left behind.
fn bind_address_no_port(socket: &TcpSocket) -> anyhow::Result<()> {
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
        Err(std::io::Error::last_os_error()).context("setting IP_BIND_ADDRESS_NO_PORT")
    }
}
