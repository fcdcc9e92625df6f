use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{within, DEFAULT_TIMEOUT};
use crate::protocol::{Codec, Message};

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client for tests: every method waits at most its timeout, and fails the
/// test with what it got instead of what it expected.
///
/// Pings and pongs are answered and skipped: the methods see messages and the close.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use estuary::testing::{TestClient, TestServer};
/// use estuary::{Codec, Conn, Handler, Message};
///
/// #[derive(Clone)]
/// struct Upper;
///
/// impl Handler for Upper {
///     fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
///         Codec::select(offered)
///     }
///
///     async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
///         let codec = conn.codec().unwrap_or(Codec::Json);
///         match codec.decode::<String>(&msg) {
///             Ok(text) => drop(conn.send_value(codec, &text.to_uppercase())),
///             Err(e) => drop(conn.close(e.close_code(), &e.close_reason())),
///         }
///     }
/// }
///
/// let server = TestServer::handler(Upper).await;
/// let mut client = TestClient::builder(server.url("/"))
///     .protocol("json")
///     .header("user-agent", "tests")
///     .connect()
///     .await;
/// assert_eq!(client.protocol(), Some("json"));
/// client.send_value(Codec::Json, "shout").await;
/// assert_eq!(client.recv_value::<String>(Codec::Json).await, "SHOUT");
/// client.send(Message::binary(vec![1])).await;
/// let reason = client.expect_close(1003).await;
/// assert_eq!(reason, "json: expected a text message, got a binary one");
/// # }
/// ```
pub struct TestClient {
    stream: Stream,
    response: HeaderMap,
    timeout: Duration,
}

/// What the server sent next, as [`TestClient::recv_any`] reports it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use estuary::testing::{Received, TestServer};
/// use estuary::{handler_fn, Conn, Message};
///
/// // Echoes until "bye", then closes.
/// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
///     if msg.as_text() == Some("bye") {
///         let _ = conn.close(1000, "bye to you");
///     } else {
///         let _ = conn.send(msg);
///     }
/// }))
/// .await;
/// let mut client = server.connect("/").await;
/// for line in ["a", "b", "bye"] {
///     client.send(line).await;
/// }
/// let mut echoed = Vec::new();
/// loop {
///     match client.recv_any().await {
///         Received::Message(msg) => echoed.push(msg.as_text().unwrap().to_owned()),
///         Received::Closed(closed) => break assert_eq!(closed.reason, "bye to you"),
///         Received::Gone(why) => panic!("no close frame: {why}"),
///     }
/// }
/// assert_eq!(echoed, ["a", "b"]);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text or binary message.
    Message(Message),
    /// The server's close frame.
    Closed(Closed),
    /// The connection ended without a close frame (or failed), for this reason.
    Gone(String),
}

/// A close frame: its code and reason (1005 and "" for a close frame without a code).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use estuary::testing::{Closed, TestServer};
/// use estuary::{handler_fn, Conn, Message};
///
/// let server = TestServer::handler(handler_fn(|conn: &mut Conn, _msg: Message| {
///     let _ = conn.send("one last thing");
///     let _ = conn.close(4000, "done");
/// }))
/// .await;
/// let mut client = server.connect("/").await;
/// client.send("hi").await;
/// // `recv_close` passes over "one last thing"; `expect_close` would fail on it.
/// let closed = client.recv_close().await;
/// assert_eq!(closed, Closed { code: 4000, reason: "done".into() });
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: String,
}

/// The server's answer to a handshake it refused: an HTTP status, its headers and body.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use estuary::middleware::auth::{AuthLayer, BearerTokens};
/// use estuary::testing::TestServer;
/// use estuary::{handler_fn, Conn, Message, WebSocketService};
/// use tower::Layer;
///
/// let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
///     let _ = conn.send(msg);
/// }));
/// let tokens = BearerTokens::new("chat").with_token("t-alice", "alice");
/// let server = TestServer::start(AuthLayer::new(tokens).layer(echo)).await;
///
/// let refused = server.client("/").try_connect().await.unwrap_err();
/// assert_eq!(refused.status, 401);
/// assert_eq!(refused.headers["www-authenticate"], r#"Bearer realm="chat""#);
///
/// let alice = server.client("/").header("authorization", "Bearer t-alice");
/// assert!(alice.try_connect().await.is_ok());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The status: 401, 403, 429, 503...
    pub status: StatusCode,
    /// The response headers (`WWW-Authenticate`, `Retry-After`...).
    pub headers: HeaderMap,
    /// The response body, as text.
    pub body: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server answered {}: {:?}", self.status, self.body)
    }
}

impl std::error::Error for Rejected {}

/// Builds a [`TestClient`]: handshake headers, subprotocols, the local address, the
/// timeout.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use estuary::testing::TestServer;
/// use estuary::{Conn, Handler, Message};
///
/// /// Answers with the client's address and user agent.
/// #[derive(Clone)]
/// struct Who;
///
/// impl Handler for Who {
///     async fn on_message(&mut self, conn: &mut Conn, _msg: Message) {
///         let session = conn.session();
///         let agent = session.headers()["user-agent"].to_str().unwrap_or("?").to_owned();
///         let ip = session.peer_addr().unwrap().ip();
///         let _ = conn.send(format!("{agent} from {ip}"));
///     }
/// }
///
/// let server = TestServer::handler(Who).await;
/// let mut client = server
///     .client("/")
///     .header("user-agent", "probe/1")
///     .from_ip("127.0.0.9".parse().unwrap())
///     .timeout(Duration::from_secs(2))
///     .connect()
///     .await;
/// client.send("who am I?").await;
/// client.expect_text("probe/1 from 127.0.0.9").await;
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TestClientBuilder {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    protocols: Vec<String>,
    from: Option<IpAddr>,
    timeout: Duration,
}

impl TestClientBuilder {
    /// Sends header `name: value` with the handshake.
    ///
    /// # Panics
    ///
    /// If `name` or `value` is not a valid header name or value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("header name {name:?}: {e}"));
        let value =
            HeaderValue::from_str(value).unwrap_or_else(|e| panic!("header value {value:?}: {e}"));
        self.headers.push((name, value));
        self
    }

    /// Offers subprotocol `protocol` (call again to offer several, in order).
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.protocols.push(protocol.to_owned());
        self
    }

    /// Connects from the local address `ip` (any of 127.0.0.0/8 reaches a server on
    /// 127.0.0.1 on Linux, so a test can be several clients by IP).
    pub fn from_ip(mut self, ip: IpAddr) -> Self {
        self.from = Some(ip);
        self
    }

    /// How long each wait lasts (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects, failing the test unless the server answers 101.
    pub async fn connect(self) -> TestClient {
        let url = self.url.clone();
        self.try_connect()
            .await
            .unwrap_or_else(|rejected| panic!("connect {url}: {rejected}"))
    }

    /// Connects, or returns the server's refusal: for tests of what the layers refuse.
    ///
    /// # Panics
    ///
    /// If the URL is not a `ws://` URL, or the server cannot be reached or answers
    /// something other than HTTP.
    pub async fn try_connect(self) -> Result<TestClient, Rejected> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .unwrap_or_else(|e| panic!("{}: {e}", self.url));
        for (name, value) in self.headers {
            request.headers_mut().append(name, value);
        }
        if !self.protocols.is_empty() {
            let offer = HeaderValue::from_str(&self.protocols.join(", "))
                .unwrap_or_else(|e| panic!("subprotocols {:?}: {e}", self.protocols));
            request
                .headers_mut()
                .insert(http::header::SEC_WEBSOCKET_PROTOCOL, offer);
        }
        let what = format!("connect to {}", self.url);
        let connected = within(&what, self.timeout, async {
            match self.from {
                None => tokio_tungstenite::connect_async(request).await,
                Some(ip) => {
                    let stream = tcp_from(ip, &request).await;
                    tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await
                }
            }
        })
        .await;
        match connected {
            Ok((stream, response)) => Ok(TestClient {
                stream,
                response: response.headers().clone(),
                timeout: self.timeout,
            }),
            Err(tungstenite::Error::Http(response)) => Err(Rejected {
                status: response.status(),
                headers: response.headers().clone(),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            }),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A TCP connection from `ip` to the request's host.
async fn tcp_from(ip: IpAddr, request: &http::Request<()>) -> TcpStream {
    let uri = request.uri();
    let port = uri.port_u16().unwrap_or(80);
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .unwrap_or_else(|e| panic!("from_ip needs an IP address in the URL, got {host:?}: {e}"));
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap_or_else(|e| panic!("a socket for {ip}: {e}"));
    socket
        .bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    socket
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} from {ip}: {e}"))
}

impl TestClient {
    /// Connects to `url`, failing the test unless the server answers 101.
    pub async fn connect(url: impl Into<String>) -> TestClient {
        TestClient::builder(url).connect().await
    }

    /// A builder for a client of `url` (`ws://HOST:PORT/path?query`).
    pub fn builder(url: impl Into<String>) -> TestClientBuilder {
        TestClientBuilder {
            url: url.into(),
            headers: Vec::new(),
            protocols: Vec::new(),
            from: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The subprotocol the server accepted, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.response
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|value| value.to_str().ok())
    }

    /// The headers of the server's 101 response.
    pub fn response_headers(&self) -> &HeaderMap {
        &self.response
    }

    /// Sends a text or binary message.
    pub async fn send(&mut self, message: impl Into<Message>) {
        let frame = match message.into() {
            Message::Text(text) => WsMessage::text(text.as_str()),
            Message::Binary(data) => WsMessage::binary(data),
        };
        self.send_frame(frame).await;
    }

    /// Sends `value` encoded with `codec`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use estuary::testing::TestServer;
    /// # use estuary::{handler_fn, Conn, Message};
    /// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .await;
    /// use estuary::Codec;
    ///
    /// let mut client = server.connect("/").await;
    /// client.send_value(Codec::Json, &["a", "b"]).await;
    /// let back: Vec<String> = client.recv_value(Codec::Json).await;
    /// assert_eq!(back, ["a", "b"]);
    /// # }
    /// ```
    pub async fn send_value<T: Serialize + ?Sized>(&mut self, codec: Codec, value: &T) {
        let message = codec
            .encode(value)
            .unwrap_or_else(|e| panic!("encode the value to send: {e}"));
        self.send(message).await;
    }

    /// Sends a ping (its pong is skipped, like the server's pings).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use estuary::testing::TestServer;
    /// # use estuary::{handler_fn, Conn, Message};
    /// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .await;
    /// let mut client = server.connect("/").await;
    /// client.ping(&b"are you there?"[..]).await;
    /// client.send("yes").await;
    /// client.expect_text("yes").await; // the pong came first, and was passed over
    /// # }
    /// ```
    pub async fn ping(&mut self, payload: impl Into<bytes::Bytes>) {
        self.send_frame(WsMessage::Ping(payload.into())).await;
    }

    /// What the server sends next, a message or the end: for tests that take what comes.
    pub async fn recv_any(&mut self) -> Received {
        let timeout = self.timeout;
        within("the next message or close", timeout, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        return Received::Message(Message::text(text.as_str().to_owned()))
                    }
                    Some(Ok(WsMessage::Binary(data))) => {
                        return Received::Message(Message::binary(data))
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        // tungstenite queued the close reply: send it now, as a peer that
                        // goes on reading would, so that the server is not left waiting.
                        let _ = self.stream.flush().await;
                        return Received::Closed(closed(frame));
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                    Some(Err(e)) => return Received::Gone(e.to_string()),
                    None => return Received::Gone("the connection ended".to_owned()),
                }
            }
        })
        .await
    }

    /// The next message, failing the test if the connection closes first.
    pub async fn recv(&mut self) -> Message {
        match self.recv_any().await {
            Received::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next message, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message decoded with `codec`, failing the test with the
    /// [`DecodeError`](crate::DecodeError) if it is not a `T`.
    pub async fn recv_value<T: DeserializeOwned>(&mut self, codec: Codec) -> T {
        let message = self.recv().await;
        codec
            .decode(&message)
            .unwrap_or_else(|e| panic!("{e}, in {message:?}"))
    }

    /// Expects `text` as the next message.
    pub async fn expect_text(&mut self, text: &str) {
        let got = self.recv().await;
        assert_eq!(
            got.as_text(),
            Some(text),
            "expected text {text:?}, got {got:?}"
        );
    }

    /// Expects `message` as the next message.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use estuary::testing::TestServer;
    /// # use estuary::{handler_fn, Conn, Message};
    /// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .await;
    /// let mut client = server.connect("/").await;
    /// client.send(vec![1u8, 2, 3]).await;
    /// client.expect_message(vec![1u8, 2, 3]).await;
    /// # }
    /// ```
    pub async fn expect_message(&mut self, message: impl Into<Message>) {
        let expected = message.into();
        let got = self.recv().await;
        assert_eq!(got, expected, "expected {expected:?}, got {got:?}");
    }

    /// Expects the server's close frame with `code` next (no message before it), and
    /// returns its reason.
    pub async fn expect_close(&mut self, code: u16) -> String {
        match self.recv_any().await {
            Received::Closed(closed) if closed.code == code => closed.reason,
            other => panic!("expected a close frame with {code}, got {other:?}"),
        }
    }

    /// Reads until the server's close frame, passing over messages before it, and
    /// returns it: for a server that may still have messages in flight when it closes.
    pub async fn recv_close(&mut self) -> Closed {
        loop {
            match self.recv_any().await {
                Received::Message(_) => continue,
                Received::Closed(closed) => return closed,
                Received::Gone(why) => {
                    panic!("expected a close frame, the connection ended: {why}")
                }
            }
        }
    }

    /// Expects nothing from the server for `quiet`: no message, no close.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use estuary::testing::TestServer;
    /// # use estuary::{handler_fn, Conn, Message};
    /// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .await;
    /// use std::time::Duration;
    ///
    /// let mut client = server.connect("/").await;
    /// // An echo server says nothing unasked.
    /// client.expect_silence(Duration::from_millis(50)).await;
    /// # }
    /// ```
    pub async fn expect_silence(&mut self, quiet: Duration) {
        let next = tokio::time::timeout(quiet, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                    other => return other,
                }
            }
        })
        .await;
        if let Ok(got) = next {
            panic!("expected nothing for {quiet:?}, got {got:?}");
        }
    }

    /// Closes with `code` and `reason`, and waits for the server to answer and end the
    /// connection (messages it sent meanwhile are passed over).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use estuary::testing::TestServer;
    /// # use estuary::{handler_fn, Conn, Message};
    /// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .await;
    /// let mut client = server.connect("/").await;
    /// client.close(1000, "done").await;
    /// server.until_hub("the session is gone", |hub| hub.stats().sessions == 0).await;
    /// # }
    /// ```
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        self.send_frame(WsMessage::Close(Some(frame))).await;
        let timeout = self.timeout;
        within("the server ends the connection", timeout, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }

    /// The tokio-tungstenite stream underneath, for what the kit does not do (frames by
    /// hand, a `split` into reader and writer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use estuary::testing::TestServer;
    /// # use estuary::{handler_fn, Conn, Message};
    /// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .await;
    /// use estuary::testing::tokio_tungstenite::tungstenite::Message as WsMessage;
    /// use futures_util::{SinkExt, StreamExt};
    ///
    /// let client = server.connect("/").await;
    /// let (mut write, mut read) = client.into_inner().split();
    /// write.send(WsMessage::text("raw")).await.unwrap();
    /// assert_eq!(read.next().await.unwrap().unwrap(), WsMessage::text("raw"));
    /// # }
    /// ```
    pub fn into_inner(self) -> Stream {
        self.stream
    }

    async fn send_frame(&mut self, frame: WsMessage) {
        let timeout = self.timeout;
        within("send", timeout, self.stream.send(frame))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }
}

fn closed(frame: Option<CloseFrame>) -> Closed {
    match frame {
        Some(frame) => Closed {
            code: frame.code.into(),
            reason: frame.reason.as_str().to_owned(),
        },
        None => Closed {
            code: crate::close_code::STATUS,
            reason: String::new(),
        },
    }
}

impl fmt::Debug for TestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClient")
            .field("protocol", &self.protocol())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
