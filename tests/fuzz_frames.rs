//! Property tests of the frame codec, driven through a real socket into the connection
//! engine (the codec is not public): any bytes a client sends end in a valid close frame
//! or a closed socket, never in a panic; valid messages come back whole and in order
//! however they are fragmented, masked and split across reads. Each connection's
//! `on_close` must run, with a reason that matches what the client saw: a connection
//! task that died (no `on_close`) or a handler that panicked (`HandlerPanic`) fails the
//! property. Bounded by `PROPTEST_CASES` (256 unless set), one connection per case.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use common::{serve, RawFrame, RawWs};
use estuary::{CloseReason, Conn, Handler, Message, WebSocketConfig, WebSocketService};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// The largest message the fuzzing server takes.
const MAX_MESSAGE: usize = 64 << 10;

/// `PROPTEST_CASES` cases (256 unless set), and no regression files in the source tree.
fn cases() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Where each case's `on_close` report goes, by the case's number.
type Waiting = Arc<StdMutex<HashMap<u64, oneshot::Sender<CloseReason>>>>;

/// Echoes every message; reports `on_close` to the case named by `?case=`.
#[derive(Clone)]
struct Echo {
    waiting: Waiting,
}

impl Handler for Echo {
    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let _ = conn.send(msg);
    }

    async fn on_close(&mut self, conn: &mut Conn, reason: CloseReason) {
        let case: u64 = conn
            .session()
            .query_param("case")
            .and_then(|n| n.parse().ok())
            .expect("every case connects with ?case=");
        let report = self.waiting.lock().unwrap().remove(&case);
        // A case that gave up waiting has failed already.
        if let Some(report) = report {
            let _ = report.send(reason);
        }
    }
}

/// The fuzzing server: its runtime, its address, and the cases waiting for `on_close`.
struct Fuzzed {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    waiting: Waiting,
}

/// One echo server for every case, on a runtime of its own.
fn server() -> &'static Fuzzed {
    static SERVER: OnceLock<Fuzzed> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let config = WebSocketConfig::default()
            .with_max_message_size(MAX_MESSAGE)
            .with_close_timeout(Duration::from_millis(300))
            .with_keepalive(None, Duration::from_secs(1));
        let waiting = Waiting::default();
        let echo = WebSocketService::new(Echo {
            waiting: waiting.clone(),
        })
        .with_config(config);
        let server = runtime.block_on(serve(echo));
        let addr = server.addr;
        // Serves until the test process exits.
        std::mem::forget(server);
        Fuzzed {
            runtime,
            addr,
            waiting,
        }
    })
}

/// One case's connection, and its `on_close` report to come.
struct Case {
    ws: RawWs,
    closed: oneshot::Receiver<CloseReason>,
}

impl Fuzzed {
    /// Connects for a new case.
    async fn connect(&self) -> Case {
        static CASES: AtomicU64 = AtomicU64::new(0);
        let case = CASES.fetch_add(1, Ordering::Relaxed);
        let (report, closed) = oneshot::channel();
        self.waiting.lock().unwrap().insert(case, report);
        let ws = RawWs::connect(self.addr, &format!("/?case={case}")).await;
        Case { ws, closed }
    }
}

impl Case {
    /// Why the connection ended, as its `on_close` said; fails the test if `on_close`
    /// does not run within a few seconds (the close timeout is 300 ms).
    async fn on_close(self) -> CloseReason {
        tokio::time::timeout(Duration::from_secs(5), self.closed)
            .await
            .expect("on_close ran (or else the connection task died)")
            .expect("the server reports every on_close")
    }
}

/// A client frame: any header bits, a mask or none, and a declared length that may lie.
#[derive(Debug, Clone)]
struct RawFrameSpec {
    first: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
    declared: Option<u64>,
}

impl RawFrameSpec {
    fn encode(&self) -> Vec<u8> {
        let len = self.declared.unwrap_or(self.payload.len() as u64);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut out = vec![self.first];
        match len {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= u16::MAX as u64 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        out.extend(mask_payload(self.mask, &self.payload, &mut |bytes| {
            bytes.to_vec()
        }));
        out
    }
}

/// `mask` (if any) followed by `payload` masked with it.
fn mask_payload(
    mask: Option<[u8; 4]>,
    payload: &[u8],
    plain: &mut dyn FnMut(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    match mask {
        Some(mask) => mask
            .iter()
            .copied()
            .chain(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]))
            .collect(),
        None => plain(payload),
    }
}

/// A masked frame with FIN, no reserved bits, and a true length.
fn frame(fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    RawFrameSpec {
        first: (fin as u8) << 7 | opcode,
        mask: Some(mask),
        payload: payload.to_vec(),
        declared: None,
    }
    .encode()
}

fn raw_frame() -> impl Strategy<Value = RawFrameSpec> {
    let first = prop_oneof![
        // Well-formed first bytes: FIN or not, a defined opcode.
        4 => (any::<bool>(), prop_oneof![Just(0u8), Just(1), Just(2), Just(8), Just(9), Just(10)])
            .prop_map(|(fin, op)| (fin as u8) << 7 | op),
        1 => any::<u8>(),
    ];
    let payload = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => (0u16..1000u16).prop_flat_map(|code| {
            "[ -~]{0,20}".prop_map(move |reason| [&code.to_be_bytes()[..], reason.as_bytes()].concat())
        }),
    ];
    let declared = prop_oneof![
        6 => Just(None),
        1 => prop_oneof![
            Just(u64::MAX),
            Just(1u64 << 63),
            Just((1u64 << 63) - 1),
            Just(MAX_MESSAGE as u64 + 1),
            0u64..300,
        ]
        .prop_map(Some),
    ];
    (
        first,
        proptest::option::weighted(0.9, any::<[u8; 4]>()),
        payload,
        declared,
    )
        .prop_map(|(first, mask, payload, declared)| RawFrameSpec {
            first,
            mask,
            payload,
            declared,
        })
}

/// Writes `bytes` in `pieces` writes a moment apart (so the server reads them in parts),
/// then half-closes when `eof`. Returns false if the server closed its socket before it
/// took them all: it does that once it has answered a Close frame, and bytes a client
/// sends after its own Close meet a reset.
async fn send_in_pieces(ws: &mut RawWs, bytes: &[u8], pieces: &[usize], eof: bool) -> bool {
    // Each piece leaves at once, rather than after the ACK of the one before.
    ws.stream.set_nodelay(true).unwrap();
    let mut cuts: Vec<usize> = pieces.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort();
    let mut at = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        if cut > at {
            if let Err(e) = ws.stream.write_all(&bytes[at..cut]).await {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ),
                    "writing to the server: {e}"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            at = cut;
        }
    }
    if eof {
        // The server may have closed already, after a Close frame among the bytes.
        let _ = ws.stream.shutdown().await;
    }
    true
}

/// Every frame the server sends until it closes the socket.
async fn read_to_end(ws: &mut RawWs) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    while let Some(frame) = ws.read_frame().await {
        frames.push(frame);
    }
    frames
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_bytes_end_in_a_valid_close_frame_or_a_closed_socket_never_1011(
        frames in proptest::collection::vec(raw_frame(), 0..6),
        tail in proptest::collection::vec(any::<u8>(), 0..20),
        pieces in proptest::collection::vec(any::<usize>(), 0..3),
    ) {
        let server = server();
        let mut bytes: Vec<u8> = frames.iter().flat_map(RawFrameSpec::encode).collect();
        bytes.extend_from_slice(&tail);
        let (taken, received, reason) = server.runtime.block_on(async {
            let mut case = server.connect().await;
            let taken = send_in_pieces(&mut case.ws, &bytes, &pieces, true).await;
            let received = read_to_end(&mut case.ws).await;
            (taken, received, case.on_close().await)
        });
        prop_assert_ne!(&reason, &CloseReason::HandlerPanic, "{:?}", received);
        // The server stops reading only after it has said why, in a close frame.
        prop_assert!(
            taken || received.iter().any(|frame| frame.opcode == 8),
            "the server closed without a close frame: {received:?}"
        );
        let mut close = None;
        for frame in &received {
            prop_assert!(close.is_none(), "a frame after the close frame: {:?}", received);
            prop_assert!(frame.fin, "the server does not fragment: {frame:?}");
            match frame.opcode {
                1 | 2 | 10 => {}
                8 => {
                    // The code the server sent, 1005 for none.
                    let mut code = 1005;
                    if !frame.payload.is_empty() {
                        prop_assert!(frame.payload.len() >= 2, "{frame:?}");
                        let text;
                        (code, text) = frame.close();
                        prop_assert!(
                            matches!(code, 1000..=1003 | 1007..=1010 | 1012..=1014 | 3000..=4999),
                            "close code {code} ({text})"
                        );
                    }
                    close = Some(code);
                }
                other => prop_assert!(false, "opcode {other}: {frame:?}"),
            }
        }
        // `on_close` learns what the client was told: the code of the server's close frame
        // (its answer to the client's close echoes the client's code), or a lost connection
        // when there was none.
        match close {
            Some(code) => prop_assert_eq!(reason.code(), code, "{} / {:?}", reason, received),
            None => prop_assert_eq!(&reason, &CloseReason::ConnectionLost, "{:?}", received),
        }
    }
}

/// A message as the client sends it: its fragments (with a ping after some of them).
#[derive(Debug, Clone)]
struct Fragmented {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    pings: Vec<Option<Vec<u8>>>,
    masks: Vec<[u8; 4]>,
}

fn fragmented() -> impl Strategy<Value = Fragmented> {
    let payload = prop_oneof![
        any::<String>().prop_map(|s| (true, s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| (false, b)),
    ];
    (
        payload,
        proptest::collection::vec(any::<usize>(), 0..4),
        proptest::collection::vec(
            proptest::option::weighted(0.3, proptest::collection::vec(any::<u8>(), 0..=125)),
            4,
        ),
        proptest::collection::vec(any::<[u8; 4]>(), 5),
    )
        .prop_map(|((text, payload), cuts, pings, masks)| Fragmented {
            text,
            payload,
            cuts,
            pings,
            masks,
        })
}

impl Fragmented {
    /// The frames, and what the server answers: a pong per ping, the echo at the end.
    fn encode(&self) -> (Vec<u8>, Vec<RawFrame>) {
        let mut cuts: Vec<usize> = self
            .cuts
            .iter()
            .map(|c| c % (self.payload.len() + 1))
            .collect();
        cuts.sort();
        cuts.dedup();
        let mut bounds = vec![0];
        bounds.extend(
            cuts.into_iter()
                .filter(|&c| c > 0 && c < self.payload.len()),
        );
        bounds.push(self.payload.len());
        let parts: Vec<&[u8]> = bounds
            .windows(2)
            .map(|w| &self.payload[w[0]..w[1]])
            .collect();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let opcode = match (i, self.text) {
                (0, true) => 1,
                (0, false) => 2,
                _ => 0,
            };
            bytes.extend(frame(last, opcode, self.masks[i % 5], part));
            if let (false, Some(Some(ping))) = (last, self.pings.get(i)) {
                // A control frame between fragments (RFC 6455 5.4).
                bytes.extend(frame(true, 9, self.masks[(i + 1) % 5], ping));
                expected.push(RawFrame {
                    fin: true,
                    opcode: 10,
                    payload: ping.clone(),
                });
            }
        }
        expected.push(RawFrame {
            fin: true,
            opcode: if self.text { 1 } else { 2 },
            payload: self.payload.clone(),
        });
        (bytes, expected)
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn valid_messages_come_back_whole_and_in_order_however_fragmented_and_split(
        messages in proptest::collection::vec(fragmented(), 1..5),
        pieces in proptest::collection::vec(any::<usize>(), 0..4),
    ) {
        let server = server();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for message in &messages {
            let (frames, answers) = message.encode();
            bytes.extend(frames);
            expected.extend(answers);
        }
        bytes.extend(frame(true, 8, [9, 8, 7, 6], &1000u16.to_be_bytes()));
        expected.push(RawFrame { fin: true, opcode: 8, payload: 1000u16.to_be_bytes().to_vec() });
        let (received, reason) = server.runtime.block_on(async {
            let mut case = server.connect().await;
            assert!(send_in_pieces(&mut case.ws, &bytes, &pieces, false).await);
            (read_to_end(&mut case.ws).await, case.on_close().await)
        });
        prop_assert_eq!(received, expected);
        prop_assert_eq!(reason, CloseReason::Remote { code: 1000, reason: String::new() });
    }
}
