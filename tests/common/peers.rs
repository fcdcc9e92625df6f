//! Servers for the client tests: an estuary server at a chosen address (to restart it
//! where the client expects it), a tokio-tungstenite echo server as a reference peer,
//! a silent server that completes the handshake and then never reads, and a server
//! that answers pings until told to stop.

use std::net::SocketAddr;
use std::time::Duration;

use estuary::Server;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::TestServer;

/// Serves `service` at `addr` (a fixed port, so a restarted server is where the client
/// expects it), the way [`super::serve`] does.
pub async fn serve_at<S, B>(addr: SocketAddr, service: S) -> TestServer
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Server::builder().drain_timeout(Duration::from_secs(5));
    super::serve_on(builder, addr, service).await
}

/// A tokio-tungstenite echo server: the reference peer.
pub struct TungsteniteServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TungsteniteServer {
    /// Listens on `addr` (port 0 for any) and echoes every message on every connection.
    pub async fn start(addr: SocketAddr) -> TungsteniteServer {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(tungstenite_echo(stream));
            }
        });
        TungsteniteServer { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Stops listening and drops every connection, without a close handshake.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Accepts a WebSocket on `stream` with tokio-tungstenite and echoes every message until
/// the peer closes.
pub async fn tungstenite_echo<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// A server that answers the WebSocket handshake and then never reads nor writes again:
/// it stops answering pings.
pub struct SilentServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                if let Some(stream) = answer_handshake(stream, "").await {
                    held.push(stream);
                }
            }
        });
        SilentServer { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tokio-tungstenite server that answers every ping (tungstenite queues the pong as it
/// reads) until [`MuteServer::mute`], and from then on holds its connections open
/// without reading nor writing: a peer that has gone away without a FIN.
pub struct MuteServer {
    pub addr: SocketAddr,
    mute: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MuteServer {
    pub async fn start() -> MuteServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mute, muted) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let mut muted = muted.clone();
                connections.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            read = ws.next() => if !matches!(read, Some(Ok(_))) {
                                return;
                            },
                            _ = muted.wait_for(|muted| *muted) => break,
                        }
                    }
                    // Held, never polled again, until the server is dropped.
                    std::future::pending::<()>().await;
                    drop(ws);
                });
            }
        });
        MuteServer { addr, mute, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Stops answering pings, on every connection, from now on.
    pub fn mute(&self) {
        self.mute.send_replace(true);
    }
}

impl Drop for MuteServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a handshake request from `stream` and answers 101 with `extra` header lines
/// (each ending in \r\n); `None` if the client went away first.
pub async fn answer_handshake(mut stream: TcpStream, extra: &str) -> Option<TcpStream> {
    let mut request = Vec::new();
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let key = request
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("the client sent a Sec-WebSocket-Key");
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await.ok()?;
    Some(stream)
}
