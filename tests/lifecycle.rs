//! How connections end: the handler's close reaches the client, `on_close` learns why,
//! and graceful shutdown closes every socket with 1001.

mod common;

use std::time::Duration;

use common::{connect, serve, within, RawWs, STEP};
use estuary::testing::{eventually, Received, TestServer};
use estuary::{CloseError, CloseReason, Conn, Handler, Message, ProtocolError, WebSocketService};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Closes on "close", panics on "panic", echoes the rest; reports `on_close` reasons.
#[derive(Clone)]
struct Reporter {
    reasons: mpsc::UnboundedSender<CloseReason>,
}

impl Handler for Reporter {
    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        match msg.as_text() {
            Some("close") => {
                assert_eq!(conn.close(1005, ""), Err(CloseError::InvalidCode(1005)));
                conn.close(4001, "you asked for it").unwrap();
                assert_eq!(conn.send("too late"), Err(estuary::SendError::Closed));
            }
            Some("panic") => panic!("magic message"),
            _ => {
                let _ = conn.send(msg);
            }
        }
    }

    async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
        let _ = self.reasons.send(reason);
    }
}

fn reporter() -> (
    WebSocketService<Reporter>,
    mpsc::UnboundedReceiver<CloseReason>,
) {
    let (reasons, rx) = mpsc::unbounded_channel();
    (WebSocketService::new(Reporter { reasons }), rx)
}

async fn next_reason(rx: &mut mpsc::UnboundedReceiver<CloseReason>) -> CloseReason {
    within("on_close", rx.recv()).await.expect("on_close ran")
}

#[tokio::test]
async fn handler_close_reaches_the_client_with_code_and_reason() {
    let (service, mut reasons) = reporter();
    let server = TestServer::start(service).await;
    let mut client = server.connect("/").await;
    client.send("close").await;
    assert_eq!(client.expect_close(4001).await, "you asked for it");
    // Reading on sends the client's close reply.
    assert!(matches!(client.recv_any().await, Received::Gone(_)));
    assert_eq!(
        next_reason(&mut reasons).await,
        CloseReason::Local {
            code: 4001,
            reason: "you asked for it".into()
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn on_close_sees_the_clients_close_code() {
    let (service, mut reasons) = reporter();
    let server = serve(service).await;
    let mut client = connect(&server.url("/")).await;
    client
        .close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "tab closed".into(),
        }))
        .await
        .unwrap();
    // The server answers with the same code (tungstenite shows it to a client that
    // closed first; the kit's `close` waits for it and passes over it).
    let reply = within("close reply", client.next()).await.unwrap().unwrap();
    assert!(
        matches!(reply, WsMessage::Close(Some(ref f)) if f.code == CloseCode::Away),
        "{reply:?}"
    );
    assert_eq!(
        next_reason(&mut reasons).await,
        CloseReason::Remote {
            code: 1001,
            reason: "tab closed".into()
        }
    );
    server.stop().await;
}

/// RFC 6455, 7.1.1: once both Close frames are out, the server closes the TCP connection
/// first. A client that keeps its socket open after the handshake does not keep the
/// connection (and `on_close`) waiting for its close timeout.
#[tokio::test]
async fn after_the_close_handshake_the_server_closes_the_tcp_connection_first() {
    let (reasons, mut rx) = mpsc::unbounded_channel();
    let service = WebSocketService::new(Reporter { reasons }).with_config(
        estuary::WebSocketConfig::default().with_close_timeout(Duration::from_secs(30)),
    );
    let server = serve(service).await;
    let mut ws = RawWs::connect(server.addr, "/").await;
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    ws.send_frame(true, 0x8, &close).await;
    assert_eq!(ws.read_close().await, (1000, String::new()));
    // The client has not closed its side, yet the server's end of stream follows at once.
    let ended = tokio::time::timeout(Duration::from_secs(2), ws.read_frame()).await;
    assert_eq!(ended, Ok(None), "the server kept the TCP connection open");
    let reason = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert_eq!(
        reason,
        Ok(Some(CloseReason::Remote {
            code: 1000,
            reason: "bye".into()
        }))
    );
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn on_close_sees_a_protocol_error() {
    let (service, mut reasons) = reporter();
    let server = serve(service).await;
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send_frame(true, 0x9, &[0u8; 126]).await;
    assert_eq!(ws.read_close().await.0, 1002);
    assert_eq!(
        next_reason(&mut reasons).await,
        CloseReason::Protocol(ProtocolError::ControlTooLong)
    );
    server.stop().await;
}

#[tokio::test]
async fn on_close_sees_a_vanished_client() {
    let (service, mut reasons) = reporter();
    let server = serve(service).await;
    let ws = RawWs::connect(server.addr, "/").await;
    drop(ws);
    assert_eq!(next_reason(&mut reasons).await, CloseReason::ConnectionLost);
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_closes_only_its_socket_with_1011() {
    let (service, mut reasons) = reporter();
    let server = TestServer::start(service).await;
    let mut bystander = server.connect("/").await;
    let mut victim = server.connect("/").await;
    victim.send("panic").await;
    victim.expect_close(1011).await;
    assert!(matches!(victim.recv_any().await, Received::Gone(_)));
    assert_eq!(next_reason(&mut reasons).await, CloseReason::HandlerPanic);
    bystander.send("ok").await;
    bystander.expect_text("ok").await;
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_every_socket_with_1001_and_runs_on_close() {
    let (service, mut reasons) = reporter();
    let server = TestServer::start(service).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.connect("/").await);
    }
    // Wait until all five are registered before shutting down.
    let shutdown = server.shutdown().clone();
    eventually("registration", STEP, || shutdown.connections() == 5).await;
    let addr = server.addr();
    let stopping = tokio::spawn(server.stop());
    for client in &mut clients {
        assert_eq!(client.expect_close(1001).await, "going away");
        assert!(matches!(client.recv_any().await, Received::Gone(_)));
    }
    for _ in 0..5 {
        assert_eq!(next_reason(&mut reasons).await, CloseReason::Shutdown);
    }
    within("serve returns", stopping).await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// A shutdown signal that has already fired when `serve` starts: nothing is accepted, and
/// `serve` returns. Clients are already waiting in the listen backlog with their upgrade
/// requests sent, so a server that accepted even one would answer it (or upgrade it and
/// run its `on_open` and `on_close`); each must instead see its connection end unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_signal_has_already_fired_accepts_nothing_and_returns() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = estuary::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let (service, mut reasons) = reporter();
    let mut waiting = Vec::new();
    for _ in 0..20 {
        // The kernel completes the TCP handshake for a bound, listening socket.
        let mut stream = within("connect", tokio::net::TcpStream::connect(addr))
            .await
            .unwrap();
        let request = common::handshake_request("/", "");
        stream.write_all(request.as_bytes()).await.unwrap();
        waiting.push(stream);
    }
    within(
        "serve returns",
        server.serve_with_shutdown(service, std::future::ready(())),
    )
    .await
    .unwrap();
    for mut stream in waiting {
        let mut answer = Vec::new();
        let read = within("the connection ends", stream.read_to_end(&mut answer)).await;
        match read {
            Ok(_) => assert!(
                answer.is_empty(),
                "a client was answered: {}",
                String::from_utf8_lossy(&answer)
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert!(
        reasons.try_recv().is_err(),
        "a connection was upgraded and closed"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
