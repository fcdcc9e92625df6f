//! One open connection, run to its end on the client's task. Like the server's engine, it
//! runs on the shared [`transport`](crate::transport): the task owns the socket, drains
//! whatever the handle queued into the writer, writes it with one call, and reads into a
//! buffer that the codec decodes in place.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, Sleep};

use super::handle::{ClientState, Command};
use super::handler::ClientHandler;
use super::stream::Stream;
use super::{Client, ClientConfig};
use crate::protocol::codec::{DecodeError, Frame, OpCode, Role};
use crate::protocol::deflate::Negotiated;
use crate::protocol::{CloseReason, Message};
use crate::transport::{guarded, Reader, Writer, HIGH_WATER};

/// What woke the connection.
enum Wake {
    Read,
    Eof,
    Failed(io::Error),
    /// `Client::close` asked for this.
    Close(CloseReason),
    Timer,
}

/// An open connection's socket, buffers and timers.
pub(crate) struct Connection<'a> {
    io: Stream,
    reader: Reader,
    writer: Writer,
    config: &'a ClientConfig,
    client: &'a Client,
    rx: &'a mut UnboundedReceiver<Command>,
    /// When the next keep-alive ping is due, when none is out.
    next_ping: Option<Instant>,
    /// When the keep-alive ping that is out was sent.
    ping_sent: Option<Instant>,
    /// When the connection is dropped if the server has not closed it by then.
    close_deadline: Option<Instant>,
    /// Set after the server's close frame or a protocol error: later bytes are not frames
    /// we may act on.
    input_done: bool,
}

impl<'a> Connection<'a> {
    /// A connection on `io`, with the bytes that came behind the 101 in `read_buf`.
    pub(crate) fn new(
        io: Stream,
        read_buf: Bytes,
        deflate: Option<&Negotiated>,
        config: &'a ClientConfig,
        client: &'a Client,
        rx: &'a mut UnboundedReceiver<Command>,
    ) -> Self {
        Self {
            io,
            reader: Reader::new(
                Role::Client,
                config.max_message_size,
                BytesMut::from(read_buf),
                deflate,
            ),
            writer: Writer::new(Role::Client).with_deflate(deflate),
            config,
            client,
            rx,
            next_ping: config.keepalive_interval.map(|i| Instant::now() + i),
            ping_sent: None,
            close_deadline: None,
            input_done: false,
        }
    }

    /// Runs the connection until the server closes it, it fails, or the close handshake
    /// times out; returns why it ended.
    pub(crate) async fn run<H: ClientHandler>(mut self, handler: &mut H) -> CloseReason {
        let sleep = tokio::time::sleep_until(self.next_deadline());
        tokio::pin!(sleep);
        // Frames the server sent right behind its 101.
        self.on_read(handler).await;
        loop {
            let event = poll_fn(|cx| self.poll_event(cx, sleep.as_mut())).await;
            match event {
                Wake::Read => self.on_read(handler).await,
                Wake::Eof => {
                    tracing::debug!("the server closed the TCP connection");
                    return self.ended();
                }
                Wake::Failed(error) => {
                    tracing::debug!(%error, "socket failed");
                    return self.ended();
                }
                Wake::Close(reason) => self.start_close(reason),
                Wake::Timer => {
                    if let Some(reason) = self.on_timer() {
                        return reason;
                    }
                }
            }
            let next = self.next_deadline();
            if next != sleep.deadline() {
                sleep.as_mut().reset(next);
            }
        }
    }

    /// Handles every whole frame in the read buffer.
    async fn on_read<H: ClientHandler>(&mut self, handler: &mut H) {
        let client = self.client;
        loop {
            if self.input_done {
                self.reader.discard();
                return;
            }
            let frame = match self.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let reason = match error {
                        DecodeError::TooBig => CloseReason::MessageTooBig,
                        DecodeError::Protocol(e) => CloseReason::Protocol(e),
                    };
                    tracing::debug!(%reason, "failing the connection on bad input");
                    self.input_done = true;
                    self.start_close(reason);
                    return;
                }
            };
            match frame {
                Frame::Message(message) => {
                    tracing::debug!(
                        opcode = ?opcode_of(&message),
                        len = message.len(),
                        "message received"
                    );
                    if self.is_open() {
                        self.callback(|| handler.on_message(client, message)).await;
                    }
                }
                Frame::Ping(payload) => {
                    tracing::debug!(len = payload.len(), "ping received");
                    if self.is_open() {
                        self.write(OpCode::Pong, &payload);
                        self.callback(|| handler.on_ping(client, payload)).await;
                    }
                }
                Frame::Pong(payload) => {
                    tracing::debug!(len = payload.len(), "pong received");
                    self.ping_sent = None;
                    self.next_ping = self.config.keepalive_interval.map(|i| Instant::now() + i);
                    if self.is_open() {
                        self.callback(|| handler.on_pong(client, payload)).await;
                    }
                }
                Frame::Close(close) => self.on_close_frame(close),
            }
        }
        self.reader.after_read();
    }

    fn is_open(&self) -> bool {
        self.writer.state().is_open()
    }

    /// The server's close frame: answered with the same code unless ours went first;
    /// either way the handshake is done, and the server closes the TCP connection next.
    fn on_close_frame(&mut self, close: Option<(u16, crate::Utf8Bytes)>) {
        let code = close.as_ref().map(|(code, _)| *code);
        let text = close
            .map(|(_, reason)| reason.to_string())
            .unwrap_or_default();
        tracing::debug!(code, reason = %text, "close received");
        self.input_done = true;
        if self.is_open() {
            self.write_queued();
            tracing::debug!(code, "close sent");
            self.writer.peer_closed(code, text);
            self.begin_closing();
        } else {
            self.writer.peer_closed(code, text);
        }
    }

    /// Sends what is queued, then a close frame for `reason`, and starts the close
    /// timeout, unless closing already.
    fn start_close(&mut self, reason: CloseReason) {
        if !self.is_open() {
            return;
        }
        self.write_queued();
        self.send_close(reason);
    }

    /// Sends a close frame for `reason` and starts the close timeout.
    fn send_close(&mut self, reason: CloseReason) {
        tracing::debug!(code = reason.code(), reason = reason.text(), "close sent");
        self.writer.close(reason);
        self.begin_closing();
    }

    fn begin_closing(&mut self) {
        self.close_deadline = Some(Instant::now() + self.config.close_timeout);
        self.client.set_state(ClientState::Closing);
    }

    fn on_timer(&mut self) -> Option<CloseReason> {
        let now = Instant::now();
        if self.close_deadline.is_some_and(|deadline| now >= deadline) {
            tracing::debug!("dropping the connection: the server did not close it in time");
            return Some(self.ended());
        }
        if !self.is_open() {
            return None;
        }
        if let Some(sent) = self.ping_sent {
            if now >= sent + self.config.keepalive_timeout {
                tracing::debug!(
                    timeout = ?self.config.keepalive_timeout,
                    "no pong within the keep-alive timeout: dropping the connection"
                );
                self.input_done = true;
                // The server is not listening: what is queued stays queued for the next
                // connection, the close frame gets one try, and the connection is
                // dropped rather than waiting out the close handshake.
                self.send_close(CloseReason::Idle);
                self.close_deadline = Some(now);
            }
        } else if self.next_ping.is_some_and(|due| now >= due) {
            self.write(OpCode::Ping, b"");
            self.ping_sent = Some(now);
            self.next_ping = None;
        }
        None
    }

    /// The earliest moment a timer may need attention.
    fn next_deadline(&self) -> Instant {
        if let Some(deadline) = self.close_deadline {
            return deadline;
        }
        let keepalive = match self.ping_sent {
            Some(sent) => Some(sent + self.config.keepalive_timeout),
            None => self.next_ping,
        };
        keepalive.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }

    /// Why the connection ended, now that it has.
    fn ended(&mut self) -> CloseReason {
        self.writer.finish(CloseReason::ConnectionLost)
    }

    /// Runs a handler callback; a panic closes the connection with 1011 and stops the
    /// client.
    async fn callback<F: Future<Output = ()>>(&mut self, callback: impl FnOnce() -> F) {
        if guarded(callback).await.is_err() {
            tracing::error!("client handler panicked");
            self.start_close(CloseReason::HandlerPanic);
        }
    }

    /// Encodes a command from the queue; a close request is handed back.
    fn take(&mut self, command: Command) -> Option<CloseReason> {
        match command {
            Command::Send(message) => {
                self.client.dequeued(message.len());
                tracing::debug!(opcode = ?opcode_of(&message), len = message.len(), "frame sent");
                self.writer.message(&message);
                None
            }
            Command::Ping(payload) => {
                self.write(OpCode::Ping, &payload);
                None
            }
            Command::Close { code, reason } => Some(CloseReason::Local { code, reason }),
        }
    }

    /// Writes what is queued ahead of a close frame that is about to go out: replies the
    /// handler queued for messages that came before it (the close frame must be last).
    fn write_queued(&mut self) {
        while let Ok(command) = self.rx.try_recv() {
            // A close request now is moot: this close goes first, and the client stops
            // because `close` was called.
            let _ = self.take(command);
        }
    }

    /// Encodes a masked control frame into the write buffer.
    fn write(&mut self, opcode: OpCode, payload: &[u8]) {
        self.writer.control(opcode, payload);
        tracing::debug!(?opcode, len = payload.len(), "frame sent");
    }

    /// Drains the queue into the write buffer, writes, then waits for input or a timer.
    fn poll_event(&mut self, cx: &mut Context<'_>, sleep: Pin<&mut Sleep>) -> Poll<Wake> {
        if self.is_open() {
            while self.writer.len() < HIGH_WATER {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(command)) => {
                        if let Some(close) = self.take(command) {
                            return Poll::Ready(Wake::Close(close));
                        }
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
        }
        if let Poll::Ready(Err(e)) = self.writer.poll_write(&mut self.io, cx) {
            return Poll::Ready(Wake::Failed(e));
        }
        if self.writer.len() < HIGH_WATER {
            match self.reader.poll_read(&mut self.io, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Wake::Eof),
                Poll::Ready(Ok(_)) => return Poll::Ready(Wake::Read),
                Poll::Ready(Err(e)) => return Poll::Ready(Wake::Failed(e)),
                Poll::Pending => {}
            }
        }
        if sleep.poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    }
}

fn opcode_of(message: &Message) -> OpCode {
    match message {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    }
}
