//! Which deflate crate, and which level, for permessage-deflate: zlib-rs (through
//! flate2, what Estuary uses) against miniz_oxide, at the levels that matter, on
//! payloads shaped like WebSocket traffic. Each message is compressed on its own, as
//! Estuary's default (shared, no context takeover) mode does.
//!
//! ```text
//! cargo bench --bench compression
//! ```
//!
//! It prints, per payload and per crate and level: the compressed size as a share of
//! the original, and compression and inflation speed in MB/s (median of 5 runs). Under
//! `cargo test` (no `--bench`), it checks each round trip once and exits.

use std::hint::black_box;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// A chat line as the example server's chat sends it.
fn chat_line(i: usize) -> String {
    format!(
        r#"{{"type":"message","channel":"lobby","from":"user-{}","text":"this is line {i} of a conversation about the release"}}"#,
        i % 13
    )
}

/// The payloads: chat-sized JSON, a 1 KiB and a 16 KiB JSON document, HTML, and bytes
/// that do not compress (a photo or an already compressed file).
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let json = |target: usize| {
        let mut out = String::from("[");
        let mut i = 0;
        while out.len() < target {
            out.push_str(&chat_line(i));
            out.push(',');
            i += 1;
        }
        out.truncate(target - 1);
        out.push(']');
        out.into_bytes()
    };
    let html: Vec<u8> = (0..200)
        .map(|i| {
            format!(
                "<tr><td class=\"name\">row {i}</td><td class=\"v\">{}</td></tr>\n",
                i * 7
            )
        })
        .collect::<String>()
        .into_bytes();
    let mut state = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..16 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    vec![
        ("chat line (~120 B)", chat_line(7).into_bytes()),
        ("JSON 1 KiB", json(1024)),
        ("JSON 16 KiB", json(16 * 1024)),
        ("HTML 12 KiB", html),
        ("random 16 KiB", noise),
    ]
}

/// A raw-deflate codec at a level: compresses one message with a sync flush and
/// inflates it again.
trait Codec {
    fn name(&self) -> String;
    fn compress(&mut self, input: &[u8]) -> Vec<u8>;
    fn inflate(&mut self, input: &[u8], len: usize) -> Vec<u8>;
}

struct ZlibRs {
    level: u32,
    compress: Compress,
    inflate: Decompress,
}

impl ZlibRs {
    fn new(level: u32) -> Self {
        Self {
            level,
            compress: Compress::new_with_window_bits(Compression::new(level), false, 15),
            inflate: Decompress::new_with_window_bits(false, 15),
        }
    }
}

impl Codec for ZlibRs {
    fn name(&self) -> String {
        format!("zlib-rs {}", self.level)
    }

    fn compress(&mut self, input: &[u8]) -> Vec<u8> {
        self.compress.reset();
        // Room for data that grows (static trees at level 1 grow noise by about 6%).
        let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 64);
        self.compress
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .expect("compresses");
        assert!(out.len() < out.capacity(), "the whole flush fit");
        out
    }

    fn inflate(&mut self, input: &[u8], len: usize) -> Vec<u8> {
        self.inflate.reset(false);
        let mut out = Vec::with_capacity(len + 64);
        self.inflate
            .decompress_vec(input, &mut out, FlushDecompress::Sync)
            .expect("inflates");
        out
    }
}

struct Miniz {
    level: u8,
}

impl Codec for Miniz {
    fn name(&self) -> String {
        format!("miniz_oxide {}", self.level)
    }

    fn compress(&mut self, input: &[u8]) -> Vec<u8> {
        miniz_oxide::deflate::compress_to_vec(input, self.level)
    }

    fn inflate(&mut self, input: &[u8], len: usize) -> Vec<u8> {
        let out =
            miniz_oxide::inflate::decompress_to_vec_with_limit(input, len + 64).expect("inflates");
        assert_eq!(out.len(), len);
        out
    }
}

/// MB/s of `work` over `bytes` per call: calls repeated for at least `window`, median of
/// five such runs.
fn speed(bytes: usize, window: Duration, mut work: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < window {
                for _ in 0..16 {
                    work();
                }
                calls += 16;
            }
            (bytes as f64 * calls as f64) / start.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let window = if benchmarking {
        Duration::from_millis(300)
    } else {
        Duration::ZERO
    };
    let mut codecs: Vec<Box<dyn Codec>> = vec![
        Box::new(ZlibRs::new(1)),
        Box::new(ZlibRs::new(2)),
        Box::new(ZlibRs::new(6)),
        Box::new(Miniz { level: 1 }),
        Box::new(Miniz { level: 6 }),
    ];
    println!(
        "| payload | codec | compressed size | compress MB/s | inflate MB/s |\n\
         |---|---|---:|---:|---:|"
    );
    for (label, payload) in payloads() {
        for codec in &mut codecs {
            let compressed = codec.compress(&payload);
            let back = codec.inflate(&compressed, payload.len());
            assert_eq!(back, payload, "{} round trip of {label}", codec.name());
            if !benchmarking {
                continue;
            }
            let compress = speed(payload.len(), window, || {
                black_box(codec.compress(black_box(&payload)));
            });
            let inflate = speed(payload.len(), window, || {
                black_box(codec.inflate(black_box(&compressed), payload.len()));
            });
            println!(
                "| {label} | {} | {:.1}% | {compress:.0} | {inflate:.0} |",
                codec.name(),
                100.0 * compressed.len() as f64 / payload.len() as f64
            );
        }
    }
    if !benchmarking {
        println!("compression benchmark smoke test: every round trip checked");
    }
}
