//! Helpers shared by the integration tests: thin forms of the test kit
//! (`estuary::testing`: a server on a free loopback port, a tokio-tungstenite client),
//! and a raw-socket client for what well-behaved clients refuse to send.
#![allow(dead_code)] // each test binary uses a different part of this module

#[cfg(feature = "client")]
pub mod client;
pub mod example;
pub mod history;
pub mod load;
pub mod nodes;
pub mod peers;
#[cfg(feature = "tls")]
pub mod pki;
pub mod proc;
pub mod python;
pub mod scrape;
pub mod sessions;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use estuary::testing::TestClient;
use estuary::{Server, Shutdown};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every wait in the tests is bounded by this.
pub const STEP: Duration = estuary::testing::DEFAULT_TIMEOUT;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    estuary::testing::within(what, STEP, future).await
}

/// The kit's [`estuary::testing::TestServer`], with its address and shutdown registry as
/// fields; everything else of the kit (`connect`, `hub`, `until_hub`) through `Deref`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    kit: estuary::testing::TestServer,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        self.kit.url(path)
    }

    /// Triggers graceful shutdown and waits for `serve` to return.
    pub async fn stop(self) {
        self.kit.stop().await;
    }
}

impl std::ops::Deref for TestServer {
    type Target = estuary::testing::TestServer;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

impl From<estuary::testing::TestServer> for TestServer {
    fn from(kit: estuary::testing::TestServer) -> Self {
        TestServer {
            addr: kit.addr(),
            shutdown: kit.shutdown().clone(),
            kit,
        }
    }
}

/// Serves `service` the way the example server does.
pub async fn serve<S, B>(service: S) -> TestServer
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(
        Server::builder().drain_timeout(Duration::from_secs(5)),
        service,
    )
    .await
}

/// Serves `service` with a custom builder.
pub async fn serve_with<S, B>(builder: estuary::ServerBuilder, service: S) -> TestServer
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_on(builder, "127.0.0.1:0".parse().unwrap(), service).await
}

/// Serves `service` on `addr` with a custom builder.
pub async fn serve_on<S, B>(
    builder: estuary::ServerBuilder,
    addr: std::net::SocketAddr,
    service: S,
) -> TestServer
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    estuary::testing::TestServer::builder()
        .server(builder)
        .addr(addr)
        .timeout(STEP)
        .start(service)
        .await
        .into()
}

/// Connects a tokio-tungstenite client.
pub async fn connect(url: &str) -> Client {
    connect_with(url, &[]).await
}

/// Connects a tokio-tungstenite client that sends extra handshake `headers`.
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Client {
    let mut client = TestClient::builder(url).timeout(STEP);
    for (name, value) in headers {
        client = client.header(name, value);
    }
    client.connect().await.into_inner()
}

/// Connects a tokio-tungstenite client from the local address `from`.
pub async fn connect_from(from: IpAddr, url: &str) -> Client {
    TestClient::builder(url)
        .from_ip(from)
        .timeout(STEP)
        .connect()
        .await
        .into_inner()
}

/// Connects from `from` as soon as the server lets it: a place held by a socket that
/// just closed is given back a moment later. Retries every 50 ms, within [`STEP`].
pub async fn connect_from_when_free(from: IpAddr, url: &str) -> Client {
    within("a place frees up", async {
        loop {
            let client = TestClient::builder(url).from_ip(from).timeout(STEP);
            if let Ok(client) = client.try_connect().await {
                return client.into_inner();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Sends `text` and waits for it to come back.
pub async fn echo_roundtrip(client: &mut Client, text: &str) {
    client.send(WsMessage::text(text)).await.unwrap();
    let reply = within("echo", client.next()).await;
    match reply {
        Some(Ok(WsMessage::Text(reply))) => assert_eq!(reply.as_str(), text),
        other => panic!("expected the echo of {text:?}, got {other:?}"),
    }
}

/// Reads until the server's close frame: its code and reason.
pub async fn next_close(client: &mut Client) -> (u16, String) {
    loop {
        match within("close frame", client.next()).await {
            Some(Ok(WsMessage::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(WsMessage::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The response to a raw HTTP request: status, lower-cased headers, body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` verbatim and reads the response (the server must close or send a
/// Content-Length).
pub async fn raw_request(addr: SocketAddr, request: impl AsRef<[u8]>) -> RawResponse {
    let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    raw_request_on(stream, request).await
}

/// [`raw_request`] from the local address `from` (on Linux, any of 127.0.0.0/8 reaches a
/// server on 127.0.0.1, so a test can be several client IPs).
pub async fn raw_request_from(
    from: IpAddr,
    addr: SocketAddr,
    request: impl AsRef<[u8]>,
) -> RawResponse {
    raw_request_on(tcp_from(from, addr).await, request).await
}

/// A TCP connection to `addr` from the local address `from`.
pub async fn tcp_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap();
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    within("connect", socket.connect(addr)).await.unwrap()
}

async fn raw_request_on(mut stream: TcpStream, request: impl AsRef<[u8]>) -> RawResponse {
    raw_exchange(&mut stream, request).await
}

/// Sends `request` on `stream` and reads one response (with a Content-Length, or up to
/// the server's close), leaving the connection as the server left it.
pub async fn raw_exchange(stream: &mut TcpStream, request: impl AsRef<[u8]>) -> RawResponse {
    stream.write_all(request.as_ref()).await.unwrap();
    let mut buf = Vec::new();
    within("read response", async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(response) = parse_response(&buf) {
                return response;
            }
        }
        parse_response(&buf).unwrap_or_else(|| {
            panic!(
                "the server closed before a complete HTTP response: {:?}",
                String::from_utf8_lossy(&buf)
            )
        })
    })
    .await
}

fn parse_response(buf: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    (body.len() >= len).then(|| RawResponse {
        status,
        headers,
        body: body[..len].to_string(),
    })
}

/// Whether the server closes `stream` within [`STEP`]: an end of file (or a reset) and
/// no byte before it.
pub async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(STEP, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// A valid handshake for `path` with extra header lines (each ending in \r\n).
pub fn handshake_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A WebSocket client on a raw socket, for frames no library will send.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame as the raw client read it.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code and reason of a close frame.
    pub fn close(&self) -> (u16, String) {
        assert_eq!(self.opcode, 8, "expected a close frame, got {self:?}");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (code, String::from_utf8(self.payload[2..].to_vec()).unwrap())
    }
}

impl RawWs {
    /// Connects and completes the handshake on `path`.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        Self::connect_with(addr, path, "").await.0
    }

    /// Connects with `extra` header lines (each ending in \r\n) in the handshake; the
    /// socket and the 101 response's head.
    pub async fn connect_with(addr: SocketAddr, path: &str, extra: &str) -> (RawWs, String) {
        let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        stream
            .write_all(handshake_request(path, extra).as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        within("101 response", async {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "server closed during the handshake");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let ws = RawWs {
            stream,
            buf: buf[end..].to_vec(),
        };
        (ws, head)
    }

    /// Sends a masked frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = encode_masked(fin, opcode, payload);
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads the next frame; `None` when the server closed the socket.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        within("read a frame", async {
            loop {
                if let Some((frame, used)) = decode_unmasked(&self.buf) {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                let mut chunk = vec![0u8; 64 * 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads frames until a close frame, returning its code and reason.
    pub async fn read_close(&mut self) -> (u16, String) {
        loop {
            match self.read_frame().await {
                Some(frame) if frame.opcode == 8 => return frame.close(),
                Some(_) => continue,
                None => panic!("socket closed without a close frame"),
            }
        }
    }
}

/// Encodes a client (masked) frame.
pub fn encode_masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(fin as u8) << 7 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn decode_unmasked(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    if buf.len() < at + len {
        return None;
    }
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        payload: buf[at..at + len].to_vec(),
    };
    Some((frame, at + len))
}
