//! `estuary::client` exchanging messages with the estuary server and a tokio-tungstenite
//! server (per-task order from many senders), closing, and the opening handshake against
//! servers that refuse or misbehave.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::client::{any_port, connect, estuary_echo, next, next_message, recorder, Seen};
use common::peers::{answer_handshake, serve_at, TungsteniteServer};
use common::within;
use estuary::client::{Client, ClientConfig, ClientState, ConnectError, SendError};
use estuary::{CloseReason, Conn, Handler, Message, WebSocketService};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

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

// ---- closing ----

#[tokio::test]
async fn close_handshake_completes_and_the_server_sees_the_code() {
    #[derive(Clone)]
    struct Reports(mpsc::UnboundedSender<CloseReason>);

    impl Handler for Reports {
        async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}

        async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
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
        other => panic!("a local close stops without asking on_close; got {other:?}"),
    }
    within("client stop", client.closed()).await;
    let reason = within("server on_close", server_saw.recv()).await.unwrap();
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
    /// Answers any message with 2 KiB; reports why its connection closed.
    #[derive(Clone)]
    struct TooMuch {
        closed: mpsc::UnboundedSender<CloseReason>,
    }

    impl Handler for TooMuch {
        async fn on_message(&mut self, conn: &mut Conn, _msg: Message) {
            let _ = conn.send(Message::binary(vec![7u8; 2048]));
        }

        async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
            let _ = self.closed.send(reason);
        }
    }

    let (closed, mut server_saw) = mpsc::unbounded_channel();
    let server = serve_at(any_port(), WebSocketService::new(TooMuch { closed })).await;
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
    // What the client put on the wire, as the server read it.
    let reason = within("the server's on_close", server_saw.recv()).await;
    assert_eq!(
        reason,
        Some(CloseReason::Remote {
            code: 1009,
            reason: "message too big".into()
        })
    );
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

        async fn on_open(&mut self, conn: &mut Conn) {
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

    // Kept in the session only because the service asks for it.
    let server = serve_at(
        any_port(),
        WebSocketService::new(Greeter).keep_credentials(),
    )
    .await;
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
        "the server refused the WebSocket with 401 Unauthorized: token expired"
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
