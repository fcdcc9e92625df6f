//! The server's connection engine: one task per connection owns the socket.
//!
//! It reads frames through the shared [`transport`](crate::transport), runs the handler,
//! enforces limits and timers, and writes. Writes coalesce: whatever the handler sent and
//! whatever other tasks queued goes out with one (vectored) write, so a burst costs one
//! system call. Reading stops while too much is unsent, which pushes back on a peer that
//! sends without reading.

mod config;
mod shutdown;

use std::future::{poll_fn, Future};
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use estuary_middleware::SessionLimits;
use tokio::time::{Instant, Sleep};

pub(crate) use crate::transport::Io;
pub use config::WebSocketConfig;
pub use shutdown::Shutdown;

use crate::handler::{Conn, Handler};
use crate::metrics::{self, Traffic};
use crate::protocol::codec::{DecodeError, Frame, OpCode, Role};
use crate::protocol::deflate::Negotiated;
use crate::protocol::CloseReason;
use crate::queue::{Outbound, QueueState};
use crate::transport::{guarded, Reader, HIGH_WATER};

/// How long to wait for the peer to close its side after a failed connection.
const FAIL_LINGER: Duration = Duration::from_secs(1);

/// What woke the engine.
enum Wake {
    Read,
    Eof,
    Failed(io::Error),
    Queued(Outbound),
    Timer,
}

/// How the main loop ended.
enum Ending {
    /// The peer's Close arrived, so the close handshake is done on its side: flush (our
    /// Close, if it is not out yet) and close the TCP connection, which the server does
    /// first (RFC 6455, 7.1.1).
    Close(Duration),
    /// The connection failed: flush, half-close, and wait a moment for the peer to close,
    /// so that what it still sends does not turn our close into a reset that loses the
    /// close frame.
    Linger(Duration),
    /// The socket is gone.
    Drop,
}

/// One connection's socket, buffers and timers.
pub(crate) struct Engine<S> {
    io: S,
    reader: Reader,
    queue: Arc<QueueState>,
    config: Arc<WebSocketConfig>,
    limits: SessionLimits,
    opened: Instant,
    last_rx: Instant,
    ping_sent: Option<Instant>,
    rate_window: (Instant, u32),
    close_deadline: Option<Instant>,
    traffic: Traffic,
}

impl<S: Io> Engine<S> {
    /// An engine for `io`, with bytes the HTTP layer already read in `rbuf`.
    pub(crate) fn new(
        io: S,
        rbuf: BytesMut,
        config: Arc<WebSocketConfig>,
        limits: SessionLimits,
        queue: Arc<QueueState>,
        deflate: Option<&Negotiated>,
    ) -> Self {
        let max_message = limits.max_message_size.unwrap_or(config.max_message_size);
        let now = Instant::now();
        Self {
            io,
            reader: Reader::new(Role::Server, max_message, rbuf, deflate),
            queue,
            config,
            limits,
            opened: now,
            last_rx: now,
            ping_sent: None,
            rate_window: (now, 0),
            close_deadline: None,
            traffic: Traffic::new(now),
        }
    }

    /// Runs the connection to its end, then the handler's `on_close`.
    ///
    /// Not an `async fn`: one of those keeps its arguments twice (rust-lang/rust#62958),
    /// as the arguments and as the bindings they move into, which cost every connection
    /// 1.3 KB of the engine and the `Conn`. The block below uses its captures in place.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub(crate) fn run<H: Handler>(
        mut self,
        mut handler: H,
        mut conn: Conn,
    ) -> impl Future<Output = ()> {
        async move {
            let sleep = tokio::time::sleep_until(self.next_deadline(&conn));
            tokio::pin!(sleep);
            metrics::connection_opened();

            // Callbacks and steps that run once per connection are boxed, so the connection's
            // future does not reserve their room for its whole life.
            if Box::pin(guarded(|| handler.on_open(&mut conn)))
                .await
                .is_err()
            {
                panicked("on_open");
                conn.start_close(CloseReason::HandlerPanic);
            }
            let ending = self.drive(&mut handler, &mut conn, sleep.as_mut()).await;
            self.queue.close();
            match ending {
                Ending::Close(timeout) => {
                    Box::pin(conn.writer().finish_io(&mut self.io, timeout)).await
                }
                Ending::Linger(timeout) => {
                    let linger = conn
                        .writer()
                        .linger(&mut self.io, &mut self.reader, timeout);
                    Box::pin(linger).await
                }
                Ending::Drop => {}
            }
            let reason = conn.writer().finish(CloseReason::ConnectionLost);
            self.traffic.bytes_out += conn.writer().take_written();
            self.collect_traffic(&mut conn);
            self.traffic.flush(Instant::now());
            metrics::connection_closed(&reason);
            tracing::debug!(%reason, "websocket closed");
            if Box::pin(guarded(|| handler.on_close(&mut conn, reason)))
                .await
                .is_err()
            {
                panicked("on_close");
            }
        }
    }

    async fn drive<H: Handler>(
        &mut self,
        handler: &mut H,
        conn: &mut Conn,
        mut sleep: Pin<&mut Sleep>,
    ) -> Ending {
        self.note_closing(conn);
        loop {
            let event = poll_fn(|cx| self.poll_event(cx, handler, conn, sleep.as_mut())).await;
            match event {
                Wake::Read => {
                    if let Some(ending) = self.on_read(handler, conn).await {
                        return ending;
                    }
                }
                Wake::Eof => return Ending::Drop,
                Wake::Failed(e) => {
                    tracing::debug!(error = %e, "websocket I/O failed");
                    return Ending::Drop;
                }
                Wake::Queued(Outbound::Event(event)) => {
                    if !conn.is_closing()
                        && guarded(|| handler.on_event(conn, event)).await.is_err()
                    {
                        panicked("on_event");
                        conn.start_close(CloseReason::HandlerPanic);
                    }
                }
                Wake::Queued(Outbound::Close(reason)) => conn.start_close(reason),
                Wake::Queued(Outbound::Frame(_) | Outbound::Publication(_)) => {
                    unreachable!("frames and publications are written in poll_event")
                }
                Wake::Timer => {
                    if let Some(ending) = self.on_timer(conn) {
                        return ending;
                    }
                    sleep.as_mut().reset(self.next_deadline(conn));
                    continue;
                }
            }
            self.note_closing(conn);
            self.collect_traffic(conn);
            self.traffic.report_if_due(Instant::now());
            let next = self.next_deadline(conn);
            if next < sleep.deadline() {
                sleep.as_mut().reset(next);
            }
        }
    }

    /// Handles every whole frame in the read buffer.
    async fn on_read<H: Handler>(&mut self, handler: &mut H, conn: &mut Conn) -> Option<Ending> {
        let now = Instant::now();
        self.last_rx = now;
        loop {
            let frame = match self.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let reason = match error {
                        DecodeError::TooBig => CloseReason::MessageTooBig,
                        DecodeError::Protocol(e) => CloseReason::Protocol(e),
                    };
                    tracing::debug!(%reason, "closing on bad input");
                    conn.start_close(reason);
                    return Some(Ending::Linger(FAIL_LINGER));
                }
            };
            if !matches!(frame, Frame::Close(_)) && !conn.is_closing() && self.over_rate(now) {
                conn.start_close(CloseReason::RateLimited);
            }
            tracing::debug!(target: "estuary::frames", frame = frame.kind(), len = frame.len(), "received");
            match frame {
                Frame::Message(message) => {
                    self.traffic.messages_in += 1;
                    if !conn.is_closing()
                        && guarded(|| handler.on_message(conn, message)).await.is_err()
                    {
                        panicked("on_message");
                        conn.start_close(CloseReason::HandlerPanic);
                    }
                }
                Frame::Ping(payload) => conn.write_pong(&payload),
                Frame::Pong(_) => self.ping_sent = None,
                Frame::Close(close) => {
                    let code = close.as_ref().map(|(code, _)| *code);
                    let text = close.map(|(_, r)| r.to_string()).unwrap_or_default();
                    conn.writer().peer_closed(code, text);
                    return Some(Ending::Close(self.config.close_timeout));
                }
            }
        }
        // A busy connection keeps its buffer; it goes back when the connection falls quiet
        // (`on_timer`).
        self.reader.after_read();
        None
    }

    fn on_timer(&mut self, conn: &mut Conn) -> Option<Ending> {
        let now = Instant::now();
        // A timer that only brought the traffic report due says nothing about the
        // connection being quiet: its buffers stay.
        if !self.traffic.report_if_due(now) || now >= self.timer_deadline(conn) {
            self.release_idle_buffers(conn);
        }
        if self.close_deadline.is_some_and(|d| now >= d) {
            return Some(Ending::Drop);
        }
        if conn.is_closing() {
            return None;
        }
        if self
            .limits
            .max_age
            .is_some_and(|age| now >= self.opened + age)
        {
            conn.start_close(CloseReason::MaxAge);
        } else if self
            .ping_sent
            .is_some_and(|sent| now >= sent + self.config.keepalive_timeout)
            || self
                .limits
                .idle_timeout
                .is_some_and(|idle| now >= self.last_rx + idle)
        {
            conn.start_close(CloseReason::Idle);
        } else if let Some(interval) = self.config.keepalive_interval {
            if self.ping_sent.is_none() && now >= self.last_rx + interval {
                conn.writer().control(OpCode::Ping, b"");
                self.ping_sent = Some(now);
            }
        }
        self.note_closing(conn);
        None
    }

    /// Gives back the read and write buffers and the queue's room of a connection that has
    /// gone quiet (the
    /// timer fires after a keep-alive interval of silence), so an idle connection holds
    /// neither; a busy one keeps them and pays no allocation per message. A plain TCP
    /// connection that never sent anything never took a read buffer at all.
    fn release_idle_buffers(&mut self, conn: &mut Conn) {
        self.reader.release::<S>();
        conn.writer().release();
        self.queue.release_if_empty();
    }

    /// Moves what the handler sent, and what compression did both ways, into the traffic
    /// counts.
    fn collect_traffic(&mut self, conn: &mut Conn) {
        count_sent(&mut self.traffic, conn);
        let (compressed, plain) = self.reader.take_inflated();
        self.traffic.inflated.0 += compressed;
        self.traffic.inflated.1 += plain;
    }

    /// Arms the close timeout the first time the connection is seen closing.
    fn note_closing(&mut self, conn: &Conn) {
        if conn.is_closing() && self.close_deadline.is_none() {
            self.close_deadline = Some(Instant::now() + self.config.close_timeout);
            self.queue.close();
        }
    }

    /// Counts a frame against the message rate; true when it is one too many.
    fn over_rate(&mut self, now: Instant) -> bool {
        let Some(rate) = self.limits.message_rate else {
            return false;
        };
        let (start, count) = &mut self.rate_window;
        if now >= *start + rate.duration {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count > rate.capacity
    }

    /// The earliest moment a timer, or the traffic report, may need attention.
    fn next_deadline(&self, conn: &Conn) -> Instant {
        let timer = self.timer_deadline(conn);
        match self.traffic.due() {
            Some(due) if due < timer && !conn.is_closing() => due,
            _ => timer,
        }
    }

    /// The earliest moment a connection timer (keep-alive, idle, age, close) may need
    /// attention.
    fn timer_deadline(&self, conn: &Conn) -> Instant {
        let far = self.opened + Duration::from_secs(86_400 * 365);
        if let Some(deadline) = self.close_deadline {
            return deadline;
        }
        if conn.is_closing() {
            return far;
        }
        let keepalive = match (self.ping_sent, self.config.keepalive_interval) {
            (Some(sent), _) => Some(sent + self.config.keepalive_timeout),
            (None, Some(interval)) => Some(self.last_rx + interval),
            (None, None) => None,
        };
        [
            keepalive,
            self.limits.idle_timeout.map(|idle| self.last_rx + idle),
            self.limits.max_age.map(|age| self.opened + age),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far)
    }

    /// Drains the queue into the write buffer (publications through the handler's
    /// `on_publication`), writes, then waits for input or a timer.
    fn poll_event<H: Handler>(
        &mut self,
        cx: &mut Context<'_>,
        handler: &mut H,
        conn: &mut Conn,
        mut sleep: Pin<&mut Sleep>,
    ) -> Poll<Wake> {
        if !conn.is_closing() {
            // Checked even while too much is unsent to drain the queue: a peer that stopped
            // reading is exactly the one a full queue must disconnect.
            let queued = self.queue.drain(cx.waker());
            if self.queue.is_doomed() {
                return Poll::Ready(Wake::Queued(Outbound::Close(CloseReason::SlowConsumer)));
            }
            let mut drained = false;
            if let Some(mut queued) = queued {
                while conn.writer().len() < HIGH_WATER {
                    match queued.pop() {
                        Some(Outbound::Frame(frame)) => {
                            drained = true;
                            self.traffic.messages_out += 1;
                            conn.writer().prepared(&frame);
                        }
                        Some(Outbound::Publication(publication)) => {
                            drained = true;
                            let put = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                handler.on_publication(conn, publication)
                            }));
                            if put.is_err() {
                                panicked("on_publication");
                                conn.start_close(CloseReason::HandlerPanic);
                                break;
                            }
                        }
                        Some(other) => return Poll::Ready(Wake::Queued(other)),
                        None => break,
                    }
                }
            }
            // Frames from the queue come with no event of their own: report them here when
            // due, or have the timer bring the report, rather than a wake-up.
            if drained {
                count_sent(&mut self.traffic, conn);
                if !self.traffic.report_if_due(Instant::now()) {
                    if let Some(due) = self.traffic.due().filter(|due| *due < sleep.deadline()) {
                        sleep.as_mut().reset(due);
                    }
                }
            }
        }
        let written = conn.writer().poll_write(&mut self.io, cx);
        self.traffic.bytes_out += conn.writer().take_written();
        if let Poll::Ready(Err(e)) = written {
            return Poll::Ready(Wake::Failed(e));
        }
        if conn.writer().len() < HIGH_WATER {
            match self.reader.poll_read(&mut self.io, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Wake::Eof),
                Poll::Ready(Ok(n)) => {
                    self.traffic.bytes_in += n as u64;
                    return Poll::Ready(Wake::Read);
                }
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

/// Moves what the handler sent, and what compressing it did, into the traffic counts.
fn count_sent(traffic: &mut Traffic, conn: &mut Conn) {
    traffic.messages_out += conn.take_sent();
    let (plain, compressed) = conn.writer().take_deflated();
    traffic.deflated.0 += plain;
    traffic.deflated.1 += compressed;
}

fn panicked(callback: &'static str) {
    metrics::handler_panicked();
    tracing::error!(
        callback,
        "handler panicked; closing its connection with 1011"
    );
}
