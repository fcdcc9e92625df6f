//! The transport on an in-memory socket that takes writes in pieces and records every
//! call, so that coalescing, vectored writes without copies, partial writes and the read
//! buffer's growth are checked directly.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::*;
use crate::protocol::codec::{Decoder, Frame};
use crate::protocol::Utf8Bytes;

/// A socket in memory: reads come from `input` one chunk per call (then end of stream),
/// writes go to `output`, at most `max_write` bytes per call.
struct Memory {
    input: VecDeque<Vec<u8>>,
    output: Vec<u8>,
    max_write: usize,
    vectored: bool,
    /// For each write call, the length of each slice it was given.
    calls: Vec<Vec<usize>>,
    /// For each write call, the address of each slice it was given.
    addresses: Vec<Vec<usize>>,
}

impl Memory {
    fn new(max_write: usize, vectored: bool) -> Self {
        Self {
            input: VecDeque::new(),
            output: Vec::new(),
            max_write,
            vectored,
            calls: Vec::new(),
            addresses: Vec::new(),
        }
    }

    fn take(&mut self, slices: &[IoSlice<'_>]) -> usize {
        self.calls.push(slices.iter().map(|s| s.len()).collect());
        self.addresses
            .push(slices.iter().map(|s| s.as_ptr() as usize).collect());
        let mut room = self.max_write;
        let mut taken = 0;
        for slice in slices {
            let n = slice.len().min(room);
            self.output.extend_from_slice(&slice[..n]);
            room -= n;
            taken += n;
            if room == 0 {
                break;
            }
        }
        taken
    }
}

impl AsyncRead for Memory {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut chunk) = self.input.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.input.push_front(chunk.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Memory {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.take(&[IoSlice::new(buf)])))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().position(|b| !b.is_empty()).unwrap_or(0);
        let bufs = if self.vectored {
            bufs
        } else {
            &bufs[first..(first + 1).min(bufs.len())]
        };
        Poll::Ready(Ok(self.take(bufs)))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Io for Memory {}

fn write_all(writer: &mut Writer, io: &mut Memory) {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100_000 {
        if let Poll::Ready(result) = writer.poll_write(io, &mut cx) {
            return result.expect("the memory socket does not fail");
        }
    }
    panic!("the writer never finished");
}

/// Decodes everything a server wrote, as its client would.
fn decode_as_client(bytes: &[u8]) -> Vec<Frame> {
    let mut decoder = Decoder::new(Role::Client, 1 << 24);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder
        .decode(&mut buf)
        .expect("the server wrote valid frames")
    {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes of a partial frame", buf.len());
    frames
}

fn big(len: usize, seed: u8) -> Message {
    Message::binary(
        (0..len)
            .map(|i| (i as u8).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

#[test]
fn small_frames_coalesce_into_one_write() {
    let mut writer = Writer::new(Role::Server);
    for n in 0..10 {
        writer.message(&Message::text(format!("message {n}")));
    }
    writer.control(OpCode::Ping, b"");
    let mut io = Memory::new(usize::MAX, true);
    write_all(&mut writer, &mut io);
    assert_eq!(io.calls.len(), 1, "one system call for the burst");
    assert_eq!(io.calls[0].len(), 1, "one slice: the coalesced buffer");
    let frames = decode_as_client(&io.output);
    assert_eq!(frames.len(), 11);
    assert_eq!(frames[3], Frame::Message(Message::text("message 3")));
    assert_eq!(frames[10], Frame::Ping(Bytes::new()));
}

#[test]
fn a_large_payload_is_written_from_its_own_bytes_beside_its_header() {
    let message = big(16 * 1024, 1);
    let payload_at = message.payload().as_ptr() as usize;
    let mut writer = Writer::new(Role::Server);
    writer.message(&Message::text("before"));
    writer.message(&message);
    writer.message(&Message::text("after"));
    let mut io = Memory::new(usize::MAX, true);
    write_all(&mut writer, &mut io);
    assert_eq!(io.calls.len(), 1, "one vectored write");
    // "before" and the big frame's header; the payload itself; "after".
    assert_eq!(io.calls[0], [2 + 6 + 4, 16 * 1024, 2 + 5]);
    assert_eq!(
        io.addresses[0][1], payload_at,
        "the payload went out from the message's own bytes, not a copy"
    );
    assert_eq!(
        decode_as_client(&io.output),
        [
            Frame::Message(Message::text("before")),
            Frame::Message(message),
            Frame::Message(Message::text("after")),
        ]
    );
}

#[test]
fn prepared_frames_share_their_payload_with_every_writer() {
    let frame = Prepared::new(big(4096, 9));
    let mut outputs = Vec::new();
    for _ in 0..3 {
        let mut writer = Writer::new(Role::Server);
        writer.prepared(&frame);
        let mut io = Memory::new(usize::MAX, true);
        write_all(&mut writer, &mut io);
        assert_eq!(io.addresses[0][1], frame.payload().as_ptr() as usize);
        outputs.push(io.output);
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        decode_as_client(&outputs[0]),
        [Frame::Message(frame.message().clone())]
    );
}

#[test]
fn writes_the_socket_takes_in_pieces_arrive_whole_and_in_order() {
    for (max_write, vectored) in [(1, true), (7, true), (1000, true), (5000, false)] {
        let mut writer = Writer::new(Role::Server);
        let mut expected = Vec::new();
        for n in 0..20u8 {
            let message = if n % 3 == 0 {
                big(3000 + n as usize, n)
            } else {
                Message::text(format!("small {n}"))
            };
            writer.message(&message);
            expected.push(Frame::Message(message));
        }
        writer.close(CloseReason::Shutdown);
        expected.push(Frame::Close(Some((1001, Utf8Bytes::from("going away")))));
        let mut io = Memory::new(max_write, vectored);
        write_all(&mut writer, &mut io);
        assert!(writer.is_empty());
        assert_eq!(
            decode_as_client(&io.output),
            expected,
            "max_write {max_write}, vectored {vectored}"
        );
    }
}

#[test]
fn more_segments_than_one_write_takes_go_out_over_several() {
    let mut writer = Writer::new(Role::Server);
    let messages: Vec<Message> = (0..100).map(|n| big(2048, n)).collect();
    for message in &messages {
        writer.message(message);
    }
    let mut io = Memory::new(usize::MAX, true);
    write_all(&mut writer, &mut io);
    assert!(io.calls.len() > 1);
    assert!(io.calls.iter().all(|slices| slices.len() <= MAX_SLICES));
    let expected: Vec<Frame> = messages.into_iter().map(Frame::Message).collect();
    assert_eq!(decode_as_client(&io.output), expected);
}

#[test]
fn client_frames_are_masked_and_decode_to_the_same_messages() {
    let mut writer = Writer::new(Role::Client);
    let message = big(20_000, 3);
    writer.message(&message);
    writer.message(&Message::text("small"));
    let mut io = Memory::new(usize::MAX, true);
    write_all(&mut writer, &mut io);
    assert_eq!(io.output[1] & 0x80, 0x80, "the mask bit is set");
    let mut decoder = Decoder::new(Role::Server, 1 << 24);
    let mut buf = BytesMut::from(&io.output[..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Frame::Message(message))
    );
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(Frame::Message(Message::text("small")))
    );
}

#[test]
fn the_close_state_follows_the_writer() {
    let mut writer = Writer::new(Role::Server);
    assert!(writer.state().is_open());
    assert!(writer.close(CloseReason::Idle));
    assert!(!writer.close(CloseReason::MaxAge), "one close frame only");
    writer.peer_closed(Some(1000), String::new());
    let mut io = Memory::new(usize::MAX, true);
    write_all(&mut writer, &mut io);
    assert_eq!(
        decode_as_client(&io.output),
        [Frame::Close(Some((1000, Utf8Bytes::from("idle timeout"))))],
        "our close only: the peer's answer needs none"
    );
    assert_eq!(
        writer.finish(CloseReason::ConnectionLost),
        CloseReason::Idle
    );

    let mut writer = Writer::new(Role::Server);
    writer.peer_closed(Some(4000), "done".into());
    let mut io = Memory::new(usize::MAX, true);
    write_all(&mut writer, &mut io);
    assert_eq!(
        decode_as_client(&io.output),
        [Frame::Close(Some((4000, Utf8Bytes::default())))],
        "the peer's close is answered with its code"
    );
}

/// A masked client frame header for a payload of `len` bytes.
fn client_header(len: usize) -> Vec<u8> {
    FrameHeader::new(true, false, OpCode::Binary, len, Some([1, 2, 3, 4]))
        .as_bytes()
        .to_vec()
}

fn read_once(reader: &mut Reader, io: &mut Memory) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    match reader.poll_read(io, &mut cx) {
        Poll::Ready(Ok(n)) => n,
        other => panic!("the memory socket reads at once, got {other:?}"),
    }
}

#[test]
fn a_header_declaring_60_mb_reserves_only_as_much_as_has_arrived() {
    let mut reader = Reader::new(Role::Server, 64 << 20, BytesMut::new(), None);
    let mut io = Memory::new(0, true);
    let mut first = client_header(60 << 20);
    first.extend(vec![0; 100]);
    io.input.push_back(first);
    read_once(&mut reader, &mut io);
    assert_eq!(reader.next_frame(), Ok(None));
    let mut arrived = 100;
    // Each read may at most double what has arrived of the frame.
    for _ in 0..6 {
        io.input.push_back(vec![0; 1 << 20]);
        arrived += read_once(&mut reader, &mut io);
        assert_eq!(reader.next_frame(), Ok(None));
        assert!(
            reader.buf.capacity() <= 2 * arrived.max(READ_CHUNK) + READ_CHUNK,
            "capacity {} with {arrived} bytes of the frame arrived",
            reader.buf.capacity()
        );
    }
    assert!(reader.buf.capacity() < 2 << 20);
}

#[test]
fn a_busy_connection_reads_a_message_like_the_last_in_one_read() {
    let mut reader = Reader::new(Role::Server, 1 << 20, BytesMut::new(), None);
    let mut io = Memory::new(0, true);
    let mut frame = client_header(16 * 1024);
    frame.extend(vec![0; 16 * 1024]);
    // The first message takes several reads while the buffer grows...
    io.input.push_back(frame.clone());
    let mut reads = 0;
    let message = loop {
        read_once(&mut reader, &mut io);
        reads += 1;
        if let Some(frame) = reader.next_frame().unwrap() {
            break frame;
        }
    };
    assert!(reads > 1);
    drop(message);
    // ...and once the message is gone, the next like it takes one, in the same buffer.
    let capacity = reader.buf.capacity();
    io.input.push_back(frame);
    read_once(&mut reader, &mut io);
    assert!(matches!(reader.next_frame(), Ok(Some(Frame::Message(_)))));
    assert!(
        reader.buf.capacity() <= capacity + frame_len(16 * 1024),
        "reused the allocation"
    );
}

fn frame_len(payload: usize) -> usize {
    client_header(payload).len() + payload
}

#[test]
fn a_quiet_connection_gives_its_buffers_back() {
    let mut reader = Reader::new(Role::Server, 1 << 20, BytesMut::new(), None);
    let mut io = Memory::new(usize::MAX, true);
    let mut frame = client_header(100);
    frame.extend(vec![0; 100]);
    io.input.push_back(frame);
    read_once(&mut reader, &mut io);
    assert!(reader.next_frame().unwrap().is_some());
    // A socket that cannot wait for readiness keeps a buffer to read into...
    reader.release::<Memory>();
    assert!(reader.buf.capacity() > 0);
    // ...a TCP socket does not.
    reader.release::<tokio::net::TcpStream>();
    assert_eq!(reader.buf.capacity(), 0);

    let mut writer = Writer::new(Role::Server);
    writer.message(&Message::text("x".repeat(500)));
    write_all(&mut writer, &mut io);
    writer.release();
    assert_eq!(writer.buf.capacity(), 0);
}
