//! `estuary::client` against real servers: the estuary server, a tokio-tungstenite
//! server, and raw sockets for servers that misbehave.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::peers::{answer_handshake, serve_at, SilentServer, TungsteniteServer};
use common::{within, TestServer};
use estuary::client::{
    Backoff, Client, ClientConfig, ClientHandler, ClientState, ConnectError, Connected,
    DisconnectReason, Reconnect, SendError, WhileReconnecting,
};
use estuary::{handler_fn, CloseReason, Conn, Handler, Message, WebSocketService};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a [`Recorder`] saw, in order.
#[derive(Debug)]
enum Seen {
    Connected(Option<String>),
    Message(Message),
    Pong(Bytes),
    Disconnected {
        reason: String,
        closed: Option<CloseReason>,
        attempt: u32,
        at: Instant,
    },
    Terminated(String),
}

/// A handler that reports every callback on a channel.
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    reconnect: bool,
}

impl ClientHandler for Recorder {
    async fn on_connect(&mut self, _client: &Client, connected: &Connected) {
        let _ = self
            .seen
            .send(Seen::Connected(connected.protocol().map(str::to_owned)));
    }

    async fn on_message(&mut self, _client: &Client, message: Message) {
        let _ = self.seen.send(Seen::Message(message));
    }

    async fn on_pong(&mut self, _client: &Client, payload: Bytes) {
        let _ = self.seen.send(Seen::Pong(payload));
    }

    async fn on_disconnect(
        &mut self,
        _client: &Client,
        reason: &DisconnectReason,
        attempt: u32,
    ) -> Reconnect {
        let closed = match reason {
            DisconnectReason::Closed(reason) => Some(reason.clone()),
            _ => None,
        };
        let _ = self.seen.send(Seen::Disconnected {
            reason: reason.to_string(),
            closed,
            attempt,
            at: Instant::now(),
        });
        if self.reconnect {
            Reconnect::AfterBackoff
        } else {
            Reconnect::Stop
        }
    }

    async fn terminate(&mut self, _client: &Client, reason: DisconnectReason) {
        let _ = self.seen.send(Seen::Terminated(reason.to_string()));
    }
}

/// A recorder and the receiving end of what it sees.
fn recorder(reconnect: bool) -> (Recorder, mpsc::UnboundedReceiver<Seen>) {
    let (seen, rx) = mpsc::unbounded_channel();
    (Recorder { seen, reconnect }, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("a client callback", rx.recv())
        .await
        .expect("the client's task ended")
}

async fn next_message(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Message {
    loop {
        match next(rx).await {
            Seen::Message(message) => return message,
            Seen::Pong(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn connect(url: &str, handler: Recorder, config: ClientConfig) -> Client {
    within(
        "client connect",
        Client::builder(url).config(config).connect(handler),
    )
    .await
    .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

fn echo() -> WebSocketService<impl Handler> {
    WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    }))
}

async fn estuary_echo(addr: SocketAddr) -> TestServer {
    serve_at(addr, echo()).await
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Backoff without jitter, so the delays are exact: 100, 200, 400, 800 ms.
fn fast_backoff() -> ClientConfig {
    ClientConfig::default().with_backoff(
        Backoff::default()
            .with_initial(Duration::from_millis(100))
            .with_max(Duration::from_secs(2))
            .with_multiplier(2.0)
            .with_jitter(0.0),
    )
}

// ---- messages ----

async fn messages_echo_unchanged(url: &str) {
    let (handler, mut seen) = recorder(false);
    let client = connect(url, handler, ClientConfig::default()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(None)));
    let big: Vec<u8> = (0..1_000_000).map(|i| (i % 251) as u8).collect();
    let messages = [
        Message::text("hello"),
        Message::text("κόσμε 𝄞"),
        Message::text(""),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(big),
    ];
    for message in messages {
        client.send(message.clone()).unwrap();
        assert_eq!(next_message(&mut seen).await, message);
    }
    client.send_json(&serde_json::json!({"n": 1})).unwrap();
    assert_eq!(next_message(&mut seen).await.as_text(), Some(r#"{"n":1}"#));
    client.close(1000, "done").unwrap();
    within("client stop", client.closed()).await;
}

#[tokio::test]
async fn messages_echo_unchanged_through_the_estuary_server() {
    let server = estuary_echo(any_port()).await;
    messages_echo_unchanged(&server.url("/")).await;
    server.stop().await;
}

#[tokio::test]
async fn messages_echo_unchanged_through_a_tungstenite_server() {
    let server = TungsteniteServer::start(any_port()).await;
    messages_echo_unchanged(&server.url("/")).await;
    server.stop().await;
}

#[tokio::test]
async fn pings_from_the_handle_get_pongs() {
    let server = estuary_echo(any_port()).await;
    let (handler, mut seen) = recorder(false);
    let client = connect(&server.url("/"), handler, ClientConfig::default()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    client.ping(&b"are you there"[..]).unwrap();
    match next(&mut seen).await {
        Seen::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    assert!(matches!(
        client.ping(vec![0u8; 126]),
        Err(SendError::PingTooLong)
    ));
    server.stop().await;
}

// ---- concurrency ----

async fn sends_from_tasks_keep_per_task_order(url: &str) {
    const TASKS: usize = 8;
    const EACH: usize = 250;
    let (handler, mut seen) = recorder(false);
    let client = connect(url, handler, ClientConfig::default()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    let senders: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for seq in 0..EACH {
                    client.send(format!("{task}:{seq}")).unwrap();
                    if seq % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        within("sender task", sender).await.unwrap();
    }
    let mut next_seq = [0usize; TASKS];
    for _ in 0..TASKS * EACH {
        let message = next_message(&mut seen).await;
        let (task, seq) = message.as_text().unwrap().split_once(':').unwrap();
        let (task, seq): (usize, usize) = (task.parse().unwrap(), seq.parse().unwrap());
        assert_eq!(seq, next_seq[task], "task {task} out of order");
        next_seq[task] += 1;
    }
    assert_eq!(next_seq, [EACH; TASKS]);
    client.close(1000, "").unwrap();
    within("client stop", client.closed()).await;
}

#[tokio::test]
async fn sends_from_several_tasks_arrive_in_per_task_order_at_the_estuary_server() {
    let server = estuary_echo(any_port()).await;
    sends_from_tasks_keep_per_task_order(&server.url("/")).await;
    server.stop().await;
}

#[tokio::test]
async fn sends_from_several_tasks_arrive_in_per_task_order_at_a_tungstenite_server() {
    let server = TungsteniteServer::start(any_port()).await;
    sends_from_tasks_keep_per_task_order(&server.url("/")).await;
    server.stop().await;
}

// ---- reconnect ----

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

// ---- closing ----

#[tokio::test]
async fn close_handshake_completes_and_the_server_sees_the_code() {
    #[derive(Clone)]
    struct Reports(mpsc::UnboundedSender<CloseReason>);

    impl Handler for Reports {
        async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}

        async fn terminate(&mut self, _conn: &mut Conn, reason: CloseReason) {
            let _ = self.0.send(reason);
        }
    }

    let (tx, mut server_saw) = mpsc::unbounded_channel();
    let server = serve_at(any_port(), WebSocketService::new(Reports(tx))).await;
    let (handler, mut seen) = recorder(true);
    let client = connect(&server.url("/"), handler, ClientConfig::default()).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));

    client.close(4000, "done for today").unwrap();
    assert!(matches!(
        client.close(1000, "again"),
        Err(estuary::CloseError::AlreadyClosing)
    ));
    match next(&mut seen).await {
        Seen::Terminated(reason) => assert_eq!(reason, "connection closed: done for today (4000)"),
        other => panic!("a local close stops without asking on_disconnect; got {other:?}"),
    }
    within("client stop", client.closed()).await;
    let reason = within("server terminate", server_saw.recv()).await.unwrap();
    assert_eq!(
        reason,
        CloseReason::Remote {
            code: 4000,
            reason: "done for today".into()
        }
    );
    assert!(matches!(client.send("late"), Err(SendError::Closed)));
    server.stop().await;
}

#[tokio::test]
async fn close_refuses_codes_that_may_not_be_sent() {
    let server = estuary_echo(any_port()).await;
    let (handler, _seen) = recorder(false);
    let client = connect(&server.url("/"), handler, ClientConfig::default()).await;
    assert!(matches!(
        client.close(1005, ""),
        Err(estuary::CloseError::InvalidCode(1005))
    ));
    assert_eq!(client.state(), ClientState::Open);
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_max_size_closes_with_1009() {
    let server = serve_at(
        any_port(),
        WebSocketService::new(handler_fn(|conn: &mut Conn, _msg: Message| {
            let _ = conn.send(Message::binary(vec![7u8; 2048]));
        })),
    )
    .await;
    let (handler, mut seen) = recorder(false);
    let config = ClientConfig::default().with_max_message_size(1024);
    let client = connect(&server.url("/"), handler, config).await;
    assert!(matches!(next(&mut seen).await, Seen::Connected(_)));
    client.send("send me something big").unwrap();
    match next(&mut seen).await {
        Seen::Disconnected { closed, .. } => {
            assert_eq!(closed, Some(CloseReason::MessageTooBig));
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
    server.stop().await;
}

// ---- the handshake ----

#[tokio::test]
async fn authorization_header_and_subprotocol_reach_the_server() {
    #[derive(Clone)]
    struct Greeter;

    impl Handler for Greeter {
        fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
            offered.iter().copied().find(|p| *p == "chat.v1")
        }

        async fn init(&mut self, conn: &mut Conn) {
            let auth = conn
                .session()
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let _ = conn.send(auth);
        }

        async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
    }

    let server = serve_at(any_port(), WebSocketService::new(Greeter)).await;
    let (handler, mut seen) = recorder(false);
    let client = within(
        "connect",
        Client::builder(server.url("/"))
            .header("authorization", "Bearer t0ken")
            .protocols(["chat.v2", "chat.v1"])
            .connect(handler),
    )
    .await
    .unwrap();
    match next(&mut seen).await {
        Seen::Connected(protocol) => assert_eq!(protocol.as_deref(), Some("chat.v1")),
        other => panic!("expected the connect, got {other:?}"),
    }
    assert_eq!(
        next_message(&mut seen).await.as_text(),
        Some("Bearer t0ken")
    );
    client.close(1000, "").unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_subprotocol_the_client_did_not_offer_fails_the_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        answer_handshake(stream, "Sec-WebSocket-Protocol: evil\r\n").await
    });
    let (handler, _seen) = recorder(false);
    let result = within(
        "connect",
        Client::builder(format!("ws://{addr}/"))
            .protocols(["chat.v1"])
            .connect(handler),
    )
    .await;
    let error = result.unwrap_err();
    assert!(matches!(error, ConnectError::UnofferedProtocol(ref p) if p == "evil"));
    let _ = server.await;
}

#[tokio::test]
async fn a_rejected_handshake_reports_the_status_and_body() {
    let reject = tower::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
        let mut response =
            http::Response::new(http_body_util::Full::new(Bytes::from("token expired")));
        *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        Ok::<_, std::convert::Infallible>(response)
    });
    let server = serve_at(any_port(), reject).await;
    let (handler, _seen) = recorder(false);
    let error = within("connect", Client::connect(&server.url("/"), handler))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the server answered 401 Unauthorized instead of 101 Switching Protocols: token expired"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_connect_timeout_bounds_a_server_that_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handler, _seen) = recorder(false);
    let config = ClientConfig::default().with_connect_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let error = within(
        "connect",
        Client::builder(format!("ws://{addr}/"))
            .config(config)
            .connect(handler),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ConnectError::Timeout(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(listener);
}

#[tokio::test]
async fn bad_urls_and_headers_are_refused_before_connecting() {
    let (handler, _seen) = recorder(false);
    let error = Client::connect("http://127.0.0.1:1/", handler)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid URL \"http://127.0.0.1:1/\": the scheme must be ws or wss"
    );
    let (handler, _seen) = recorder(false);
    let error = Client::builder("ws://127.0.0.1:1/")
        .header("x-token", "line\nbreak")
        .connect(handler)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("client config: header x-token:"),
        "{error}"
    );
}
