//! The load client's frame codec: client frames encoded once up front (the mask key is
//! fixed, so a frame is the same bytes every time), and server frames counted as they
//! stream in, payloads skipped unread.

use anyhow::{bail, ensure};

/// The mask key of every client frame. RFC 6455 wants it unpredictable to defeat cache
/// poisoning by proxies; on loopback, against our own servers, a fixed one lets frames be
/// encoded once.
const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// `count` copies of one masked binary client frame, back to back, so that any burst of up
/// to `count` frames is a slice.
#[derive(Debug, Clone)]
pub struct EncodedFrames {
    bytes: Vec<u8>,
    frame_len: usize,
    count: usize,
}

impl EncodedFrames {
    /// Encodes `count` binary frames, each carrying `payload_len` bytes.
    pub fn binary(payload_len: usize, count: usize) -> Self {
        let payload: Vec<u8> = (0..payload_len).map(|i| b'a' + (i % 26) as u8).collect();
        let frame = client_frame(OPCODE_BINARY, &payload);
        Self {
            bytes: frame.repeat(count),
            frame_len: frame.len(),
            count,
        }
    }

    /// The first `n` frames, as one slice.
    ///
    /// # Panics
    ///
    /// If `n` is more than were encoded.
    pub fn first(&self, n: usize) -> &[u8] {
        assert!(n <= self.count, "asked for {n} of {} frames", self.count);
        &self.bytes[..n * self.frame_len]
    }
}

/// One masked text frame carrying `text`, as a client sends it.
pub fn text_frame(text: &str) -> Vec<u8> {
    client_frame(OPCODE_TEXT, text.as_bytes())
}

/// One masked text frame carrying `text` compressed (permessage-deflate, RSV1 set), each
/// message on its own: valid for any server that agreed to no client context takeover,
/// which Estuary's default mode asks for.
pub fn compressed_text_frame(text: &str) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut compressor = Compress::new_with_window_bits(Compression::new(1), false, 15);
    let mut compressed = Vec::with_capacity(text.len() + 64);
    compressor
        .compress_vec(text.as_bytes(), &mut compressed, FlushCompress::Sync)
        .expect("compresses");
    assert!(
        compressed.ends_with(&[0, 0, 0xff, 0xff]),
        "a sync flush ends the data"
    );
    compressed.truncate(compressed.len() - 4);
    let mut frame = client_frame(OPCODE_TEXT, &compressed);
    frame[0] |= 0x40;
    frame
}

impl EncodedFrames {
    /// One frame as it is, for scenarios that send the same frame again and again.
    pub fn one(frame: Vec<u8>) -> Self {
        Self {
            frame_len: frame.len(),
            bytes: frame,
            count: 1,
        }
    }
}

/// A masked client frame: FIN set, the header for `payload`'s length, the payload masked
/// with [`MASK_KEY`].
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK_KEY);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ MASK_KEY[i % 4]),
    );
    frame
}

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xa;

/// Counts complete data messages in a stream of server frames, fed in arbitrary pieces.
///
/// Data payloads are skipped, never copied; only control payloads are kept (they are at most
/// 125 bytes), so that a Close can say why.
#[derive(Debug, Default)]
pub struct ReplyCounter {
    /// The header being assembled when a read ended inside it.
    header: [u8; 10],
    header_len: usize,
    /// The frame whose payload is being skipped.
    opcode: u8,
    fin: bool,
    payload_left: u64,
    in_payload: bool,
    control_payload: Vec<u8>,
    /// Data messages whose first frame had RSV1 set.
    compressed: u64,
}

impl ReplyCounter {
    /// Data messages so far whose first frame had RSV1 set (compressed).
    pub fn compressed(&self) -> u64 {
        self.compressed
    }

    /// Consumes `data` and returns how many data messages it completed.
    pub fn feed(&mut self, mut data: &[u8]) -> anyhow::Result<u64> {
        let mut messages = 0;
        loop {
            if self.in_payload {
                let take = data
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                if self.opcode >= OPCODE_CLOSE {
                    self.control_payload.extend_from_slice(&data[..take]);
                }
                data = &data[take..];
                self.payload_left -= take as u64;
                if self.payload_left > 0 {
                    return Ok(messages);
                }
                messages += self.finish_frame()?;
                continue;
            }
            if data.is_empty() {
                return Ok(messages);
            }

            let wanted = if self.header_len < 2 {
                2
            } else {
                header_size(self.header[1])
            };
            let take = (wanted - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            data = &data[take..];
            if self.header_len < 2 || self.header_len < header_size(self.header[1]) {
                continue;
            }
            self.start_frame()?;
        }
    }

    /// Reads the complete header in `self.header` and moves on to the payload.
    fn start_frame(&mut self) -> anyhow::Result<()> {
        let [first, second, ..] = self.header;
        ensure!(second & 0x80 == 0, "server sent a masked frame");
        self.fin = first & 0x80 != 0;
        self.opcode = first & 0x0f;
        if first & 0x40 != 0 && self.opcode != OPCODE_CONTINUATION {
            self.compressed += 1;
        }
        self.payload_left = match second & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(
                self.header[2..10]
                    .try_into()
                    .expect("a 127-length header is 10 bytes"),
            ),
            len => u64::from(len),
        };
        self.header_len = 0;
        self.in_payload = true;
        self.control_payload.clear();
        Ok(())
    }

    /// Accounts for the frame whose payload just ended: 1 if it completed a data message.
    fn finish_frame(&mut self) -> anyhow::Result<u64> {
        self.in_payload = false;
        match self.opcode {
            OPCODE_CONTINUATION | OPCODE_TEXT | OPCODE_BINARY => Ok(u64::from(self.fin)),
            OPCODE_PING | OPCODE_PONG => Ok(0),
            OPCODE_CLOSE => {
                let payload = &self.control_payload;
                if payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let reason = String::from_utf8_lossy(&payload[2..]);
                    bail!("server closed the WebSocket: {code} {reason:?}");
                }
                bail!("server closed the WebSocket without a close code")
            }
            other => bail!("server sent a frame with reserved opcode {other:#x}"),
        }
    }
}

/// Size of a server frame header (never masked) given its second byte.
fn header_size(second: u8) -> usize {
    match second & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

/// Checks of the frame encoder and the reply counter, run by the smoke test: a
/// `harness = false` target has no `#[test]`.
pub mod checks {
    use anyhow::ensure;

    use super::*;

    /// A check: passes with `Ok`, fails with what went wrong.
    pub type Check = fn() -> anyhow::Result<()>;

    /// Every check, by name.
    pub const ALL: &[(&str, Check)] = &[
        (
            "counts_frames_of_every_header_size_fed_byte_by_byte",
            counts_frames_of_every_header_size_fed_byte_by_byte,
        ),
        (
            "counts_frames_fed_at_once_and_ignores_pongs",
            counts_frames_fed_at_once_and_ignores_pongs,
        ),
        (
            "close_frame_is_an_error_with_its_code",
            close_frame_is_an_error_with_its_code,
        ),
        (
            "encoded_frames_unmask_to_the_payload",
            encoded_frames_unmask_to_the_payload,
        ),
        (
            "text_frame_unmasks_to_the_text",
            text_frame_unmasks_to_the_text,
        ),
    ];

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(len as u8),
            len @ 126..=0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    fn counts_frames_of_every_header_size_fed_byte_by_byte() -> anyhow::Result<()> {
        let mut stream = Vec::new();
        for len in [0, 5, 125, 126, 300, 70_000] {
            stream.extend(server_frame(OPCODE_BINARY, &vec![7; len]));
        }
        let mut counter = ReplyCounter::default();
        let mut counted = 0;
        for byte in &stream {
            counted += counter.feed(std::slice::from_ref(byte))?;
        }
        ensure!(counted == 6, "counted {counted} of 6 frames");
        Ok(())
    }

    fn counts_frames_fed_at_once_and_ignores_pongs() -> anyhow::Result<()> {
        let mut stream = server_frame(OPCODE_TEXT, b"hello");
        stream.extend(server_frame(OPCODE_PONG, b""));
        stream.extend(server_frame(OPCODE_BINARY, &[1; 32]));
        let counted = ReplyCounter::default().feed(&stream)?;
        ensure!(counted == 2, "counted {counted} of 2 data frames");
        Ok(())
    }

    fn close_frame_is_an_error_with_its_code() -> anyhow::Result<()> {
        let outcome = ReplyCounter::default().feed(&server_frame(OPCODE_CLOSE, b"\x03\xe8bye"));
        let Err(error) = outcome else {
            bail!("a Close frame was counted as {outcome:?}");
        };
        ensure!(
            error.to_string().contains("1000 \"bye\""),
            "the error does not name the close code and reason: {error}"
        );
        Ok(())
    }

    fn encoded_frames_unmask_to_the_payload() -> anyhow::Result<()> {
        let frames = EncodedFrames::binary(32, 3);
        let frame = frames.first(1);
        ensure!(
            frames.first(3).len() == 3 * frame.len(),
            "frames are not back to back"
        );
        ensure!(frame[..2] == [0x82, 0x80 | 32], "header {:x?}", &frame[..2]);
        let unmasked: Vec<u8> = frame[6..]
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ MASK_KEY[i % 4])
            .collect();
        ensure!(unmasked.starts_with(b"abcdef"), "payload {unmasked:?}");
        Ok(())
    }

    fn text_frame_unmasks_to_the_text() -> anyhow::Result<()> {
        let text = "x".repeat(200);
        let frame = text_frame(&text);
        ensure!(
            frame[..4] == [0x81, 0x80 | 126, 0, 200],
            "header {:x?}",
            &frame[..4]
        );
        let unmasked: Vec<u8> = frame[8..]
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ MASK_KEY[i % 4])
            .collect();
        ensure!(unmasked == text.as_bytes(), "payload {unmasked:?}");
        Ok(())
    }
}
