//! WebSockets over HTTP/2 (RFC 8441) against HTTP/2 peers nobody on the project wrote:
//! Python's `h2` package opens every WebSocket as an extended CONNECT stream of one h2c
//! connection, and the `websockets` package frames the traffic (tests/http2/ws_over_h2.py).
//! The server is the library's own, behind the same layers as over HTTP/1.1; HTTP/2's own
//! limits (header list size, the rapid-reset attack) are tried with the same package
//! (tests/http2/abuse.py).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::sessions::SessionEcho;
use common::{serve_with, within, TestServer};
use estuary::middleware::auth::{AuthLayer, BearerTokens};
use estuary::{DeflateConfig, Server, WebSocketConfig, WebSocketService};
use serde_json::Value;
use tower::Layer;

/// The venv's Python (scripts/lib.sh `ensure_venv` makes it, with `h2` and `websockets`).
fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh (or `source scripts/lib.sh && ensure_venv`)",
        python.display()
    );
    python
}

/// Runs `script` (in tests/http2/) against `addr`, `path` and `token` (and `more`
/// arguments), and returns what it printed.
async fn run_h2_client(
    script: &str,
    addr: SocketAddr,
    path: &str,
    token: &str,
    more: &[&str],
) -> Value {
    let script = format!("{}/tests/http2/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = tokio::process::Command::new(python())
        .arg(&script)
        .args([
            &addr.ip().to_string(),
            &addr.port().to_string(),
            path,
            token,
        ])
        .args(more)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python HTTP/2 client");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the Python HTTP/2 client finished within 90 s")
        .expect("the Python HTTP/2 client ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// The server under test: h2c with extended CONNECT, bearer auth in front of an echo
/// that negotiates permessage-deflate.
async fn h2c_echo(token: &str, echo: SessionEcho) -> TestServer {
    let websocket = WebSocketService::new(echo)
        .with_config(WebSocketConfig::default().with_compression(DeflateConfig::default()));
    let auth = AuthLayer::new(BearerTokens::new("h2 test").with_token(token, "alice"));
    let builder = Server::builder()
        .h2c(true)
        .websockets_over_http2(true)
        .drain_timeout(Duration::from_secs(5));
    serve_with(builder, auth.layer(websocket)).await
}

#[tokio::test]
async fn fifty_websockets_share_one_h2c_connection_and_a_refused_one_leaves_them_be() {
    let echo = SessionEcho::default();
    let server = h2c_echo("s3cret", echo.clone()).await;

    let report = run_h2_client("ws_over_h2.py", server.addr, "/ws", "s3cret", &["50"]).await;

    assert_eq!(report["connect_protocol_enabled"], true, "{report}");
    assert_eq!(report["terminated"], Value::Null, "{report}");
    assert_eq!(report["timed_out"], false, "{report}");
    let sockets = report["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 50);
    for (i, socket) in sockets.iter().enumerate() {
        assert_eq!(socket["status"], 200, "socket {i}: {socket}");
        assert_eq!(socket["protocol"], "echo.v1", "socket {i}: {socket}");
        let deflate = socket["extensions"].as_str().unwrap_or_default();
        assert_eq!(
            deflate.starts_with("permessage-deflate"),
            i % 2 == 0,
            "socket {i} offered deflate: {}; {socket}",
            i % 2 == 0
        );
        assert_eq!(socket["text_ok"], true, "socket {i}: {socket}");
        assert_eq!(socket["binary_ok"], true, "socket {i}: {socket}");
        assert_eq!(socket["messages"], 2, "socket {i}: {socket}");
        assert_eq!(socket["close_code"], 1000, "socket {i}: {socket}");
        assert_eq!(socket["ended"], true, "socket {i}: {socket}");
        assert!(
            matches!(socket["reset"].as_u64(), None | Some(0)),
            "socket {i} was reset with an error: {socket}"
        );
    }

    let wrong = &report["refused"]["wrong_token"];
    assert_eq!(wrong["status"], 401, "{wrong}");
    assert!(
        wrong["www_authenticate"]
            .as_str()
            .is_some_and(|v| v.starts_with("Bearer realm=\"h2 test\"")),
        "{wrong}"
    );
    assert_eq!(
        wrong["connection"],
        Value::Null,
        "no Connection header in HTTP/2"
    );
    let other = &report["refused"]["other_protocol"];
    assert_eq!(other["status"], 501, "{other}");
    assert!(
        other["body"]
            .as_str()
            .unwrap()
            .contains("unsupported :protocol \"webtransport\""),
        "{other}"
    );

    // The server's side: every session ran over HTTP/2, all from one TCP connection.
    let seen = echo.opened();
    assert_eq!(seen.len(), 50);
    assert!(seen
        .iter()
        .all(|(version, _)| *version == http::Version::HTTP_2));
    let peers: HashSet<_> = seen.iter().map(|(_, peer)| *peer).collect();
    assert_eq!(peers.len(), 1, "one TCP connection: {peers:?}");
    within("every session ended", async {
        while server.shutdown.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_header_list_and_a_rapid_reset_flood_are_refused_and_the_server_goes_on() {
    let server = h2c_echo("s3cret", SessionEcho::default()).await;
    let report = run_h2_client("abuse.py", server.addr, "/ws", "s3cret", &[]).await;

    let big = &report["big_header"];
    assert_eq!(big["advertised_max_header_list_size"], 64 * 1024, "{big}");
    let events: Vec<&str> = big["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        events.first(),
        Some(&"response 431"),
        "an oversized header list is refused with 431 on its stream: {big}"
    );

    let flood = &report["rapid_reset"];
    assert!(
        flood["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "goaway ENHANCE_YOUR_CALM"),
        "a rapid-reset flood was not cut off: {flood}"
    );

    let afterwards = &report["afterwards"];
    assert_eq!(afterwards["events"][0], "response 200", "{afterwards}");
    server.stop().await;
}
