//! The RFC 6455 frame codec, free of I/O.
//!
//! [`Decoder::decode`] takes bytes as they arrive and yields whole messages and control
//! frames. It checks everything the RFC asks of a receiver as early as it can: a header is
//! rejected before its payload arrives (so a frame declaring 2^63 bytes costs nothing), and
//! text is unmasked and UTF-8 validated chunk by chunk as it arrives, so the connection
//! fails on the first invalid byte rather than at the end of the message.
//!
//! [`encode_header`] and [`encode_frame`] write frames; server frames are unmasked, client
//! frames masked.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::close::{is_valid_wire_code, ProtocolError};
use super::deflate::{InflateError, Inflater};
use super::message::{Message, Utf8Bytes};
use super::utf8::Utf8Validator;

/// Which end of the connection this codec runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Receives unmasked frames, sends masked ones.
    #[cfg_attr(not(feature = "client"), allow(dead_code))] // the client's role
    Client,
}

/// Frame opcodes (RFC 6455 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// The opcode a message travels under.
    pub(crate) fn of(message: &Message) -> Self {
        match message {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        }
    }

    fn from_u8(op: u8) -> Result<Self, ProtocolError> {
        Ok(match op {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// What the decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole, validated message.
    Message(Message),
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame: `None` when it carried no code.
    Close(Option<(u16, Utf8Bytes)>),
}

impl Frame {
    /// The frame's kind, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Frame::Message(Message::Text(_)) => "text",
            Frame::Message(Message::Binary(_)) => "binary",
            Frame::Ping(_) => "ping",
            Frame::Pong(_) => "pong",
            Frame::Close(_) => "close",
        }
    }

    /// The payload length, for logs.
    pub(crate) fn len(&self) -> usize {
        match self {
            Frame::Message(m) => m.len(),
            Frame::Ping(p) | Frame::Pong(p) => p.len(),
            Frame::Close(c) => c.as_ref().map_or(0, |(_, r)| 2 + r.len()),
        }
    }
}

/// Why decoding stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Protocol(ProtocolError),
    /// The message would exceed the max message size.
    TooBig,
}

impl From<ProtocolError> for DecodeError {
    fn from(e: ProtocolError) -> Self {
        DecodeError::Protocol(e)
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: usize,
}

/// A message being put together: a fragmented one, or a compressed one being inflated.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// The message is compressed: its frames' payloads are inflated onto `data` as they
    /// arrive, and dropped from the read buffer.
    compressed: bool,
    data: BytesMut,
    /// Compressed bytes received so far, bounded like a message (see [`wire_limit`]).
    wire: usize,
}

/// The receive half of the protocol state machine.
#[derive(Debug)]
pub(crate) struct Decoder {
    role: Role,
    max_message_size: usize,
    /// The header of the frame whose payload is arriving, and how much of that payload is
    /// already unmasked (and, for text, validated) at the front of the buffer.
    current: Option<(Header, usize)>,
    partial: Option<Partial>,
    utf8: Utf8Validator,
    /// permessage-deflate, when it was negotiated. Boxed: a connection without it keeps
    /// 8 bytes here, not the inflater's 160.
    inflater: Option<Box<Inflater>>,
    /// Compressed bytes received and what they inflated to, since the last look.
    pub(crate) inflated: (u64, u64),
}

impl Decoder {
    pub(crate) fn new(role: Role, max_message_size: usize) -> Self {
        Self {
            role,
            max_message_size,
            current: None,
            partial: None,
            utf8: Utf8Validator::default(),
            inflater: None,
            inflated: (0, 0),
        }
    }

    /// Accepts compressed messages (RSV1 on their first frame) and inflates them with
    /// `inflater`: permessage-deflate was negotiated.
    pub(crate) fn with_inflater(mut self, inflater: Option<Inflater>) -> Self {
        self.inflater = inflater.map(Box::new);
        self
    }

    /// How many more bytes the frame in progress needs, to size the next read.
    pub(crate) fn wanted(&self, buffered: usize) -> usize {
        match self.current {
            Some((h, _)) => h.len.saturating_sub(buffered),
            None => 0,
        }
    }

    /// Whether a frame's payload is half-way through (its header is decoded).
    pub(crate) fn is_mid_frame(&self) -> bool {
        self.current.is_some()
    }

    /// Whether a fragmented message or a frame is half-way through.
    pub(crate) fn is_mid_message(&self) -> bool {
        self.current.is_some() || self.partial.is_some()
    }

    /// Decodes the next frame from the front of `buf`, consuming it.
    ///
    /// `Ok(None)` means more bytes are needed; the bytes seen so far were checked.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        loop {
            let (header, done) = match self.current {
                Some(current) => current,
                None => match self.decode_header(buf)? {
                    Some(header) => (header, 0),
                    None => return Ok(None),
                },
            };

            if self.partial.as_ref().is_some_and(|p| p.compressed) && !header.opcode.is_control() {
                match self.inflate_frame(buf, header, done)? {
                    Inflated::Waiting => return Ok(None),
                    Inflated::Message(frame) => return Ok(Some(frame)),
                    Inflated::Fragment => continue,
                }
            }
            let available = buf.len().min(header.len);
            if available > done {
                let chunk = &mut buf[done..available];
                if let Some(mask) = header.mask {
                    fastwebsockets::unmask(chunk, rotate(mask, done));
                }
                if self.is_text(header.opcode) {
                    self.utf8
                        .feed(chunk)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
            }
            if available < header.len {
                self.current = Some((header, available));
                return Ok(None);
            }
            self.current = None;
            let payload = buf.split_to(header.len);
            if let Some(frame) = self.complete(header, payload)? {
                return Ok(Some(frame));
            }
        }
    }

    /// Takes the compressed payload of `header`'s frame that has arrived (`done` bytes of
    /// it were before): unmasks it, inflates it onto the message, checks the text that
    /// came out, and drops it from `buf`. At the end of the message's last frame, the
    /// whole message.
    fn inflate_frame(
        &mut self,
        buf: &mut BytesMut,
        header: Header,
        done: usize,
    ) -> Result<Inflated, DecodeError> {
        let available = buf.len().min(header.len - done);
        let limit = self.max_message_size;
        let inflater = self
            .inflater
            .as_mut()
            .expect("a compressed message was only accepted with an inflater");
        let partial = self
            .partial
            .as_mut()
            .expect("a compressed message has its partial");
        if available > 0 {
            let chunk = &mut buf[..available];
            if let Some(mask) = header.mask {
                fastwebsockets::unmask(chunk, rotate(mask, done));
            }
            let before = partial.data.len();
            inflater
                .inflate(chunk, &mut partial.data, limit)
                .map_err(inflate_error)?;
            self.inflated.0 += available as u64;
            self.inflated.1 += (partial.data.len() - before) as u64;
            if partial.text {
                self.utf8
                    .feed(&partial.data[before..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            buf.advance(available);
        }
        if done + available < header.len {
            self.current = Some((header, done + available));
            return Ok(Inflated::Waiting);
        }
        self.current = None;
        if !header.fin {
            return Ok(Inflated::Fragment);
        }
        let before = partial.data.len();
        inflater
            .finish(&mut partial.data, limit)
            .map_err(inflate_error)?;
        self.inflated.1 += (partial.data.len() - before) as u64;
        let Partial { text, data, .. } = self.partial.take().expect("checked above");
        if text {
            self.utf8
                .feed(&data[before..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.finish_message(text, data).map(Inflated::Message)
    }

    fn is_text(&self, opcode: OpCode) -> bool {
        if self.partial.as_ref().is_some_and(|p| p.compressed) {
            // Checked on the inflated bytes instead.
            return false;
        }
        match opcode {
            OpCode::Text => true,
            OpCode::Continuation => self.partial.as_ref().is_some_and(|p| p.text),
            _ => false,
        }
    }

    fn decode_header(&mut self, buf: &mut BytesMut) -> Result<Option<Header>, DecodeError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let compressed = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (compressed && self.inflater.is_none()) {
            return Err(ProtocolError::ReservedBits.into());
        }
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        if compressed && opcode.is_control() {
            return Err(ProtocolError::CompressedControl.into());
        }
        if compressed && opcode == OpCode::Continuation {
            return Err(ProtocolError::CompressedContinuation.into());
        }
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame.into()),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame.into()),
            _ => {}
        }
        let len7 = (b1 & 0x7F) as usize;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControl.into());
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlTooLong.into());
            }
        } else {
            match (opcode, self.partial.is_some()) {
                (OpCode::Continuation, false) => {
                    return Err(ProtocolError::UnexpectedContinuation.into())
                }
                (OpCode::Text | OpCode::Binary, true) => {
                    return Err(ProtocolError::ExpectedContinuation.into())
                }
                _ => {}
            }
        }
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + ext + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return Ok(None);
        }
        let len = match ext {
            2 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
            8 => u64::from_be_bytes(buf[2..10].try_into().expect("slice of 8 bytes")),
            _ => len7 as u64,
        };
        if len >> 63 != 0 {
            return Err(ProtocolError::InvalidLength.into());
        }
        if !opcode.is_control() {
            let compressing = compressed || self.partial.as_ref().is_some_and(|p| p.compressed);
            // A compressed message is bounded by what it inflates to, as it inflates; its
            // compressed bytes only by a little over the same size, since deflate never
            // grows data by more than a few bytes per block.
            let (so_far, limit) = if compressing {
                let wire = self.partial.as_ref().map_or(0, |p| p.wire);
                (wire, wire_limit(self.max_message_size))
            } else {
                let data = self.partial.as_ref().map_or(0, |p| p.data.len());
                (data, self.max_message_size)
            };
            if (so_far as u64).saturating_add(len) > limit as u64 {
                return Err(DecodeError::TooBig);
            }
        }
        let mask = masked.then(|| {
            let at = header_len - 4;
            [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]
        });
        buf.advance(header_len);
        let len = len as usize; // bounded by max_message_size (data) or 125 (control)
        if opcode == OpCode::Text {
            self.utf8.reset();
        }
        if compressed {
            self.partial = Some(Partial {
                text: opcode == OpCode::Text,
                compressed: true,
                data: BytesMut::new(),
                wire: 0,
            });
        }
        if let Some(partial) = self.partial.as_mut().filter(|p| p.compressed) {
            if !opcode.is_control() {
                partial.wire += len;
            }
        }
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            len,
        }))
    }

    /// Finishes a frame whose payload is all here; `None` for a fragment that does not end
    /// its message.
    fn complete(
        &mut self,
        header: Header,
        payload: BytesMut,
    ) -> Result<Option<Frame>, DecodeError> {
        let frame = match header.opcode {
            OpCode::Ping => Frame::Ping(payload.freeze()),
            OpCode::Pong => Frame::Pong(payload.freeze()),
            OpCode::Close => decode_close(payload)?,
            OpCode::Text | OpCode::Binary => {
                let text = header.opcode == OpCode::Text;
                if !header.fin {
                    self.partial = Some(Partial {
                        text,
                        compressed: false,
                        data: payload,
                        wire: 0,
                    });
                    return Ok(None);
                }
                self.finish_message(text, payload)?
            }
            OpCode::Continuation => {
                let partial = self
                    .partial
                    .as_mut()
                    .expect("continuation frames are only accepted mid-message");
                partial.data.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                let Partial { text, data, .. } = self.partial.take().expect("checked above");
                self.finish_message(text, data)?
            }
        };
        Ok(Some(frame))
    }

    fn finish_message(&mut self, text: bool, payload: BytesMut) -> Result<Frame, DecodeError> {
        let payload = payload.freeze();
        if !text {
            return Ok(Frame::Message(Message::Binary(payload)));
        }
        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        // SAFETY: every byte of the payload went through `self.utf8` as it arrived, and
        // `finish` confirmed no code point is cut off at the end.
        let text = unsafe { Utf8Bytes::from_bytes_unchecked(payload) };
        Ok(Frame::Message(Message::Text(text)))
    }
}

fn decode_close(mut payload: BytesMut) -> Result<Frame, ProtocolError> {
    match payload.len() {
        0 => Ok(Frame::Close(None)),
        1 => Err(ProtocolError::CloseTooShort),
        _ => {
            let code = payload.get_u16();
            if !is_valid_wire_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = Utf8Bytes::try_from(payload.freeze())
                .map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Frame::Close(Some((code, reason))))
        }
    }
}

/// What [`Decoder::inflate_frame`] got to.
enum Inflated {
    /// More of the frame must arrive.
    Waiting,
    /// The frame is done; the message goes on in the next one.
    Fragment,
    /// The message is done.
    Message(Frame),
}

fn inflate_error(error: InflateError) -> DecodeError {
    match error {
        InflateError::TooBig => DecodeError::TooBig,
        InflateError::Corrupt => DecodeError::Protocol(ProtocolError::InvalidCompressedData),
    }
}

/// The most compressed bytes one message may take: its max size, and a little more.
fn wire_limit(max_message_size: usize) -> usize {
    max_message_size
        .saturating_add(max_message_size / 16)
        .saturating_add(1024)
}

/// The mask as it applies from byte `offset` of the payload on.
fn rotate(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let mut m = mask;
    m.rotate_left(offset % 4);
    m
}

/// An encoded frame header: 2 to 14 bytes, kept apart from its payload so that a large
/// payload can be written from its own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    bytes: [u8; 14],
    len: u8,
}

impl FrameHeader {
    /// The header of a frame with FIN set to `fin`, RSV1 to `rsv1`, carrying `len` bytes,
    /// masked with `mask` when one is given.
    pub(crate) fn new(
        fin: bool,
        rsv1: bool,
        opcode: OpCode,
        len: usize,
        mask: Option<[u8; 4]>,
    ) -> Self {
        let mut bytes = [0u8; 14];
        bytes[0] = (fin as u8) << 7 | (rsv1 as u8) << 6 | opcode as u8;
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        let mut at = if len < 126 {
            bytes[1] = mask_bit | len as u8;
            2
        } else if len <= u16::MAX as usize {
            bytes[1] = mask_bit | 126;
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = mask_bit | 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        if let Some(mask) = mask {
            bytes[at..at + 4].copy_from_slice(&mask);
            at += 4;
        }
        Self {
            bytes,
            len: at as u8,
        }
    }

    /// The encoded header.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Writes a frame header for a payload of `len` bytes.
#[cfg(test)]
pub(crate) fn encode_header(
    out: &mut BytesMut,
    fin: bool,
    opcode: OpCode,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    out.put_slice(FrameHeader::new(fin, false, opcode, len, mask).as_bytes());
}

/// Writes a whole frame: header and payload, masked when `mask` is given.
pub(crate) fn encode_frame(
    out: &mut BytesMut,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    encode_data_frame(out, false, opcode, payload, mask);
}

/// Writes a whole frame with RSV1 set when its payload is `compressed`.
pub(crate) fn encode_data_frame(
    out: &mut BytesMut,
    compressed: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.reserve(payload.len() + 14);
    out.put_slice(FrameHeader::new(true, compressed, opcode, payload.len(), mask).as_bytes());
    let start = out.len();
    out.put_slice(payload);
    if let Some(mask) = mask {
        fastwebsockets::unmask(&mut out[start..], mask);
    }
}

/// Writes a close frame; `code` and `reason` were validated by the caller.
pub(crate) fn encode_close(
    out: &mut BytesMut,
    code: Option<u16>,
    reason: &str,
    mask: Option<[u8; 4]>,
) {
    let mut payload = [0u8; 125];
    let len = match code {
        Some(code) => {
            payload[..2].copy_from_slice(&code.to_be_bytes());
            let reason = &reason.as_bytes()[..reason.len().min(123)];
            payload[2..2 + reason.len()].copy_from_slice(reason);
            2 + reason.len()
        }
        None => 0,
    };
    encode_frame(out, OpCode::Close, &payload[..len], mask);
}

#[cfg(test)]
mod tests;
