//! A client handler that reports every callback on a channel, and the servers and
//! settings the client tests share.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use estuary::client::{
    Backoff, Client, ClientConfig, ClientHandler, Connected, DisconnectReason, Reconnect,
};
use estuary::{handler_fn, CloseReason, Conn, Handler, Message, WebSocketService};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::peers::serve_at;
use super::{within, TestServer};

/// What a [`Recorder`] saw, in order.
#[derive(Debug)]
pub enum Seen {
    Connected(Option<String>),
    Message(Message),
    Pong(Bytes),
    Disconnected {
        reason: String,
        closed: Option<CloseReason>,
        attempt: u32,
        at: Instant,
    },
    Terminated(String),
}

/// A handler that reports every callback on a channel.
pub struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    reconnect: bool,
}

impl ClientHandler for Recorder {
    async fn on_open(&mut self, _client: &Client, connected: &Connected) {
        let _ = self
            .seen
            .send(Seen::Connected(connected.protocol().map(str::to_owned)));
    }

    async fn on_message(&mut self, _client: &Client, message: Message) {
        let _ = self.seen.send(Seen::Message(message));
    }

    async fn on_pong(&mut self, _client: &Client, payload: Bytes) {
        let _ = self.seen.send(Seen::Pong(payload));
    }

    async fn on_close(
        &mut self,
        _client: &Client,
        reason: &DisconnectReason,
        attempt: u32,
    ) -> Reconnect {
        let closed = match reason {
            DisconnectReason::Closed(reason) => Some(reason.clone()),
            _ => None,
        };
        let _ = self.seen.send(Seen::Disconnected {
            reason: reason.to_string(),
            closed,
            attempt,
            at: Instant::now(),
        });
        if self.reconnect {
            Reconnect::AfterBackoff
        } else {
            Reconnect::Stop
        }
    }

    async fn on_stop(&mut self, _client: &Client, reason: DisconnectReason) {
        let _ = self.seen.send(Seen::Terminated(reason.to_string()));
    }
}

/// A recorder and the receiving end of what it sees.
pub fn recorder(reconnect: bool) -> (Recorder, mpsc::UnboundedReceiver<Seen>) {
    let (seen, rx) = mpsc::unbounded_channel();
    (Recorder { seen, reconnect }, rx)
}

pub async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("a client callback", rx.recv())
        .await
        .expect("the client's task ended")
}

pub async fn next_message(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Message {
    loop {
        match next(rx).await {
            Seen::Message(message) => return message,
            Seen::Pong(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

pub async fn connect(url: &str, handler: Recorder, config: ClientConfig) -> Client {
    within(
        "client connect",
        Client::builder(url).config(config).connect(handler),
    )
    .await
    .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

pub fn echo() -> WebSocketService<impl Handler> {
    WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    }))
}

pub async fn estuary_echo(addr: SocketAddr) -> TestServer {
    serve_at(addr, echo()).await
}

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Backoff without jitter, so the delays are exact: 100, 200, 400, 800 ms.
pub fn fast_backoff() -> ClientConfig {
    ClientConfig::default().with_backoff(
        Backoff::default()
            .with_initial(Duration::from_millis(100))
            .with_max(Duration::from_secs(2))
            .with_multiplier(2.0)
            .with_jitter(0.0),
    )
}
