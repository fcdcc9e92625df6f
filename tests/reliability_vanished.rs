//! Clients that vanish without a close: dropped sockets, reset sockets, sockets that go
//! silent, and sockets that stop reading while the server sends. Each is found (at once,
//! by keep-alive, or by the slow-consumer policy) within its deadline, and afterwards
//! the connection gauge, the hub's sessions, channel members and names are back to zero.
//!
//! The sockets that stop reading are served without keep-alive (a second server on the
//! same hub): they never answer a ping either, so with keep-alive on they could end as
//! idle, and a broken slow-consumer policy would go unseen.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::load::eventually;
use common::scrape::Scrape;
use common::{connect, echo_roundtrip, serve, within, RawWs};
use estuary::{CloseReason, Conn, Handler, Hub, HubStats, Message, Target, WebSocketConfig};
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(300);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(300);
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the flood may take to fill a non-reader's socket buffers and then its
/// queue (16 KiB a millisecond against a few MiB of loopback buffers).
const FILL_TIME: Duration = Duration::from_millis(1000);
/// Scheduling slack on top of every deadline (2 cores, debug build, 300 sockets).
const SLACK: Duration = Duration::from_millis(1500);
/// Sockets of each kind.
const EACH: usize = 100;
/// Sockets that stop reading while their channel is flooded.
const NOT_READING: usize = 20;

/// Joins "room" and takes a unique name; `?flood` also joins "flood". Echoes; reports
/// `on_close` with the socket's `?id=`.
#[derive(Clone)]
struct Member {
    ended: mpsc::UnboundedSender<(String, CloseReason, Instant)>,
}

impl Handler for Member {
    async fn on_open(&mut self, conn: &mut Conn) {
        conn.join("room").await.unwrap();
        if conn.session().query_param("flood").is_some() {
            conn.join("flood").await.unwrap();
        }
        let name = format!("member-{}", conn.session().id());
        conn.register_name(&name)
            .await
            .expect("session ids are unique");
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let _ = conn.send(msg);
    }

    async fn on_close(&mut self, conn: &mut Conn, reason: CloseReason) {
        let id = conn.session().query_param("id").unwrap_or_default();
        let _ = self.ended.send((id.into_owned(), reason, Instant::now()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_are_found_within_the_keepalive_deadline_and_leave_nothing() {
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    let hub = Hub::new();
    let (ended, mut ends) = mpsc::unbounded_channel();
    let config = WebSocketConfig::default()
        .with_keepalive(Some(KEEPALIVE_INTERVAL), KEEPALIVE_TIMEOUT)
        .with_close_timeout(CLOSE_TIMEOUT)
        .with_max_queued_bytes(256 << 10);
    let service = estuary::WebSocketService::new(Member {
        ended: ended.clone(),
    })
    .with_hub(hub.clone())
    .with_config(config.clone());
    let server = serve(service).await;
    // The non-readers' server: the same hub and limits, no keep-alive.
    let no_keepalive = estuary::WebSocketService::new(Member { ended })
        .with_hub(hub.clone())
        .with_config(config.with_keepalive(None, KEEPALIVE_TIMEOUT));
    let flood_server = serve(no_keepalive).await;

    // Healthy clients that keep talking, and answer pings as they read.
    let (stop_talking, talking) = tokio::sync::watch::channel(false);
    let mut healthy = Vec::new();
    for i in 0..5 {
        let mut client = connect(&server.url(&format!("/?id=healthy-{i}"))).await;
        let mut talking = talking.clone();
        healthy.push(tokio::spawn(async move {
            while !*talking.borrow_and_update() {
                echo_roundtrip(&mut client, "still here").await;
                let _ = tokio::time::timeout(Duration::from_millis(100), talking.changed()).await;
            }
            client
        }));
    }
    let mut raw = HashMap::new();
    for kind in ["dropped", "reset", "silent"] {
        for i in 0..EACH {
            let id = format!("{kind}-{i}");
            raw.insert(
                id.clone(),
                RawWs::connect(server.addr, &format!("/?id={id}")).await,
            );
        }
    }
    for i in 0..NOT_READING {
        let id = format!("not-reading-{i}");
        let path = format!("/?id={id}&flood");
        raw.insert(id, RawWs::connect(flood_server.addr, &path).await);
    }
    let total = 5 + 3 * EACH + NOT_READING;
    let connections = || server.shutdown.connections() + flood_server.shutdown.connections();
    // A socket registers for shutdown at its upgrade, and takes its name in `on_open`,
    // a moment later: wait for both.
    eventually(
        "every socket registered and named",
        Duration::from_secs(10),
        || async { (connections() == total && hub.stats().names == total).then_some(()) },
    )
    .await;

    // They vanish, all at once; the silent ones simply stop (their last word was the
    // handshake, just now).
    let vanished = Instant::now();
    for i in 0..EACH {
        drop(raw.remove(&format!("dropped-{i}")).unwrap());
        let reset = raw.remove(&format!("reset-{i}")).unwrap();
        reset.stream.set_zero_linger().unwrap();
        drop(reset);
    }
    // The server floods the non-readers' channel until they are gone.
    let flood_hub = hub.clone();
    let flood = tokio::spawn(async move {
        let chunk = estuary::Prepared::new(Message::binary(vec![7u8; 16 << 10]));
        while flood_hub
            .send_prepared(Target::channel("flood"), &chunk)
            .unwrap()
            > 0
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let mut found = HashMap::new();
    within("every vanished socket is found", async {
        while found.len() < total - 5 {
            let (id, reason, at) = ends.recv().await.expect("the server is up");
            assert!(!id.starts_with("healthy"), "{id} ended: {reason}");
            found.insert(id, (reason, at - vanished));
        }
    })
    .await;
    flood.await.unwrap();

    let keepalive_deadline = KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT + CLOSE_TIMEOUT;
    let mut slowest = HashMap::<&str, Duration>::new();
    let mut reasons = std::collections::BTreeMap::new();
    for (id, (reason, after)) in &found {
        let kind = id.rsplit_once('-').unwrap().0;
        let (ok, deadline) = match kind {
            "dropped" | "reset" => (*reason == CloseReason::ConnectionLost, Duration::ZERO),
            "silent" => (*reason == CloseReason::Idle, keepalive_deadline),
            "not-reading" => (
                *reason == CloseReason::SlowConsumer,
                FILL_TIME + CLOSE_TIMEOUT,
            ),
            other => panic!("unexpected socket {other}"),
        };
        assert!(ok, "{id} ended with {reason}");
        assert!(
            *after <= deadline + SLACK,
            "{id} found {after:?} after it vanished; deadline {deadline:?}"
        );
        let worst = slowest.entry(kind).or_default();
        *worst = (*worst).max(*after);
        *reasons.entry((kind, reason.to_string())).or_insert(0) += 1;
    }
    let silent_first = found
        .iter()
        .filter(|(id, _)| id.starts_with("silent"))
        .map(|(_, (_, after))| *after)
        .min()
        .unwrap();
    assert!(
        silent_first >= KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT,
        "a silent socket was closed before its pong was due: {silent_first:?}"
    );
    println!(
        "vanished: found after at most {slowest:?}; first silent one at {silent_first:?}; \
         reasons {reasons:?}"
    );
    drop(raw);

    // The healthy clients never noticed.
    stop_talking.send(true).unwrap();
    let mut still_here = Vec::new();
    for talking in healthy {
        let mut client = within("a healthy client", talking).await.unwrap();
        echo_roundtrip(&mut client, "still here").await;
        still_here.push(client);
    }
    assert_eq!(
        hub.stats(),
        HubStats {
            sessions: 5,
            users: 5,
            channels: 1,
            names: 5
        }
    );
    assert_eq!(hub.members("room").len(), 5);
    for mut client in still_here {
        client.send(WsMessage::Close(None)).await.unwrap();
        while within("close", client.next()).await.is_some() {}
    }
    let after = eventually(
        "the hub and the registry empty",
        Duration::from_secs(5),
        || async {
            let scrape = Scrape(prometheus.render());
            let empty = hub.stats() == HubStats::default()
                && connections() == 0
                && scrape.sample("estuary_connections") == Some(0.0);
            empty.then_some(scrape)
        },
    )
    .await;
    assert_eq!(
        after.value("estuary_closes_total{code=\"1006\",reason=\"lost\"}"),
        (2 * EACH) as f64
    );
    assert_eq!(
        after.value("estuary_closes_total{code=\"1000\",reason=\"idle\"}"),
        EACH as f64
    );
    assert_eq!(
        after.value("estuary_closes_total{code=\"1008\",reason=\"slow_consumer\"}"),
        NOT_READING as f64
    );
    server.stop().await;
    flood_server.stop().await;
}
