//! The example server binary and its config file: every key changes what the server does,
//! every bad value stops it at startup with a message that names the key.

mod common;
#[cfg(feature = "redis")]
#[path = "common/redis.rs"]
mod redis_server;

use std::net::{IpAddr, TcpListener};
use std::time::Duration;

use common::example::{startup_error, ExampleServer};
use common::{
    connect, connect_from, connect_with, echo_roundtrip, handshake_request, next_close,
    raw_request, raw_request_from, within, RawWs,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Every server in these tests listens on a port the OS picks.
const ANY_PORT: &[&str] = &["--bind", "127.0.0.1:0"];

/// How late a timed close may come: the server is another process, on two busy cores.
/// Each clock starts before the connection does, so nothing may come early.
const SLACK: Duration = Duration::from_millis(250);

/// Asserts that `took` is `expected`, late by at most [`SLACK`].
fn on_time(what: &str, took: Duration, expected: Duration) {
    assert!(
        took >= expected && took <= expected + SLACK,
        "{what} after {took:?}, expected {expected:?} (+{SLACK:?})"
    );
}

async fn get(server: &ExampleServer, path: &str) -> common::RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw_request(server.addr, request).await
}

async fn handshake(server: &ExampleServer, path: &str, extra: &str) -> common::RawResponse {
    raw_request(server.addr, handshake_request(path, extra)).await
}

#[tokio::test]
async fn without_a_config_file_the_defaults_echo_and_answer_health() {
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let mut client = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut client, "hello").await;
    let health = get(&server, "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "OK"));
    let nowhere = get(&server, "/nowhere").await;
    assert_eq!(
        (nowhere.status, nowhere.body.as_str()),
        (404, "no route for /nowhere")
    );
}

#[tokio::test]
async fn the_shipped_example_config_loads_and_runs_as_is() {
    let toml = include_str!("../examples/server.toml");
    let server = ExampleServer::start(toml, ANY_PORT);
    let health = get(&server, "/health").await;
    assert_eq!(health.status, 200);
    let refused = handshake(&server, "/echo", "").await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Basic realm="estuary""#)
    );
    let alice = "Basic YWxpY2U6d29uZGVybGFuZA=="; // alice:wonderland
    let mut client = connect_with(&server.url("/echo"), &[("authorization", alice)]).await;
    echo_roundtrip(&mut client, "as shipped").await;
}

#[tokio::test]
async fn bind_sets_the_address_and_the_flag_overrides_it() {
    let server = ExampleServer::start(r#"bind = "127.0.0.1:0""#, &[]);
    assert_eq!(server.addr.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_ne!(server.addr.port(), 0);
    drop(server);

    // 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it fails...
    let unreachable = r#"bind = "192.0.2.1:4000""#;
    let (status, stderr) = match ExampleServer::try_start(Some(unreachable), &[]) {
        Ok(server) => panic!("listening on {}", server.addr),
        Err(failure) => failure,
    };
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("bind: cannot listen on 192.0.2.1:4000"),
        "{stderr}"
    );
    // ...unless --bind says otherwise.
    let server = ExampleServer::start(unreachable, ANY_PORT);
    let health = get(&server, "/health").await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn echo_path_and_health_path_move_the_routes() {
    let server = ExampleServer::start(
        r#"
        echo_path = "/ws/echo"
        health_path = "/healthz"
        "#,
        ANY_PORT,
    );
    let mut client = connect(&server.url("/ws/echo")).await;
    echo_roundtrip(&mut client, "moved").await;
    assert_eq!(handshake(&server, "/echo", "").await.status, 404);
    let health = get(&server, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "OK"));
    assert_eq!(get(&server, "/health").await.status, 404);
}

#[tokio::test]
async fn reuse_port_lets_two_servers_share_a_port() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let bind = format!("bind = \"127.0.0.1:{port}\"\n");
    let shared = format!("{bind}reuse_port = true");
    let first = ExampleServer::start(&shared, &[]);
    let second = ExampleServer::start(&shared, &[]);
    assert_eq!(first.addr, second.addr);
    drop(second);

    let exclusive = format!("{bind}reuse_port = false");
    let (status, stderr) = match ExampleServer::try_start(Some(&exclusive), &[]) {
        Ok(server) => panic!("a second server listens on {}", server.addr),
        Err(failure) => failure,
    };
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

#[tokio::test]
async fn max_connections_caps_open_sockets() {
    let server = ExampleServer::start("max_connections = 1", ANY_PORT);
    let mut client = connect(&server.url("/echo")).await;
    let refused = handshake(&server, "/echo", "").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    echo_roundtrip(&mut client, "still one").await;
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_socket_with_1000() {
    let server = ExampleServer::start(r#"idle_timeout = "300ms""#, ANY_PORT);
    let started = std::time::Instant::now();
    let mut client = connect(&server.url("/echo")).await;
    assert_eq!(
        next_close(&mut client).await,
        (1000, "idle timeout".to_owned())
    );
    on_time("closed", started.elapsed(), Duration::from_millis(300));
}

/// `keepalive_interval` and `keepalive_timeout`: a silent client is pinged, and one that
/// leaves the ping unanswered is closed as idle, even with `idle_timeout` off.
#[tokio::test]
async fn keepalive_pings_a_silent_client_and_closes_one_that_does_not_answer() {
    let server = ExampleServer::start(
        r#"
        idle_timeout = "infinity"
        keepalive_interval = "200ms"
        keepalive_timeout = "300ms"
        "#,
        ANY_PORT,
    );
    let started = std::time::Instant::now();
    let mut ws = RawWs::connect(server.addr, "/echo").await;
    let ping = ws.read_frame().await.expect("a keep-alive ping");
    assert_eq!(ping.opcode, 0x9, "{ping:?}");
    on_time("pinged", started.elapsed(), Duration::from_millis(200));
    assert_eq!(ws.read_close().await, (1000, "idle timeout".to_owned()));
    on_time("closed", started.elapsed(), Duration::from_millis(500));
}

#[tokio::test]
async fn max_connection_age_closes_a_busy_socket_with_1001() {
    let server = ExampleServer::start(
        r#"
        idle_timeout = "infinity"
        max_connection_age = "300ms"
        "#,
        ANY_PORT,
    );
    let started = std::time::Instant::now();
    let mut client = connect(&server.url("/echo")).await;
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
    let (took, age) = (started.elapsed(), Duration::from_millis(300));
    let late = Duration::from_millis(50) + SLACK;
    assert!(
        took >= age && took <= age + late,
        "closed after {took:?}, expected {age:?} (+{late:?})"
    );
}

#[tokio::test]
async fn max_connection_age_jitter_spreads_the_closes_over_the_window() {
    let server = ExampleServer::start(
        r#"
        idle_timeout = "infinity"
        keepalive_interval = "infinity"
        max_connection_age = "1200ms"
        max_connection_age_jitter = 0.5
        "#,
        ANY_PORT,
    );
    let (age, window_start) = (Duration::from_millis(1200), Duration::from_millis(600));
    let url = server.url("/echo");
    let ages = futures_util::future::join_all((0..16).map(|_| async {
        let started = std::time::Instant::now();
        let mut client = connect(&url).await;
        let close = next_close(&mut client).await;
        assert_eq!(close, (1001, "max connection age reached".to_owned()));
        started.elapsed()
    }))
    .await;
    for took in &ages {
        assert!(
            *took >= window_start && *took <= age + SLACK,
            "closed after {took:?}, expected {window_start:?} to {age:?} (+{SLACK:?}): {ages:?}"
        );
    }
    // 16 uniform draws over 600 ms all within 200 ms of each other: about 1 in a million.
    let spread = ages
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*ages.iter().min().unwrap());
    assert!(
        spread >= Duration::from_millis(200),
        "opened together, closed within {spread:?} of each other: {ages:?}"
    );
}

#[tokio::test]
async fn max_message_size_closes_on_a_larger_message_with_1009() {
    let server = ExampleServer::start("max_message_size = 100", ANY_PORT);
    let mut client = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut client, &"x".repeat(100)).await;
    client.send(WsMessage::text("x".repeat(101))).await.unwrap();
    assert_eq!(
        next_close(&mut client).await,
        (1009, "message too big".to_owned())
    );
}

#[tokio::test]
async fn show_debug_logs_logs_every_socket_at_debug_level() {
    for (show, debug_lines) in [(true, true), (false, false)] {
        let server = ExampleServer::start(&format!("show_debug_logs = {show}"), ANY_PORT);
        let mut client = connect(&server.url("/echo")).await;
        client.close(None).await.unwrap();
        while let Some(Ok(_)) = within("close", client.next()).await {}
        drop(client);
        // Everything it logged, once it has exited: the close included, logged or not.
        let (status, logged) = tokio::task::spawn_blocking(move || server.terminate_with_logs())
            .await
            .unwrap();
        assert!(status.success(), "{status}");
        assert!(logged.contains("stopped"), "the log is complete: {logged}");
        assert_eq!(logged.contains("websocket closed"), debug_lines, "{logged}");
        assert_eq!(logged.contains(" DEBUG "), debug_lines, "{logged}");
    }
}

#[tokio::test]
async fn allowed_origins_turns_foreign_origins_away() {
    let server = ExampleServer::start(r#"allowed_origins = ["https://app.example.com"]"#, ANY_PORT);
    let foreign = handshake(&server, "/echo", "Origin: https://evil.example\r\n").await;
    assert_eq!(foreign.status, 403);
    let origin = [("origin", "https://app.example.com")];
    let mut client = connect_with(&server.url("/echo"), &origin).await;
    echo_roundtrip(&mut client, "welcome").await;
}

#[tokio::test]
async fn transmission_limit_allows_capacity_per_duration_then_closes_with_1008() {
    let server = ExampleServer::start(
        "[transmission_limit]\ncapacity = 3\nduration = \"400ms\"",
        ANY_PORT,
    );
    let mut client = connect(&server.url("/echo")).await;
    for n in 0..3 {
        echo_roundtrip(&mut client, &format!("first window {n}")).await;
    }
    // A new window: capacity again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..3 {
        echo_roundtrip(&mut client, &format!("second window {n}")).await;
    }
    client.send(WsMessage::text("one too many")).await.unwrap();
    assert_eq!(
        next_close(&mut client).await,
        (1008, "message rate limit exceeded".to_owned())
    );
}

#[tokio::test]
async fn rate_limit_counts_every_route_and_closes_what_it_refuses() {
    let server = ExampleServer::start("[rate_limit]\nper_second = 1\nburst = 4", ANY_PORT);
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    for (path, status) in [
        ("/health", 200),
        ("/", 200),
        ("/metrics", 200),
        ("/nope", 404),
    ] {
        let answer = raw_request_from(here, server.addr, request(path)).await;
        assert_eq!(answer.status, status, "{path}");
    }
    for path in ["/health", "/", "/metrics", "/nope", "/echo"] {
        let stream = common::tcp_from(here, server.addr).await;
        let mut stream = stream;
        let refused = common::raw_exchange(&mut stream, request(path)).await;
        assert_eq!(refused.status, 429, "{path}: {refused:?}");
        assert_eq!(refused.header("connection"), Some("close"), "{path}");
        assert!(common::closed_by_server(&mut stream).await, "{path}");
    }
    // Another address has a budget of its own, on every route.
    let there: IpAddr = "127.0.0.2".parse().unwrap();
    let health = raw_request_from(there, server.addr, request("/health")).await;
    assert_eq!(health.status, 200);
    let mut client = connect_from(there, &server.url("/echo")).await;
    echo_roundtrip(&mut client, "own budget").await;
}

#[tokio::test]
async fn max_connections_per_ip_caps_one_address_while_another_connects() {
    let server = ExampleServer::start("max_connections_per_ip = 2", ANY_PORT);
    let crowd: IpAddr = "127.0.0.2".parse().unwrap();
    let mut first = connect_from(crowd, &server.url("/echo")).await;
    let _second = connect_from(crowd, &server.url("/ws")).await;
    let refused = raw_request_from(crowd, server.addr, handshake_request("/echo", "")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.body,
        "connection limit reached: this client has 2 sockets open"
    );
    assert_eq!(refused.header("connection"), Some("close"));
    let mut other = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut other, "another address").await;
    echo_roundtrip(&mut first, "still open").await;
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = within("close", first.next()).await {}
    let mut again = common::connect_from_when_free(crowd, &server.url("/echo")).await;
    echo_roundtrip(&mut again, "after one closed").await;
}

#[tokio::test]
async fn max_pending_handshakes_per_ip_turns_one_address_away_while_another_connects() {
    use tokio::io::AsyncWriteExt;
    let server = ExampleServer::start("max_pending_handshakes_per_ip = 2", ANY_PORT);
    let crowd: IpAddr = "127.0.0.2".parse().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = common::tcp_from(crowd, server.addr).await;
        tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: t")
            .await
            .unwrap();
        stalled.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = raw_request_from(crowd, server.addr, handshake_request("/echo", "")).await;
    assert_eq!(busy.status, 503);
    assert_eq!(
        busy.body,
        "too many handshakes in progress from this address\n"
    );
    assert_eq!(busy.header("retry-after"), Some("1"));
    let mut other = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut other, "another address").await;
    drop(stalled);
}

#[tokio::test]
async fn without_allowed_origins_only_the_servers_own_pages_may_connect() {
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let own = format!("http://{}", server.addr);
    let other_port = format!("http://127.0.0.1:{}", server.addr.port() + 1);
    for path in ["/echo", "/ws"] {
        let host = format!("Host: {}\r\n", server.addr);
        let foreign = format!("Origin: {other_port}\r\n");
        let request = handshake_request(path, &foreign).replace("Host: test\r\n", &host);
        let refused = raw_request(server.addr, request).await;
        assert_eq!(refused.status, 403, "{path}");
        assert_eq!(
            refused.body,
            format!("origin \"{other_port}\" is not allowed")
        );
        assert_eq!(refused.header("connection"), Some("close"));
        let same = [("origin", own.as_str())];
        let mut client = connect_with(&server.url(path), &same).await;
        client.send(WsMessage::Ping(vec![1].into())).await.unwrap();
    }
    // Clients that are not browsers send no Origin, and pass.
    let mut client = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut client, "no origin").await;
}

#[tokio::test]
async fn max_message_size_is_1_mib_by_default() {
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let mut client = connect(&server.url("/echo")).await;
    let largest = "x".repeat(1 << 20);
    echo_roundtrip(&mut client, &largest).await;
    client
        .send(WsMessage::text("x".repeat((1 << 20) + 1)))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut client).await,
        (1009, "message too big".to_owned())
    );
}

#[tokio::test]
async fn query_tokens_never_reach_the_log_at_trace_level() {
    const GOOD: &str = "s3cret-good-4711";
    const BAD: &str = "s3cret-bad-0815";
    let server = ExampleServer::start_logging(
        &format!(
            "[auth]\nmode = \"bearer\"\ntokens = {{ \"{GOOD}\" = \"dave\" }}\nquery_param = \"key\""
        ),
        ANY_PORT,
        "trace",
    );
    let mut client = connect(&server.url(&format!("/echo?key={GOOD}&room=a"))).await;
    echo_roundtrip(&mut client, "with a token").await;
    client.close(None).await.unwrap();
    while let Some(Ok(_)) = within("close", client.next()).await {}
    let mut chat = connect(&server.url(&format!("/ws?key={GOOD}&join=lobby"))).await;
    chat.send(WsMessage::text(
        r#"{"type":"say","channel":"lobby","text":"hi"}"#,
    ))
    .await
    .unwrap();
    let _ = within("a chat event", chat.next()).await;
    drop(chat);
    let refused = handshake(&server, &format!("/echo?key={BAD}"), "").await;
    assert_eq!(refused.status, 401);
    let refused = handshake(
        &server,
        &format!("/ws?key={BAD}"),
        "Sec-WebSocket-Version: 8\r\n",
    )
    .await;
    assert!(refused.status >= 400);
    let logs = within("the closes in the log", async {
        loop {
            let logs = server.logs();
            if logs.matches("websocket closed").count() >= 2 {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // RUST_LOG=trace lets every level through; the library logs down to debug.
    assert!(logs.contains(" DEBUG "), "verbose logging is on: {logs}");
    assert!(logs.contains("websocket handshake refused"), "{logs}");
    for token in [GOOD, BAD] {
        let leaks: Vec<&str> = logs.lines().filter(|line| line.contains(token)).collect();
        assert!(leaks.is_empty(), "{token} in the log: {leaks:#?}");
    }
}

#[tokio::test]
async fn rate_limit_allows_a_burst_then_per_second() {
    let server = ExampleServer::start("[rate_limit]\nper_second = 20\nburst = 2", ANY_PORT);
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let _first = connect_from(here, &server.url("/echo")).await;
    let _second = connect_from(here, &server.url("/echo")).await;
    let request = handshake_request("/echo", "");
    let refused = raw_request_from(here, server.addr, &request).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Another client IP has its own budget...
    let _other = connect_from("127.0.0.2".parse().unwrap(), &server.url("/echo")).await;
    // ...and this one earns a handshake back every 1/20 s.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let _third = connect_from(here, &server.url("/echo")).await;

    // Without `burst`, the burst is `per_second`.
    let server = ExampleServer::start("[rate_limit]\nper_second = 2", ANY_PORT);
    let _first = connect(&server.url("/echo")).await;
    let _second = connect(&server.url("/echo")).await;
    assert_eq!(handshake(&server, "/echo", "").await.status, 429);
}

#[tokio::test]
async fn auth_basic_checks_users_and_names_the_realm() {
    let server = ExampleServer::start(
        r#"
        [auth]
        mode = "basic"
        realm = "the realm"
        users = { carol = "hunter2" }
        "#,
        ANY_PORT,
    );
    let refused = handshake(&server, "/echo", "").await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Basic realm="the realm""#)
    );
    let carol = "Basic Y2Fyb2w6aHVudGVyMg=="; // carol:hunter2
    let mut client = connect_with(&server.url("/echo"), &[("authorization", carol)]).await;
    echo_roundtrip(&mut client, "hi carol").await;
    let health = get(&server, "/health").await;
    assert_eq!(health.status, 200, "health stays open");
}

#[tokio::test]
async fn auth_bearer_checks_tokens_in_the_header_and_the_query_param() {
    let server = ExampleServer::start(
        r#"
        [auth]
        mode = "bearer"
        realm = "api"
        tokens = { "t-dave" = "dave" }
        query_param = "key"
        "#,
        ANY_PORT,
    );
    let refused = handshake(&server, "/echo", "").await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );
    let wrong = handshake(&server, "/echo", "Authorization: Bearer t-eve\r\n").await;
    assert_eq!(
        wrong.header("www-authenticate"),
        Some(r#"Bearer realm="api", error="invalid_token""#)
    );
    let by_header = [("authorization", "Bearer t-dave")];
    let mut client = connect_with(&server.url("/echo"), &by_header).await;
    echo_roundtrip(&mut client, "header").await;
    let mut client = connect(&server.url("/echo?key=t-dave")).await;
    echo_roundtrip(&mut client, "query").await;

    // Without query_param, only the header counts.
    let server = ExampleServer::start(
        "[auth]\nmode = \"bearer\"\ntokens = { \"t-dave\" = \"dave\" }",
        ANY_PORT,
    );
    assert_eq!(handshake(&server, "/echo?key=t-dave", "").await.status, 401);
    assert_eq!(
        handshake(&server, "/echo?access_token=t-dave", "")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn auth_mode_none_lets_everyone_in() {
    let server = ExampleServer::start(
        "[auth]\nmode = \"none\"\nusers = { carol = \"hunter2\" }",
        ANY_PORT,
    );
    let mut client = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut client, "anyone").await;
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_cleanly() {
    let server = ExampleServer::start("", ANY_PORT);
    let mut client = connect(&server.url("/echo")).await;
    let url = server.url("/echo");
    let exit = std::thread::spawn(move || server.terminate());
    assert_eq!(
        next_close(&mut client).await,
        (1001, "going away".to_owned())
    );
    drop(client);
    let status = exit.join().expect("terminate");
    assert!(status.success(), "{status}");
    let refused = tokio_tungstenite::connect_async(&url).await;
    assert!(refused.is_err(), "nothing listens after shutdown");
}

#[test]
fn every_bad_value_fails_startup_with_a_message_naming_the_key() {
    let cases: &[(&str, &str)] = &[
        (
            r#"idle_timeout = "12x""#,
            r#"config: idle_timeout: invalid duration "12x""#,
        ),
        (
            r#"idle_timeout = "0s""#,
            "config: idle_timeout: \"0s\" is zero",
        ),
        (
            r#"keepalive_interval = "soon""#,
            r#"config: keepalive_interval: invalid duration "soon""#,
        ),
        (
            r#"keepalive_timeout = "0s""#,
            "config: keepalive_timeout: \"0s\" is zero",
        ),
        (
            "idle_timeout = 30",
            r#"config: idle_timeout: invalid type: integer `30`, expected a duration such as "30s""#,
        ),
        (
            r#"max_connection_age = "forever""#,
            r#"config: max_connection_age: invalid duration "forever""#,
        ),
        (
            "max_connection_age_jitter = 1.5",
            "config: max_connection_age_jitter: 1.5 is not a fraction: expected 0 (no jitter) to 1",
        ),
        (
            r#"max_connection_age_jitter = "10%""#,
            r#"config: max_connection_age_jitter: invalid type: string "10%", expected f64"#,
        ),
        (
            "[transmission_limit]\ncapacity = 5\nduration = \"infinity\"",
            r#"config: transmission_limit.duration: invalid duration "infinity""#,
        ),
        (
            "[transmission_limit]\ncapacity = 0\nduration = \"1s\"",
            "config: transmission_limit.capacity: invalid value: integer `0`",
        ),
        (
            "[transmission_limit]\ncapacity = 5",
            "config: transmission_limit: missing field `duration`",
        ),
        (
            "[rate_limit]\nper_second = 0",
            "config: rate_limit.per_second: invalid value: integer `0`",
        ),
        (
            "max_connections_per_ip = 0",
            "config: max_connections_per_ip: invalid value: integer `0`",
        ),
        (
            "max_pending_handshakes_per_ip = 0",
            "config: max_pending_handshakes_per_ip: invalid value: integer `0`",
        ),
        (
            "ipv6_prefix = 129",
            "config: ipv6_prefix: 129 is not a prefix length: expected 0 to 128",
        ),
        (
            "ipv6_prefix = -1",
            "config: ipv6_prefix: invalid value: integer `-1`",
        ),
        (
            r#"ipv6_prefix = "64""#,
            "config: ipv6_prefix: invalid type: string \"64\"",
        ),
        (
            "[rate_limit]\nper_second = 5\nburst = 0",
            "config: rate_limit.burst: invalid value: integer `0`",
        ),
        (
            "[rate_limit]\nper_second = -1",
            "config: rate_limit.per_second: invalid value: integer `-1`",
        ),
        (
            "max_connections = 0",
            "config: max_connections: invalid value: integer `0`",
        ),
        (
            "max_message_size = \"1MB\"",
            "config: max_message_size: invalid type: string \"1MB\"",
        ),
        (
            "reuse_port = \"yes\"",
            "config: reuse_port: invalid type: string",
        ),
        (
            "show_debug_logs = 1",
            "config: show_debug_logs: invalid type: integer",
        ),
        ("h2c = \"on\"", "config: h2c: invalid type: string"),
        ("http2 = 2", "config: http2: invalid type: integer"),
        (
            "bind = \"localhost\"",
            "config: bind: invalid socket address syntax",
        ),
        (
            "echo_path = \"echo\"",
            "config: echo_path: \"echo\" is not a path",
        ),
        (
            "health_path = \"/h?x=1\"",
            "config: health_path: \"/h?x=1\" is not a path",
        ),
        (
            "echo_path = \"/same\"\nhealth_path = \"/same\"",
            "config: echo_path: \"/same\" is also the health_path",
        ),
        (
            "allowed_origins = [\"app.example.com\"]",
            "config: allowed_origins: invalid origin \"app.example.com\"",
        ),
        (
            "allowed_origins = \"https://a.example\"",
            "config: allowed_origins: invalid type",
        ),
        (
            "idle_timout = \"5s\"",
            "config: idle_timout: unknown key `idle_timout`",
        ),
        (
            "[compression]\nlevel = 10",
            "config: compression.level: 10 is not a zlib level",
        ),
        (
            "[compression]\nwindow_bits = 7",
            "config: compression.window_bits: 7 is not a window size",
        ),
        (
            "[compression]\nwindow_bits = 16",
            "config: compression.window_bits: 16 is not a window size",
        ),
        (
            "[compression]\nmode = \"dedicated\"",
            "config: compression.mode: unknown variant `dedicated`",
        ),
        (
            "[compression]\nthreshold = -1",
            "config: compression.threshold: invalid value",
        ),
        (
            "[compression]\nenable = true",
            "config: compression.enable: unknown key `enable`",
        ),
        (
            "[rate_limit]\nper_second = 5\nburts = 5",
            "config: rate_limit.burts: unknown key `burts`",
        ),
        (
            "[auth]\nmode = \"digest\"",
            "config: auth.mode: unknown variant `digest`",
        ),
        (
            "[auth]\nrealm = 7",
            "config: auth.realm: invalid type: integer",
        ),
        (
            "[auth]\nmode = \"basic\"",
            "config: auth.users: mode = \"basic\" needs at least one entry",
        ),
        (
            "[auth]\nmode = \"bearer\"",
            "config: auth.tokens: mode = \"bearer\" needs at least one entry",
        ),
        (
            "[auth]\nmode = \"basic\"\nusers = { \"a:b\" = \"c\" }",
            "config: auth.users: user name \"a:b\" contains ':'",
        ),
        (
            "[auth]\nmode = \"bearer\"\ntokens = { \"\" = \"nobody\" }",
            "config: auth.tokens: a token must not be empty",
        ),
        (
            "[auth]\nmode = \"bearer\"\ntokens = { t = \"u\" }\nquery_param = \"\"",
            "config: auth.query_param: must not be empty",
        ),
        (
            "[auth]\nusers = [\"alice\"]",
            "config: auth.users: invalid type: sequence",
        ),
        (
            "[auth]\nquery_param = 5",
            "config: auth.query_param: invalid type: integer",
        ),
        ("max_connections = ", "config: line 1: "),
        (
            "metrics_path = \"metrics\"",
            "config: metrics_path: \"metrics\" is not a path",
        ),
        (
            "chat_path = \"/health\"",
            "config: chat_path: \"/health\" is also the health_path",
        ),
        (
            "echo_path = \"/\"",
            "config: echo_path: \"/\" is also the chat page",
        ),
        (
            "shutdown_timeout = \"0s\"",
            "config: shutdown_timeout: \"0s\" is zero",
        ),
        (
            "header_read_timeout = \"soon\"",
            "config: header_read_timeout: invalid duration \"soon\"",
        ),
        ("[redis]", "config: redis: missing field `url`"),
        (
            "max_pending_handshakes = 0",
            "config: max_pending_handshakes: invalid value: integer `0`",
        ),
        (
            "[redis]\nurl = \"http://user:hunter2@127.0.0.1:6379\"",
            if cfg!(feature = "redis") {
                "config: redis.url: expected a URL starting with redis://, rediss://, unix://, got scheme \"http\""
            } else {
                "config: redis.url: this build has no Redis support"
            },
        ),
        (
            "[redis]\nurl = []",
            "config: redis.url: the list of cluster nodes is empty",
        ),
        (
            "[redis]\nurl = 6379",
            "config: redis.url: invalid type: integer `6379`, expected a redis:// URL, or a list",
        ),
        (
            "[redis]\nurl = \"redis://h\"\nrouting = \"sideways\"",
            "config: redis.routing: unknown variant `sideways`, expected `interest` or `broadcast`",
        ),
        (
            "[redis]\nurl = \"redis://h\"\ndelivery_deadline = \"0s\"",
            "config: redis.delivery_deadline: \"0s\" is zero",
        ),
        (
            "[hub]\nmax_channels_per_connection = 0",
            "config: hub.max_channels_per_connection: invalid value: integer `0`",
        ),
        (
            "[hub]\nmax_channel_length = 70000",
            "config: hub.max_channel_length: may be at most 65535 bytes",
        ),
        (
            "[hub.channels.\"a*b\"]\njoin = [\"alice\"]",
            "config: hub.channels.\"a*b\": a `*` may only end a pattern",
        ),
        (
            "[hub.channels.lobby]\nspeak = [\"alice\"]",
            "config: hub.channels.lobby.speak: unknown key `speak`, expected one of `join`, `say`, `history_size`, `history_ttl`",
        ),
        (
            "[hub.channels.lobby]\nhistory_ttl = \"5m\"",
            "config: hub.channels.\"lobby\".history_ttl: needs history_size",
        ),
        (
            "[hub.channels.lobby]\nhistory_size = 0",
            "config: hub.channels.lobby.history_size: invalid value: integer `0`",
        ),
        (
            "[hub.channels.lobby]\nhistory_size = 10\nhistory_ttl = \"0s\"",
            "config: hub.channels.lobby.history_ttl: \"0s\" is zero",
        ),
    ];
    for (toml, expected) in cases {
        let stderr = startup_error(toml);
        assert!(
            stderr.starts_with(expected),
            "config:\n{toml}\nexpected stderr to start with:\n{expected}\ngot:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_fails_startup_with_its_path() {
    let missing = "/nonexistent/estuary-server.toml";
    let output = std::process::Command::new(common::example::binary())
        .args(["--config", missing])
        .output()
        .expect("run the example server");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("config: cannot read {missing}: ")),
        "{stderr}"
    );
}

/// The first JSON message on a chat socket.
async fn chat_event(client: &mut common::Client) -> serde_json::Value {
    match within("a chat event", client.next()).await {
        Some(Ok(WsMessage::Text(text))) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a JSON text message, got {other:?}"),
    }
}

#[tokio::test]
async fn chat_path_moves_the_chat_and_the_page_is_at_the_root() {
    let server = ExampleServer::start("chat_path = \"/chat\"", ANY_PORT);
    let mut alice = connect(&server.url("/chat?name=alice&join=lobby")).await;
    assert_eq!(chat_event(&mut alice).await["type"], "welcome");
    assert_eq!(chat_event(&mut alice).await["type"], "joined");
    let say = r#"{"type":"say","channel":"lobby","text":"hi"}"#;
    alice.send(WsMessage::text(say)).await.unwrap();
    let message = chat_event(&mut alice).await;
    assert_eq!(
        (message["from"].as_str(), message["text"].as_str()),
        (Some("alice"), Some("hi"))
    );
    alice.send(WsMessage::text("not json")).await.unwrap();
    assert_eq!(chat_event(&mut alice).await["type"], "error");
    assert_eq!(
        get(&server, "/ws").await.status,
        404,
        "the old path is gone"
    );
    let page = get(&server, "/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn metrics_path_serves_prometheus_text_and_empty_turns_it_off() {
    let server = ExampleServer::start("metrics_path = \"/stats\"", ANY_PORT);
    let mut client = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut client, "counted").await;
    let metrics = get(&server, "/stats").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("estuary_handshakes_total{outcome=\"accepted\"} 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("estuary_connections 1"),
        "{}",
        metrics.body
    );
    // The hub's registry, with one chat client in one channel.
    let mut chat = connect(&server.url("/ws?join=lobby")).await;
    assert_eq!(chat_event(&mut chat).await["type"], "welcome");
    assert_eq!(chat_event(&mut chat).await["type"], "joined");
    let metrics = get(&server, "/stats").await;
    for line in [
        "estuary_hub_sessions 1",
        "estuary_hub_users 1",
        "estuary_hub_channels 1",
        "estuary_hub_names 0",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "{line}: {}",
            metrics.body
        );
    }

    let off = ExampleServer::start("metrics_path = \"\"", ANY_PORT);
    assert_eq!(get(&off, "/metrics").await.status, 404);
}

#[tokio::test]
async fn shutdown_timeout_bounds_how_long_shutdown_waits_for_sockets() {
    let server = ExampleServer::start("shutdown_timeout = \"1s\"", ANY_PORT);
    // A client that never answers the server's close frame.
    let _silent = common::RawWs::connect(server.addr, "/echo").await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(900),
        "waited for the socket: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "gave up at the timeout, not the 5 s close timeout: {took:?}"
    );
}

#[tokio::test]
async fn header_read_timeout_cuts_off_a_slow_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = ExampleServer::start("header_read_timeout = \"300ms\"", ANY_PORT);
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = within("cut off", slow.read_to_end(&mut rest)).await;
    on_time("cut off", started.elapsed(), Duration::from_millis(300));
    match read {
        // The server closed: with nothing or a 408 before it.
        Ok(_) => assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_url_joins_two_servers_into_one_chat() {
    let redis = redis_server::RedisServer::start();
    let config = format!("[redis]\nurl = \"{}\"", redis.url());
    let node_a = ExampleServer::start(&config, ANY_PORT);
    let node_b = ExampleServer::start(&config, ANY_PORT);
    let mut alice = connect(&node_a.url("/ws?name=alice&join=lobby")).await;
    let mut bob = connect(&node_b.url("/ws?name=bob&join=lobby")).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(chat_event(client).await["type"], "welcome");
        assert_eq!(chat_event(client).await["type"], "joined");
    }
    let say = r#"{"type":"say","channel":"lobby","text":"across nodes"}"#;
    alice.send(WsMessage::text(say)).await.unwrap();
    for client in [&mut alice, &mut bob] {
        let message = chat_event(client).await;
        assert_eq!(message["text"], "across nodes");
        assert_eq!(message["from"], "alice");
    }
    let members = r#"{"type":"members","channel":"lobby"}"#;
    bob.send(WsMessage::text(members)).await.unwrap();
    let listed = chat_event(&mut bob).await;
    assert_eq!(
        listed["members"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn the_redis_password_never_shows_in_errors_or_logs() {
    let redis = redis_server::RedisServer::start_with(&["--requirepass", "hunter2"]);
    let wrong = format!(
        "[redis]\nurl = \"redis://:letmein@127.0.0.1:{}/\"",
        redis.port
    );
    let stderr = startup_error(&wrong);
    assert!(
        stderr.contains(
            "redis.url: cannot join the backplane: redis: connecting to redis://:***@127.0.0.1:"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("letmein"), "{stderr}");
    let right = format!(
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:{}/\"",
        redis.port
    );
    let server = ExampleServer::start(&right, ANY_PORT);
    let logs = server.logs();
    assert!(logs.contains("hub joined the redis backplane"), "{logs}");
    assert!(logs.contains("redis://:***@127.0.0.1:"), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
}

#[tokio::test]
async fn max_pending_handshakes_turns_away_one_more_with_503() {
    use tokio::io::AsyncWriteExt;
    let server = ExampleServer::start("max_pending_handshakes = 2", ANY_PORT);
    // Two handshakes that never finish their headers hold both places.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: t")
            .await
            .unwrap();
        stalled.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = handshake(&server, "/echo", "").await;
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(busy.body, "too many handshakes in progress\n");
    drop(stalled);
    let mut client = within("a place frees up", async {
        loop {
            if let Ok((client, _)) = tokio_tungstenite::connect_async(server.url("/echo")).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    echo_roundtrip(&mut client, "after the stall").await;
    // An upgraded socket no longer counts: two more handshakes still get through.
    let mut second = connect(&server.url("/echo")).await;
    let mut third = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut second, "two").await;
    echo_roundtrip(&mut third, "three").await;
}
