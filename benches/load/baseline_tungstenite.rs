//! The tokio-tungstenite echo server: the baseline most Rust WebSocket servers resemble.
//!
//! Written the way its README and users write it: `accept_async` on each accepted socket,
//! then `StreamExt::next` and `SinkExt::send` (which flushes every message) echoing text and
//! binary messages, on a single-threaded tokio runtime. Pings are answered and closes
//! completed by tungstenite itself. The one addition is `TCP_NODELAY`, which Estuary's
//! server sets too.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::Error;

/// Serves WebSocket echo on `addr` (any path) until the process is killed.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tungstenite server's runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("tungstenite server: binding {addr}"))?;
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
            tokio::spawn(async move {
                match echo(stream).await {
                    Err(error) if !is_disconnect(&error) => {
                        eprintln!("tungstenite server: WebSocket: {error}");
                    }
                    _ => {}
                }
            });
        }
    })
}

async fn echo(stream: TcpStream) -> Result<(), Error> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
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
