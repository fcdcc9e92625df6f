//! Channel history's metrics as a Prometheus scrape shows them: publications stored, and
//! recoveries by whether they were complete. A binary of its own: the recorder is the
//! process's, and no other test may add to its counts.

mod common;

use std::time::Duration;

use common::history::{historian, join};
use common::scrape::sample;
use estuary::{History, Hub, Position, Target};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::test]
async fn publications_stored_and_recoveries_complete_and_incomplete_are_counted() {
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    let hub = Hub::builder()
        .history("counted", History::new(10, Duration::from_secs(60)))
        .build();
    let server = historian(&hub).await;
    let (client, _, joined) = join(&server, "counted", None).await;
    let start = joined.position.unwrap();
    for i in 0..5 {
        hub.send(Target::channel("counted"), format!("{i}"))
            .unwrap();
    }
    hub.send(Target::channel("not-counted"), "no history")
        .unwrap();
    drop(client);
    let (client, recovered, joined) = join(&server, "counted", Some(&start)).await;
    assert!(joined.complete);
    assert_eq!(recovered.len(), 5);
    let forged = Position::new(1, "never-this-one");
    let (other, _, joined) = join(&server, "counted", Some(&forged)).await;
    assert!(!joined.complete);
    drop((client, other));
    let scrape = prometheus.render();
    assert_eq!(
        sample(&scrape, "estuary_history_stored_total"),
        Some(5.0),
        "{scrape}"
    );
    for outcome in ["complete", "incomplete"] {
        let series = format!("estuary_history_recoveries_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&scrape, &series), Some(1.0), "{series}: {scrape}");
    }
    server.stop().await;
}
