//! One framed transport for both roles: the server's connection engine and the client run
//! their sockets through the same [`Reader`], [`Writer`] and [`CloseState`].
//!
//! - **Reading** goes into one buffer per connection that the frame codec decodes in
//!   place: a whole frame is split off the buffer, not copied. The buffer never grows by
//!   more than has arrived (a header that declares 60 MB costs memory only as its bytes
//!   come in), makes room for a frame like the last one before a read (so a busy
//!   connection reads each message with one call), and is given back when the connection
//!   falls quiet.
//! - **Writing** coalesces small frames into one buffer and sends large payloads from their
//!   own bytes, beside their headers, with one vectored write: a burst of frames costs one
//!   system call, and a large message is never copied in user space.
//! - **Closing** is one state machine, [`CloseState`].

mod close;
mod guard;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use close::{CloseState, PeerClose};
pub(crate) use guard::guarded;

use crate::protocol::codec::{
    encode_close, encode_data_frame, encode_frame, DecodeError, Decoder, Frame, FrameHeader,
    OpCode, Role,
};
use crate::protocol::deflate::Deflater;
use crate::protocol::deflate::Negotiated;
use crate::protocol::{make_room, CloseReason, Message, Prepared};

/// Above this many unwritten bytes a connection stops reading the socket and its queue,
/// which pushes back on a peer that sends without reading.
pub(crate) const HIGH_WATER: usize = 64 * 1024;
/// The smallest read.
const READ_CHUNK: usize = 8 * 1024;
/// Room a read gets beyond the frame it waits for (see [`Reader::read_size`]).
const READ_SLACK: usize = 512;
/// Buffers that grew past this for a large message are given back once empty; a frame
/// larger than this does not make the next read reserve room for one like it.
const KEEP_CAPACITY: usize = 256 * 1024;
/// Payloads at least this large are written from their own bytes (a vectored write)
/// instead of being copied behind their header; smaller ones are coalesced, which costs
/// less than another slice in the write. Measured with the request/response benchmark at
/// 2, 4 and 8 KiB (its sizes changed for the run) and thresholds of 1 KiB, 2 KiB, 8 KiB
/// and never: server CPU per message did not move beyond the run-to-run noise (two runs
/// with the same code path differed by up to 17%), and copying raised the peak RSS of
/// 500 connections at 4 KiB from 12.6 to 14.4 MB; so the lowest threshold that keeps
/// small frames coalescing.
const SHARE_PAYLOAD_FROM: usize = 2 * 1024;
/// The most slices one vectored write takes (Linux's IOV_MAX is 1024; past a few dozen,
/// a write is long enough that more slices buy nothing).
const MAX_SLICES: usize = 64;

/// A socket a connection runs on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether [`Io::poll_read_into`] waits for data before it takes a buffer, so that an
    /// idle connection can hold none.
    const READS_ON_READINESS: bool = false;

    /// Ends the sending side once everything is written: TLS sends its close_notify here.
    /// A plain TCP socket does nothing, because the close that follows sends its FIN.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }

    /// Reads into `buf`, calling `make_room` first to give it room to read into.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        make_room: impl FnOnce(&mut BytesMut),
    ) -> Poll<io::Result<usize>> {
        make_room(buf);
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }
}

impl Io for TcpStream {
    const READS_ON_READINESS: bool = true;

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        make_room: impl FnOnce(&mut BytesMut),
    ) -> Poll<io::Result<usize>> {
        // The buffer is taken only once there is something to read. The read itself goes
        // through `poll_read`, which takes a short read as proof that the socket is
        // drained: the next poll waits for readiness without another `read` call.
        ready!(self.poll_read_ready(cx))?;
        make_room(buf);
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }
}

/// TLS, or any connection hyper did not hand over as a plain `TcpStream`.
impl Io for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

/// The receiving half: the read buffer and the frame decoder.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: BytesMut,
    decoder: Decoder,
    /// The size of the last whole frame (at most [`KEEP_CAPACITY`]): the next read makes
    /// room for one like it.
    recent: usize,
}

impl Reader {
    /// A reader for `role`, with bytes that arrived with the handshake in `buf`, that
    /// inflates compressed messages when permessage-deflate was `negotiated`.
    pub(crate) fn new(
        role: Role,
        max_message_size: usize,
        buf: BytesMut,
        negotiated: Option<&Negotiated>,
    ) -> Self {
        let decoder = Decoder::new(role, max_message_size)
            .with_inflater(negotiated.map(Negotiated::inflater));
        Self {
            buf,
            decoder,
            recent: 0,
        }
    }

    /// Compressed bytes received, and what they inflated to, since the last call.
    pub(crate) fn take_inflated(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.decoder.inflated)
    }

    /// Reads what the socket has; `Ok(0)` is the end of the stream.
    pub(crate) fn poll_read<S: Io>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let want = self.read_size();
        io.poll_read_into(cx, &mut self.buf, |buf| make_room(buf, want))
    }

    /// How much room the next read gets: the rest of the frame in progress, but at most
    /// as much again as has arrived of it (a header that declares 60 MB costs memory only
    /// as the bytes come in); room for a frame like the last whole one between frames.
    /// Either way a little more, for the next header and a control frame behind it: a
    /// read that does not fill the buffer shows the socket is drained.
    fn read_size(&self) -> usize {
        let buffered = self.buf.len();
        let room = if self.decoder.is_mid_frame() {
            let rest = self.decoder.wanted(buffered);
            rest.min(buffered.max(READ_CHUNK) + READ_SLACK)
        } else {
            self.recent + READ_SLACK
        };
        room.max(READ_CHUNK)
    }

    /// The next whole frame among the bytes read, if one is complete; the bytes seen so far
    /// are checked either way.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let before = self.buf.len();
        let frame = self.decoder.decode(&mut self.buf)?;
        if frame.is_some() {
            self.recent = (before - self.buf.len()).min(KEEP_CAPACITY);
        }
        Ok(frame)
    }

    /// After the frames of a read are handled: a buffer that grew for a large message goes
    /// back at once; an ordinary one stays while the connection is busy.
    pub(crate) fn after_read(&mut self) {
        if self.is_idle() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
    }

    /// Gives the buffer back, for a connection gone quiet. Only a socket that reads on
    /// readiness can do without one between reads.
    pub(crate) fn release<S: Io>(&mut self) {
        if S::READS_ON_READINESS && self.is_idle() {
            self.buf = BytesMut::new();
            self.recent = 0;
        }
    }

    /// Drops what was read: input after a failure is not acted on.
    pub(crate) fn discard(&mut self) {
        self.buf.clear();
    }

    fn is_idle(&self) -> bool {
        self.buf.is_empty() && !self.decoder.is_mid_message()
    }
}

/// The sending half: frames waiting to be written, and the closing handshake.
///
/// Small frames and every header are coalesced into one buffer; a large payload stays in
/// its own bytes, as a segment between two runs of the buffer. One vectored write sends
/// it all.
#[derive(Debug)]
pub(crate) struct Writer {
    role: Role,
    buf: BytesMut,
    /// Payloads written from their own bytes, each after the run of `buf` bytes that comes
    /// before it.
    segments: VecDeque<(usize, Bytes)>,
    /// The bytes of `buf` after the last segment.
    tail: usize,
    /// The bytes in `segments`.
    shared: usize,
    close: CloseState,
    unflushed: bool,
    /// Bytes written since [`Writer::take_written`].
    written: u64,
    /// permessage-deflate, when it was negotiated. Boxed: a connection without it keeps
    /// 8 bytes here, not the deflater's 168.
    deflater: Option<Box<Deflater>>,
    /// Message bytes compressed, and what they compressed to, since
    /// [`Writer::take_deflated`].
    deflated: (u64, u64),
}

impl Writer {
    /// An empty writer for `role`: client frames are masked.
    pub(crate) fn new(role: Role) -> Self {
        Self {
            role,
            buf: BytesMut::new(),
            segments: VecDeque::new(),
            tail: 0,
            shared: 0,
            close: CloseState::Open,
            unflushed: false,
            written: 0,
            deflater: None,
            deflated: (0, 0),
        }
    }

    /// Compresses messages as permessage-deflate `negotiated`, if it was.
    pub(crate) fn with_deflate(mut self, negotiated: Option<&Negotiated>) -> Self {
        self.deflater = negotiated.map(|n| Box::new(n.deflater()));
        self
    }

    /// Message bytes compressed, and what they compressed to, since the last call.
    pub(crate) fn take_deflated(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.deflated)
    }

    /// Bytes waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() + self.shared
    }

    /// Whether nothing waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the closing handshake is.
    pub(crate) fn state(&self) -> &CloseState {
        &self.close
    }

    /// Appends a message as one frame, compressed if that was negotiated and pays. The
    /// caller checked that the connection is open.
    pub(crate) fn message(&mut self, message: &Message) {
        let payload = message.payload();
        let compressed = self.deflater.as_mut().and_then(|d| d.compress(payload));
        self.data_frame(OpCode::of(message), payload, compressed);
    }

    /// Appends a frame prepared once for many connections: its compressed payload is
    /// shared with every connection of the same compression setting.
    pub(crate) fn prepared(&mut self, frame: &Prepared) {
        let payload = frame.payload();
        let compressed = match &mut self.deflater {
            Some(deflater) if payload.len() >= deflater.threshold() => {
                match deflater.shared_setting() {
                    Some(setting) => frame.compressed(setting),
                    None => deflater.compress(payload),
                }
            }
            _ => None,
        };
        if compressed.is_none() && self.role == Role::Server {
            // Plain: the header was encoded once, too.
            self.header_and_payload(frame.header(), payload);
            return;
        }
        self.data_frame(OpCode::of(frame.message()), payload, compressed);
    }

    /// Appends a data frame: `payload`, or its `compressed` form with RSV1 set.
    fn data_frame(&mut self, opcode: OpCode, payload: &Bytes, compressed: Option<Bytes>) {
        if let Some(compressed) = &compressed {
            self.deflated.0 += payload.len() as u64;
            self.deflated.1 += compressed.len() as u64;
        }
        let (rsv1, payload) = match &compressed {
            Some(compressed) => (true, compressed),
            None => (false, payload),
        };
        match self.role {
            Role::Server => {
                let header = FrameHeader::new(true, rsv1, opcode, payload.len(), None);
                self.header_and_payload(header.as_bytes(), payload);
            }
            Role::Client => {
                let mask = self.mask();
                self.append(|buf| encode_data_frame(buf, rsv1, opcode, payload, mask));
            }
        }
    }

    /// Appends a control frame (ping, pong); `payload` is at most 125 bytes.
    pub(crate) fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.mask();
        self.append(|buf| encode_frame(buf, opcode, payload, mask));
    }

    /// Starts the closing handshake for `reason`, with its close frame; false if it was
    /// under way already (nothing is written then).
    pub(crate) fn close(&mut self, reason: CloseReason) -> bool {
        let (code, text) = (reason.code(), reason.text().to_owned());
        if !self.close.close(reason) {
            return false;
        }
        self.close_frame(Some(code), &text);
        true
    }

    /// The peer's close frame arrived: answers it, echoing its code, unless ours went
    /// first.
    pub(crate) fn peer_closed(&mut self, code: Option<u16>, text: String) {
        if let PeerClose::Answer(code) = self.close.peer_closed(code, text) {
            self.close_frame(code, "");
        }
    }

    /// The connection is over; why: the reason it was closing for, or `lost`.
    pub(crate) fn finish(&mut self, lost: CloseReason) -> CloseReason {
        self.close.finish(lost)
    }

    fn close_frame(&mut self, code: Option<u16>, text: &str) {
        let mask = self.mask();
        self.append(|buf| encode_close(buf, code, text, mask));
    }

    /// Appends to the coalescing buffer, after the last segment.
    fn append(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        let before = self.buf.len();
        encode(&mut self.buf);
        self.tail += self.buf.len() - before;
    }

    fn header_and_payload(&mut self, header: &[u8], payload: &Bytes) {
        if payload.len() >= SHARE_PAYLOAD_FROM {
            self.buf.extend_from_slice(header);
            self.segments
                .push_back((self.tail + header.len(), payload.clone()));
            self.tail = 0;
            self.shared += payload.len();
        } else {
            self.append(|buf| {
                buf.reserve(header.len() + payload.len());
                buf.extend_from_slice(header);
                buf.extend_from_slice(payload);
            });
        }
    }

    fn mask(&self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then(rand::random)
    }

    /// Writes everything waiting, as the socket takes it, then flushes.
    pub(crate) fn poll_write<S: Io>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let n = if self.segments.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.buf))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.gather(&mut slices);
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
            self.written += n as u64;
            self.unflushed = true;
            tracing::debug!(target: "estuary::frames", bytes = n, "wrote");
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
        if self.unflushed {
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is waiting and ends the sending side (the close handshake is done),
    /// within `timeout`.
    pub(crate) async fn finish_io<S: Io>(&mut self, io: &mut S, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, async {
            std::future::poll_fn(|cx| self.poll_write(io, cx)).await?;
            std::future::poll_fn(|cx| io.poll_finish(cx)).await
        })
        .await;
    }

    /// Writes what is waiting, half-closes, and reads until the peer closes its side, so
    /// that what it still sends does not turn our close into a reset that loses the close
    /// frame; within `timeout`.
    pub(crate) async fn linger<S: Io>(
        &mut self,
        io: &mut S,
        reader: &mut Reader,
        timeout: std::time::Duration,
    ) {
        let _ = tokio::time::timeout(timeout, async {
            std::future::poll_fn(|cx| self.poll_write(io, cx)).await?;
            io.shutdown().await?;
            loop {
                reader.discard();
                if std::future::poll_fn(|cx| reader.poll_read(io, cx)).await? == 0 {
                    return Ok::<_, io::Error>(());
                }
            }
        })
        .await;
    }

    /// Fills `slices` with what to write next, in order; returns how many it filled.
    fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut count = 0;
        let mut at = 0;
        for (before, payload) in &self.segments {
            if count + 2 > MAX_SLICES {
                return count;
            }
            if *before > 0 {
                slices[count] = IoSlice::new(&self.buf[at..at + before]);
                count += 1;
                at += before;
            }
            slices[count] = IoSlice::new(payload);
            count += 1;
        }
        if at < self.buf.len() && count < MAX_SLICES {
            slices[count] = IoSlice::new(&self.buf[at..]);
            count += 1;
        }
        count
    }

    /// Drops the first `n` bytes that were written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some((before, payload)) = self.segments.front_mut() else {
                self.buf.advance(n);
                self.tail -= n;
                return;
            };
            let from_buf = n.min(*before);
            self.buf.advance(from_buf);
            *before -= from_buf;
            n -= from_buf;
            let from_payload = n.min(payload.len());
            payload.advance(from_payload);
            self.shared -= from_payload;
            n -= from_payload;
            if *before == 0 && payload.is_empty() {
                self.segments.pop_front();
            }
        }
    }

    /// Gives the buffers back, if nothing waits (for a connection gone quiet).
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.buf = BytesMut::new();
            self.segments = VecDeque::new();
        }
    }

    /// Bytes written since the last call, for the metrics.
    pub(crate) fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }
}

#[cfg(test)]
mod tests;
