//! `estuary::client` keeping a connection: reconnecting with backoff after the estuary
//! server or a tokio-tungstenite server restarts, sends while reconnecting, and
//! keep-alive against a server that stops answering.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::client::{
    any_port, connect, estuary_echo, fast_backoff, next, next_message, recorder, Seen,
};
use common::peers::{MuteServer, SilentServer, TungsteniteServer};
use common::{within, TestServer};
use estuary::client::{Backoff, ClientConfig, ClientState, SendError, WhileReconnecting};
use estuary::CloseReason;
use tokio::time::Instant;

/// The two kinds of server the reconnect tests restart.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Estuary,
    Tungstenite,
}

enum Peer {
    Estuary(TestServer),
    Tungstenite(TungsteniteServer),
}

impl Kind {
    async fn start(self, addr: SocketAddr) -> Peer {
        match self {
            Kind::Estuary => Peer::Estuary(estuary_echo(addr).await),
            Kind::Tungstenite => Peer::Tungstenite(TungsteniteServer::start(addr).await),
        }
    }
}

impl Peer {
    fn addr(&self) -> SocketAddr {
        match self {
            Peer::Estuary(server) => server.addr,
            Peer::Tungstenite(server) => server.addr,
        }
    }

    async fn stop(self) {
        match self {
            Peer::Estuary(server) => server.stop().await,
            Peer::Tungstenite(server) => server.stop().await,
        }
    }
}

/// The reconnect tests' backoff, without jitter so that the delays are exact: 200, 400,
/// 800 ms, then the 1.6 s cap, and the cap again.
fn capped_backoff() -> ClientConfig {
    ClientConfig::default().with_backoff(
        Backoff::default()
            .with_initial(Duration::from_millis(200))
            .with_max(Duration::from_millis(1600))
            .with_multiplier(2.0)
            .with_jitter(0.0),
    )
}

/// The delays [`capped_backoff`] asks for before attempts 1, 2, 3, ...
const DELAYS_MS: [u64; 5] = [200, 400, 800, 1600, 1600];

/// What a gap between two attempts may take beyond its delay: a refused connect on
/// loopback (well under a millisecond) and waking up on two busy cores. Small enough
/// that a multiplier below 1.8 or above 2.25 (or an ignored cap) puts some gap outside.
const GAP_SLACK: Duration = Duration::from_millis(180);

/// Connects, stops the server, watches six reconnect attempts fail with gaps of exactly
/// the backoff's delays (200, 400, 800 ms, then capped at 1.6 s, twice) within
/// [`GAP_SLACK`], restarts the server at the same address, and checks the client is back
/// and echoing.
async fn reconnects_with_growing_backoff(kind: Kind) {
    let server = kind.start(any_port()).await;
    let addr = server.addr();
    let (handler, mut seen) = recorder(true);
    let client = connect(&format!("ws://{addr}/"), handler, capped_backoff()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    server.stop().await;

    let mut attempts = Vec::new();
    while attempts.len() < DELAYS_MS.len() + 1 {
        match next(&mut seen).await {
            Seen::Disconnected { attempt, at, .. } => {
                assert_eq!(attempt as usize, attempts.len(), "attempts count up");
                attempts.push(at);
            }
            other => panic!("expected a disconnect, got {other:?}"),
        }
    }
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, delay_ms) in gaps.iter().zip(DELAYS_MS) {
        let delay = Duration::from_millis(delay_ms);
        assert!(
            *gap >= delay && *gap <= delay + GAP_SLACK,
            "gap {gap:?} is not the {delay:?} backoff (slack {GAP_SLACK:?}); gaps {gaps:?}"
        );
    }
    assert!(matches!(
        client.state(),
        ClientState::Reconnecting | ClientState::Connecting
    ));

    let server = kind.start(addr).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    assert_eq!(client.state(), ClientState::Open);
    client.send("back again").unwrap();
    assert_eq!(next_message(&mut seen).await.as_text(), Some("back again"));
    client.close(1000, "").unwrap();
    within("client stop", client.closed()).await;
    server.stop().await;
}

#[tokio::test]
async fn reconnects_after_the_estuary_server_restarts_with_growing_backoff() {
    reconnects_with_growing_backoff(Kind::Estuary).await;
}

#[tokio::test]
async fn reconnects_after_a_tungstenite_server_restarts_with_growing_backoff() {
    reconnects_with_growing_backoff(Kind::Tungstenite).await;
}

#[tokio::test]
async fn sends_while_reconnecting_are_queued_and_delivered_after_reconnect() {
    let server = estuary_echo(any_port()).await;
    let addr = server.addr;
    let (handler, mut seen) = recorder(true);
    let client = connect(&server.url("/"), handler, fast_backoff()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    server.stop().await;
    assert!(matches!(next(&mut seen).await, Seen::Disconnected { .. }));

    for n in 0..3 {
        client.send(format!("queued {n}")).unwrap();
    }
    let server = estuary_echo(addr).await;
    loop {
        match next(&mut seen).await {
            Seen::Connected(_) => break,
            Seen::Disconnected { .. } => continue,
            other => panic!("expected a reconnect, got {other:?}"),
        }
    }
    for n in 0..3 {
        let text = next_message(&mut seen).await;
        assert_eq!(text.as_text(), Some(format!("queued {n}").as_str()));
    }
    server.stop().await;
}

#[tokio::test]
async fn sends_while_reconnecting_fail_when_configured_to() {
    let server = estuary_echo(any_port()).await;
    let (handler, mut seen) = recorder(true);
    let config = fast_backoff().with_while_reconnecting(WhileReconnecting::Fail);
    let client = connect(&server.url("/"), handler, config).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    server.stop().await;
    assert!(matches!(next(&mut seen).await, Seen::Disconnected { .. }));

    let error = client.send("while away").unwrap_err();
    assert!(matches!(error, SendError::NotConnected), "{error}");
    assert_eq!(
        error.to_string(),
        "the client is reconnecting and is configured to fail sends meanwhile"
    );
    client.close(1000, "").unwrap();
    within("client stop", client.closed()).await;
}

#[tokio::test]
async fn the_handler_can_stop_reconnecting() {
    let server = estuary_echo(any_port()).await;
    let (handler, mut seen) = recorder(false);
    let client = connect(&server.url("/"), handler, fast_backoff()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    server.stop().await;
    match next(&mut seen).await {
        Seen::Disconnected {
            reason,
            closed,
            attempt,
            ..
        } => {
            assert_eq!(attempt, 0);
            assert_eq!(reason, "connection closed: going away (1001)");
            assert!(
                matches!(closed, Some(CloseReason::Remote { code: 1001, .. })),
                "{closed:?}"
            );
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
    assert!(matches!(next(&mut seen).await, Seen::Terminated(_)));
    within("client stop", client.closed()).await;
    assert_eq!(client.state(), ClientState::Stopped);
    assert!(matches!(client.send("late"), Err(SendError::Closed)));
}

// ---- keep-alive ----

/// How late a keep-alive drop (or a pong) may come: timers waking up on two busy cores.
/// Below one keep-alive timeout, so a client that waited two timeouts fails.
const KEEPALIVE_SLACK: Duration = Duration::from_millis(250);

#[tokio::test]
async fn keepalive_detects_a_silent_server_within_its_deadline() {
    let interval = Duration::from_millis(200);
    let timeout = Duration::from_millis(300);
    let server = SilentServer::start().await;
    let (handler, mut seen) = recorder(false);
    let config = ClientConfig::default().with_keepalive(Some(interval), timeout);
    let client = connect(&server.url("/"), handler, config).await;
    let opened = Instant::now();
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    match next(&mut seen).await {
        Seen::Disconnected { closed, at, .. } => {
            assert_eq!(closed, Some(CloseReason::Idle));
            let took = at - opened;
            let deadline = interval + timeout;
            assert!(
                took >= deadline,
                "dropped after {took:?}, before {deadline:?}"
            );
            assert!(
                took <= deadline + KEEPALIVE_SLACK,
                "dropped after {took:?}; the deadline was {deadline:?}"
            );
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
    within("client stop", client.closed()).await;
}

/// Pings are answered for [`WATCH`] (many intervals, and several times the keep-alive
/// timeout): the connection stays open, so a client that ignored pongs (and dropped at
/// `interval + timeout`) fails here. Then the server stops answering: the client drops
/// the connection one interval and one timeout after the last pong, as idle.
#[tokio::test]
async fn keepalive_keeps_a_connection_to_an_answering_server_and_drops_it_when_pongs_stop() {
    const INTERVAL: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_millis(300);
    const WATCH: Duration = Duration::from_millis(2000);
    const SLACK: Duration = KEEPALIVE_SLACK;
    let server = MuteServer::start().await;
    let (handler, mut seen) = recorder(false);
    let config = ClientConfig::default().with_keepalive(Some(INTERVAL), TIMEOUT);
    let client = connect(&server.url("/"), handler, config).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));

    let watched = Instant::now() + WATCH;
    let mut pongs = 0;
    let mut last_pong = Instant::now();
    while let Ok(callback) = tokio::time::timeout_at(watched, seen.recv()).await {
        match callback.expect("the client's task ended") {
            Seen::Pong(_) => {
                pongs += 1;
                last_pong = Instant::now();
            }
            other => panic!("expected only pongs while the server answers, got {other:?}"),
        }
    }
    assert_eq!(client.state(), ClientState::Open);
    // One ping an interval after each pong: about WATCH / INTERVAL of them.
    let least = (WATCH.as_millis() / (INTERVAL + SLACK).as_millis()) as usize;
    assert!(
        pongs >= least,
        "{pongs} pongs in {WATCH:?}, expected {least} at least"
    );
    assert!(
        Instant::now() - last_pong <= INTERVAL + SLACK,
        "pongs stopped coming: the last one {:?} ago",
        Instant::now() - last_pong
    );

    // Muted right after a pong, so the next ping goes unanswered: due an interval after
    // that pong, dropped a timeout after the ping.
    loop {
        if let Seen::Pong(_) = next(&mut seen).await {
            last_pong = Instant::now();
            server.mute();
            break;
        }
    }
    match next(&mut seen).await {
        Seen::Disconnected { closed, at, .. } => {
            assert_eq!(closed, Some(CloseReason::Idle));
            let took = at - last_pong;
            let deadline = INTERVAL + TIMEOUT;
            // The test sees the pong a moment after the client does; half an interval
            // allows for that.
            assert!(
                took >= deadline - INTERVAL / 2,
                "dropped {took:?} after the last pong, before its {deadline:?} deadline"
            );
            assert!(
                took <= deadline + SLACK,
                "dropped {took:?} after the last pong; the deadline was {deadline:?}"
            );
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
    within("client stop", client.closed()).await;
}
