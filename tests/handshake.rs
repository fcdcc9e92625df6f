//! Handshakes over real HTTP: each malformed one gets its status and a reason, and the
//! handler can pick a subprotocol.

mod common;

use common::{handshake_request, raw_request, serve};
use estuary::{handler_fn, Conn, Handler, Message, WebSocketService};

fn echo() -> WebSocketService<impl Handler> {
    WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    }))
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn each_bad_handshake_gets_its_status_and_reason() {
    let server = serve(echo()).await;
    let cases = [
        (
            format!("POST / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}Content-Length: 0\r\n\r\n"),
            400,
            "WebSocket handshake must be a GET request, got POST",
        ),
        (
            format!("GET / HTTP/1.0\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"),
            400,
            "WebSocket handshake must be HTTP/1.1, got HTTP/1.0",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"),
            426,
            "missing \"Upgrade: websocket\" header: this endpoint only speaks WebSocket",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"),
            426,
            "missing \"Connection: upgrade\" header",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n{KEY}\r\n"),
            426,
            "unsupported Sec-WebSocket-Version \"8\": this server speaks version 13",
        ),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string(),
            400,
            "missing Sec-WebSocket-Key header",
        ),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAA\r\n\r\n".to_string(),
            400,
            "Sec-WebSocket-Key must be 16 bytes of base64, got 12",
        ),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %%%\r\n\r\n".to_string(),
            400,
            "Sec-WebSocket-Key is not valid base64",
        ),
    ];
    for (request, status, reason) in cases {
        let response = raw_request(server.addr, &request).await;
        assert_eq!(response.status, status, "{request}");
        assert_eq!(response.body.trim_end(), reason, "{request}");
        if status == 426 {
            assert_eq!(response.header("sec-websocket-version"), Some("13"));
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn valid_handshake_gets_101_with_the_rfc_accept_key() {
    let server = serve(echo()).await;
    let response = raw_request(server.addr, &handshake_request("/", "")).await;
    assert_eq!(response.status, 101);
    // RFC 6455 section 1.3's example key and answer.
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    server.stop().await;
}

#[derive(Clone)]
struct ChatOnly;

impl Handler for ChatOnly {
    fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
        offered.iter().copied().find(|p| p.starts_with("chat."))
    }

    async fn on_message(&mut self, conn: &mut Conn, _msg: Message) {
        let protocol = conn.session().protocol().unwrap_or("none").to_string();
        let _ = conn.send(protocol);
    }
}

#[tokio::test]
async fn handler_picks_one_of_the_offered_subprotocols() {
    let server = serve(WebSocketService::new(ChatOnly)).await;
    let offered = "Sec-WebSocket-Protocol: mqtt, chat.v2, chat.v1\r\n";
    let response = raw_request(server.addr, &handshake_request("/", offered)).await;
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-protocol"), Some("chat.v2"));

    let none = raw_request(
        server.addr,
        &handshake_request("/", "Sec-WebSocket-Protocol: mqtt\r\n"),
    )
    .await;
    assert_eq!(none.status, 101);
    assert_eq!(none.header("sec-websocket-protocol"), None);
    server.stop().await;
}
