//! The raw fastwebsockets echo server: the baseline Estuary is measured against.
//!
//! It is the server of fastwebsockets' own `examples/echo_server.rs`, as a user would write
//! it: hyper 1 HTTP/1.1 with upgrades, `fastwebsockets::upgrade::upgrade`, a
//! `FragmentCollector`, and `read_frame` / `write_frame` echoing text and binary frames
//! (each written, and so sent, on its own), auto pong and auto close on, on a single-threaded
//! tokio runtime. The one addition is `TCP_NODELAY`, which Estuary's server sets too.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves WebSocket echo on `addr` (any path) until the process is killed.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the fastwebsockets server's runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("fastwebsockets server: binding {addr}"))?;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: keep serving the connections there are.
                    eprintln!("fastwebsockets server: accept: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                eprintln!("fastwebsockets server: TCP_NODELAY: {error}");
            }
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(upgrade_to_echo))
                    .with_upgrades();
                if let Err(error) = connection.await {
                    eprintln!("fastwebsockets server: HTTP connection: {error}");
                }
            });
        }
    })
}

async fn upgrade_to_echo(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        match tokio::task::unconstrained(echo(upgraded)).await {
            Err(error) if !is_disconnect(&error) => {
                eprintln!("fastwebsockets server: WebSocket: {error}");
            }
            _ => {}
        }
    });
    Ok(response)
}

async fn echo(upgraded: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgraded.await?;
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

/// Whether `error` is the client going away, as the load client does without a Close at
/// the end of each scenario.
fn is_disconnect(error: &WebSocketError) -> bool {
    match error {
        WebSocketError::ConnectionClosed | WebSocketError::UnexpectedEOF => true,
        WebSocketError::IoError(error) => matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}
