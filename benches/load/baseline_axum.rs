//! The axum echo server: `WebSocketUpgrade`, the way axum's own websockets example and
//! its users write it.
//!
//! `Router` with one route, `ws.on_upgrade`, and `recv` / `send` (which flushes every
//! message) echoing text and binary messages; pings are answered and closes completed by
//! tungstenite underneath. `axum::serve` on a single-threaded tokio runtime like the other
//! baselines, with `TCP_NODELAY` through `tap_io` as axum's docs show, which Estuary's
//! server sets too.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::servers::ECHO_PATH;

/// Serves WebSocket echo on `addr`, path [`ECHO_PATH`], until the process is killed.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the axum server's runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("axum server: binding {addr}"))?
            .tap_io(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    eprintln!("axum server: TCP_NODELAY: {error}");
                }
            });
        let app = Router::new().route(ECHO_PATH, any(upgrade));
        axum::serve(listener, app).await.context("axum server")
    })
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}
