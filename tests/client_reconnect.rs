//! `estuary::client` keeping a connection: reconnecting with backoff after the estuary
//! server or a tokio-tungstenite server restarts, sends while reconnecting, and
//! keep-alive against a server that stops answering.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::client::{
    any_port, connect, estuary_echo, fast_backoff, next, next_message, recorder, Seen,
};
use common::peers::{SilentServer, TungsteniteServer};
use common::{within, TestServer};
use estuary::client::{ClientConfig, ClientState, SendError, WhileReconnecting};
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

/// Connects, stops the server, watches four reconnect attempts fail with gaps that grow
/// as the backoff says (100, 200, 400 ms), restarts the server at the same address, and
/// checks the client is back and echoing.
async fn reconnects_with_growing_backoff(kind: Kind) {
    let server = kind.start(any_port()).await;
    let addr = server.addr();
    let (handler, mut seen) = recorder(true);
    let client = connect(&format!("ws://{addr}/"), handler, fast_backoff()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    server.stop().await;

    let mut attempts = Vec::new();
    while attempts.len() < 4 {
        match next(&mut seen).await {
            Seen::Disconnected { attempt, at, .. } => {
                assert_eq!(attempt as usize, attempts.len(), "attempts count up");
                attempts.push(at);
            }
            other => panic!("expected a disconnect, got {other:?}"),
        }
    }
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, backoff_ms) in gaps.iter().zip([100u64, 200, 400]) {
        assert!(
            *gap >= Duration::from_millis(backoff_ms),
            "gap {gap:?} is shorter than the {backoff_ms} ms backoff; gaps {gaps:?}"
        );
    }
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "gaps between attempts grow: {gaps:?}"
    );
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
                took < deadline + Duration::from_millis(500),
                "dropped after {took:?}; the deadline was {deadline:?}"
            );
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
    within("client stop", client.closed()).await;
}

#[tokio::test]
async fn keepalive_keeps_a_quiet_connection_to_an_answering_server_open() {
    let server = estuary_echo(any_port()).await;
    let (handler, mut seen) = recorder(false);
    let config = ClientConfig::default()
        .with_keepalive(Some(Duration::from_millis(50)), Duration::from_millis(200));
    let client = connect(&server.url("/"), handler, config).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    // Several keep-alive rounds: each ping is answered, so the connection stays up.
    for _ in 0..4 {
        assert!(matches!(next(&mut seen).await, Seen::Pong(_)));
    }
    assert_eq!(client.state(), ClientState::Open);
    server.stop().await;
}
