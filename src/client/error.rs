use std::fmt;
use std::io;
use std::time::Duration;

use http::StatusCode;

/// Why connecting failed: the first connect (returned by
/// [`ClientBuilder::connect`](super::ClientBuilder::connect)) or a reconnect (passed to
/// [`ClientHandler::on_close`](super::ClientHandler::on_close)).
///
/// ```
/// use estuary::client::ConnectError;
///
/// let error = ConnectError::UnofferedProtocol("v3".into());
/// assert_eq!(
///     error.to_string(),
///     "the server chose subprotocol \"v3\", which the client did not offer",
/// );
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not one the client can connect to.
    InvalidUrl {
        /// The URL as given, its query (which may carry a token) redacted.
        url: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A builder or config value is invalid; the message names it.
    Config(String),
    /// A `wss://` URL, but the crate was built without the `tls` feature.
    TlsNotEnabled,
    /// TCP connect, TLS handshake and HTTP upgrade did not finish within the connect
    /// timeout.
    Timeout(Duration),
    /// The TCP connection could not be made.
    Tcp {
        /// The `host:port` dialled.
        addr: String,
        /// The error from the operating system.
        error: io::Error,
    },
    /// The TLS handshake failed, for instance because the server's certificate is not
    /// trusted.
    Tls(io::Error),
    /// The HTTP upgrade request failed before a response arrived.
    Http(hyper::Error),
    /// The server refused the WebSocket: it answered with a status other than 101 (over
    /// HTTP/2, other than 2xx).
    Rejected {
        /// The status the server answered with.
        status: StatusCode,
        /// The start of the response body, often the reason.
        body: String,
    },
    /// The server's 101 response breaks RFC 6455 4.1; the message says how.
    InvalidResponse(String),
    /// The server chose a subprotocol the client did not offer.
    UnofferedProtocol(String),
    /// The client was to open its WebSocket over HTTP/2, and the server does not offer
    /// that: it did not choose `h2` by ALPN, or does not advertise extended CONNECT
    /// (`SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC 8441). The message says which.
    Http2NotOffered(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::InvalidUrl { url, problem } => {
                write!(f, "invalid URL {url:?}: {problem}")
            }
            ConnectError::Config(problem) => write!(f, "client config: {problem}"),
            ConnectError::TlsNotEnabled => {
                f.write_str("wss:// URLs need estuary's `tls` feature, which is not enabled")
            }
            ConnectError::Timeout(after) => {
                write!(
                    f,
                    "connecting took longer than the connect timeout ({after:?})"
                )
            }
            ConnectError::Tcp { addr, error } => write!(f, "TCP connect to {addr} failed: {error}"),
            ConnectError::Tls(error) => write!(f, "TLS handshake failed: {error}"),
            ConnectError::Http(error) => write!(f, "WebSocket upgrade request failed: {error}"),
            ConnectError::Rejected { status, body } if body.is_empty() => {
                write!(f, "the server refused the WebSocket with {status}")
            }
            ConnectError::Rejected { status, body } => {
                write!(f, "the server refused the WebSocket with {status}: {body}")
            }
            ConnectError::InvalidResponse(problem) => {
                write!(f, "invalid WebSocket handshake response: {problem}")
            }
            ConnectError::UnofferedProtocol(protocol) => write!(
                f,
                "the server chose subprotocol {protocol:?}, which the client did not offer"
            ),
            ConnectError::Http2NotOffered(why) => {
                write!(f, "no WebSockets over HTTP/2 on this server: {why}")
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Tcp { error, .. } | ConnectError::Tls(error) => Some(error),
            ConnectError::Http(error) => Some(error),
            _ => None,
        }
    }
}

/// Why [`Client::send`](super::Client::send) did not queue a message.
///
/// ```
/// assert_eq!(
///     estuary::client::SendError::Closed.to_string(),
///     "the client is closed",
/// );
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The client was closed, or stopped instead of reconnecting.
    Closed,
    /// The client is reconnecting, and [`WhileReconnecting::Fail`](super::WhileReconnecting)
    /// says to fail sends meanwhile.
    NotConnected,
    /// [`ClientConfig::max_queued_bytes`](super::ClientConfig) are already waiting to be
    /// written; this message was dropped.
    QueueFull,
    /// A ping payload over 125 bytes.
    PingTooLong,
    /// The value could not be encoded.
    Encode(crate::EncodeError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("the client is closed"),
            SendError::NotConnected => {
                f.write_str("the client is reconnecting and is configured to fail sends meanwhile")
            }
            SendError::QueueFull => {
                f.write_str("the client's outbound queue is full; message dropped")
            }
            SendError::PingTooLong => f.write_str("a ping payload may be at most 125 bytes"),
            SendError::Encode(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Encode(error) => Some(error),
            _ => None,
        }
    }
}
