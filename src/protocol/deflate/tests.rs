//! Compressing and inflating on bytes in memory: round trips at every window size, context
//! takeover, the size limit applied while inflating, and input fed in pieces.

use bytes::BytesMut;

use super::*;

/// Chat-like JSON: compressible, as a real application's messages are.
fn json(n: usize) -> Vec<u8> {
    let mut out = String::from("[");
    for i in 0..n {
        out.push_str(&format!(
            r#"{{"type":"message","channel":"lobby","from":"user-{}","text":"line number {i} of the chat"}},"#,
            i % 7
        ));
    }
    out.push(']');
    out.into_bytes()
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn negotiated(mode: DeflateMode, bits: u8) -> Negotiated {
    let no_context = mode == DeflateMode::Shared;
    let direction = Direction {
        no_context_takeover: no_context,
        window_bits: bits,
    };
    Negotiated {
        outgoing: direction,
        incoming: direction,
        threshold: 16,
        level: 1,
        header: String::new(),
    }
}

fn inflate_all(
    inflater: &mut Inflater,
    compressed: &[u8],
    limit: usize,
) -> Result<Vec<u8>, InflateError> {
    let mut out = BytesMut::new();
    let result = inflater
        .inflate(compressed, &mut out, limit)
        .and_then(|()| inflater.finish(&mut out, limit));
    if result.is_err() {
        inflater.end_message();
    }
    result.map(|()| out.to_vec())
}

#[test]
fn messages_round_trip_at_every_window_size_and_level() {
    let message = json(200);
    for bits in 8..=15 {
        for level in [0, 1, 6, 9] {
            let mut agreed = negotiated(DeflateMode::Shared, bits);
            agreed.level = level;
            let compressed = agreed.deflater().compress(&message).expect("it compresses");
            if level > 0 {
                assert!(
                    compressed.len() < message.len() / 3,
                    "bits {bits} level {level}"
                );
            }
            assert!(
                !compressed.ends_with(&SYNC_TAIL),
                "the flush tail is stripped"
            );
            let inflated = inflate_all(&mut agreed.inflater(), &compressed, 1 << 20).unwrap();
            assert_eq!(inflated, message, "bits {bits} level {level}");
        }
    }
}

#[test]
fn messages_under_the_threshold_go_plain_and_the_rest_compressed() {
    let agreed = negotiated(DeflateMode::Shared, 15);
    let mut deflater = agreed.deflater();
    assert_eq!(deflater.compress(b"short"), None, "under the threshold");
    assert!(deflater.compress(&json(10)).is_some());
    // Data that does not compress still goes compressed: as stored blocks, 5 bytes
    // larger per 64 KiB, and 1 for the end of the message.
    for len in [300, 40_000, 65_535, 65_536, 200_000] {
        let noise = noise(len);
        let compressed = deflater.compress(&noise).unwrap();
        assert_eq!(
            compressed.len(),
            len + 5 * len.div_ceil(65_535) + 1,
            "{len}"
        );
        let inflated = inflate_all(&mut agreed.inflater(), &compressed, 1 << 20).unwrap();
        assert_eq!(inflated, noise);
    }
}

#[test]
fn input_fed_in_pieces_inflates_to_the_same_message() {
    let message = json(500);
    let agreed = negotiated(DeflateMode::Shared, 15);
    let compressed = agreed.deflater().compress(&message).unwrap();
    for piece in [1, 7, 100, 4096] {
        let mut inflater = agreed.inflater();
        let mut out = BytesMut::new();
        for chunk in compressed.chunks(piece) {
            inflater.inflate(chunk, &mut out, 1 << 20).unwrap();
        }
        inflater.finish(&mut out, 1 << 20).unwrap();
        assert_eq!(out.as_ref(), &message[..], "pieces of {piece}");
    }
}

#[test]
fn stored_blocks_keep_a_context_takeover_stream_in_step() {
    // A compressible message, one that goes stored, and the first again: with context
    // takeover the third refers back across the stored one.
    let agreed = negotiated(DeflateMode::PerConnection, 15);
    let mut deflater = agreed.deflater();
    let mut inflater = agreed.inflater();
    let line = json(3);
    let noise = noise(5_000);
    for (i, message) in [&line, &noise, &line, &noise].into_iter().enumerate() {
        let compressed = deflater.compress(message).unwrap();
        let inflated = inflate_all(&mut inflater, &compressed, 1 << 20);
        assert_eq!(inflated.as_ref(), Ok(message), "message {i}");
    }
}

#[test]
fn context_takeover_compresses_repeats_smaller_and_needs_the_same_context() {
    let agreed = negotiated(DeflateMode::PerConnection, 15);
    let mut deflater = agreed.deflater();
    let line = json(3);
    let first = deflater.compress(&line).unwrap();
    let second = deflater.compress(&line).unwrap();
    assert!(
        second.len() < first.len() / 3,
        "the repeat refers back to the first: {} vs {}",
        second.len(),
        first.len()
    );
    let mut inflater = agreed.inflater();
    assert_eq!(inflate_all(&mut inflater, &first, 1 << 20).unwrap(), line);
    assert!(
        inflater.holds_state(),
        "the window is kept for the next message"
    );
    assert_eq!(inflate_all(&mut inflater, &second, 1 << 20).unwrap(), line);
    // Without the first message's window the second cannot be inflated.
    let mut fresh = negotiated(DeflateMode::Shared, 15).inflater();
    assert_eq!(
        inflate_all(&mut fresh, &second, 1 << 20),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn without_context_takeover_an_idle_connection_holds_no_state() {
    let agreed = negotiated(DeflateMode::Shared, 15);
    let mut inflater = agreed.inflater();
    let compressed = agreed.deflater().compress(&json(50)).unwrap();
    let mut out = BytesMut::new();
    inflater
        .inflate(&compressed[..10], &mut out, 1 << 20)
        .unwrap();
    assert!(inflater.holds_state(), "mid-message");
    inflater
        .inflate(&compressed[10..], &mut out, 1 << 20)
        .unwrap();
    inflater.finish(&mut out, 1 << 20).unwrap();
    assert!(
        !inflater.holds_state(),
        "given back at the end of the message"
    );
}

#[test]
fn a_small_message_that_inflates_past_the_limit_stops_at_the_limit() {
    // 64 MiB of zeros compress to about 64 KiB at level 9.
    let zeros = vec![0u8; 64 << 20];
    let mut agreed = negotiated(DeflateMode::Shared, 15);
    agreed.level = 9;
    let bomb = agreed.deflater().compress(&zeros).unwrap();
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    let limit = 1 << 20;
    let mut inflater = agreed.inflater();
    let mut out = BytesMut::new();
    assert_eq!(
        inflater.inflate(&bomb, &mut out, limit),
        Err(InflateError::TooBig)
    );
    assert_eq!(out.len(), limit, "inflated exactly up to the limit");
    assert!(
        out.capacity() <= limit + 4096,
        "allocated {} for a {limit}-byte limit",
        out.capacity()
    );
    // A message of exactly the limit is fine.
    let exact = agreed.deflater().compress(&vec![0u8; limit]).unwrap();
    assert_eq!(
        inflate_all(&mut agreed.inflater(), &exact, limit).map(|v| v.len()),
        Ok(limit)
    );
}

#[test]
fn data_that_is_not_deflate_is_an_error() {
    let agreed = negotiated(DeflateMode::Shared, 15);
    // A block type of 3 is reserved in deflate.
    assert_eq!(
        inflate_all(&mut agreed.inflater(), &[0xff, 0xff, 0xff], 1 << 20),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn a_final_block_may_end_the_message_but_nothing_may_follow_it() {
    // A sender that ends each message's stream (BFINAL) instead of sync-flushing.
    let message = json(20);
    let mut compressor = Compress::new_with_window_bits(Compression::new(6), false, 15);
    let mut finished = Vec::with_capacity(message.len() + 64);
    compressor
        .compress_vec(&message, &mut finished, FlushCompress::Finish)
        .unwrap();
    let agreed = negotiated(DeflateMode::PerConnection, 15);
    let mut inflater = agreed.inflater();
    assert_eq!(
        inflate_all(&mut inflater, &finished, 1 << 20).unwrap(),
        message
    );
    // The next message starts a new stream.
    assert_eq!(
        inflate_all(&mut inflater, &finished, 1 << 20).unwrap(),
        message
    );
    let mut trailing = finished.clone();
    trailing.extend_from_slice(b"more");
    assert_eq!(
        inflate_all(&mut inflater, &trailing, 1 << 20),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn a_prepared_frame_is_compressed_once_per_setting() {
    use crate::protocol::{Message, Prepared};
    let frame = Prepared::new(Message::binary(json(100)));
    let shared = negotiated(DeflateMode::Shared, 15).deflater();
    let setting = shared.shared_setting().expect("shared mode shares");
    let first = frame.compressed(setting).unwrap();
    for _ in 0..100 {
        let again = frame.clone().compressed(setting).unwrap();
        assert_eq!(
            again.as_ptr(),
            first.as_ptr(),
            "the same compressed bytes, not a new compression"
        );
    }
    let small_window = negotiated(DeflateMode::Shared, 10).deflater();
    let other = frame
        .compressed(small_window.shared_setting().unwrap())
        .unwrap();
    assert_ne!(
        other.as_ptr(),
        first.as_ptr(),
        "another setting, another compression"
    );
    assert!(negotiated(DeflateMode::PerConnection, 15)
        .deflater()
        .shared_setting()
        .is_none());
}

#[test]
fn config_values_out_of_range_are_named() {
    assert!(DeflateConfig::default().validate().is_ok());
    assert_eq!(
        DeflateConfig::default().with_window_bits(7).validate(),
        Err("window_bits must be 8 to 15, got 7".into())
    );
    assert_eq!(
        DeflateConfig::default().with_window_bits(16).validate(),
        Err("window_bits must be 8 to 15, got 16".into())
    );
}

#[test]
fn incompressible_messages_of_growing_size_leave_the_pooled_compressor_usable() {
    // Noise of growing sizes through one thread's pooled compressor: each goes as stored
    // blocks, and the compressor it went through still works for the next message (a
    // compressor left with output pending once made zlib-rs panic on its next use).
    let setting = Setting {
        level: 1,
        window_bits: 15,
    };
    let inflater = || negotiated(DeflateMode::Shared, 15).inflater();
    for size in (2000usize..80_000).step_by(3000) {
        let random: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
        let compressed = compress_alone(setting, &random).expect("it compresses");
        assert_eq!(
            compressed.len(),
            size + 5 * size.div_ceil(65_535) + 1,
            "{size} bytes of noise go as stored blocks"
        );
        let back = inflate_all(&mut inflater(), &compressed, 1 << 20);
        assert!(
            back.as_deref() == Ok(&random[..]),
            "{size} bytes of noise came back"
        );
    }
    let text = json(4000);
    let compressed = compress_alone(setting, &text).expect("JSON compresses");
    assert!(compressed.len() < text.len() / 5);
    assert_eq!(
        inflate_all(&mut inflater(), &compressed, 1 << 20).unwrap(),
        text
    );
}
