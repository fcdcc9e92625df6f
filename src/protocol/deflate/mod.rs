//! permessage-deflate (RFC 7692): negotiation, and compressing and inflating messages.
//!
//! - **Negotiation** ([`negotiation`]) follows the RFC for both roles: the four
//!   parameters, several offers in preference order, and an offer with an unknown,
//!   duplicate or out-of-range parameter declined; a client fails the connection when the
//!   server answers with something it did not offer.
//! - **Inflating** happens as the compressed bytes arrive ([`Inflater`]): the output is
//!   bounded by the max message size as it comes out, so a small frame that would inflate
//!   to a gigabyte stops at the limit; text is UTF-8 checked on the inflated bytes.
//! - **Compressing** ([`Deflater`]) skips messages under a size threshold (they cost more
//!   compressed than plain), and a frame prepared for many connections is compressed once
//!   per [`Setting`], not once per recipient.
//! - **Memory**: in [`DeflateMode::Shared`], the default, neither side keeps a context
//!   between messages (both `no_context_takeover` parameters are negotiated), so an idle
//!   connection holds no zlib state at all: compressors and inflaters come from a small
//!   per-thread pool for the length of one message. [`DeflateMode::PerConnection`] keeps a
//!   compressor and an inflater per connection, for better ratios on small, similar
//!   messages.

pub(crate) mod negotiation;

use std::cell::RefCell;
use std::fmt;
use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::make_room;

/// The four bytes every sync flush ends with, which a sender strips and a receiver puts
/// back (RFC 7692 7.2.1).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Idle compressors and inflaters a thread keeps for the next message, per setting.
const POOL_SIZE: usize = 4;

/// How a connection keeps its compression state between messages.
///
/// ```
/// use estuary::DeflateMode;
///
/// assert_eq!(DeflateMode::default(), DeflateMode::Shared);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeflateMode {
    /// No context takeover either way: each message is compressed on its own, with a
    /// compressor borrowed for that message, so an idle connection holds no zlib state,
    /// and a broadcast is compressed once for every connection. The default.
    #[default]
    Shared,
    /// Context takeover: a compressor and an inflater per connection keep the last
    /// messages' window, which compresses small, similar messages (chat lines, ticks)
    /// better, at about 256 KB (compressor) plus 40 KB (inflater) per connection at 15
    /// window bits, for the connection's life.
    PerConnection,
}

/// permessage-deflate settings (RFC 7692), for a server (`WebSocketConfig`) or a client
/// (`ClientConfig`).
///
/// ```
/// use estuary::{DeflateConfig, DeflateMode};
///
/// let deflate = DeflateConfig::default()
///     .with_mode(DeflateMode::PerConnection)
///     .with_window_bits(12)
///     .with_threshold(512)
///     .with_level(6);
/// assert_eq!(deflate.window_bits, 12);
/// assert!(deflate.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// How compression state is kept. Default [`DeflateMode::Shared`].
    pub mode: DeflateMode,
    /// Messages shorter than this many bytes are sent uncompressed. Default 256.
    pub threshold: usize,
    /// The zlib level, 0 (store) to 9 (smallest, slowest). Default 1.
    pub level: u32,
    /// The largest LZ77 window this end compresses with and asks the peer to compress
    /// with, as a power of two, 8 to 15 (256 bytes to 32 KiB). A smaller window costs
    /// less memory in [`DeflateMode::PerConnection`] and compresses less. Default 15.
    pub window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            mode: DeflateMode::Shared,
            threshold: 256,
            level: 1,
            window_bits: 15,
        }
    }
}

impl DeflateConfig {
    /// Sets how compression state is kept.
    pub fn with_mode(mut self, mode: DeflateMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the size under which messages go uncompressed.
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Sets the zlib level, 0 to 9.
    pub fn with_level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// Sets the largest window, 8 to 15 bits.
    pub fn with_window_bits(mut self, bits: u8) -> Self {
        self.window_bits = bits;
        self
    }

    /// Checks the values that have a range, naming the field that is out of it.
    ///
    /// ```
    /// let bad = estuary::DeflateConfig::default().with_level(10);
    /// assert_eq!(bad.validate().unwrap_err(), "level must be 0 to 9, got 10");
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        if self.level > 9 {
            return Err(format!("level must be 0 to 9, got {}", self.level));
        }
        if !(8..=15).contains(&self.window_bits) {
            return Err(format!(
                "window_bits must be 8 to 15, got {}",
                self.window_bits
            ));
        }
        Ok(())
    }
}

/// One direction's compression, as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Direction {
    /// The compressor starts afresh for each message.
    pub(crate) no_context_takeover: bool,
    /// The largest window the compressor may use, 8 to 15.
    pub(crate) window_bits: u8,
}

/// What a connection negotiated: how it compresses what it sends, and how the peer
/// compresses what it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) outgoing: Direction,
    pub(crate) incoming: Direction,
    pub(crate) threshold: usize,
    pub(crate) level: u32,
    /// The `Sec-WebSocket-Extensions` value that agreed on this, for the session.
    pub(crate) header: String,
}

impl Negotiated {
    /// The compressor for what this end sends.
    pub(crate) fn deflater(&self) -> Deflater {
        Deflater {
            setting: Setting {
                level: self.level.min(9) as u8,
                // zlib cannot compress with an 8-bit window, but with a 9-bit one it never
                // reaches back further than 250 bytes (its window less its 262-byte
                // lookahead), which an 8-bit window inflates.
                window_bits: self.outgoing.window_bits.max(9),
            },
            threshold: self.threshold,
            context: (!self.outgoing.no_context_takeover).then_some(None),
        }
    }

    /// The inflater for what this end receives.
    pub(crate) fn inflater(&self) -> Inflater {
        Inflater {
            context_takeover: !self.incoming.no_context_takeover,
            state: None,
            ended: false,
        }
    }
}

/// What compressed bytes are valid for: a compressor without context, at a level and a
/// window size. A frame prepared for many connections is compressed once per setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Setting {
    level: u8,
    window_bits: u8,
}

impl Setting {
    fn compressor(self) -> Compress {
        let level = Compression::new(self.level.into());
        Compress::new_with_window_bits(level, false, self.window_bits)
    }
}

thread_local! {
    /// Compressors between messages, by setting.
    static COMPRESSORS: RefCell<Vec<(Setting, Compress)>> = const { RefCell::new(Vec::new()) };
    /// Inflaters between messages.
    static INFLATERS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `payload` as one message, with a compressor of `setting` that starts
/// afresh (borrowed from this thread's pool).
pub(crate) fn compress_alone(setting: Setting, payload: &[u8]) -> Option<Bytes> {
    let pooled = COMPRESSORS.with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool.iter().position(|(s, _)| *s == setting)?;
        Some(pool.swap_remove(at).1)
    });
    let mut compressor = pooled.unwrap_or_else(|| setting.compressor());
    // A compressor that failed may hold state its reset does not clear (zlib-rs then
    // panics on the next message through it): it is dropped, not pooled.
    let compressed = deflate(&mut compressor, payload)?;
    compressor.reset();
    COMPRESSORS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.iter().filter(|(s, _)| *s == setting).count() < POOL_SIZE {
            pool.push((setting, compressor));
        }
    });
    Some(compressed.freeze())
}

/// Runs `payload` through `compressor` with a sync flush, and strips the flush's tail.
///
/// A message at or over the threshold goes compressed even when that does not shrink
/// it: some peers (the Autobahn suite's among them) expect every message of a
/// compressed connection to come compressed. When the compressor's output is larger
/// than the message (data that does not compress: level 1's fixed codes grow it by
/// about 6%), the message goes as stored deflate blocks instead, 5 bytes more per
/// 64 KiB. That is valid with context takeover too: the peer's window takes in the same
/// bytes either way.
fn deflate(compressor: &mut Compress, payload: &[u8]) -> Option<BytesMut> {
    let compressed = deflate_with(compressor, payload)?;
    if compressed.len() > stored_len(payload.len()) {
        return Some(stored(payload));
    }
    Some(compressed)
}

/// The most bytes a stored block holds.
const STORED_BLOCK: usize = 65_535;

/// The size of `len` bytes as stored deflate blocks, sync flush included.
fn stored_len(len: usize) -> usize {
    len + 5 * len.div_ceil(STORED_BLOCK) + 1
}

/// `payload` as stored (uncompressed) deflate blocks, none of them final: each a header
/// byte (BFINAL 0, BTYPE 00), its length and the length's complement, then the bytes.
/// Last, the header byte of the sync flush's empty stored block, whose length and
/// complement (`00 00 ff ff`) the sender strips and the receiver puts back.
fn stored(payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(stored_len(payload.len()));
    for block in payload.chunks(STORED_BLOCK) {
        let len = block.len() as u16;
        out.put_u8(0);
        out.put_u16_le(len);
        out.put_u16_le(!len);
        out.put_slice(block);
    }
    out.put_u8(0);
    out
}

fn deflate_with(compressor: &mut Compress, payload: &[u8]) -> Option<BytesMut> {
    let mut out = BytesMut::with_capacity(payload.len() / 2 + 64);
    let mut consumed = 0;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let spare = out.spare_capacity_mut();
        let room = spare.len();
        let (in_before, out_before) = (compressor.total_in(), compressor.total_out());
        compressor
            .compress_uninit(&payload[consumed..], spare, FlushCompress::Sync)
            .ok()?;
        let written = (compressor.total_out() - out_before) as usize;
        consumed += (compressor.total_in() - in_before) as usize;
        // SAFETY: the compressor initialised the first `written` bytes of the spare
        // capacity.
        unsafe { out.advance_mut(written) };
        // The flush is complete once all input is in and the output did not fill the
        // room it had (zlib's rule for calling again).
        if consumed == payload.len() && written < room {
            break;
        }
    }
    if out.ends_with(&SYNC_TAIL) {
        out.truncate(out.len() - SYNC_TAIL.len());
    }
    Some(out)
}

/// One connection's outgoing compression.
pub(crate) struct Deflater {
    setting: Setting,
    threshold: usize,
    /// With context takeover, the connection's own compressor (made at its first
    /// message); `None` without.
    context: Option<Option<Compress>>,
}

impl Deflater {
    /// The compressed form of `payload`, if it is to be sent compressed.
    pub(crate) fn compress(&mut self, payload: &[u8]) -> Option<Bytes> {
        if payload.len() < self.threshold {
            return None;
        }
        let Some(context) = &mut self.context else {
            return compress_alone(self.setting, payload);
        };
        let setting = self.setting;
        let compressor = context.get_or_insert_with(|| setting.compressor());
        deflate(compressor, payload).map(BytesMut::freeze)
    }

    /// The setting whose compressed bytes this connection sends as they are (no context
    /// takeover), for frames compressed once for many connections; `None` with context
    /// takeover, where each connection compresses on its own.
    pub(crate) fn shared_setting(&self) -> Option<Setting> {
        self.context.is_none().then_some(self.setting)
    }

    /// The size under which messages go plain.
    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflater")
            .field("setting", &self.setting)
            .field("threshold", &self.threshold)
            .field("context_takeover", &self.context.is_some())
            .finish()
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The message inflates past the max message size.
    TooBig,
    /// The compressed data is not valid deflate.
    Corrupt,
}

/// One connection's incoming decompression, fed the compressed bytes of a message as they
/// arrive.
pub(crate) struct Inflater {
    context_takeover: bool,
    /// The zlib state: for the message being inflated, or, with context takeover, for
    /// the connection's life.
    state: Option<Decompress>,
    /// The sender ended the deflate stream (a final block) within this message.
    ended: bool,
}

impl Inflater {
    /// Inflates `input`, the next compressed bytes of the message, onto `out`, which may
    /// grow to at most `limit` bytes.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateError> {
        if self.ended {
            // Bytes after a final block: nothing may follow the end of the stream.
            return if input.is_empty() {
                Ok(())
            } else {
                Err(InflateError::Corrupt)
            };
        }
        let state = self.state.get_or_insert_with(|| {
            INFLATERS
                .with(|pool| pool.borrow_mut().pop())
                .unwrap_or_else(|| Decompress::new_with_window_bits(false, 15))
        });
        let ended = inflate(state, input, out, limit)?;
        self.ended = ended;
        Ok(())
    }

    /// Ends the message: inflates what the sender's sync flush left out.
    pub(crate) fn finish(&mut self, out: &mut BytesMut, limit: usize) -> Result<(), InflateError> {
        let result = if self.ended {
            Ok(())
        } else {
            self.inflate(&SYNC_TAIL, out, limit)
        };
        self.end_message();
        result
    }

    /// Forgets the message (done, failed or abandoned): the state goes back to the pool,
    /// unless the connection keeps its context and the stream goes on.
    pub(crate) fn end_message(&mut self) {
        let keep = self.context_takeover && !self.ended;
        self.ended = false;
        if keep {
            return;
        }
        if let Some(mut state) = self.state.take() {
            state.reset(false);
            INFLATERS.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_SIZE {
                    pool.push(state);
                }
            });
        }
    }

    /// Whether the inflater holds zlib state now.
    #[cfg(test)]
    pub(crate) fn holds_state(&self) -> bool {
        self.state.is_some()
    }
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("context_takeover", &self.context_takeover)
            .field("holds_state", &self.state.is_some())
            .finish()
    }
}

/// Inflates all of `input` onto `out`, never letting `out` grow past `limit`: the output
/// buffer grows with what comes out, and the inflater is never given room beyond the
/// limit. Returns whether the deflate stream ended (a final block).
fn inflate(
    state: &mut Decompress,
    input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<bool, InflateError> {
    let mut consumed = 0;
    loop {
        if out.len() >= limit {
            // No room left: one byte more is too big. A one-byte probe tells whether the
            // input holds more output.
            let mut probe = [MaybeUninit::uninit(); 1];
            let before = state.total_out();
            let status = state
                .decompress_uninit(&input[consumed..], &mut probe, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            if state.total_out() != before {
                return Err(InflateError::TooBig);
            }
            return Ok(status == Status::StreamEnd);
        }
        // Grow with what comes out: twice what is there (at least 4 KiB), never past the
        // limit.
        let room = (limit - out.len()).min(out.len().max(4096));
        if out.capacity() - out.len() < room {
            make_room(out, room);
        }
        let room_to_limit = limit - out.len();
        let spare = out.spare_capacity_mut();
        let spare_len = spare.len().min(room_to_limit);
        let (in_before, out_before) = (state.total_in(), state.total_out());
        let status = state
            .decompress_uninit(
                &input[consumed..],
                &mut spare[..spare_len],
                FlushDecompress::Sync,
            )
            .map_err(|_| InflateError::Corrupt)?;
        let written = (state.total_out() - out_before) as usize;
        let read = (state.total_in() - in_before) as usize;
        consumed += read;
        // SAFETY: the inflater initialised the first `written` bytes of the spare
        // capacity.
        unsafe { out.advance_mut(written) };
        if status == Status::StreamEnd {
            return if consumed == input.len() {
                Ok(true)
            } else {
                Err(InflateError::Corrupt)
            };
        }
        // Done once all input is in and the output did not fill the room it had.
        if consumed == input.len() && written < spare_len {
            return Ok(false);
        }
        if read == 0 && written == 0 {
            // No progress with input left and room to spare: not a deflate stream.
            return Err(InflateError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests;
