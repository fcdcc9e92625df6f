use std::fmt;
use std::future::Future;

use bytes::Bytes;
use http::HeaderMap;

use super::error::ConnectError;
use super::Client;
use crate::protocol::{CloseReason, Message};

/// A client's behaviour: what it does when the connection opens, a message arrives, or
/// the connection closes, as async methods.
///
/// The callbacks run one at a time on the client's own task, which owns the socket; each
/// gets the [`Client`] handle, to send or close. The handler lives as long as the client,
/// across reconnects, so its fields are the client's state.
///
/// ```no_run
/// use estuary::client::{Client, ClientHandler, Connected, DisconnectReason, Reconnect};
/// use estuary::Message;
///
/// struct Ticker {
///     prices: usize,
/// }
///
/// impl ClientHandler for Ticker {
///     async fn on_open(&mut self, client: &Client, _connected: &Connected) {
///         // Subscriptions are per connection: renew them on every reconnect.
///         let _ = client.send(r#"{"subscribe":"prices"}"#);
///     }
///
///     async fn on_message(&mut self, _client: &Client, message: Message) {
///         self.prices += 1;
///         println!("{:?}", message.as_text());
///     }
///
///     async fn on_close(
///         &mut self,
///         _client: &Client,
///         reason: &DisconnectReason,
///         attempt: u32,
///     ) -> Reconnect {
///         eprintln!("disconnected ({reason}), attempt {attempt}");
///         if attempt < 10 { Reconnect::AfterBackoff } else { Reconnect::Stop }
///     }
/// }
///
/// # async fn run() -> Result<(), estuary::client::ConnectError> {
/// let client = Client::connect("wss://example.com/feed", Ticker { prices: 0 }).await?;
/// client.closed().await;
/// # Ok(())
/// # }
/// ```
pub trait ClientHandler: Send + 'static {
    /// The connection is open (the first one, or a new one after a reconnect).
    fn on_open(
        &mut self,
        client: &Client,
        connected: &Connected,
    ) -> impl Future<Output = ()> + Send {
        let _ = (client, connected);
        async {}
    }

    /// A whole message from the server: reassembled from fragments, text already UTF-8
    /// validated.
    fn on_message(&mut self, client: &Client, message: Message) -> impl Future<Output = ()> + Send;

    /// The server sent a ping; the client has already queued the pong.
    fn on_ping(&mut self, client: &Client, payload: Bytes) -> impl Future<Output = ()> + Send {
        let _ = (client, payload);
        async {}
    }

    /// The server answered a ping (a keep-alive one, or one sent with [`Client::ping`]).
    fn on_pong(&mut self, client: &Client, payload: Bytes) -> impl Future<Output = ()> + Send {
        let _ = (client, payload);
        async {}
    }

    /// The connection ended, or a reconnect attempt failed; decides whether to try again.
    ///
    /// `attempt` counts the reconnect attempts that failed since the last open
    /// connection: 0 when an open connection just ended. [`Reconnect::AfterBackoff`] waits
    /// [`Backoff::delay`](super::Backoff::delay)`(attempt)` and connects again. A close
    /// asked for with [`Client::close`] stops the client without asking.
    ///
    /// Default: reconnect, forever.
    fn on_close(
        &mut self,
        client: &Client,
        reason: &DisconnectReason,
        attempt: u32,
    ) -> impl Future<Output = Reconnect> + Send {
        let _ = (client, reason, attempt);
        async { Reconnect::AfterBackoff }
    }

    /// The client stopped for good, for `reason`. Sends fail from here on.
    fn on_stop(
        &mut self,
        client: &Client,
        reason: DisconnectReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (client, reason);
        async {}
    }
}

/// What [`ClientHandler::on_close`] decides.
///
/// ```
/// use estuary::client::Reconnect;
///
/// let attempt = 3;
/// let next = if attempt < 5 { Reconnect::AfterBackoff } else { Reconnect::Stop };
/// assert_eq!(next, Reconnect::AfterBackoff);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Wait for the backoff delay, then connect again.
    AfterBackoff,
    /// Stop the client: `on_stop` runs and [`Client::closed`] resolves.
    Stop,
}

/// Why the client is not connected.
///
/// ```
/// use estuary::client::DisconnectReason;
/// use estuary::CloseReason;
///
/// let reason = DisconnectReason::Closed(CloseReason::Remote { code: 1001, reason: "restart".into() });
/// assert_eq!(reason.to_string(), "connection closed: restart (1001)");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// An open connection ended. [`CloseReason::Idle`] means a keep-alive ping went
    /// unanswered; [`CloseReason::Local`] that [`Client::close`] asked for it.
    Closed(CloseReason),
    /// A reconnect attempt failed.
    ConnectFailed(ConnectError),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Closed(reason) => write!(f, "connection closed: {reason}"),
            DisconnectReason::ConnectFailed(error) => write!(f, "reconnect failed: {error}"),
        }
    }
}

/// What the server said when the connection opened.
///
/// ```
/// use estuary::client::{Client, ClientHandler, Connected};
/// use estuary::Message;
///
/// struct Chat;
///
/// impl ClientHandler for Chat {
///     async fn on_open(&mut self, _client: &Client, connected: &Connected) {
///         println!("speaking {:?}", connected.protocol());
///     }
///
///     async fn on_message(&mut self, _client: &Client, _message: Message) {}
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Connected {
    protocol: Option<String>,
    compression: Option<String>,
    headers: HeaderMap,
}

impl Connected {
    pub(crate) fn new(
        protocol: Option<String>,
        compression: Option<String>,
        headers: HeaderMap,
    ) -> Self {
        Self {
            protocol,
            compression,
            headers,
        }
    }

    /// The permessage-deflate parameters the server accepted (its
    /// `Sec-WebSocket-Extensions`), when the connection is compressed.
    pub fn compression(&self) -> Option<&str> {
        self.compression.as_deref()
    }

    /// The subprotocol the server chose from those offered, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The headers of the server's 101 response.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}
