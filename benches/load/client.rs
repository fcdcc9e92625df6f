//! The load client's side of WebSocket, cut to what a load generator needs.
//!
//! It must cost far less per message than any server it measures, or it measures itself:
//! a raw [`TcpStream`], a hand-written HTTP/1.1 upgrade request, frames encoded once up
//! front ([`crate::frames`]), every burst written with one `write_all`, and replies counted
//! straight out of the read buffer by their headers, payloads skipped unread.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::frames::ReplyCounter;

/// How long connecting, the handshake, or one write may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of a busy connection's read buffer: a whole burst of replies in one `read`.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Size of a quiet connection's read buffer: a few small messages at a time, so that ten
/// thousand of them cost the client little.
const QUIET_READ_BUFFER_SIZE: usize = 1024;

/// Longest HTTP response head accepted for the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The credentials and origin every upgrade request carries: a user of the full-stack
/// config (`configs/full-stack.toml`) and an origin it allows, so that Estuary's auth and
/// origin layers do their whole job. The other servers ignore both headers.
pub const CREDENTIAL_HEADERS: &str = "Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n\
                                      Origin: http://bench.example\r\n";

/// The permessage-deflate offer of a client that compresses, as browsers make it.
pub const DEFLATE_OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// The upgrade request for `path` on the server at `addr`, with [`CREDENTIAL_HEADERS`] and
/// `extra` header lines.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         {CREDENTIAL_HEADERS}\
         {extra}\
         \r\n"
    )
}

/// Whether a connection offers permessage-deflate, and then requires the server to
/// accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Off,
    Offered,
}

/// A client WebSocket connection that sends pre-encoded frames and counts the replies.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    replies: ReplyCounter,
    buffer: Box<[u8]>,
    /// Replies that arrived with the handshake response, handed out by the next `recv`.
    early_replies: u64,
    /// Bytes read since the upgrade.
    bytes_read: u64,
}

impl Connection {
    /// Connects to `addr`, upgrades `GET path`, and checks for `101 Switching Protocols`.
    pub async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<Self> {
        Self::connect(addr, path, READ_BUFFER_SIZE, Compression::Off).await
    }

    /// Like [`Connection::open`] with a read buffer of `buffer_size` bytes, for replies
    /// larger than the default buffer holds.
    pub async fn open_with_buffer(
        addr: SocketAddr,
        path: &str,
        buffer_size: usize,
        compression: Compression,
    ) -> anyhow::Result<Self> {
        Self::connect(addr, path, buffer_size.max(READ_BUFFER_SIZE), compression).await
    }

    /// Like [`Connection::open`] with a small read buffer, for the thousands of
    /// connections that mostly wait; it returns once the `greeting` messages the server
    /// sends on its own after the upgrade (Estuary's chat: welcome and joined) have arrived,
    /// so that the connection is quiet from then on. Dropped, it resets the TCP connection
    /// instead of closing it, so that ten thousand of them leave no TIME_WAIT behind to run
    /// the client out of ports.
    pub async fn open_quiet(
        addr: SocketAddr,
        path: &str,
        greeting: u64,
        compression: Compression,
    ) -> anyhow::Result<Self> {
        let mut connection = Self::connect(addr, path, QUIET_READ_BUFFER_SIZE, compression).await?;
        connection
            .stream
            .set_zero_linger()
            .context("setting SO_LINGER to zero on the client socket")?;
        let mut arrived = 0;
        while arrived < greeting {
            arrived += connection.recv(SETUP_TIMEOUT).await.with_context(|| {
                format!("waiting for greeting message {} of {greeting}", arrived + 1)
            })?;
        }
        ensure!(
            arrived == greeting,
            "{arrived} messages arrived after the upgrade, expected a greeting of {greeting}"
        );
        Ok(connection)
    }

    async fn connect(
        addr: SocketAddr,
        path: &str,
        buffer_size: usize,
        compression: Compression,
    ) -> anyhow::Result<Self> {
        let stream = timeout(SETUP_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream
            .set_nodelay(true)
            .context("setting TCP_NODELAY on the client socket")?;
        let mut connection = Self {
            stream,
            replies: ReplyCounter::default(),
            buffer: vec![0; buffer_size].into_boxed_slice(),
            early_replies: 0,
            bytes_read: 0,
        };
        timeout(SETUP_TIMEOUT, connection.handshake(addr, path, compression))
            .await
            .with_context(|| format!("WebSocket handshake with {addr}{path}: timed out"))??;
        Ok(connection)
    }

    async fn handshake(
        &mut self,
        addr: SocketAddr,
        path: &str,
        compression: Compression,
    ) -> anyhow::Result<()> {
        let extra = match compression {
            Compression::Off => "",
            Compression::Offered => DEFLATE_OFFER,
        };
        self.stream
            .write_all(upgrade_request(addr, path, extra).as_bytes())
            .await
            .context("sending the upgrade request")?;

        let mut head = Vec::new();
        let head_end = loop {
            if let Some(end) = find(&head, b"\r\n\r\n") {
                break end + 4;
            }
            ensure!(
                head.len() < MAX_RESPONSE_HEAD,
                "upgrade response head longer than {MAX_RESPONSE_HEAD} bytes"
            );
            let read = self
                .stream
                .read(&mut self.buffer)
                .await
                .context("reading the upgrade response")?;
            ensure!(
                read > 0,
                "server closed the connection before answering the upgrade"
            );
            head.extend_from_slice(&self.buffer[..read]);
        };

        let status_line = head
            .split(|&byte| byte == b'\r')
            .next()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if !status_line.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {status_line:?} (wanted HTTP/1.1 101)");
        }
        let accepted = String::from_utf8_lossy(&head[..head_end])
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate");
        if compression == Compression::Offered && !accepted {
            bail!("the server did not accept the permessage-deflate offer");
        }
        self.early_replies = self.replies.feed(&head[head_end..])?;
        Ok(())
    }

    /// Sends already-encoded frames in one write.
    pub async fn send(&mut self, frames: &[u8]) -> anyhow::Result<()> {
        timeout(SETUP_TIMEOUT, self.stream.write_all(frames))
            .await
            .context("sending frames: timed out")?
            .context("sending frames")
    }

    /// Reads once and returns how many complete data messages arrived (possibly none, when
    /// only part of one did), failing if nothing arrives within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> anyhow::Result<u64> {
        if self.early_replies > 0 {
            return Ok(std::mem::take(&mut self.early_replies));
        }
        let read = timeout(wait, self.stream.read(&mut self.buffer))
            .await
            .with_context(|| format!("no reply within {wait:?}"))?
            .context("reading replies")?;
        ensure!(read > 0, "server closed the connection");
        self.bytes_read += read as u64;
        self.replies.feed(&self.buffer[..read])
    }
}

impl Connection {
    /// Bytes read since the upgrade.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Data messages read whose first frame had RSV1 set (compressed).
    pub fn compressed_replies(&self) -> u64 {
        self.replies.compressed()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
