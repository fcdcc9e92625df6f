//! Nodes on a real Redis Cluster of three masters, started by the test: deliveries use
//! sharded pub/sub, so each channel's traffic stays on the shard that owns its slot, and a
//! channel's presence keys live there too; delivery and presence come back after a
//! master restarts. A channel's history (its stream and position keys) lives on the same
//! shard, written in one script with its publish, and recovers across nodes.

mod common;

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use common::history::{historian, join, next_line};
use common::nodes::{
    member, members_everywhere, next_after_markers, next_text, node, until_delivered,
};
use common::within;
use estuary::{History, Hub, Position, RedisConfig, Target};
use redis_server::RedisCluster;

/// One channel on each master of `cluster`, by the slot of its hash tag: the channel on
/// master 0 first.
fn one_channel_per_master(cluster: &RedisCluster) -> Vec<String> {
    let mut channels: Vec<Option<String>> = vec![None; cluster.ports.len()];
    for i in 0.. {
        let name = format!("room-{i}");
        let master = cluster.node_of(&format!("estuary:{{c:{name}}}"));
        channels[master].get_or_insert(name);
        if channels.iter().all(Option::is_some) {
            break;
        }
    }
    channels.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn channels_spread_over_the_shards_and_survive_a_master_restart() {
    let mut cluster = RedisCluster::start(3);
    let channels = one_channel_per_master(&cluster);

    let hub = || Hub::builder().redis(RedisConfig::cluster(cluster.urls()));
    let (hub_a, hub_b) = (hub().await.unwrap(), hub().await.unwrap());
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        on_a.push(member(&node_a, &format!("alice{i}"), channel).await);
        on_b.push(member(&node_b, &format!("bob{i}"), channel).await);
    }
    for (i, channel) in channels.iter().enumerate() {
        hub_a
            .send(Target::channel(channel.as_str()), format!("a to {channel}"))
            .unwrap();
        assert_eq!(next_text(&mut on_b[i]).await, format!("a to {channel}"));
        assert_eq!(next_text(&mut on_a[i]).await, format!("a to {channel}"));
        hub_b
            .send(Target::channel(channel.as_str()), format!("b to {channel}"))
            .unwrap();
        assert_eq!(next_text(&mut on_a[i]).await, format!("b to {channel}"));
        assert_eq!(next_text(&mut on_b[i]).await, format!("b to {channel}"));
        members_everywhere(&hub_a, channel, 2).await;
        members_everywhere(&hub_b, channel, 2).await;
    }
    // Each master carries the subscriptions and the presence keys of its own channel only.
    for (master, channel) in channels.iter().enumerate() {
        let subscribed = cluster.cli(master, &["PUBSUB", "SHARDCHANNELS", "estuary:{c:*"]);
        for (other, name) in channels.iter().enumerate() {
            let route = format!("estuary:{{c:{name}}}");
            assert_eq!(
                subscribed.lines().any(|line| line.trim() == route),
                other == master,
                "master {master} ({channel}) lists {route}? {subscribed}"
            );
        }
        let keys = cluster.cli(master, &["KEYS", &format!("estuary:{{c:{channel}}}:*")]);
        assert_eq!(
            keys.lines().count(),
            3,
            "two nodes' members and the node set: {keys}"
        );
    }
    let users = hub_a.members_everywhere(&channels[1]).await.unwrap();
    assert_eq!(users.len(), 2, "{users:?}");

    // Master 0 restarts from its node file: the same slots, no data.
    cluster.restart_node(0);
    let crossed =
        until_delivered(&hub_a, Target::channel(channels[0].as_str()), &mut on_b[0]).await;
    assert!(crossed.starts_with("marker"), "{crossed}");
    for (i, channel) in channels.iter().enumerate() {
        hub_a
            .send(Target::channel(channel.as_str()), "after the restart")
            .unwrap();
        assert_eq!(
            next_after_markers(&mut on_b[i]).await,
            "after the restart",
            "{channel}"
        );
        members_everywhere(&hub_b, channel, 2).await;
    }
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn a_channels_history_lives_on_its_shard_and_a_member_recovers_it_on_another_node() {
    let cluster = RedisCluster::start(3);
    let channels = one_channel_per_master(&cluster);
    let hub = || {
        Hub::builder()
            .history("room-*", History::new(100, Duration::from_secs(60)))
            .redis(RedisConfig::cluster(cluster.urls()))
    };
    let (hub_a, hub_b) = (hub().await.unwrap(), hub().await.unwrap());
    let node_b = historian(&hub_b).await;
    for (master, channel) in channels.iter().enumerate() {
        let (client, _, joined) = join(&node_b, channel, None).await;
        let start = joined.position.expect("the cluster answered");
        drop(client);
        within("the member leaves", async {
            while !hub_b.members(channel).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let stored = hub_a.history_stats().stored;
        for i in 0..50 {
            hub_a
                .send(Target::channel(channel.as_str()), format!("{channel} {i}"))
                .unwrap();
        }
        within("the shard stores them", async {
            while hub_a.history_stats().stored < stored + 50 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let stream = format!("estuary:{{c:{channel}}}:stream");
        for other in 0..channels.len() {
            let kept = cluster.cli(other, &["EXISTS", &stream]);
            assert_eq!(
                kept.trim() == "1",
                other == master,
                "{stream} on master {other}"
            );
        }
        let (mut client, recovered, joined) = join(&node_b, channel, Some(&start)).await;
        assert!(joined.complete, "{channel}: {joined:?}");
        let texts: Vec<String> = recovered.iter().map(|l| l.text.clone()).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("{channel} {i}")).collect();
        assert_eq!(texts, expected);
        hub_a
            .send(Target::channel(channel.as_str()), "live")
            .unwrap();
        let live = next_line(&mut client).await;
        assert_eq!(live.position, Position::new(51, start.epoch.clone()));
        assert!(!live.recovered);
        drop(client);
    }
    node_b.stop().await;
}
