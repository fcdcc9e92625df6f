//! The client's task: runs each connection, asks the handler whether to reconnect, waits
//! out the backoff, connects again, and calls `on_stop` at the end.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::config::{ClientConfig, WhileReconnecting};
use super::connection::Connection;
use super::handle::{ClientState, Command};
use super::handler::{ClientHandler, DisconnectReason, Reconnect};
use super::handshake::{Connector, Established};
use super::Client;
use crate::protocol::CloseReason;
use crate::transport::guarded;

/// Runs the client until it stops.
pub(crate) async fn run<H: ClientHandler>(
    mut handler: H,
    client: Client,
    mut rx: UnboundedReceiver<Command>,
    connector: Connector,
    config: Arc<ClientConfig>,
    first: Established,
) {
    let _stopped = StoppedOnDrop(client.clone());
    let mut established = first;
    let reason = 'client: loop {
        let reason = open(&mut handler, &client, &mut rx, &config, established).await;
        tracing::debug!(%reason, "disconnected");
        let mut reason = DisconnectReason::Closed(reason);
        if client.is_stopping() || is_panic(&reason) {
            break reason;
        }
        let mut attempt = 0;
        established = loop {
            client.set_state(ClientState::Reconnecting);
            if client.policy() == WhileReconnecting::Fail {
                drop_queued(&client, &mut rx);
            }
            let decision = guarded(|| handler.on_close(&client, &reason, attempt)).await;
            match decision {
                Ok(Reconnect::AfterBackoff) => {}
                Ok(Reconnect::Stop) => break 'client reason,
                Err(()) => {
                    tracing::error!("client handler panicked in on_close");
                    break 'client reason;
                }
            }
            let delay = config.backoff.delay(attempt);
            attempt += 1;
            tracing::debug!(attempt, ?delay, "reconnecting after backoff");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = client.stopping() => break 'client reason,
            }
            client.set_state(ClientState::Connecting);
            let result = tokio::select! {
                result = connector.connect() => result,
                () = client.stopping() => break 'client reason,
            };
            match result {
                Ok(established) => break established,
                Err(error) => {
                    tracing::debug!(%error, attempt, "reconnect failed");
                    reason = DisconnectReason::ConnectFailed(error);
                }
            }
        };
    };
    client.stop();
    tracing::debug!(%reason, "client stopping");
    if guarded(|| handler.on_stop(&client, reason)).await.is_err() {
        tracing::error!("client handler panicked in on_stop");
    }
}

/// Runs one open connection to its end.
async fn open<H: ClientHandler>(
    handler: &mut H,
    client: &Client,
    rx: &mut UnboundedReceiver<Command>,
    config: &ClientConfig,
    established: Established,
) -> CloseReason {
    client.set_state(ClientState::Open);
    let Established {
        stream,
        read_buf,
        connected,
        deflate,
    } = established;
    if guarded(|| handler.on_open(client, &connected))
        .await
        .is_err()
    {
        tracing::error!("client handler panicked in on_open");
        return CloseReason::HandlerPanic;
    }
    Connection::new(stream, read_buf, deflate.as_ref(), config, client, rx)
        .run(handler)
        .await
}

/// Drops what was queued for a connection that is gone, under
/// [`WhileReconnecting::Fail`]: those sends were made for it.
fn drop_queued(client: &Client, rx: &mut UnboundedReceiver<Command>) {
    let mut dropped = 0;
    while let Ok(command) = rx.try_recv() {
        if let Command::Send(message) = command {
            client.dequeued(message.len());
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::debug!(dropped, "dropped messages queued for the lost connection");
    }
}

fn is_panic(reason: &DisconnectReason) -> bool {
    matches!(reason, DisconnectReason::Closed(CloseReason::HandlerPanic))
}

/// Marks the client stopped however the task ends, even by a panic, so that
/// `Client::closed` always resolves.
struct StoppedOnDrop(Client);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.stop();
        self.0.set_state(ClientState::Stopped);
    }
}
