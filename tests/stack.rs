//! The example server's whole stack (health, origin, rate limit, connection cap, auth,
//! session limits, upgrade), built in-process by the example's own `App` from a config,
//! driven over real HTTP on loopback.

#[allow(dead_code)] // the test uses App, not every item of the example's modules
#[path = "../examples/server/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../examples/server/chat.rs"]
mod chat;
mod common;
#[allow(dead_code)]
#[path = "../examples/server/config.rs"]
mod config;

use std::net::IpAddr;
use std::time::Duration;

use app::{App, Shared};
use common::{
    connect, connect_from, connect_with, echo_roundtrip, handshake_request, next_close,
    raw_request, raw_request_from, serve, within, TestServer,
};
use config::Config;
use estuary::{CloseReason, Conn, Handler, Message};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

/// How late a timed close may come: timers waking up on two busy cores. Each clock starts
/// before the moment the timeout counts from, so nothing may come early.
const SLACK: Duration = Duration::from_millis(250);

/// Answers "whoami" with the session's user id, "credentials" with the credential
/// headers its session kept, echoes the rest, reports `on_close`.
#[derive(Clone)]
struct WhoAmI {
    reasons: mpsc::UnboundedSender<CloseReason>,
}

impl Handler for WhoAmI {
    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        if msg.as_text() == Some("whoami") {
            let user = conn.session().user_id().to_owned();
            let _ = conn.send(user);
        } else if msg.as_text() == Some("credentials") {
            let headers = conn.session().headers();
            let kept: Vec<&str> = ["authorization", "cookie"]
                .into_iter()
                .filter(|name| headers.contains_key(*name))
                .collect();
            let _ = conn.send(format!("{kept:?}"));
        } else {
            let _ = conn.send(msg);
        }
    }

    async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
        let _ = self.reasons.send(reason);
    }
}

/// The example's stack for `toml`, served on a free port, with `WhoAmI` on `/echo`.
struct Stack {
    server: TestServer,
    app: App,
    reasons: mpsc::UnboundedReceiver<CloseReason>,
}

impl Stack {
    async fn start(toml: &str) -> Stack {
        let config = Config::parse(toml).unwrap_or_else(|e| panic!("{e}"));
        let (reasons, rx) = mpsc::unbounded_channel();
        let app = App::build(&config, WhoAmI { reasons }, Shared::default());
        let server = serve(app.service.clone()).await;
        Stack {
            server,
            app,
            reasons: rx,
        }
    }

    /// A handshake on `/echo` with extra header lines.
    async fn handshake(&self, extra: &str) -> common::RawResponse {
        raw_request(self.server.addr, handshake_request("/echo", extra)).await
    }

    async fn closed(&mut self) -> CloseReason {
        within("on_close", self.reasons.recv())
            .await
            .expect("on_close ran")
    }
}

const BASIC: &str = r#"
[auth]
mode = "basic"
realm = "stack test"
users = { alice = "wonderland" }
"#;

const BEARER: &str = r#"
[auth]
mode = "bearer"
realm = "stack test"
tokens = { "t-bob" = "bob" }
query_param = "token"
"#;

/// `Basic <base64>` for "user:password".
fn basic(user_colon_password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(user_colon_password);
    format!("Basic {encoded}")
}

#[tokio::test]
async fn missing_or_wrong_basic_credentials_get_401_with_the_basic_challenge() {
    let stack = Stack::start(BASIC).await;
    for extra in [
        String::new(),
        format!("Authorization: {}\r\n", basic("alice:looking-glass")),
        format!("Authorization: {}\r\n", basic("mallory:wonderland")),
    ] {
        let response = stack.handshake(&extra).await;
        assert_eq!(response.status, 401, "{extra:?}: {response:?}");
        assert_eq!(
            response.header("www-authenticate"),
            Some(r#"Basic realm="stack test""#),
            "{extra:?}"
        );
    }
    stack.server.stop().await;
}

#[tokio::test]
async fn malformed_basic_credentials_get_401_not_a_panic() {
    let stack = Stack::start(BASIC).await;
    for extra in [
        "Authorization: Basic !!not base64!!\r\n".to_owned(),
        format!("Authorization: {}\r\n", basic("alice")), // no colon
        "Authorization: Basic\r\n".to_owned(),
        "Authorization: Basic =\r\n".to_owned(),
    ] {
        let response = stack.handshake(&extra).await;
        assert_eq!(response.status, 401, "{extra:?}: {response:?}");
        assert_eq!(
            response.header("www-authenticate"),
            Some(r#"Basic realm="stack test""#)
        );
    }
    // The server is still there for a good client.
    let url = stack.server.url("/echo");
    let alice = basic("alice:wonderland");
    let mut client = connect_with(&url, &[("authorization", &alice)]).await;
    echo_roundtrip(&mut client, "still here").await;
    drop(client);
    stack.server.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_bearer_token_gets_401_with_the_bearer_challenge() {
    let stack = Stack::start(BEARER).await;
    let response = stack.handshake("").await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="stack test""#)
    );
    let response = stack.handshake("Authorization: Bearer t-mallory\r\n").await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="stack test", error="invalid_token""#)
    );
    let wrong_query = handshake_request("/echo?token=t-mallory", "");
    let response = raw_request(stack.server.addr, wrong_query).await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="stack test", error="invalid_token""#)
    );
    stack.server.stop().await;
}

#[tokio::test]
async fn non_utf8_token_gets_401() {
    let stack = Stack::start(BEARER).await;
    // Header values may carry obs-text bytes, which are not UTF-8.
    let mut request = handshake_request("/echo", "").into_bytes();
    request.truncate(request.len() - 2);
    request.extend_from_slice(b"Authorization: Bearer t-\xff\xfe\r\n\r\n");
    let response = raw_request(stack.server.addr, &request).await;
    assert_eq!(response.status, 401, "{response:?}");
    // Unreadable as a token: treated as no token at all.
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="stack test""#)
    );

    let percent_encoded = handshake_request("/echo?token=t-%FF%FE", "");
    let response = raw_request(stack.server.addr, percent_encoded).await;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="stack test", error="invalid_token""#)
    );
    stack.server.stop().await;
}

#[tokio::test]
async fn identity_from_auth_reaches_the_handler_session() {
    let stack = Stack::start(BEARER).await;
    let url = stack.server.url("/echo");
    let mut by_header = connect_with(&url, &[("authorization", "Bearer t-bob")]).await;
    by_header.send(WsMessage::text("whoami")).await.unwrap();
    assert_eq!(next_text(&mut by_header).await, "bob");
    let mut by_query = connect(&stack.server.url("/echo?token=t-bob")).await;
    by_query.send(WsMessage::text("whoami")).await.unwrap();
    assert_eq!(next_text(&mut by_query).await, "bob");
    drop((by_header, by_query));
    stack.server.stop().await;

    let stack = Stack::start(BASIC).await;
    let url = stack.server.url("/echo");
    let alice = basic("alice:wonderland");
    let mut client = connect_with(&url, &[("authorization", &alice)]).await;
    client.send(WsMessage::text("whoami")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "alice");
    drop(client);
    stack.server.stop().await;
}

#[tokio::test]
async fn credentials_checked_at_the_handshake_are_not_kept_in_the_session() {
    let stack = Stack::start(BASIC).await;
    let url = stack.server.url("/echo");
    let alice = basic("alice:wonderland");
    let headers = [("authorization", alice.as_str()), ("cookie", "sid=s3cret")];
    let mut client = connect_with(&url, &headers).await;
    client.send(WsMessage::text("whoami")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "alice");
    client.send(WsMessage::text("credentials")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "[]");
    drop(client);
    stack.server.stop().await;
}

async fn next_text(client: &mut common::Client) -> String {
    match within("a text message", client.next()).await {
        Some(Ok(WsMessage::Text(text))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn health_stays_open_with_auth_on_and_turns_503_while_draining() {
    let stack = Stack::start(BASIC).await;
    let health = "GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    let response = raw_request(stack.server.addr, health).await;
    assert_eq!((response.status, response.body.as_str()), (200, "OK"));

    let response = raw_request(
        stack.server.addr,
        "GET /nowhere HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (404, "no route for /nowhere")
    );

    stack.app.draining.start();
    let response = raw_request(stack.server.addr, health).await;
    assert_eq!((response.status, response.body.as_str()), (503, "draining"));
    stack.server.stop().await;
}

#[tokio::test]
async fn socket_over_the_cap_gets_503_until_one_closes() {
    let stack = Stack::start("max_connections = 2").await;
    let url = stack.server.url("/echo");
    let mut first = connect(&url).await;
    let mut second = connect(&url).await;
    let response = stack.handshake("").await;
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.header("retry-after").is_some());
    echo_roundtrip(&mut second, "the others stay up").await;

    first.close(None).await.unwrap();
    while let Some(Ok(_)) = within("the close handshake", first.next()).await {}
    drop(first);
    // The slot frees once the server has finished with the socket.
    let mut third = within("a slot frees up", async {
        loop {
            match tokio_tungstenite::connect_async(&url).await {
                Ok((client, _)) => return client,
                Err(WsError::Http(response)) if response.status() == 503 => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("connect {url}: {e}"),
            }
        }
    })
    .await;
    echo_roundtrip(&mut third, "back in").await;
    drop((second, third));
    stack.server.stop().await;
}

#[tokio::test]
async fn burst_plus_one_handshake_from_one_ip_gets_429_while_another_ip_passes() {
    let stack = Stack::start("[rate_limit]\nper_second = 1\nburst = 3").await;
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect_from(localhost, &stack.server.url("/echo")).await);
    }
    let request = handshake_request("/echo", "");
    let response = raw_request_from(localhost, stack.server.addr, &request).await;
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"));

    let mut from_other = connect_from(other, &stack.server.url("/echo")).await;
    echo_roundtrip(&mut from_other, "a different budget").await;
    drop((clients, from_other));
    stack.server.stop().await;
}

#[tokio::test]
async fn idle_socket_is_closed_at_its_timeout_with_1000() {
    let mut stack = Stack::start(r#"idle_timeout = "300ms""#).await;
    let mut client = connect(&stack.server.url("/echo")).await;
    // Quiet for 200 ms, then one message: the timeout counts from that message, not
    // from the connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last_word = std::time::Instant::now();
    echo_roundtrip(&mut client, "then silence").await;
    assert_eq!(
        next_close(&mut client).await,
        (1000, "idle timeout".to_owned())
    );
    let (took, idle) = (last_word.elapsed(), Duration::from_millis(300));
    assert!(
        took >= idle && took <= idle + SLACK,
        "closed {took:?} after the last message, expected {idle:?} (+{SLACK:?})"
    );
    drop(client);
    assert_eq!(stack.closed().await, CloseReason::Idle);
    stack.server.stop().await;
}

#[tokio::test]
async fn old_socket_is_closed_at_its_max_age_with_1001() {
    let mut stack = Stack::start(
        r#"
        idle_timeout = "infinity"
        max_connection_age = "400ms"
        "#,
    )
    .await;
    let started = std::time::Instant::now();
    let mut client = connect(&stack.server.url("/echo")).await;
    // Busy, not idle: the age alone closes it.
    let close = within("max age", async {
        loop {
            client.send(WsMessage::text("busy")).await.unwrap();
            match client.next().await {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close, (1001, "max connection age reached".to_owned()));
    // The client sees the close at its next message, up to 50 ms after it was sent.
    let (took, age) = (started.elapsed(), Duration::from_millis(400));
    let late = Duration::from_millis(50) + SLACK;
    assert!(
        took >= age && took <= age + late,
        "closed after {took:?}, expected {age:?} (+{late:?})"
    );
    drop(client);
    assert_eq!(stack.closed().await, CloseReason::MaxAge);
    stack.server.stop().await;
}

#[tokio::test]
async fn client_over_the_message_rate_is_closed_with_1008() {
    let mut stack = Stack::start("[transmission_limit]\ncapacity = 5\nduration = \"10s\"").await;
    let mut client = connect(&stack.server.url("/echo")).await;
    for n in 0..5 {
        echo_roundtrip(&mut client, &format!("message {n}")).await;
    }
    client.send(WsMessage::text("one too many")).await.unwrap();
    assert_eq!(
        next_close(&mut client).await,
        (1008, "message rate limit exceeded".to_owned())
    );
    drop(client);
    assert_eq!(stack.closed().await, CloseReason::RateLimited);
    stack.server.stop().await;
}

#[tokio::test]
async fn oversize_message_is_closed_with_1009() {
    let mut stack = Stack::start("max_message_size = 1024").await;
    let mut client = connect(&stack.server.url("/echo")).await;
    echo_roundtrip(&mut client, &"x".repeat(1024)).await;
    client
        .send(WsMessage::text("x".repeat(1025)))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut client).await,
        (1009, "message too big".to_owned())
    );
    drop(client);
    assert_eq!(stack.closed().await, CloseReason::MessageTooBig);
    stack.server.stop().await;
}

#[tokio::test]
async fn foreign_origin_gets_403_and_a_listed_one_passes() {
    let stack = Stack::start(r#"allowed_origins = ["https://app.example.com"]"#).await;
    let response = stack.handshake("Origin: https://evil.example\r\n").await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(
        response.body,
        "origin \"https://evil.example\" is not allowed"
    );
    let url = stack.server.url("/echo");
    let mut client = connect_with(&url, &[("origin", "https://app.example.com")]).await;
    echo_roundtrip(&mut client, "same site").await;
    drop(client);
    stack.server.stop().await;
}

#[tokio::test]
async fn the_whole_stack_lets_a_good_client_through() {
    let toml = r#"
        max_connections = 10
        idle_timeout = "30s"
        max_connection_age = "1h"
        max_message_size = 65536
        allowed_origins = ["https://app.example.com"]
        [transmission_limit]
        capacity = 100
        duration = "1s"
        [rate_limit]
        per_second = 10
        burst = 10
        [auth]
        mode = "bearer"
        tokens = { "t-bob" = "bob" }
    "#;
    let stack = Stack::start(toml).await;
    let url = stack.server.url("/echo");
    let headers = [
        ("authorization", "Bearer t-bob"),
        ("origin", "https://app.example.com"),
    ];
    let mut client = connect_with(&url, &headers).await;
    client.send(WsMessage::text("whoami")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "bob");
    echo_roundtrip(&mut client, "through every layer").await;
    drop(client);
    stack.server.stop().await;
}
