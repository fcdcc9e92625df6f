//! No secret reaches a log line or a `Debug` print, at any level: a token in the query of
//! a WebSocket URL, on the server (the session, its span, a refusal) and on the client
//! (its span, its logs, its errors), with every level of every target captured.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use estuary::client::{Client, ClientConfig};
use estuary::middleware::auth::{AuthLayer, QueryToken};
use estuary::{Conn, Handler, Message, WebSocketService};
use tower::ServiceBuilder;

use common::client::{next, next_message, recorder, Seen};
use common::{serve, within};

const TOKEN: &str = "s3cret-token-4711";
const WRONG: &str = "s3cret-wrong-0815";

/// Everything logged in this process, at every level.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        logs
    })
}

/// A writer that appends to the captured log.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs its `Conn` and sends back the `Debug` print of its session, then echoes.
#[derive(Clone)]
struct ShowsItself;

impl Handler for ShowsItself {
    async fn on_open(&mut self, conn: &mut Conn) {
        tracing::info!(?conn, "opened");
        let shown = format!("{:?} {:#?}", conn.session(), conn.session());
        let _ = conn.send(shown);
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        tracing::debug!(query = ?conn.session().query().map(str::len), "message");
        let _ = conn.send(msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_never_reach_a_log_line_or_a_debug_print() {
    let logs = captured();
    let tokens = QueryToken::new("test").with_token(TOKEN, "alice");
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(tokens))
        .service(WebSocketService::new(ShowsItself));
    let server = serve(service).await;

    // The client connects with the token in its URL, the server takes it.
    let url = server.url(&format!("/ws?access_token={TOKEN}&room=a"));
    let (handler, mut seen) = recorder(false);
    let builder = Client::builder(url.as_str()).config(ClientConfig::default());
    let builder_debug = format!("{builder:?}");
    let client = within("connect", builder.connect(handler))
        .await
        .expect("the token is accepted");
    assert!(matches!(next(&mut seen).await, Seen::Connected(None)));
    let session = next_message(&mut seen).await;
    let session = session.as_text().expect("a text message").to_owned();
    assert!(session.contains("alice"), "{session}");
    assert!(session.contains("/ws?<redacted>"), "{session}");
    client.send("hello").unwrap();
    assert_eq!(next_message(&mut seen).await.as_text(), Some("hello"));
    client.close(1000, "done").unwrap();
    within("the client stops", client.closed()).await;

    // A wrong token is refused; neither the error nor its Debug print shows it.
    let wrong = server.url(&format!("/ws?access_token={WRONG}"));
    let (handler, _seen) = recorder(false);
    let error = within("refused", Client::builder(wrong.as_str()).connect(handler))
        .await
        .expect_err("a wrong token is refused");
    let error = format!("{error} {error:?}");
    assert!(error.contains("401"), "{error}");
    // A URL the client cannot use is named in its error, without the query.
    let (handler, _seen) = recorder(false);
    let invalid = format!("http://127.0.0.1:1/ws?access_token={TOKEN}");
    let invalid = Client::builder(invalid).connect(handler).await.unwrap_err();
    let invalid = format!("{invalid} {invalid:?}");
    assert!(invalid.contains("?<redacted>"), "{invalid}");

    server.stop().await;
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    // The capture saw the server's and the client's verbose logs and spans.
    for expected in [
        "opened",
        "ws_client",
        "websocket handshake refused",
        "DEBUG",
    ] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the log:\n{logs}"
        );
    }
    assert!(logs.contains("?<redacted>"), "{logs}");
    for (what, shown) in [
        ("the log", logs.as_str()),
        ("the session's Debug", session.as_str()),
        ("the builder's Debug", builder_debug.as_str()),
        ("the refusal's error", error.as_str()),
        ("the invalid URL's error", invalid.as_str()),
    ] {
        for secret in [TOKEN, WRONG] {
            let leaks: Vec<&str> = shown.lines().filter(|l| l.contains(secret)).collect();
            assert!(leaks.is_empty(), "{secret} in {what}: {leaks:#?}");
        }
    }
}
