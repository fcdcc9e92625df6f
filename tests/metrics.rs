//! The library's metrics as a Prometheus scrape shows them, after real traffic.

mod common;

use std::time::Duration;

use common::scrape::sample;
use common::{connect, handshake_request, raw_request, serve, within};
use estuary::{handler_fn, Conn, Message, WebSocketService};
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn connections_handshakes_messages_and_closes_are_counted() {
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    // Echoes, except "push": two messages sent from another task, through the connection's
    // queue, once the traffic before them has been reported (which is due within 1 s).
    let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        if msg.as_text() == Some("push") {
            let handle = conn.handle();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1_300)).await;
                for text in ["pushed 1", "pushed 2"] {
                    handle.send(text).unwrap();
                }
            });
        } else {
            let _ = conn.send(msg);
        }
    }));
    let server = serve(echo).await;

    let refused = raw_request(server.addr, &handshake_request("/", "").replace("13", "8")).await;
    assert_eq!(refused.status, 426);

    let mut client = connect(&server.url("/")).await;
    for text in ["one", "two", "three"] {
        client.send(WsMessage::text(text)).await.unwrap();
        within("echo", client.next()).await.unwrap().unwrap();
    }
    client.send(WsMessage::text("push")).await.unwrap();
    for _ in 0..2 {
        within("pushed", client.next()).await.unwrap().unwrap();
    }
    // A connection that stays open reports its traffic too, within a moment.
    let scrape = within("the open connection's traffic is counted", async {
        loop {
            let scrape = prometheus.render();
            if sample(&scrape, "estuary_messages_received_total") == Some(4.0)
                && sample(&scrape, "estuary_messages_sent_total") == Some(5.0)
            {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        sample(&scrape, "estuary_connections"),
        Some(1.0),
        "{scrape}"
    );

    client.close(None).await.unwrap();
    while within("close", client.next()).await.is_some() {}
    let scrape = within("the connection is closed and counted", async {
        loop {
            let scrape = prometheus.render();
            if sample(&scrape, "estuary_connections") == Some(0.0) {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let expect = [
        ("estuary_handshakes_total{outcome=\"accepted\"}", 1.0),
        ("estuary_handshakes_total{outcome=\"426\"}", 1.0),
        ("estuary_messages_received_total", 4.0),
        ("estuary_messages_sent_total", 5.0),
        ("estuary_closes_total{code=\"1005\",reason=\"remote\"}", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(
            sample(&scrape, series),
            Some(value),
            "{series} in\n{scrape}"
        );
    }
    let bytes_in = sample(&scrape, "estuary_bytes_received_total").unwrap();
    assert!(
        bytes_in >= 4.0 * 6.0 + 3.0 + 4.0,
        "at least the masked frames: {bytes_in}"
    );
    server.stop().await;
}
