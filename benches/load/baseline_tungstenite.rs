//! The tokio-tungstenite server: the baseline most Rust WebSocket servers resemble, for
//! echo and for fan-out.
//!
//! Echo is written the way its README and users write it: accept each socket, then
//! `StreamExt::next` and `SinkExt::send` (which flushes every message) echoing text and
//! binary messages, on a single-threaded tokio runtime. Pings are answered and closes
//! completed by tungstenite itself. The one addition is `TCP_NODELAY`, which Estuary's
//! server sets too.
//!
//! Fan-out, on [`FAN_OUT_PATH`], is the textbook chat room: one `tokio::sync::broadcast`
//! channel for the server, every connection subscribed to it, each message a connection
//! sends broadcast to all, and every connection's task writing what it receives to its own
//! socket. A connection says `{"type":"joined",...}` once it is subscribed, as Estuary's
//! chat does, so that the benchmark knows when to start.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

/// The path of the fan-out room; every other path echoes.
pub const FAN_OUT_PATH: &str = "/fanout";

/// Messages the room holds for a subscriber that has not written the previous ones yet.
const ROOM_CAPACITY: usize = 64;

/// Serves WebSocket echo (and fan-out on [`FAN_OUT_PATH`]) on `addr` until the process is
/// killed.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tungstenite server's runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("tungstenite server: binding {addr}"))?;
        let (room, _) = broadcast::channel::<Message>(ROOM_CAPACITY);
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: keep serving the connections there are.
                    eprintln!("tungstenite server: accept: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                eprintln!("tungstenite server: TCP_NODELAY: {error}");
            }
            let room = room.clone();
            tokio::spawn(async move {
                match serve_connection(stream, room).await {
                    Err(error) if !is_disconnect(&error) => {
                        eprintln!("tungstenite server: WebSocket: {error}");
                    }
                    _ => {}
                }
            });
        }
    })
}

// The callback's signature, with its large error, is tokio-tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve_connection(
    stream: TcpStream,
    room: broadcast::Sender<Message>,
) -> Result<(), Error> {
    let mut fan_out = false;
    let ws =
        tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
            fan_out = request.uri().path() == FAN_OUT_PATH;
            Ok(response)
        })
        .await?;
    if fan_out {
        chat_room(ws, room).await
    } else {
        echo(ws).await
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>) -> Result<(), Error> {
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

/// One member of the room: what it sends goes to everyone, what anyone sends comes back to
/// it. A member too slow to keep up misses messages rather than holding up the room.
async fn chat_room(
    mut ws: WebSocketStream<TcpStream>,
    room: broadcast::Sender<Message>,
) -> Result<(), Error> {
    let mut inbox = room.subscribe();
    ws.send(Message::text(r#"{"type":"joined","channel":"fanout"}"#))
        .await?;
    loop {
        tokio::select! {
            message = ws.next() => match message {
                None => return Ok(()),
                Some(message) => {
                    let message = message?;
                    if message.is_text() || message.is_binary() {
                        // No receiver is not an error: this member itself is one.
                        let _ = room.send(message);
                    }
                }
            },
            delivery = inbox.recv() => match delivery {
                Ok(message) => ws.send(message).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// Whether `error` is the client going away: without a Close at the end of each scenario,
/// or before its handshake when the benchmark only probes whether the server listens.
fn is_disconnect(error: &Error) -> bool {
    match error {
        Error::ConnectionClosed
        | Error::AlreadyClosed
        | Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::HandshakeIncomplete,
        ) => true,
        Error::Io(error) => matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}
