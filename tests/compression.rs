//! permessage-deflate with real peers and hostile ones: Python's `websockets` (which offers
//! compression by default) negotiates it with the example server and echoes through it,
//! at every window size it can ask for; a decompression bomb costs the server no more
//! memory than its message limit, and its neighbours keep echoing.

mod common;

use std::time::Duration;

use common::example::ExampleServer;
use common::proc::peak_rss_kib;
use common::python;
use common::{connect, echo_roundtrip, encode_masked, RawWs};
use flate2::{Compress, Compression, FlushCompress};

const ANY_PORT: &[&str] = &["--bind", "127.0.0.1:0"];

/// A Python `websockets` client: for each `server_max_window_bits` in argv (0 for none),
/// connects with compression offered, sends a compressible text, a compressible binary
/// message, an incompressible one and a short one, checks each echo, and prints the
/// extension the server accepted.
const PYTHON_CLIENT: &str = r#"
import os, sys
from websockets.sync.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

url = sys.argv[1]
for bits in map(int, sys.argv[2:]):
    factory = ClientPerMessageDeflateFactory(
        server_max_window_bits=bits or None, client_max_window_bits=True)
    with connect(url, extensions=[factory], max_size=None) as ws:
        print("accepted:", ws.response.headers.get("Sec-WebSocket-Extensions"))
        text = "".join(f'{{"line":{i},"text":"the same words again and again"}}' for i in range(2000))
        data = bytes(range(256)) * 300
        noise = os.urandom(20000)
        for message in [text, data, noise, "hi"]:
            ws.send(message)
            back = ws.recv(timeout=10)
            assert back == message, f"echo of {len(message)} bytes differs"
        print("echoed", bits)
"#;

#[tokio::test]
async fn python_websockets_negotiates_compression_and_echoes_through_it() {
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    // 8 is the smallest window a client can ask the server to keep to, and one zlib
    // cannot compress with: the server compresses with 9, whose matches reach back no
    // more than 250 bytes, and Python's 8-bit inflater checks that they do.
    let args = ["0", "15", "12", "9", "8"].map(String::from);
    let mut argv = vec![server.url("/echo")];
    argv.extend(args.iter().cloned());
    let out = python::run(PYTHON_CLIENT, &argv, Duration::from_secs(60)).await;
    let accepted: Vec<&str> = out
        .lines()
        .filter_map(|line| line.strip_prefix("accepted: "))
        .collect();
    assert_eq!(accepted.len(), args.len(), "{out}");
    // The server's default: no context takeover either way, so that an idle connection
    // holds no compression state.
    assert_eq!(
        accepted[0], "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "{out}"
    );
    assert!(accepted[4].contains("server_max_window_bits=8"), "{out}");
    for bits in &args {
        assert!(out.contains(&format!("echoed {bits}")), "{out}");
    }
}

/// `payload` compressed as one permessage-deflate message (sync flush, tail stripped).
fn compress(payload: &[u8], level: u32) -> Vec<u8> {
    let mut compressor = Compress::new_with_window_bits(Compression::new(level), false, 15);
    let mut out = Vec::with_capacity(payload.len() / 100 + 1024);
    let mut consumed = 0;
    loop {
        out.reserve(64 * 1024);
        let before = compressor.total_in();
        compressor
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .unwrap();
        consumed += (compressor.total_in() - before) as usize;
        if consumed == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_closes_with_1009_in_bounded_memory_while_neighbours_echo() {
    const BOMBS: usize = 16;
    // 64 MiB of zeros: about 64 KB compressed; the server's limit is its default 1 MiB.
    let bomb = compress(&vec![0u8; 64 << 20], 9);
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    let frame = encode_masked(true, 0x40 | 0x2, &bomb);
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let pid = server.pid();
    let mut neighbour = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut neighbour, "before").await;
    let peak_before = peak_rss_kib(pid);
    for n in 0..BOMBS {
        let (mut ws, head) = RawWs::connect_with(server.addr, "/echo", OFFER).await;
        assert!(head.contains("permessage-deflate"), "{head}");
        ws.send_raw(&frame).await;
        let (code, reason) = ws.read_close().await;
        assert_eq!(
            (code, reason.as_str()),
            (1009, "message too big"),
            "bomb {n}"
        );
        echo_roundtrip(&mut neighbour, &format!("after bomb {n}")).await;
    }
    let peak_after = peak_rss_kib(pid);
    println!(
        "{BOMBS} bombs of {} KB that inflate to 64 MiB: server peak RSS {peak_before} -> \
         {peak_after} KiB",
        bomb.len() / 1000
    );
    // Each bomb may cost its 1 MiB limit while it inflates, and a little for the
    // compressed bytes in the read buffer: never the 64 MiB.
    assert!(
        peak_after < peak_before + 16 * 1024,
        "peak RSS grew by {} KiB",
        peak_after - peak_before
    );
}

#[tokio::test]
async fn compressed_text_with_invalid_utf8_closes_with_1007_before_the_message_ends() {
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let mut text = b"valid, then ".to_vec();
    text.extend([0xed, 0xa0, 0x80]);
    text.extend(vec![b'x'; 500_000]);
    let compressed = compress(&text, 6);
    let frame = encode_masked(true, 0x40 | 0x1, &compressed);
    let (mut ws, _) = RawWs::connect_with(server.addr, "/echo", OFFER).await;
    // Only the first part of the frame: the bad bytes are in it, the end is not.
    ws.send_raw(&frame[..frame.len() / 2]).await;
    assert_eq!(
        ws.read_close().await,
        (1007, "invalid UTF-8 in text message".to_owned())
    );
}

#[tokio::test]
async fn rsv1_without_compression_negotiated_closes_with_1002() {
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let mut ws = RawWs::connect(server.addr, "/echo").await;
    ws.send_raw(&encode_masked(true, 0x40 | 0x1, &compress(b"hello", 6)))
        .await;
    assert_eq!(
        ws.read_close().await,
        (1002, "reserved bits set without an extension".to_owned())
    );
}
