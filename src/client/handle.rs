use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};

use super::builder::ClientBuilder;
use super::config::{ClientConfig, WhileReconnecting};
use super::error::{ConnectError, SendError};
use super::handler::ClientHandler;
use crate::protocol::{validate_outgoing, CloseError, Message};

/// What the handle asks of the client's task, in order.
pub(crate) enum Command {
    Send(Message),
    Ping(Bytes),
    Close { code: u16, reason: String },
}

/// Where the client is in its life. Every change is logged at debug level.
///
/// ```
/// # async fn run(client: estuary::client::Client) {
/// use estuary::client::ClientState;
///
/// if client.state() == ClientState::Reconnecting {
///     eprintln!("offline; messages are queued");
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// The connection is open.
    Open,
    /// The connection is closing (a close handshake is under way).
    Closing,
    /// Between connections: waiting for the backoff delay.
    Reconnecting,
    /// A reconnect attempt is under way.
    Connecting,
    /// The client stopped for good.
    Stopped,
}

/// What the handles and the client's task share.
struct Shared {
    tx: mpsc::UnboundedSender<Command>,
    /// Message bytes queued and not yet taken by the task.
    queued: AtomicUsize,
    max_queued: usize,
    policy: WhileReconnecting,
    state: watch::Sender<ClientState>,
    /// Set by `close` and when the client stops: no more sends, no more reconnects.
    stopping: AtomicBool,
    /// Wakes the task out of a backoff wait or a connect attempt when `stopping` is set.
    wake: Notify,
}

/// A WebSocket client: a cloneable handle to a connection that a task of its own keeps
/// open, reconnecting with backoff.
///
/// [`Client::connect`] (or [`Client::builder`] for headers, subprotocols, TLS roots and
/// a [`ClientConfig`]) connects, then runs the [`ClientHandler`] on the client's task.
/// Any task may send through a clone of the handle; sends queue (bounded in bytes) and go
/// out in order, several per write. The client runs until [`Client::close`] or until the
/// handler's `on_close` says [`Reconnect::Stop`](super::Reconnect::Stop); dropping
/// the handles does not stop it.
///
/// ```no_run
/// use estuary::client::{Client, ClientHandler};
/// use estuary::Message;
///
/// struct Print;
///
/// impl ClientHandler for Print {
///     async fn on_message(&mut self, _client: &Client, message: Message) {
///         println!("{:?}", message.as_text());
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::connect("ws://127.0.0.1:3000/echo", Print).await?;
/// for n in 0..3 {
///     let client = client.clone();
///     tokio::spawn(async move { client.send(format!("hello from task {n}")) });
/// }
/// client.send_json(&serde_json::json!({"type": "join", "room": "lobby"}))?;
/// client.close(1000, "done")?;
/// client.closed().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Connects to a `ws://` or `wss://` URL with the default [`ClientConfig`] and runs
    /// `handler` on the connection. The first connect's failure is returned; later ones go
    /// to [`ClientHandler::on_close`].
    pub async fn connect<H: ClientHandler>(url: &str, handler: H) -> Result<Client, ConnectError> {
        Client::builder(url).connect(handler).await
    }

    /// A builder for a client of `url`: headers, subprotocols, TLS roots, config.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    /// The handle, and the task's end of the queue.
    pub(crate) fn new(config: &ClientConfig) -> (Client, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            tx,
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued_bytes,
            policy: config.while_reconnecting,
            state: watch::Sender::new(ClientState::Open),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
        };
        let client = Client {
            shared: Arc::new(shared),
        };
        (client, rx)
    }

    /// Queues a text or binary message.
    ///
    /// Sends from one task go out in the order they were made. While the client is
    /// reconnecting, [`ClientConfig::while_reconnecting`] decides whether the message
    /// waits or the send fails. WebSocket has no acknowledgements: a message queued just
    /// before a connection drops may be lost with it.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        let message = message.into();
        self.check_sendable()?;
        self.reserve(message.len())?;
        self.push(Command::Send(message))
    }

    /// Queues `value` encoded with `codec` (JSON text, MessagePack binary).
    pub fn send_value<T: serde::Serialize + ?Sized>(
        &self,
        codec: crate::Codec,
        value: &T,
    ) -> Result<(), SendError> {
        self.send(codec.encode(value).map_err(SendError::Encode)?)
    }

    /// Queues `value` as a JSON text message: the short form of
    /// [`Client::send_value`]`(Codec::Json, value)`.
    pub fn send_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        self.send_value(crate::Codec::Json, value)
    }

    /// Queues a ping; the server's pong reaches [`ClientHandler::on_pong`].
    pub fn ping(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        let payload = payload.into();
        if payload.len() > 125 {
            return Err(SendError::PingTooLong);
        }
        self.check_sendable()?;
        self.push(Command::Ping(payload))
    }

    /// Closes the connection with `code` and `reason` after the messages queued before
    /// it, and stops the client: no reconnect. The close handshake is bounded by
    /// [`ClientConfig::close_timeout`]; [`Client::closed`] resolves when it is over.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), CloseError> {
        validate_outgoing(code, reason)?;
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return Err(CloseError::AlreadyClosing);
        }
        tracing::debug!(code, reason, "close requested");
        let close = Command::Close {
            code,
            reason: reason.to_owned(),
        };
        // The task is gone only once it stopped, and then `stopping` was set already.
        let _ = self.shared.tx.send(close);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Where the client is in its life.
    pub fn state(&self) -> ClientState {
        *self.shared.state.borrow()
    }

    /// Resolves once the client has stopped for good and its handler's `on_stop` ran.
    pub async fn closed(&self) {
        let mut state = self.shared.state.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close under us.
        let _ = state.wait_for(|s| *s == ClientState::Stopped).await;
    }

    pub(crate) fn set_state(&self, next: ClientState) {
        let previous = self.shared.state.send_replace(next);
        if previous != next {
            tracing::debug!(from = ?previous, to = ?next, "client state");
        }
    }

    /// Marks the client as stopping: sends fail from now on.
    pub(crate) fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether `close` was called (or the client is stopping).
    pub(crate) fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once the client is stopping.
    pub(crate) async fn stopping(&self) {
        while !self.is_stopping() {
            self.shared.wake.notified().await;
        }
    }

    /// What sends do while not connected.
    pub(crate) fn policy(&self) -> WhileReconnecting {
        self.shared.policy
    }

    /// The task took a message of `len` bytes off the queue.
    pub(crate) fn dequeued(&self, len: usize) {
        self.shared.queued.fetch_sub(len, Ordering::Relaxed);
    }

    fn check_sendable(&self) -> Result<(), SendError> {
        if self.is_stopping() {
            return Err(SendError::Closed);
        }
        match self.state() {
            ClientState::Open => Ok(()),
            ClientState::Stopped => Err(SendError::Closed),
            _ if self.shared.policy == WhileReconnecting::Fail => Err(SendError::NotConnected),
            _ => Ok(()),
        }
    }

    fn reserve(&self, len: usize) -> Result<(), SendError> {
        // Full means a backlog at the bound already; one message larger than the bound
        // still goes out when the queue is empty.
        let before = self.shared.queued.fetch_add(len, Ordering::Relaxed);
        if before < self.shared.max_queued {
            return Ok(());
        }
        self.shared.queued.fetch_sub(len, Ordering::Relaxed);
        Err(SendError::QueueFull)
    }

    fn push(&self, command: Command) -> Result<(), SendError> {
        let len = match &command {
            Command::Send(message) => message.len(),
            _ => 0,
        };
        self.shared.tx.send(command).map_err(|_| {
            self.dequeued(len);
            SendError::Closed
        })
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish()
    }
}
