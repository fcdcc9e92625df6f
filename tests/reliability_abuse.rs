//! What the internet sends: slowloris handshakes, idle keep-alive connections by the
//! thousand from one address, floods of refused handshakes, garbage instead of frames, a
//! client that never reads, and messages that make a handler panic. Each hurts only its
//! own socket (or its own address): the example server (a process of its own, so its
//! memory is its own) goes on serving everyone else, in bounded memory and a bounded log.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::example::ExampleServer;
use common::load::{eventually, next_json};
use common::proc::{need_open_files, peak_rss_kib, rss_kib, status_kib};
use common::scrape::Scrape;
use common::{
    closed_by_server, connect, connect_from_when_free, echo_roundtrip, encode_masked,
    handshake_request, raw_exchange, raw_request, serve, tcp_from, within, RawWs,
};
use estuary::{Conn, Message, WebSocketService};
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusBuilder;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ANY_PORT: &[&str] = &["--bind", "127.0.0.1:0"];

/// Echo clients that keep talking to `url` until `stop`, each checking every echo; how
/// many round trips they made in all.
struct Neighbours {
    stop: Arc<AtomicBool>,
    clients: JoinSet<usize>,
}

impl Neighbours {
    async fn start(url: &str, count: usize) -> Neighbours {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = JoinSet::new();
        for i in 0..count {
            let mut client = connect(url).await;
            let stop = stop.clone();
            clients.spawn(async move {
                let mut trips = 0;
                while !stop.load(Ordering::Relaxed) {
                    echo_roundtrip(&mut client, &format!("neighbour {i} trip {trips}")).await;
                    trips += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                client.close(None).await.unwrap();
                while within("close", client.next()).await.is_some() {}
                trips
            });
        }
        Neighbours { stop, clients }
    }

    /// Stops them; fails if any of them failed, or if one made fewer than `min` trips.
    async fn stop(mut self, min: usize) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        while let Some(trips) = within("a neighbour stops", self.clients.join_next()).await {
            let trips = trips.expect("a neighbour failed");
            assert!(trips >= min, "a neighbour made only {trips} round trips");
            total += trips;
        }
        total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_at_the_header_timeout_while_others_connect_and_echo() {
    const SLOW: usize = 500;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    need_open_files(2 * SLOW as u64 + 100);
    let server = ExampleServer::start("header_read_timeout = \"2s\"", ANY_PORT);
    let request = handshake_request("/echo", "").into_bytes();

    let mut slow = JoinSet::new();
    for i in 0..SLOW {
        let (addr, request) = (server.addr, request.clone());
        // From ten addresses, each under its share of handshakes in progress
        // (max_pending_handshakes_per_ip): the header timeout is what cuts them off.
        let from = IpAddr::from([127, 0, 1, 1 + (i % 10) as u8]);
        slow.spawn(async move {
            let mut stream = tcp_from(from, addr).await;
            let connected = Instant::now();
            let mut sent = 0;
            let mut reply = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // A byte a second; the server is done with us when it closes the socket.
            within("the server cuts the slow client off", async {
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if stream.write_all(&request[sent..=sent]).await.is_err() {
                                break;
                            }
                            sent += 1;
                        }
                        read = stream.read_buf(&mut reply) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => continue,
                        },
                    }
                }
            })
            .await;
            (connected.elapsed(), sent, reply)
        });
    }

    // While they trickle, a normal client connects and echoes, again and again.
    let storm = Instant::now();
    let mut normal = Vec::new();
    while storm.elapsed() < HEADER_TIMEOUT - Duration::from_millis(300) {
        let started = Instant::now();
        let mut client = connect(&server.url("/echo")).await;
        echo_roundtrip(&mut client, "through the storm").await;
        normal.push(started.elapsed());
        client.close(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut cut_off = Vec::new();
    while let Some(done) = slow.join_next().await {
        let (after, sent, reply) = done.unwrap();
        assert!(
            reply.is_empty() || reply.starts_with(b"HTTP/1.1 408"),
            "a slow client got {:?}",
            String::from_utf8_lossy(&reply)
        );
        assert!(sent < request.len(), "a slow client finished its handshake");
        cut_off.push(after);
    }
    cut_off.sort();
    let (first, median, last) = (cut_off[0], cut_off[SLOW / 2], cut_off[SLOW - 1]);
    println!(
        "slowloris: {SLOW} slow clients cut off after {first:.2?} (first), {median:.2?} \
         (median), {last:.2?} (last); {} normal connect+echo during the storm, slowest {:.1?}",
        normal.len(),
        normal.iter().max().unwrap()
    );
    assert!(
        first >= HEADER_TIMEOUT - Duration::from_millis(100),
        "cut off before the header timeout: {first:?}"
    );
    assert!(
        last <= HEADER_TIMEOUT + Duration::from_millis(1500),
        "cut off long after the header timeout: {last:?}"
    );
    assert!(normal.len() >= 5, "{normal:?}");
    assert!(
        normal.iter().all(|took| *took < Duration::from_secs(1)),
        "a normal client waited: {normal:?}"
    );
    let mut client = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut client, "after the storm").await;
}

/// The example server's default share of connections in their HTTP phase for one
/// address (`max_pending_handshakes_per_ip`).
const PENDING_PER_IP: usize = 64;

/// One address opens 1,500 keep-alive connections and keeps them idle after one
/// `GET /health` each, the way an attacker would hold every handshake place. The
/// server gives that address its share and answers the rest 503 and closes them; another
/// address goes on upgrading and echoing throughout, and its health checks pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_from_one_address_leave_another_upgrading_and_echoing() {
    const IDLE: usize = 1500;
    const AT_ONCE: usize = 250;
    need_open_files(2 * IDLE as u64 + 200);
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let attacker = IpAddr::from([127, 0, 0, 2]);
    let health = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

    let mut held = Vec::new();
    let mut refused = 0;
    let mut upgrades = 0;
    for _ in 0..IDLE / AT_ONCE {
        let mut batch = JoinSet::new();
        for _ in 0..AT_ONCE {
            let addr = server.addr;
            batch.spawn(async move {
                let mut stream = tcp_from(attacker, addr).await;
                let response = raw_exchange(&mut stream, health).await;
                if response.status == 503 {
                    assert_eq!(
                        response.body,
                        "too many handshakes in progress from this address\n"
                    );
                    assert_eq!(response.header("retry-after"), Some("1"));
                    assert!(
                        closed_by_server(&mut stream).await,
                        "a refused connection stayed open"
                    );
                }
                (stream, response.status)
            });
        }
        while let Some(done) = within("a batch of idle connections", batch.join_next()).await {
            match done.expect("an idle connection task failed") {
                (stream, 200) => held.push(stream),
                (_, 503) => refused += 1,
                (_, status) => panic!("GET /health from the attacker got {status}"),
            }
        }
        // Between batches, another address upgrades and echoes, and is healthy.
        let mut client = connect(&server.url("/echo")).await;
        echo_roundtrip(&mut client, "while one address hogs").await;
        client.close(None).await.unwrap();
        upgrades += 1;
    }
    assert_eq!(held.len(), PENDING_PER_IP);
    assert_eq!(refused, IDLE - PENDING_PER_IP);

    let healthy = raw_request(server.addr, health).await;
    assert_eq!((healthy.status, healthy.body.as_str()), (200, "OK"));
    // The connections the attacker kept are served as any keep-alive connection is.
    let again = raw_exchange(&mut held[0], health).await;
    assert_eq!(again.status, 200);
    // And once they go, the address has its places back.
    drop(held);
    let mut client = connect_from_when_free(attacker, &server.url("/echo")).await;
    echo_roundtrip(&mut client, "after letting go").await;
    println!(
        "idle keep-alive: {IDLE} connections from one address, {PENDING_PER_IP} kept, \
         {refused} refused with 503 and closed; {upgrades} upgrades from another address meanwhile"
    );
}

/// A handshake every server refuses: version 8 gets 426.
fn refused_handshake() -> String {
    handshake_request("/echo", "").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")
}

/// Sends a refused handshake from `from`: the server must answer 426 with
/// `Connection: close` and close the connection.
async fn refused_and_closed(from: IpAddr, addr: std::net::SocketAddr) {
    let mut stream = tcp_from(from, addr).await;
    let response = raw_exchange(&mut stream, refused_handshake()).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("connection"), Some("upgrade, close"));
    assert!(
        closed_by_server(&mut stream).await,
        "a refused handshake's connection stayed open"
    );
}

/// The refusals the server logged: how many lines, and the sum of what they say was left
/// out (`suppressed=N`).
fn logged_refusals(logs: &str) -> (usize, usize) {
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("websocket handshake refused"))
        .collect();
    let suppressed = lines
        .iter()
        .map(|line| {
            let value = line
                .split("suppressed=")
                .nth(1)
                .expect("a suppressed= field");
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().expect("suppressed is a count")
        })
        .sum();
    (lines.len(), suppressed)
}

/// 2,000 handshakes the server refuses, 50 at a time from one address: each connection
/// is answered 426 with `Connection: close` and closed by the server, the log shows a
/// few lines a second that account for every refusal, and another address upgrades and
/// echoes throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_handshakes_closes_each_connection_and_logs_a_bounded_few() {
    const FLOOD: usize = 2000;
    const AT_ONCE: usize = 50;
    need_open_files(4 * AT_ONCE as u64 + 200);
    let server = ExampleServer::start_with_defaults(ANY_PORT);
    let attacker = IpAddr::from([127, 0, 0, 2]);

    let started = Instant::now();
    for round in 0..FLOOD / AT_ONCE {
        let mut batch = JoinSet::new();
        for _ in 0..AT_ONCE {
            batch.spawn(refused_and_closed(attacker, server.addr));
        }
        while let Some(done) = within("a batch of refused handshakes", batch.join_next()).await {
            done.expect("a refused handshake's check failed");
        }
        if round % 8 == 0 {
            let mut client = connect(&server.url("/echo")).await;
            echo_roundtrip(&mut client, "through the flood").await;
            client.close(None).await.unwrap();
        }
    }
    let took = started.elapsed();
    // One more, a window later: its line counts what the flood's last window left out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refused_and_closed(attacker, server.addr).await;

    let (lines, suppressed) = within("every refusal accounted for in the log", async {
        loop {
            let counted = logged_refusals(&server.logs());
            if counted.0 + counted.1 > FLOOD {
                return counted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    println!(
        "refusal flood: {} refused handshakes in {took:.2?}, {lines} log lines, \
         {suppressed} counted as suppressed",
        FLOOD + 1
    );
    assert_eq!(
        lines + suppressed,
        FLOOD + 1,
        "every refusal is logged or counted"
    );
    let windows = took.as_secs() as usize + 2;
    assert!(
        lines <= 10 * (windows + 1),
        "{lines} lines for a flood of {took:.2?}"
    );
    let mut client = connect(&server.url("/echo")).await;
    echo_roundtrip(&mut client, "after the flood").await;
}

/// A frame header with a 64-bit length and a mask, and no payload.
fn header_declaring(opcode: u8, len: u64) -> Vec<u8> {
    let mut header = vec![0x80 | opcode, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header
}

/// A close frame's code and reason; `None` when the socket ended without one.
type Ending = Option<(u16, String)>;

/// Sends `bytes` on a fresh socket and reads what comes back: the close frame's code and
/// reason, or `None` when the server closed the socket without one.
async fn send_garbage(addr: std::net::SocketAddr, bytes: &[u8], then_eof: bool) -> Ending {
    let mut ws = RawWs::connect(addr, "/echo").await;
    ws.send_raw(bytes).await;
    if then_eof {
        ws.stream.shutdown().await.unwrap();
    }
    loop {
        match ws.read_frame().await {
            Some(frame) if frame.opcode == 8 => return Some(frame.close()),
            Some(_) => continue,
            None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_own_socket_with_the_right_code_and_no_large_allocation() {
    // A max_message_size of 64 MiB: a declared length up to it is legal. The hundred-odd
    // garbage sockets below all connect from 127.0.0.1 at once; on a loaded machine more
    // than the default 64 of them can be in their handshake together, and this test is
    // about frames, not the per-address handshake limit (the idle keep-alive test above
    // is).
    let server = ExampleServer::start(
        "max_message_size = 67108864\nmax_pending_handshakes_per_ip = 1024",
        ANY_PORT,
    );
    let pid = server.pid();
    let neighbours = Neighbours::start(&server.url("/echo"), 8).await;
    let rss_before = rss_kib(pid);
    let peak_before = peak_rss_kib(pid);

    let protocol = |reason: &str| Some((1002, reason.to_owned()));
    let mut cases: Vec<(String, Vec<u8>, Ending)> = vec![
        (
            "a length of 2^63".into(),
            header_declaring(2, 1 << 63),
            protocol("payload length has its top bit set"),
        ),
        (
            "a length of 2^63 - 1".into(),
            header_declaring(2, (1 << 63) - 1),
            Some((1009, "message too big".into())),
        ),
        (
            "a text frame of 2^63 - 1 in a fragmented message".into(),
            [
                encode_masked(false, 1, b"start"),
                header_declaring(0, (1 << 63) - 1),
            ]
            .concat(),
            Some((1009, "message too big".into())),
        ),
        (
            "an unmasked frame".into(),
            vec![0x81, 0x02, b'h', b'i'],
            protocol("client frames must be masked"),
        ),
        (
            "reserved bits".into(),
            {
                let mut frame = encode_masked(true, 1, b"hi");
                frame[0] |= 0x40;
                frame
            },
            protocol("reserved bits set without an extension"),
        ),
        (
            "invalid UTF-8".into(),
            encode_masked(true, 1, b"ok \xff"),
            Some((1007, "invalid UTF-8 in text message".into())),
        ),
        (
            "a ping of 126 bytes".into(),
            encode_masked(true, 9, &[0; 126]),
            protocol("control frame payload over 125 bytes"),
        ),
        (
            "a fragmented ping".into(),
            encode_masked(false, 9, b"x"),
            protocol("control frames must not be fragmented"),
        ),
        (
            "a continuation with no message".into(),
            encode_masked(true, 0, b"x"),
            protocol("continuation frame without a message"),
        ),
        (
            "a close frame of 1 byte".into(),
            encode_masked(true, 8, &[3]),
            protocol("close frame payload of 1 byte"),
        ),
        (
            "close code 1005 on the wire".into(),
            encode_masked(true, 8, &1005u16.to_be_bytes()),
            protocol("invalid close code"),
        ),
    ];
    for opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        cases.push((
            format!("reserved opcode {opcode:#x}"),
            encode_masked(true, opcode, b"x"),
            protocol("reserved opcode"),
        ));
    }
    let mut garbage = JoinSet::new();
    for (name, bytes, expected) in cases {
        let addr = server.addr;
        garbage.spawn(async move { (name, send_garbage(addr, &bytes, false).await, expected) });
    }
    // Truncated: the peer stops half-way and leaves; the server just lets go.
    for (name, bytes) in [
        ("half a header", vec![0x81]),
        ("a header without its mask", vec![0x81, 0x85, 1, 2]),
        ("a 64-bit length cut short", vec![0x82, 0xFF, 0, 0, 0]),
        ("100 bytes declared, 10 sent", {
            let mut frame = encode_masked(true, 2, &[9; 100]);
            frame.truncate(2 + 4 + 10);
            frame
        }),
        ("64 MiB - 1 declared, 10 sent", {
            let mut frame = header_declaring(2, (64 << 20) - 1);
            frame.extend_from_slice(&[0; 10]);
            frame
        }),
    ] {
        let addr = server.addr;
        garbage.spawn(async move {
            (
                name.to_owned(),
                send_garbage(addr, &bytes, true).await,
                None,
            )
        });
    }
    // Random bytes: whatever they happen to say, a protocol error, a too-big message, or
    // a frame still waiting for its payload when the peer leaves.
    let mut random_closes = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for i in 0..40 {
        let mut bytes = vec![0u8; rng.random_range(1..4096)];
        rng.fill(&mut bytes[..]);
        // Half of them get past the first checks (no reserved bits, masked), so that
        // opcodes and lengths are random too.
        if i % 2 == 0 {
            bytes[0] &= 0x8F;
            if let Some(second) = bytes.get_mut(1) {
                *second |= 0x80;
            }
        }
        let addr = server.addr;
        random_closes.push(tokio::spawn(async move {
            (
                format!("random bytes #{i}"),
                send_garbage(addr, &bytes, true).await,
            )
        }));
    }

    while let Some(done) = garbage.join_next().await {
        let (name, got, expected) = done.unwrap();
        assert_eq!(got, expected, "{name}");
    }
    let mut outcomes = std::collections::BTreeMap::new();
    for random in random_closes {
        let (name, got) = random.await.unwrap();
        if let Some((code, _)) = &got {
            assert!(matches!(code, 1002 | 1007 | 1009), "{name}: {got:?}");
        }
        *outcomes.entry(got.map(|(code, _)| code)).or_insert(0) += 1;
    }

    let trips = neighbours.stop(1).await;
    let rss_after = rss_kib(pid);
    let peak_after = peak_rss_kib(pid);
    println!(
        "garbage: random-byte outcomes by close code (None: let go at EOF) {outcomes:?}; \
         neighbours made {trips} round trips meanwhile; server RSS {rss_before} -> \
         {rss_after} KiB, peak {peak_before} -> {peak_after} KiB, address space {} KiB",
        status_kib(pid, "VmSize")
    );
    assert!(
        peak_after < peak_before + 16 * 1024,
        "the peak RSS grew by {} KiB",
        peak_after - peak_before
    );
    let scrape = Scrape::get(server.addr, "/metrics").await;
    assert_eq!(scrape.value("estuary_handler_panics_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_declare_a_large_payload_and_stall_hold_no_large_allocation() {
    const STALLED: u64 = 16;
    const DECLARED: u64 = (64 << 20) - 1;
    // A max_message_size of 64 MiB: the declared length is legal.
    let server = ExampleServer::start("max_message_size = 67108864", ANY_PORT);
    let pid = server.pid();
    let mut neighbour = connect(&server.url("/echo")).await;
    let (space_before, rss_before) = (status_kib(pid, "VmSize"), rss_kib(pid));
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut ws = RawWs::connect(server.addr, "/echo").await;
        let mut frame = header_declaring(2, DECLARED);
        frame.extend_from_slice(&[0; 10]);
        ws.send_raw(&frame).await;
        stalled.push(ws);
    }
    // The server has read what they sent once it answers a client behind them.
    echo_roundtrip(&mut neighbour, "after the stalled frames").await;
    let (space_after, rss_after) = (status_kib(pid, "VmSize"), rss_kib(pid));
    println!(
        "{STALLED} sockets each declaring a frame of {DECLARED} bytes and sending 10: server \
         address space {space_before} -> {space_after} KiB, RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );
    // A buffer sized by what arrived, not by what the header promised: a peer that
    // declares 64 MiB and sends 10 bytes must not cost 64 MiB of memory, even of
    // memory not yet touched (with strict overcommit that is an allocation failure).
    assert!(
        space_after < space_before + STALLED * 1024,
        "{STALLED} stalled frames grew the server's address space by {} MiB",
        (space_after - space_before) >> 10
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_as_a_slow_consumer_in_bounded_memory() {
    /// The engine's default outbound queue bound, and its close timeout.
    const QUEUE: u64 = 8 << 20;
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Far more than the queue and both socket buffers hold.
    const FLOOD: u64 = 4 * QUEUE;
    let server = ExampleServer::start("", ANY_PORT);
    let pid = server.pid();

    // Joins, then never reads a byte.
    let mut never_reads = RawWs::connect(server.addr, "/ws?join=flood").await;
    let mut flooder = connect(&server.url("/ws?join=flood")).await;
    assert_eq!(next_json(&mut flooder).await["type"], "welcome");
    assert_eq!(next_json(&mut flooder).await["type"], "joined");
    let rss_before = rss_kib(pid);
    let (mut tx, mut rx) = flooder.split();
    let heard = Arc::new(AtomicUsize::new(0));
    let reader = {
        let heard = heard.clone();
        tokio::spawn(async move {
            while let Some(Ok(WsMessage::Text(_))) = rx.next().await {
                heard.fetch_add(1, Ordering::Relaxed);
            }
            rx
        })
    };
    let say = serde_json::json!({"type": "say", "channel": "flood", "text": "x".repeat(2000)})
        .to_string();
    let closed = "estuary_closes_total{code=\"1008\",reason=\"slow_consumer\"}";
    let mut said = 0usize;
    let started = Instant::now();
    let mut detected = None;
    while detected.is_none() && (said as u64) * (say.len() as u64) < FLOOD {
        for _ in 0..200 {
            tx.send(WsMessage::text(say.clone())).await.unwrap();
        }
        said += 200;
        if Scrape::get(server.addr, "/metrics").await.value(closed) == 1.0 {
            detected = Some(started.elapsed());
        }
    }
    let flooded = started.elapsed();
    // Given up within the close timeout at the latest: its close frame cannot be written
    // to a socket nobody reads.
    let detected = match detected {
        Some(at) => at,
        None => {
            eventually(
                &format!(
                    "the server lets go of a client that has not read {} MiB: the \
                     slow-consumer policy never disconnected it",
                    FLOOD >> 20
                ),
                CLOSE_TIMEOUT + Duration::from_secs(3),
                || async {
                    let scrape = Scrape::get(server.addr, "/metrics").await;
                    (scrape.value(closed) == 1.0).then(|| started.elapsed())
                },
            )
            .await
        }
    };
    // What it finds when it reads at last: what the buffers held, then the end (with the
    // close frame, if it fit).
    match within("the end of the slow socket", async {
        loop {
            match never_reads.read_frame().await {
                Some(frame) if frame.opcode == 8 => return Some(frame.close()),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    {
        None => {}
        Some(close) => assert_eq!(close, (1008, "slow consumer".to_owned())),
    }

    // The flooder heard all it said, and goes on, alone in the channel.
    eventually(
        "the flooder hears itself",
        Duration::from_secs(10),
        || async { (heard.load(Ordering::Relaxed) == said).then_some(()) },
    )
    .await;
    // The reader would wait for more; the flooder stays in the channel.
    reader.abort();
    let mut observer = connect(&server.url("/ws")).await;
    assert_eq!(next_json(&mut observer).await["type"], "welcome");
    let members = r#"{"type":"members","channel":"flood"}"#;
    observer.send(WsMessage::text(members)).await.unwrap();
    let answer = next_json(&mut observer).await;
    assert_eq!(
        answer["members"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );

    let peak = peak_rss_kib(pid);
    println!(
        "slow consumer: {said} messages ({} MiB) pushed in {flooded:.1?}, disconnected \
         {detected:.1?} after the flood began; server RSS {rss_before} KiB before, at most \
         {peak} KiB",
        (said as u64 * say.len() as u64) >> 20,
    );
    assert!(
        peak < rss_before + (QUEUE + (24 << 20)) / 1024,
        "RSS went from {rss_before} KiB to {peak} KiB"
    );
}

/// Panics on "panic", echoes the rest.
#[derive(Clone)]
struct Fragile;

impl estuary::Handler for Fragile {
    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        if msg.as_text() == Some("panic") {
            panic!("the magic message");
        }
        let _ = conn.send(msg);
    }
}

/// The tests that read the process-wide metrics take turns.
static METRICS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// Echoers doing round trips while victims send the magic message at staggered moments:
/// every victim gets 1011 "internal error", every echoer finishes undisturbed, and the
/// metrics count each panic and each 1011 close.
async fn panics_under_load<H: estuary::Handler>(handler: H) {
    const ECHOERS: usize = 20;
    const VICTIMS: usize = 20;
    const TRIPS: usize = 100;
    let _turn = METRICS.lock().await;
    let before = Scrape(prometheus().render());
    let server = serve(WebSocketService::new(handler)).await;

    let mut echoers = JoinSet::new();
    for i in 0..ECHOERS {
        let mut client = connect(&server.url("/")).await;
        echoers.spawn(async move {
            for trip in 0..TRIPS {
                echo_roundtrip(&mut client, &format!("echoer {i} trip {trip}")).await;
            }
            client.close(None).await.unwrap();
            while within("close", client.next()).await.is_some() {}
        });
    }
    let mut victims = JoinSet::new();
    for i in 0..VICTIMS {
        let mut client = connect(&server.url("/")).await;
        victims.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            echo_roundtrip(&mut client, "before").await;
            client.send(WsMessage::text("panic")).await.unwrap();
            match within("the close", client.next()).await {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    assert_eq!(frame.code, CloseCode::Error);
                    assert_eq!(frame.reason.as_str(), "internal error");
                }
                other => panic!("expected a 1011 close, got {other:?}"),
            }
            assert!(within("end of stream", client.next()).await.is_none());
        });
    }
    while let Some(victim) = victims.join_next().await {
        victim.expect("a victim saw its 1011");
    }
    while let Some(echoer) = echoers.join_next().await {
        echoer.expect("an echoer was not disturbed");
    }
    let after = eventually(
        "every socket counted closed",
        Duration::from_secs(5),
        || async {
            let scrape = Scrape(prometheus().render());
            (scrape.value("estuary_connections") == before.value("estuary_connections"))
                .then_some(scrape)
        },
    )
    .await;
    let delta = |series: &str| after.value(series) - before.value(series);
    assert_eq!(delta("estuary_handler_panics_total"), VICTIMS as f64);
    assert_eq!(
        delta("estuary_closes_total{code=\"1011\",reason=\"panic\"}"),
        VICTIMS as f64
    );
    assert_eq!(
        delta("estuary_messages_received_total"),
        (ECHOERS * TRIPS + VICTIMS * 2) as f64
    );
    // And the server takes new clients.
    let mut client = connect(&server.url("/")).await;
    echo_roundtrip(&mut client, "after").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_under_load_gives_1011_to_its_client_only() {
    panics_under_load(Fragile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fn_closure_under_load_gives_1011_to_its_client_only() {
    panics_under_load(estuary::handler_fn(|conn: &mut Conn, msg: Message| {
        if msg.as_text() == Some("panic") {
            panic!("the magic message");
        }
        let _ = conn.send(msg);
    }))
    .await;
}
