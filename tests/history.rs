//! Channel history in-process: a client that rejoins with the position it saw last gets
//! exactly what it missed, in order, then live publications, none twice, even while
//! publishing goes on; a position the history no longer covers, or one of a stream that
//! was lost, recovers incompletely and says so.

mod common;

use std::time::Duration;

use common::history::{historian, join, next_line, publish_numbered, say, Line};
use common::nodes::{next_text, quiet};
use common::within;
use estuary::{History, Hub, Position, Target};

fn minute() -> Duration {
    Duration::from_secs(60)
}

/// Waits until `hub` has no member in `channel`: a dropped client is gone.
async fn until_gone(hub: &Hub, channel: &str) {
    within("the member leaves", async {
        while !hub.members(channel).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_member_that_rejoins_with_its_position_gets_exactly_what_it_missed_then_live_ones() {
    let hub = Hub::builder()
        .history("room", History::new(5000, minute()))
        .build();
    let server = historian(&hub).await;
    let (mut alice, recovered, joined) = join(&server, "room", None).await;
    assert!(recovered.is_empty());
    assert!(joined.complete);
    let start = joined.position.expect("the channel keeps history");
    assert_eq!(start.offset, 0, "nothing published yet");

    hub.send(Target::channel("room"), "before").unwrap();
    let seen = next_line(&mut alice).await;
    assert_eq!(seen.position, Position::new(1, start.epoch.clone()));
    assert!(!seen.recovered);
    drop(alice);
    until_gone(&hub, "room").await;

    for i in 0..1000 {
        hub.send(Target::channel("room"), format!("missed {i}"))
            .unwrap();
    }
    let (mut alice, recovered, joined) = join(&server, "room", Some(&seen.position)).await;
    assert_eq!(recovered.len(), 1000);
    for (i, line) in recovered.iter().enumerate() {
        let expected = Line {
            position: Position::new(i as u64 + 2, start.epoch.clone()),
            recovered: true,
            text: format!("missed {i}"),
        };
        assert_eq!(line, &expected);
    }
    assert!(joined.complete, "{joined:?}");
    assert_eq!(joined.missed, 1000);
    assert_eq!(
        joined.position,
        Some(Position::new(1001, start.epoch.clone()))
    );

    for i in 0..10 {
        hub.send(Target::channel("room"), format!("live {i}"))
            .unwrap();
    }
    for i in 0..10 {
        let line = next_line(&mut alice).await;
        assert_eq!(line.position.offset, 1002 + i);
        assert_eq!(line.text, format!("live {i}"));
        assert!(!line.recovered);
    }
    quiet(&mut alice).await;
    drop(alice);
    let stats = hub.history_stats();
    assert_eq!(stats.stored, 1011, "{stats:?}");
    assert_eq!(
        (stats.recoveries_complete, stats.recoveries_incomplete),
        (1, 0)
    );
    server.stop().await;
}

/// A publisher sends 6,000 numbered lines while a member drops its socket and rejoins
/// from the last position it read, five times: it reads every number once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_during_rejoins_loses_nothing_and_repeats_nothing() {
    const LINES: u64 = 6000;
    let hub = Hub::builder()
        .history("room", History::new(10_000, minute()))
        .build();
    let server = historian(&hub).await;
    let (mut client, _, joined) = join(&server, "room", None).await;
    let mut last = joined.position.unwrap();
    let publisher = publish_numbered(&hub, "room", LINES, 20);
    let mut numbers = Vec::new();
    let take = |line: Line, last: &mut Position, numbers: &mut Vec<u64>| {
        assert_eq!(line.position.offset, last.offset + 1, "no gap, no repeat");
        numbers.push(line.text.parse::<u64>().unwrap());
        *last = line.position;
    };
    let mut complete = 0;
    for round in 1..=5 {
        // Read a share of the lines, then drop the socket mid-stream and rejoin.
        let goal = (round * LINES / 6) as usize;
        while numbers.len() < goal {
            take(next_line(&mut client).await, &mut last, &mut numbers);
        }
        drop(client);
        let (again, recovered, joined) = join(&server, "room", Some(&last)).await;
        complete += joined.complete as usize;
        for line in recovered {
            take(line, &mut last, &mut numbers);
        }
        assert_eq!(joined.position.as_ref(), Some(&last));
        client = again;
    }
    while (numbers.len() as u64) < LINES {
        take(next_line(&mut client).await, &mut last, &mut numbers);
    }
    within("the publisher ends", publisher).await.unwrap();
    assert_eq!(numbers, (0..LINES).collect::<Vec<_>>());
    assert_eq!(complete, 5, "every rejoin recovered everything");
    quiet(&mut client).await;
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_position_older_than_the_history_recovers_what_is_kept_and_says_it_is_incomplete() {
    let hub = Hub::builder()
        .history("room", History::new(100, minute()))
        .build();
    let server = historian(&hub).await;
    let (client, _, joined) = join(&server, "room", None).await;
    let start = joined.position.unwrap();
    drop(client);
    until_gone(&hub, "room").await;
    for i in 0..1000 {
        hub.send(Target::channel("room"), format!("{i}")).unwrap();
    }
    let (client, recovered, joined) = join(&server, "room", Some(&start)).await;
    drop(client);
    assert!(!joined.complete, "900 were trimmed: {joined:?}");
    let offsets: Vec<u64> = recovered.iter().map(|l| l.position.offset).collect();
    assert_eq!(offsets, (901..=1000).collect::<Vec<_>>(), "the last 100");
    assert_eq!(joined.position, Some(Position::new(1000, start.epoch)));
    assert_eq!(hub.history_stats().recoveries_incomplete, 1);
    server.stop().await;
}

#[tokio::test]
async fn publications_older_than_the_ttl_are_not_recovered() {
    let hub = Hub::builder()
        .history("room", History::new(100, Duration::from_millis(300)))
        .build();
    let server = historian(&hub).await;
    let (client, _, joined) = join(&server, "room", None).await;
    let start = joined.position.unwrap();
    drop(client);
    until_gone(&hub, "room").await;
    for i in 0..3 {
        hub.send(Target::channel("room"), format!("old {i}"))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..2 {
        hub.send(Target::channel("room"), format!("new {i}"))
            .unwrap();
    }
    let (client, recovered, joined) = join(&server, "room", Some(&start)).await;
    drop(client);
    assert!(!joined.complete);
    let texts: Vec<&str> = recovered.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["new 0", "new 1"]);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_that_was_lost_starts_a_new_epoch_and_recovery_says_it_is_incomplete() {
    // Room for a few streams of 1 KiB lines: publishing to many channels evicts the one
    // published to least recently.
    let hub = Hub::builder()
        .history("room*", History::new(4, minute()))
        .history_memory(64 << 10)
        .build();
    let server = historian(&hub).await;
    let (mut client, _, _) = join(&server, "room", None).await;
    hub.send(Target::channel("room"), "seen").unwrap();
    let seen = next_line(&mut client).await;
    drop(client);
    until_gone(&hub, "room").await;
    hub.send(Target::channel("room"), "missed").unwrap();
    let line = "x".repeat(1024);
    for i in 0..100 {
        hub.send(Target::channel(format!("room-{i}")), line.clone())
            .unwrap();
    }
    let (client, recovered, joined) = join(&server, "room", Some(&seen.position)).await;
    drop(client);
    assert!(!joined.complete, "{joined:?}");
    let position = joined.position.unwrap();
    assert_ne!(position.epoch, seen.position.epoch, "a new stream");
    assert_eq!(position.offset, 0);
    assert!(recovered.is_empty());

    // A position that was never the channel's: told, and given what it keeps.
    hub.send(Target::channel("room"), "now").unwrap();
    let forged = Position::new(7, "not-an-epoch");
    let (client, recovered, joined) = join(&server, "room", Some(&forged)).await;
    drop(client);
    assert!(!joined.complete);
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].text, "now");
    assert_eq!(recovered[0].position, Position::new(1, position.epoch));
    server.stop().await;
}

#[tokio::test]
async fn a_channel_without_history_sends_messages_as_they_are_and_recovers_nothing() {
    let hub = Hub::builder()
        .history("room", History::new(10, minute()))
        .build();
    let server = historian(&hub).await;
    let (mut bob, recovered, joined) = join(&server, "plain", None).await;
    assert!(recovered.is_empty());
    assert_eq!(joined.position, None, "no history, no position");
    assert!(joined.complete, "nothing asked, nothing missing");
    say(&mut bob, "hello").await;
    assert_eq!(
        next_text(&mut bob).await,
        "hello",
        "no position on the wire"
    );
    let (carol, _, joined) = join(&server, "plain", Some(&Position::new(3, "e"))).await;
    drop((bob, carol));
    assert!(!joined.complete, "a position on a channel without history");
    assert_eq!(hub.history_stats().stored, 0);
    server.stop().await;
}
