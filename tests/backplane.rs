//! Nodes on one real Redis, in one process: deliveries cross nodes exactly once and in
//! order, a node hears only what its sessions need, a join that returned misses nothing,
//! presence spans nodes and heals after failed writes and a Redis restart, chosen session
//! ids stay their owners', targets are never truncated, and passwords never show.

mod common;

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use common::nodes::{
    command, member, members_everywhere, next_after_markers, next_text, node, quiet,
    until_delivered,
};
use common::within;
use estuary::{Hub, HubLimits, RedisConfig, Routing, Target};
use redis_server::RedisServer;

/// Two nodes' hubs on `redis`, with the defaults.
async fn two_hubs(redis: &RedisServer) -> (Hub, Hub) {
    let hub_a = Hub::with_redis(&redis.url()).await.unwrap();
    let hub_b = Hub::with_redis(&redis.url()).await.unwrap();
    (hub_a, hub_b)
}

#[tokio::test]
async fn deliveries_cross_nodes_exactly_once_and_in_order() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = two_hubs(&redis).await;
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let mut on_a = member(&node_a, "alice", "room").await;
    let mut on_b = member(&node_b, "bob", "room").await;
    members_everywhere(&hub_a, "room", 2).await;

    for i in 0..500 {
        hub_a.send(Target::channel("room"), format!("{i}")).unwrap();
    }
    for i in 0..500 {
        assert_eq!(next_text(&mut on_a).await, i.to_string(), "local, in order");
        assert_eq!(
            next_text(&mut on_b).await,
            i.to_string(),
            "remote, in order"
        );
    }
    quiet(&mut on_a).await;
    quiet(&mut on_b).await;

    // Each other target, from the node that does not hold the session.
    hub_a.send(Target::user("bob"), "to bob").unwrap();
    assert_eq!(next_text(&mut on_b).await, "to bob");
    hub_b.send(Target::user("alice"), "to alice").unwrap();
    assert_eq!(next_text(&mut on_a).await, "to alice");
    hub_b
        .send_event(Target::user("alice"), &serde_json::json!({"ping": 1}))
        .unwrap();
    assert_eq!(next_text(&mut on_a).await, r#"event:{"ping":1}"#);
    quiet(&mut on_a).await;
    quiet(&mut on_b).await;

    let (a, b) = (
        hub_a.backplane_stats().unwrap(),
        hub_b.backplane_stats().unwrap(),
    );
    assert_eq!(
        b.delivered, 501,
        "B delivered each of A's messages once: {b:?}"
    );
    assert_eq!(
        a.echoes, 500,
        "A got its own channel messages back, and dropped them: {a:?}"
    );
    assert_eq!((a.unneeded, b.unneeded), (0, 0), "{a:?} {b:?}");
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn a_node_hears_only_the_routes_its_sessions_need_and_broadcast_hears_everything() {
    let redis = RedisServer::start();
    for routing in [Routing::Interest, Routing::Broadcast] {
        let config = || RedisConfig::new(redis.url()).with_routing(routing);
        let hub_a = Hub::builder().redis(config()).await.unwrap();
        let hub_b = Hub::builder().redis(config()).await.unwrap();
        let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
        let mut alice = member(&node_a, "alice", "a-only").await;
        let mut bob = member(&node_b, "bob", "b-only").await;
        for i in 0..100 {
            hub_a
                .send(Target::channel("a-only"), format!("a{i}"))
                .unwrap();
            hub_a
                .send(Target::channel("b-only"), format!("b{i}"))
                .unwrap();
        }
        for i in 0..100 {
            assert_eq!(next_text(&mut alice).await, format!("a{i}"));
            assert_eq!(next_text(&mut bob).await, format!("b{i}"));
        }
        quiet(&mut bob).await;
        let b = hub_b.backplane_stats().unwrap();
        assert_eq!(b.delivered, 100, "{routing:?}: {b:?}");
        match routing {
            Routing::Interest => {
                assert_eq!(b.received, 100, "only b-only's: {b:?}");
                assert_eq!(b.unneeded, 0, "{b:?}");
                assert!(b.subscriptions >= 3, "channel, user, session: {b:?}");
            }
            Routing::Broadcast => {
                assert_eq!(b.received, 200, "everything: {b:?}");
                assert_eq!(b.unneeded, 100, "a-only's, for nobody here: {b:?}");
            }
        }
        node_a.stop().await;
        node_b.stop().await;
    }
}

/// The defined behaviour: a message sent after `join` returned reaches the member, on a
/// channel this node had no subscription to before the join, every time; so does one to
/// a user right after its connection opened (its routes are subscribed before
/// `on_open`).
#[tokio::test]
async fn a_message_sent_after_a_join_returned_reaches_the_member() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = two_hubs(&redis).await;
    let node_b = node(&hub_b).await;
    let mut bob = member(&node_b, "bob", "").await;
    for round in 0..100 {
        let channel = format!("fresh-{round}");
        assert_eq!(
            command(&mut bob, &format!("join:{channel}")).await,
            format!("joined:{channel}")
        );
        hub_a
            .send(
                Target::channel(channel.as_str()),
                format!("first in {channel}"),
            )
            .unwrap();
        assert_eq!(next_text(&mut bob).await, format!("first in {channel}"));
        assert_eq!(
            command(&mut bob, &format!("leave:{channel}")).await,
            "left:true"
        );
    }
    for round in 0..50 {
        let user = format!("newcomer-{round}");
        let mut newcomer = member(&node_b, &user, "").await;
        hub_a.send(Target::user(user.as_str()), "welcome").unwrap();
        assert_eq!(next_text(&mut newcomer).await, "welcome", "round {round}");
    }
    let b = hub_b.backplane_stats().unwrap();
    assert_eq!(b.unneeded, 0, "{b:?}");
    node_b.stop().await;
}

#[tokio::test]
async fn presence_lists_members_of_every_node_and_forgets_closed_ones() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = two_hubs(&redis).await;
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let _alice = member(&node_a, "alice", "lobby").await;
    let bob = member(&node_b, "bob", "lobby").await;
    members_everywhere(&hub_a, "lobby", 2).await;
    let users: Vec<String> = hub_b
        .members_everywhere("lobby")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&"alice".to_string()) && users.contains(&"bob".to_string()));
    assert_eq!(
        hub_a.members("lobby").len(),
        1,
        "members() is this node only"
    );
    drop(bob);
    members_everywhere(&hub_a, "lobby", 1).await;
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn joins_from_plain_code_update_presence_and_routing_on_every_node() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = two_hubs(&redis).await;
    let node_a = node(&hub_a).await;
    let mut alice = member(&node_a, "alice", "").await;
    // As a REST route would: no `Conn` in sight.
    assert_eq!(hub_a.join(Target::user("alice"), "ops").await.unwrap(), 1);
    let listed = hub_b.members_everywhere("ops").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].user_id, "alice");
    hub_b.send(Target::channel("ops"), "page").unwrap();
    assert_eq!(next_text(&mut alice).await, "page");
    assert_eq!(hub_a.leave(Target::user("alice"), "ops"), 1);
    members_everywhere(&hub_b, "ops", 0).await;
    node_a.stop().await;
}

/// Mallory's authenticator lets her pick alice's session id, on another node: she gets
/// nothing meant for alice, and presence lists them both.
#[tokio::test]
async fn a_chosen_session_id_on_another_node_gets_nothing_meant_for_its_owner() {
    let redis = RedisServer::start();
    let (hub_a, hub_b) = two_hubs(&redis).await;
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let mut alice = common::connect(&node_a.url("/?user=alice&session=tab-1&channel=c")).await;
    assert_eq!(next_text(&mut alice).await, "ready");
    let mut mallory = common::connect(&node_b.url("/?user=mallory&session=tab-1&channel=c")).await;
    assert_eq!(next_text(&mut mallory).await, "ready");
    hub_b
        .send(Target::user_session("alice", "tab-1"), "for alice")
        .unwrap();
    assert_eq!(next_text(&mut alice).await, "for alice");
    hub_a.send(Target::session("tab-1"), "to whoever").unwrap();
    quiet(&mut mallory).await;
    quiet(&mut alice).await;
    let mut users: Vec<String> = hub_a
        .members_everywhere("c")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    users.sort();
    assert_eq!(
        users,
        ["alice", "mallory"],
        "neither entry overwrote the other"
    );
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn a_long_target_crosses_nodes_whole_and_a_longer_one_is_refused_at_send() {
    let redis = RedisServer::start();
    let limits = HubLimits::default().with_max_channel_len(65_535);
    let hub = || {
        Hub::builder()
            .limits(limits)
            .redis(RedisConfig::new(redis.url()))
    };
    let (hub_a, hub_b) = (hub().await.unwrap(), hub().await.unwrap());
    let node_b = node(&hub_b).await;
    let mut bob = member(&node_b, "bob", "").await;
    let long = "c".repeat(65_535);
    assert_eq!(hub_b.join(Target::user("bob"), &long).await.unwrap(), 1);
    hub_a
        .send(Target::channel(long.as_str()), "to the long one")
        .unwrap();
    assert_eq!(next_text(&mut bob).await, "to the long one");
    // Before, this one was cut to 65,535 bytes on the wire and reached the channel above.
    let longer = format!("{long}c");
    let err = hub_a
        .send(Target::channel(longer.as_str()), "nope")
        .unwrap_err();
    assert!(err.to_string().contains("at most 65535 bytes"), "{err}");
    quiet(&mut bob).await;
    node_b.stop().await;
}

#[tokio::test]
async fn a_redis_restart_loses_no_local_delivery_and_cross_node_delivery_resumes() {
    let mut redis = RedisServer::start();
    let (hub_a, hub_b) = two_hubs(&redis).await;
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let mut on_a = member(&node_a, "alice", "room").await;
    let mut on_b = member(&node_b, "bob", "room").await;
    members_everywhere(&hub_a, "room", 2).await;

    redis.kill();
    for i in 0..100 {
        hub_a
            .send(Target::channel("room"), format!("local {i}"))
            .unwrap();
    }
    for i in 0..100 {
        assert_eq!(next_text(&mut on_a).await, format!("local {i}"));
    }

    redis.restart();
    // Send markers until one crosses: the nodes reconnect and subscribe again on their own.
    let crossed = until_delivered(&hub_a, Target::user("bob"), &mut on_b).await;
    assert!(crossed.starts_with("marker"), "{crossed}");
    hub_a
        .send(Target::channel("room"), "after the restart")
        .unwrap();
    assert_eq!(next_after_markers(&mut on_b).await, "after the restart");
    // The restarted Redis is empty; the nodes write their members again.
    members_everywhere(&hub_b, "room", 2).await;
    node_a.stop().await;
    node_b.stop().await;
}

/// Redis refuses writes (the nodes' user loses the right to write) while a member joins
/// on one node and another leaves on the other: once it takes writes again, presence is
/// what the nodes hold, with no one missing and no ghost.
#[tokio::test]
async fn presence_heals_after_failed_writes() {
    let redis = RedisServer::start();
    let mut raw = redis.connection().await;
    let (hub_a, hub_b) = two_hubs(&redis).await;
    // Lists what Redis holds: it has no members of its own.
    let observer = Hub::with_redis(&redis.url()).await.unwrap();
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let ghost = member(&node_a, "ghost", "heal").await;
    members_everywhere(&observer, "heal", 1).await;

    let acl = |rules: &str| {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg(rules)
            .clone()
    };
    // Reads, pub/sub and this ACL command still work; HSET, HDEL, scripts that write fail.
    let () = acl("-@write").query_async(&mut raw).await.unwrap();
    let _bob = member(&node_b, "bob", "heal").await;
    drop(ghost);
    within("the ghost is gone locally", async {
        while !hub_a.members("heal").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Writes fail now: the leave and the join are not in Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed: Vec<String> = observer
        .members_everywhere("heal")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    assert_eq!(listed, ["ghost"], "the failed writes left Redis behind");

    let () = acl("+@all").query_async(&mut raw).await.unwrap();
    within("presence heals", async {
        loop {
            let listed: Vec<String> = observer
                .members_everywhere("heal")
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.user_id)
                .collect();
            if listed == ["bob"] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(hub_a.backplane_stats().unwrap().presence_resyncs > 0);
    assert!(hub_b.backplane_stats().unwrap().presence_resyncs > 0);
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn passwords_never_show_in_errors() {
    let redis = RedisServer::start_with(&["--requirepass", "hunter2"]);
    let wrong = format!("redis://:letmein@127.0.0.1:{}/", redis.port);
    let err = Hub::with_redis(&wrong).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("letmein"), "{shown}");
    assert!(
        shown.contains(":***@127.0.0.1"),
        "says which Redis: {shown}"
    );
    let unreachable = "redis://:hunter2@127.0.0.1:1/";
    let err = Hub::with_redis(unreachable).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let config = RedisConfig::new(format!("redis://:hunter2@127.0.0.1:{}/", redis.port));
    assert!(!format!("{config:?}").contains("hunter2"));
    let hub = Hub::builder().redis(config).await.unwrap();
    assert!(hub.members_everywhere("lobby").await.unwrap().is_empty());
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn rediss_urls_connect_over_tls_with_the_configured_ca() {
    let pki = common::pki::make_pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let cert = write("cert.pem", &pki.server_cert_pem);
    let key = write("key.pem", &pki.server_key_pem);
    let ca = write("ca.pem", &pki.root_pem);
    let redis = RedisServer::start_tls(&cert, &key, &ca);
    let config = || RedisConfig::new(redis.url()).with_ca_certificate(pki.root_pem.clone());
    let hub_a = Hub::builder().redis(config()).await.unwrap();
    let hub_b = Hub::builder().redis(config()).await.unwrap();
    let node_b = node(&hub_b).await;
    let mut bob = member(&node_b, "bob", "secure").await;
    hub_a.send(Target::channel("secure"), "over tls").unwrap();
    assert_eq!(next_text(&mut bob).await, "over tls");
    // Without the CA, the server's certificate is not trusted.
    let err = Hub::with_redis(&redis.url()).await.unwrap_err();
    assert!(err.to_string().contains("rediss://localhost"), "{err}");
    node_b.stop().await;
}
