//! Estuary with nothing in front of the upgrade: `estuary::Server` serving a bare
//! `WebSocketService` echo, the reference for what the layers cost a handshake.
//!
//! It serves h2c with WebSockets over HTTP/2 too (for the HTTP/2 scenario), as the
//! full-stack config does, so both pay the same small read per HTTP/1.1 connection that
//! tells the protocols apart.
//!
//! It runs on a multi-threaded tokio runtime, as the example server does (`#[tokio::main]`),
//! so that the two differ only in the layers and the routes; pinned to one core, both get
//! one worker per CPU of the machine, taking turns on that core.

use std::net::SocketAddr;

use anyhow::Context as _;
use estuary::{handler_fn, Conn, Message, Server, WebSocketService};

/// Serves WebSocket echo on `addr` (any path) until the process is killed.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the bare estuary server's runtime")?;
    runtime.block_on(async {
        let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
            let _ = conn.send(msg);
        }));
        Server::builder()
            .h2c(true)
            .websockets_over_http2(true)
            .bind(addr)
            .with_context(|| format!("estuary-bare server: binding {addr}"))?
            .serve(echo)
            .await
            .context("estuary-bare server")
    })
}
