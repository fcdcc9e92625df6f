//! The connection engine seen from real clients: messages of every shape echo intact,
//! pings are answered, and bad frames close the socket with the right code.

mod common;

use common::{connect, serve, within, RawWs, TestServer};
use estuary::{handler_fn, Conn, Message, WebSocketConfig, WebSocketService};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn echo() -> WebSocketService<impl estuary::Handler> {
    WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    }))
}

async fn echo_server(config: WebSocketConfig) -> TestServer {
    serve(echo().with_config(config)).await
}

#[tokio::test]
async fn text_and_binary_messages_echo_unchanged() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut client = connect(&server.url("/")).await;
    let messages = [
        WsMessage::text("hello"),
        WsMessage::text("κόσμε 𝄞"),
        WsMessage::text(""),
        WsMessage::binary(vec![0u8, 1, 2, 255]),
        WsMessage::binary(Vec::new()),
    ];
    for message in messages {
        client.send(message.clone()).await.unwrap();
        let back = within("echo", client.next()).await.unwrap().unwrap();
        assert_eq!(back, message);
    }
    server.stop().await;
}

#[tokio::test]
async fn messages_over_64_kib_echo_intact() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut client = connect(&server.url("/")).await;
    for len in [65_535, 65_536, 70_000, 1 << 20, 5 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        client
            .send(WsMessage::binary(payload.clone()))
            .await
            .unwrap();
        let back = within("big echo", client.next()).await.unwrap().unwrap();
        assert_eq!(back.into_data().as_ref(), &payload[..], "length {len}");
    }
    server.stop().await;
}

#[tokio::test]
async fn fragmented_message_with_a_ping_between_fragments_is_reassembled() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut ws = RawWs::connect(server.addr, "/").await;
    // "κόσμε" split inside a code point, and a ping in the middle of the message.
    let text = "κόσμε".as_bytes();
    ws.send_frame(false, 0x1, &text[..3]).await;
    ws.send_frame(true, 0x9, b"mid").await;
    ws.send_frame(false, 0x0, &text[3..7]).await;
    ws.send_frame(true, 0x0, &text[7..]).await;
    let pong = ws.read_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"mid"[..]));
    let echoed = ws.read_frame().await.unwrap();
    assert_eq!(echoed.opcode, 0x1);
    assert_eq!(echoed.payload, text);
    server.stop().await;
}

#[tokio::test]
async fn ping_gets_a_pong_with_the_same_payload() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut client = connect(&server.url("/")).await;
    client
        .send(WsMessage::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = within("pong", client.next()).await.unwrap().unwrap();
    assert_eq!(pong, WsMessage::Pong(b"are you there".to_vec().into()));
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_before_the_message_ends() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut ws = RawWs::connect(server.addr, "/").await;
    // First fragment valid, second has a surrogate, and the message never finishes:
    // the close must come without waiting for the rest.
    ws.send_frame(false, 0x1, "κόσμε".as_bytes()).await;
    ws.send_frame(false, 0x0, b"\xed\xa0\x80").await;
    let (code, reason) = ws.read_close().await;
    assert_eq!(code, 1007);
    assert_eq!(reason, "invalid UTF-8 in text message");
    server.stop().await;
}

#[tokio::test]
async fn message_over_the_size_limit_closes_with_1009() {
    let server = echo_server(WebSocketConfig::default().with_max_message_size(1024)).await;
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send_frame(true, 0x2, &[7u8; 1024]).await;
    assert_eq!(
        ws.read_frame().await.unwrap().payload.len(),
        1024,
        "at the limit is fine"
    );
    // Over it across fragments: 600 + 600 bytes.
    ws.send_frame(false, 0x2, &[1u8; 600]).await;
    ws.send_frame(true, 0x0, &[1u8; 600]).await;
    assert_eq!(ws.read_close().await, (1009, "message too big".to_string()));
    server.stop().await;
}

#[tokio::test]
async fn frame_declaring_a_huge_length_is_refused_from_its_header() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut ws = RawWs::connect(server.addr, "/").await;
    // A binary frame header declaring 2^62 bytes, and no payload at all.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    ws.send_raw(&header).await;
    assert_eq!(ws.read_close().await.0, 1009);
    server.stop().await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_say_why() {
    let server = echo_server(WebSocketConfig::default()).await;
    let cases: [(&[u8], &str); 4] = [
        (&[0x81, 0x00], "client frames must be masked"),
        (
            &[0xC1, 0x80, 0, 0, 0, 0],
            "reserved bits set without an extension",
        ),
        (&[0x83, 0x80, 0, 0, 0, 0], "reserved opcode"),
        (
            &[0x80, 0x80, 0, 0, 0, 0],
            "continuation frame without a message",
        ),
    ];
    for (bytes, why) in cases {
        let mut ws = RawWs::connect(server.addr, "/").await;
        ws.send_raw(bytes).await;
        assert_eq!(ws.read_close().await, (1002, why.to_string()), "{bytes:x?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_close_code_from_the_client_is_a_protocol_error() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send_frame(true, 0x8, &1005u16.to_be_bytes()).await;
    assert_eq!(
        ws.read_close().await,
        (1002, "invalid close code".to_string())
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_socket_does_not_disturb_its_neighbours() {
    let server = echo_server(WebSocketConfig::default()).await;
    let mut neighbour = connect(&server.url("/")).await;
    for _ in 0..20 {
        let mut bad = RawWs::connect(server.addr, "/").await;
        bad.send_raw(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'])
            .await;
        assert_eq!(bad.read_close().await.0, 1002);
        neighbour.send(WsMessage::text("still here")).await.unwrap();
        let back = within("neighbour echo", neighbour.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, WsMessage::text("still here"));
    }
    server.stop().await;
}
