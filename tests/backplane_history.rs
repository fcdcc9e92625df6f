//! Channel history across nodes on one real Redis: publications made on any node take
//! their positions from one sequence (a Redis Stream per channel); a member that rejoins
//! on node B with the position it saw last gets exactly what node A published meanwhile,
//! in order, then live ones, none twice, even while A goes on publishing; a position
//! older than the history and a Redis restarted empty (a new epoch) recover incompletely
//! and say so.

mod common;

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use common::history::{historian, join, next_line, publish_numbered, say, Line};
use common::nodes::{member, node, quiet, until_delivered};
use common::within;
use estuary::{History, Hub, Position, RedisConfig, Target};
use redis_server::RedisServer;

/// A node's hub on `redis`, with history for `room*`.
async fn hub(redis: &RedisServer, size: usize) -> Hub {
    Hub::builder()
        .history("room*", History::new(size, Duration::from_secs(60)))
        .redis(RedisConfig::new(redis.url()))
        .await
        .unwrap()
}

/// Waits until `hub` has stored `count` publications in Redis.
async fn until_stored(hub: &Hub, count: u64) {
    within("Redis stores the publications", async {
        while hub.history_stats().stored < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Waits until `hub` has no member in `channel`.
async fn until_gone(hub: &Hub, channel: &str) {
    within("the member leaves", async {
        while !hub.members(channel).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_member_that_rejoins_on_node_b_gets_the_lines_said_on_node_a_meanwhile_then_live_ones() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = (hub(&redis, 5000).await, hub(&redis, 5000).await);
    let (node_a, node_b) = (historian(&hub_a).await, historian(&hub_b).await);
    let (mut on_a, _, _) = join(&node_a, "room", None).await;
    let (mut on_b, _, joined) = join(&node_b, "room", None).await;
    let epoch = joined.position.unwrap().epoch;

    say(&mut on_a, "before").await;
    let seen = next_line(&mut on_b).await;
    assert_eq!(seen.position, Position::new(1, epoch.clone()));
    assert_eq!(next_line(&mut on_a).await, seen, "the same position on A");
    drop(on_b);
    until_gone(&hub_b, "room").await;

    for i in 0..1000 {
        hub_a
            .send(Target::channel("room"), format!("missed {i}"))
            .unwrap();
    }
    until_stored(&hub_a, 1001).await;
    let (mut on_b, recovered, joined) = join(&node_b, "room", Some(&seen.position)).await;
    assert!(joined.complete, "{joined:?}");
    assert_eq!(recovered.len(), 1000);
    for (i, line) in recovered.iter().enumerate() {
        let expected = Line {
            position: Position::new(i as u64 + 2, epoch.clone()),
            recovered: true,
            text: format!("missed {i}"),
        };
        assert_eq!(line, &expected);
    }
    assert_eq!(joined.position, Some(Position::new(1001, epoch.clone())));

    for i in 0..10 {
        say(&mut on_a, &format!("live {i}")).await;
    }
    for i in 0..10 {
        let line = next_line(&mut on_b).await;
        assert_eq!(line.position, Position::new(1002 + i, epoch.clone()));
        assert!(!line.recovered);
    }
    quiet(&mut on_b).await;
    // Node A's member had every line live, in the same order.
    for i in 0..1010 {
        assert_eq!(next_line(&mut on_a).await.position.offset, i + 2);
    }
    let (a, b) = (hub_a.history_stats(), hub_b.history_stats());
    assert_eq!(a.stored, 1011, "{a:?}");
    assert_eq!((b.recoveries_complete, b.recoveries_incomplete), (1, 0));
    drop((on_a, on_b));
    node_a.stop().await;
    node_b.stop().await;
}

/// Node A publishes 4,000 numbered lines while a member on node B drops its socket and
/// rejoins from the last position it read, ten times (B unsubscribes from the channel
/// each time its last member leaves, and subscribes again on the rejoin): it reads every
/// number once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_on_node_a_while_a_member_rejoins_on_node_b_loses_and_repeats_nothing() {
    const LINES: u64 = 4000;
    let redis = RedisServer::start();
    let (hub_a, hub_b) = (hub(&redis, 10_000).await, hub(&redis, 10_000).await);
    let node_b = historian(&hub_b).await;
    let (mut client, _, joined) = join(&node_b, "room", None).await;
    let mut last = joined.position.unwrap();
    let publisher = publish_numbered(&hub_a, "room", LINES, 10);
    let mut numbers = Vec::new();
    let take = |line: Line, last: &mut Position, numbers: &mut Vec<u64>| {
        assert_eq!(
            line.position,
            Position::new(last.offset + 1, last.epoch.clone()),
            "no gap, no repeat"
        );
        numbers.push(line.text.parse::<u64>().unwrap());
        *last = line.position;
    };
    let (mut complete, mut recovered_lines) = (0, 0);
    for round in 1..=10 {
        // Read a share of the lines, then drop the socket mid-stream and rejoin.
        let goal = (round * LINES / 11) as usize;
        while numbers.len() < goal {
            take(next_line(&mut client).await, &mut last, &mut numbers);
        }
        drop(client);
        let (again, recovered, joined) = join(&node_b, "room", Some(&last)).await;
        complete += joined.complete as usize;
        recovered_lines += recovered.len();
        for line in recovered {
            take(line, &mut last, &mut numbers);
        }
        client = again;
    }
    while (numbers.len() as u64) < LINES {
        take(next_line(&mut client).await, &mut last, &mut numbers);
    }
    within("the publisher ends", publisher).await.unwrap();
    assert_eq!(numbers, (0..LINES).collect::<Vec<_>>());
    assert_eq!(complete, 10, "every rejoin recovered everything");
    assert!(
        recovered_lines > 0,
        "the rejoins recovered lines said meanwhile"
    );
    quiet(&mut client).await;
    drop(client);
    node_b.stop().await;
}

/// Node B's subscription to Redis is cut while node A publishes: the lines published
/// before B had subscribed again never reach it live, and B reads them from the
/// channel's stream instead. B's member, connected throughout, reads every line once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_a_node_whose_subscription_was_cut_gets_what_the_node_missed() {
    const LINES: u64 = 2000;
    let redis = RedisServer::start();
    let (hub_a, hub_b) = (hub(&redis, 10_000).await, hub(&redis, 10_000).await);
    let node_b = historian(&hub_b).await;
    let (mut client, _, joined) = join(&node_b, "room", None).await;
    let mut last = joined.position.unwrap();
    let publisher = publish_numbered(&hub_a, "room", LINES, 5);
    let mut redis_cli = redis.connection().await;
    for i in 0..LINES {
        let line = next_line(&mut client).await;
        assert_eq!(
            line.position,
            Position::new(last.offset + 1, last.epoch.clone())
        );
        assert_eq!(line.text, i.to_string());
        last = line.position;
        if i == LINES / 4 {
            let killed: i64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", "pubsub"])
                .query_async(&mut redis_cli)
                .await
                .unwrap();
            assert!(killed >= 1, "node B's subscriber was cut");
        }
    }
    within("the publisher ends", publisher).await.unwrap();
    quiet(&mut client).await;
    let b = hub_b.backplane_stats().unwrap();
    assert!(
        b.refilled > 0,
        "B read what it missed from the stream: {b:?}"
    );
    drop(client);
    node_b.stop().await;
}

#[tokio::test]
async fn lines_said_on_two_nodes_take_positions_from_one_sequence_seen_alike_everywhere() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = (hub(&redis, 1000).await, hub(&redis, 1000).await);
    let (node_a, node_b) = (historian(&hub_a).await, historian(&hub_b).await);
    let (mut on_a, _, _) = join(&node_a, "room", None).await;
    let (mut on_b, _, _) = join(&node_b, "room", None).await;
    for i in 0..200 {
        let (speaker, node) = match i % 2 {
            0 => (&mut on_a, "a"),
            _ => (&mut on_b, "b"),
        };
        say(speaker, &format!("{node}{i}")).await;
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..200 {
        seen_a.push(next_line(&mut on_a).await);
        seen_b.push(next_line(&mut on_b).await);
    }
    assert_eq!(seen_a, seen_b, "one order on every node");
    let offsets: Vec<u64> = seen_a.iter().map(|l| l.position.offset).collect();
    assert_eq!(offsets, (1..=200).collect::<Vec<_>>(), "one sequence");
    for speaker in ["a", "b"] {
        // Each sender's lines in the order it said them.
        let mine: Vec<u64> = seen_a
            .iter()
            .filter_map(|l| l.text.strip_prefix(speaker)?.parse().ok())
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{speaker}: {mine:?}");
        assert_eq!(mine.len(), 100);
    }
    quiet(&mut on_a).await;
    drop((on_a, on_b));
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn a_position_older_than_the_history_recovers_what_redis_keeps_and_says_it_is_incomplete() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = (hub(&redis, 100).await, hub(&redis, 100).await);
    let node_b = historian(&hub_b).await;
    let (client, _, joined) = join(&node_b, "room", None).await;
    let start = joined.position.unwrap();
    drop(client);
    until_gone(&hub_b, "room").await;
    for i in 0..1000 {
        hub_a.send(Target::channel("room"), format!("{i}")).unwrap();
    }
    until_stored(&hub_a, 1000).await;
    let mut redis_cli = redis.connection().await;
    let kept: u64 = redis::cmd("XLEN")
        .arg("estuary:{c:room}:stream")
        .query_async(&mut redis_cli)
        .await
        .unwrap();
    // Trimmed by whole blocks (100 entries each, by default), which is cheap.
    assert!(
        (100..=200).contains(&kept),
        "the stream is trimmed to about the history's size: {kept}"
    );
    let (client, recovered, joined) = join(&node_b, "room", Some(&start)).await;
    drop(client);
    assert!(!joined.complete, "{joined:?}");
    let offsets: Vec<u64> = recovered.iter().map(|l| l.position.offset).collect();
    assert_eq!(offsets, (901..=1000).collect::<Vec<_>>(), "the last 100");
    assert_eq!(joined.position, Some(Position::new(1000, start.epoch)));
    assert_eq!(hub_b.history_stats().recoveries_incomplete, 1);
    node_b.stop().await;
}

#[tokio::test]
async fn a_redis_restarted_empty_starts_a_new_epoch_and_recovery_says_it_is_incomplete() {
    let mut redis = RedisServer::start();
    let (hub_a, hub_b) = (hub(&redis, 100).await, hub(&redis, 100).await);
    let node_b = historian(&hub_b).await;
    let watchers = node(&hub_b).await;
    let mut watcher = member(&watchers, "watcher", "").await;
    let (mut client, _, _) = join(&node_b, "room", None).await;
    hub_a.send(Target::channel("room"), "before").unwrap();
    let seen = next_line(&mut client).await;
    drop(client);
    until_gone(&hub_b, "room").await;

    redis.restart();
    // Both nodes are back on Redis: A's deliveries reach B again.
    until_delivered(&hub_a, Target::user("watcher"), &mut watcher).await;
    let stored = hub_a.history_stats().stored;
    hub_a.send(Target::channel("room"), "after").unwrap();
    until_stored(&hub_a, stored + 1).await;

    let (client, recovered, joined) = join(&node_b, "room", Some(&seen.position)).await;
    drop(client);
    assert!(!joined.complete, "{joined:?}");
    let position = joined.position.expect("Redis answered");
    assert_ne!(position.epoch, seen.position.epoch, "a new epoch");
    let texts: Vec<&str> = recovered.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["after"], "what the new stream keeps");
    assert_eq!(recovered[0].position, Position::new(1, position.epoch));
    drop(watcher);
    node_b.stop().await;
    watchers.stop().await;
}
