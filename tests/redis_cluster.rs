//! Nodes on a real Redis Cluster of three masters, started by the test: deliveries use
//! sharded pub/sub, so each channel's traffic stays on the shard that owns its slot, and a
//! channel's presence keys live there too; delivery and presence come back after a
//! master restarts.

mod common;

#[path = "common/redis.rs"]
mod redis_server;

use common::nodes::{
    member, members_everywhere, next_after_markers, next_text, node, until_delivered,
};
use estuary::{Hub, RedisConfig, Target};
use redis_server::RedisCluster;

#[tokio::test]
async fn channels_spread_over_the_shards_and_survive_a_master_restart() {
    let mut cluster = RedisCluster::start(3);
    // One channel on each master, by the slot of its hash tag.
    let mut channels: Vec<Option<String>> = vec![None; 3];
    for i in 0.. {
        let name = format!("room-{i}");
        let master = cluster.node_of(&format!("estuary:{{c:{name}}}"));
        channels[master].get_or_insert(name);
        if channels.iter().all(Option::is_some) {
            break;
        }
    }
    let channels: Vec<String> = channels.into_iter().map(Option::unwrap).collect();

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
