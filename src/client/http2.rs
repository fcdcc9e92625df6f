//! WebSockets over HTTP/2 (RFC 8441): one connection that many clients open their
//! sockets on, each an extended `CONNECT` stream.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Mutex;

use super::error::ConnectError;
use super::stream::Stream;

/// One HTTP/2 connection that [`Client`](super::Client)s share, each WebSocket a stream
/// of it (RFC 8441): `wss://` picks HTTP/2 by ALPN, `ws://` speaks h2c (HTTP/2 with prior
/// knowledge). It is dialled by the first client that connects through it, and again by
/// the next one after it was lost, so reconnecting clients find a live connection.
///
/// Every client sharing it must go to the same scheme, host and port. The server must
/// offer WebSockets over HTTP/2 (`SETTINGS_ENABLE_CONNECT_PROTOCOL`), or connecting
/// fails with [`ConnectError::Http2NotOffered`]. Without one, a client opens its own
/// HTTP/1.1 connection, as by default.
///
/// ```no_run
/// use estuary::client::{Client, ClientHandler, Http2Connection};
/// use estuary::Message;
///
/// struct Print(&'static str);
///
/// impl ClientHandler for Print {
///     async fn on_message(&mut self, _client: &Client, message: Message) {
///         println!("{}: {}", self.0, message.as_text().unwrap_or("(binary)"));
///     }
/// }
///
/// # async fn run() -> Result<(), estuary::client::ConnectError> {
/// let shared = Http2Connection::new();
/// let chat = Client::builder("wss://example.com/chat")
///     .http2(&shared)
///     .connect(Print("chat"))
///     .await?;
/// let feed = Client::builder("wss://example.com/feed")
///     .http2(&shared)
///     .connect(Print("feed"))
///     .await?;
/// // Two WebSockets, one TCP connection.
/// # let _ = (chat, feed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Http2Connection {
    inner: Arc<Mutex<Option<Live>>>,
}

/// The connection while it is up, and where it goes.
struct Live {
    origin: Origin,
    sender: SendRequest<Empty<Bytes>>,
    connect_enabled: Arc<AtomicBool>,
}

/// A way to open streams on the connection.
pub(crate) struct Streams {
    pub(crate) sender: SendRequest<Empty<Bytes>>,
    /// Whether the server advertised extended CONNECT, as of its last SETTINGS.
    connect_enabled: Arc<AtomicBool>,
}

impl Streams {
    /// Whether the server accepts extended CONNECT (RFC 8441 3); known once its first
    /// SETTINGS arrived, which is before any answer to a request.
    pub(crate) fn connect_enabled(&self) -> bool {
        self.connect_enabled.load(Ordering::Acquire)
    }
}

/// Scheme, host and port: what clients sharing a connection must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) secure: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Http2Connection {
    /// A connection not dialled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the connection is up now.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .lock()
            .await
            .as_ref()
            .is_some_and(|live| !live.sender.is_closed())
    }

    /// A sender for a new stream to `origin`: the live connection's, or a new connection's
    /// over the stream `dial` opens. Fails if the connection goes elsewhere.
    pub(crate) async fn sender<F, Fut>(
        &self,
        origin: &Origin,
        dial: F,
    ) -> Result<Streams, ConnectError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Stream, ConnectError>>,
    {
        // Held while dialling, so that clients connecting at once share one connection.
        let mut live = self.inner.lock().await;
        if let Some(current) = live.as_ref() {
            if current.origin != *origin {
                return Err(ConnectError::Config(format!(
                    "this Http2Connection goes to {}, not {origin}: clients that share it \
                     must go to the same scheme, host and port",
                    current.origin
                )));
            }
            if !current.sender.is_closed() {
                return Ok(Streams {
                    sender: current.sender.clone(),
                    connect_enabled: current.connect_enabled.clone(),
                });
            }
        }
        let stream = dial().await?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Http)?;
        let connect_enabled = Arc::new(AtomicBool::new(false));
        let enabled = connect_enabled.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let ended = poll_fn(|cx| {
                let polled = connection.as_mut().poll(cx);
                let on = connection.is_extended_connect_protocol_enabled();
                enabled.store(on, Ordering::Release);
                polled
            })
            .await;
            if let Err(error) = ended {
                tracing::debug!(%error, "HTTP/2 connection ended with an error");
            }
        });
        tracing::debug!(%origin, "HTTP/2 connection open");
        *live = Some(Live {
            origin: origin.clone(),
            sender: sender.clone(),
            connect_enabled: connect_enabled.clone(),
        });
        Ok(Streams {
            sender,
            connect_enabled,
        })
    }
}

impl fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let live = self.inner.try_lock();
        let mut debug = f.debug_struct("Http2Connection");
        match live.as_deref() {
            Ok(Some(live)) => debug
                .field("origin", &live.origin.to_string())
                .field("connected", &!live.sender.is_closed()),
            Ok(None) => debug.field("connected", &false),
            Err(_) => debug.field("connected", &"(connecting)"),
        };
        debug.finish()
    }
}
