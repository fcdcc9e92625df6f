//! WebSockets over HTTP/2 (RFC 8441): how fast Estuary opens them as streams of one
//! connection, against HTTP/1.1 handshakes on the same server, and what an idle one costs.
//!
//! An open is: an extended CONNECT (`:protocol = websocket`, with the same credentials
//! and origin as the HTTP/1.1 handshake, so that Estuary's full stack does all its work)
//! on a connection that is already up, the 200, a Close frame with END_STREAM, and the
//! server's Close and END_STREAM. `concurrency` streams open back to back at once, all
//! on one TCP connection. The HTTP/1.1 figure is the handshake scenario's (a TCP
//! connection, an upgrade and a close each), measured in the same run against the same
//! server, so that the ratio between the two is what sharing a connection saves.
//!
//! Idle bytes per stream: the server's RSS growth over `idle_streams` quiet WebSockets,
//! opened on as few connections as the server's stream limit allows (100 per connection
//! by default), divided by their number; a connection's own cost is shared by its streams.
//!
//! The client is the `h2` crate (hyper's HTTP/2 engine), not hand-written: HTTP/2's
//! framing, HPACK and flow control are not a load generator's to reimplement. Only
//! Estuary speaks WebSockets over HTTP/2 here, so the scenario runs on `estuary` and
//! `estuary-bare`, both of which serve h2c.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use h2::client::SendRequest;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::handshake::run_batch;
use super::idle::{settled_memory, IdleSettings};
use super::Outcome;
use crate::client::upgrade_request;
use crate::metric::{Better, Measurement, Metric};
use crate::servers::{ServerKind, Target, ECHO_PATH};

/// Settings of [`super::Scenario::Http2`].
#[derive(Debug, Clone)]
pub struct Http2Settings {
    /// Streams (or HTTP/1.1 handshakes) opening at once.
    pub concurrency: usize,
    /// Opens before the measured batches, of each kind.
    pub warmup: usize,
    /// Opens per measured batch.
    pub batch: usize,
    /// Measured batches of each kind; the median counts.
    pub batches: usize,
    /// Quiet WebSockets over HTTP/2 for the memory figure.
    pub idle_streams: usize,
    /// How the memory readings settle (the idle scenario's rules).
    pub settle: IdleSettings,
}

impl Http2Settings {
    /// 32 at once; 500 warm-up opens, then 3 batches of 1,500 (`quick`: 1,000); 2,000
    /// idle streams.
    pub fn new(quick: bool) -> Self {
        Self {
            concurrency: 32,
            warmup: 500,
            batch: if quick { 1_000 } else { 1_500 },
            batches: 3,
            idle_streams: 2_000,
            settle: IdleSettings::new(quick),
        }
    }

    /// Just enough to show that the scenario works.
    pub fn smoke() -> Self {
        Self {
            concurrency: 4,
            warmup: 8,
            batch: 20,
            batches: 1,
            idle_streams: 150,
            settle: IdleSettings::smoke(),
        }
    }
}

/// How long one open, close included, may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A masked Close frame, code 1000.
const CLOSE: [u8; 8] = [0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xe8 ^ 0x22];

/// The median rate of WebSocket opens on one HTTP/2 connection.
const OPENS: Metric = Metric {
    key: "h2_opens_per_s",
    label: "HTTP/2 WebSocket opens/s, one connection",
    better: Better::Higher,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// The median rate of HTTP/1.1 handshakes on the same server, in the same run.
const HTTP1_HANDSHAKES: Metric = Metric {
    key: "h2_run_http1_handshakes_per_s",
    label: "HTTP/1.1 handshakes/s, same run",
    better: Better::Higher,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// RSS growth per quiet WebSocket on an HTTP/2 stream.
const IDLE_BYTES_PER_STREAM: Metric = Metric {
    key: "h2_idle_bytes_per_stream",
    label: "idle bytes/HTTP/2 WebSocket",
    better: Better::Lower,
    decimals: 0,
    in_table: true,
    reference: ServerKind::EstuaryBare,
};

/// Every metric of the scenario, in table order.
pub const METRICS: &[&Metric] = &[&OPENS, &HTTP1_HANDSHAKES, &IDLE_BYTES_PER_STREAM];

/// The two rates, then the idle streams.
pub async fn run(target: &Target, settings: &Http2Settings) -> anyhow::Result<Outcome> {
    let addr = target.addr;
    let request: Arc<[u8]> = upgrade_request(addr, ECHO_PATH, "").into_bytes().into();
    let sources = Arc::new(AtomicUsize::new(0));
    run_batch(
        addr,
        &request,
        &sources,
        settings.warmup,
        settings.concurrency,
    )
    .await
    .context("HTTP/1.1 warm-up")?;
    let mut http1 = Vec::new();
    for _ in 0..settings.batches {
        let rate = run_batch(
            addr,
            &request,
            &sources,
            settings.batch,
            settings.concurrency,
        )
        .await
        .context("HTTP/1.1 handshakes")?;
        http1.push(rate);
    }

    let sender = connect(addr).await?;
    open_batch(addr, &sender, settings.warmup, settings.concurrency)
        .await
        .context("HTTP/2 warm-up")?;
    let mut opens = Vec::new();
    for (batch, http1_rate) in http1.iter().enumerate() {
        let rate = open_batch(addr, &sender, settings.batch, settings.concurrency)
            .await
            .with_context(|| format!("HTTP/2 batch {}", batch + 1))?;
        eprintln!(
            "    http2: {} batch {}/{}: {}/s over HTTP/2, {}/s over HTTP/1.1",
            target.kind.name(),
            batch + 1,
            settings.batches,
            OPENS.format(rate),
            HTTP1_HANDSHAKES.format(*http1_rate),
        );
        opens.push(rate);
    }
    drop(sender);

    let idle = idle_bytes_per_stream(target, settings).await?;
    Ok(Outcome {
        measurements: vec![
            Measurement {
                metric: &OPENS,
                value: median(opens),
            },
            Measurement {
                metric: &HTTP1_HANDSHAKES,
                value: median(http1),
            },
            Measurement {
                metric: &IDLE_BYTES_PER_STREAM,
                value: idle,
            },
        ],
        warnings: Vec::new(),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A new h2c connection to `addr` whose server offers extended CONNECT.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Bytes>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = h2::client::handshake(tcp)
        .await
        .context("the HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // The server's SETTINGS arrive with its first frames; the first stream waits for them.
    let sender = sender.ready().await.context("the HTTP/2 connection")?;
    Ok(sender)
}

/// `count` opens on `sender`'s connection, `concurrency` at a time: opens per second.
async fn open_batch(
    addr: SocketAddr,
    sender: &SendRequest<Bytes>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    ensure!(count > 0 && concurrency > 0, "an empty batch");
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for client in 0..concurrency.min(count) {
        let share = count / concurrency + usize::from(client < count % concurrency);
        let sender = sender.clone();
        clients.spawn(async move {
            for _ in 0..share {
                timeout(OPEN_TIMEOUT, open_and_close(addr, sender.clone()))
                    .await
                    .with_context(|| format!("an open took over {OPEN_TIMEOUT:?}"))??;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = clients.join_next().await {
        done.context("an HTTP/2 client panicked")??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// The extended CONNECT for the echo route, with the handshake scenario's credentials
/// and origin.
fn connect_request(addr: SocketAddr) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{ECHO_PATH}"))
        .header("sec-websocket-version", "13")
        .header("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==")
        .header("origin", "http://bench.example")
        .body(())
        .expect("a valid request");
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    request
}

/// Opens a WebSocket stream: its 200, and the stream to send and receive on.
async fn open(
    addr: SocketAddr,
    sender: SendRequest<Bytes>,
) -> anyhow::Result<(h2::SendStream<Bytes>, h2::RecvStream)> {
    let mut sender = sender.ready().await.context("waiting for a stream")?;
    let (response, send) = sender
        .send_request(connect_request(addr), false)
        .context("sending the extended CONNECT")?;
    let response = response.await.context("the extended CONNECT's answer")?;
    if response.status() != http::StatusCode::OK {
        bail!(
            "extended CONNECT refused with {} (is extended CONNECT advertised?)",
            response.status()
        );
    }
    Ok((send, response.into_body()))
}

/// Opens a WebSocket stream, closes it with 1000, and reads to the server's END_STREAM.
async fn open_and_close(addr: SocketAddr, sender: SendRequest<Bytes>) -> anyhow::Result<()> {
    let (mut send, mut recv) = open(addr, sender).await?;
    send.send_data(Bytes::from_static(&CLOSE), true)
        .context("sending Close")?;
    while let Some(data) = recv.data().await {
        let data = data.context("reading the server's Close")?;
        let _ = recv.flow_control().release_capacity(data.len());
    }
    Ok(())
}

/// RSS growth per quiet WebSocket over HTTP/2, on as few connections as the server's
/// stream limit allows.
async fn idle_bytes_per_stream(target: &Target, settings: &Http2Settings) -> anyhow::Result<f64> {
    // Held, so that every stream stays open until the reading after.
    let mut streams = Vec::with_capacity(settings.idle_streams);
    let mut connections = Vec::new();
    let before = settled_memory(target.pid, &settings.settle).await?;
    while streams.len() < settings.idle_streams {
        let sender = connect(target.addr).await?;
        // The first stream's answer comes after the server's SETTINGS: from then on the
        // stream limit is the server's, and `ready` waits at it instead of being refused.
        let first = timeout(OPEN_TIMEOUT, open(target.addr, sender.clone()))
            .await
            .with_context(|| format!("opening a stream took over {OPEN_TIMEOUT:?}"))??;
        streams.push(first);
        let room = sender.current_max_send_streams().saturating_sub(1);
        let wanted = room.min(settings.idle_streams - streams.len());
        let mut opening = JoinSet::new();
        for _ in 0..wanted {
            let (addr, sender) = (target.addr, sender.clone());
            opening.spawn(async move { timeout(OPEN_TIMEOUT, open(addr, sender)).await });
        }
        while let Some(opened) = opening.join_next().await {
            let opened = opened
                .context("a task opening a stream panicked")?
                .with_context(|| format!("opening a stream took over {OPEN_TIMEOUT:?}"))??;
            streams.push(opened);
        }
        connections.push(sender);
    }
    let after = settled_memory(target.pid, &settings.settle).await?;
    eprintln!(
        "    http2: {} {} idle WebSockets on {} connections",
        target.kind.name(),
        streams.len(),
        connections.len()
    );
    let grown = after.rss.saturating_sub(before.rss);
    Ok(grown as f64 / streams.len() as f64)
}
