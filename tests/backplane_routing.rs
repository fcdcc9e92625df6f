//! Many nodes on one Redis: a node receives only what its sessions need. Four nodes, a
//! channel whose members are all on one of them, senders on two others: the three nodes
//! without members receive none of its deliveries, by their own counts, and every member
//! gets every line once, in order per sender. With broadcast routing, for contrast, every
//! node receives everything.

mod common;

#[path = "common/redis.rs"]
mod redis_server;

use std::collections::HashMap;

use common::nodes::{command, member, next_text, node, quiet};
use common::Client;
use estuary::{BackplaneStats, Hub, RedisConfig, Routing};
use futures_util::SinkExt;
use redis_server::RedisServer;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const LINES: usize = 200;

/// Four nodes; five members of "solo" on node 0 (one of them a sender too), a sender on
/// nodes 1 and 2, and sessions in another channel on nodes 1 to 3. Returns each node's
/// counts once every member has heard every line.
async fn four_nodes(routing: Routing) -> Vec<BackplaneStats> {
    let redis = RedisServer::start();
    let mut hubs = Vec::new();
    for _ in 0..4 {
        let config = RedisConfig::new(redis.url()).with_routing(routing);
        hubs.push(Hub::builder().redis(config).await.unwrap());
    }
    let mut servers = Vec::new();
    for hub in &hubs {
        servers.push(node(hub).await);
    }
    let mut members: Vec<Client> = Vec::new();
    for m in 0..5 {
        members.push(member(&servers[0], &format!("m{m}"), "solo").await);
    }
    // Busy elsewhere, so that nodes 1 to 3 hold sessions and subscriptions of their own.
    let mut others = Vec::new();
    for (n, server) in servers.iter().enumerate().skip(1) {
        others.push(member(server, &format!("other{n}"), "elsewhere").await);
    }
    let mut senders = vec![
        member(&servers[1], "s1", "").await,
        member(&servers[2], "s2", "").await,
    ];
    // Everyone sends at once: node 0's own member, and the two on other nodes.
    for i in 0..LINES {
        members[0]
            .feed(WsMessage::text(format!("say:solo:m0 {i}")))
            .await
            .unwrap();
        for (s, sender) in senders.iter_mut().enumerate() {
            sender
                .feed(WsMessage::text(format!("say:solo:s{} {i}", s + 1)))
                .await
                .unwrap();
        }
    }
    members[0].flush().await.unwrap();
    for sender in &mut senders {
        sender.flush().await.unwrap();
    }
    for (m, client) in members.iter_mut().enumerate() {
        let mut next: HashMap<String, usize> = HashMap::new();
        for _ in 0..3 * LINES {
            let line = next_text(client).await;
            let (from, i) = line.split_once(' ').expect("lines are \"sender i\"");
            let i: usize = i.parse().unwrap();
            let expected = next.entry(from.to_owned()).or_default();
            assert_eq!(
                i, *expected,
                "member m{m}: {from}'s lines once each, in order"
            );
            *expected += 1;
        }
        assert!(next.values().all(|&n| n == LINES), "m{m}: {next:?}");
        quiet(client).await;
    }
    for client in &mut others {
        quiet(client).await;
    }
    // Still a working node: its own channel works.
    assert_eq!(
        command(&mut others[0], "join:elsewhere").await,
        "joined:elsewhere"
    );
    let stats = hubs
        .iter()
        .map(|hub| hub.backplane_stats().unwrap())
        .collect();
    for server in servers {
        server.stop().await;
    }
    stats
}

#[tokio::test]
async fn a_channel_on_one_node_costs_the_other_three_nothing() {
    let stats = four_nodes(Routing::Interest).await;
    let lines = LINES as u64;
    assert_eq!(stats[0].delivered, 2 * lines, "node 0: {:?}", stats[0]);
    assert_eq!(
        stats[0].echoes, lines,
        "node 0's own lines came back: {:?}",
        stats[0]
    );
    for (n, node) in stats.iter().enumerate() {
        assert_eq!(node.unneeded, 0, "node {n}: {node:?}");
        if n > 0 {
            assert_eq!(node.received, 0, "node {n} received none of it: {node:?}");
        }
    }
    assert_eq!((stats[1].published, stats[2].published), (lines, lines));
}

#[tokio::test]
async fn with_broadcast_routing_every_node_receives_every_delivery() {
    let stats = four_nodes(Routing::Broadcast).await;
    let lines = LINES as u64;
    for (n, node) in stats.iter().enumerate().skip(1) {
        assert_eq!(node.received, 3 * lines, "node {n}: {node:?}");
        assert_eq!(node.delivered, 0, "node {n}: {node:?}");
    }
    assert_eq!(stats[3].unneeded, 3 * lines, "{:?}", stats[3]);
}
