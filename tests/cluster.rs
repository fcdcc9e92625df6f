//! Two nodes on one real Redis: deliveries cross nodes exactly once and in order,
//! presence spans nodes, and a Redis restart loses no local delivery while cross-node
//! delivery resumes.

mod common;

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use common::{connect, serve, within, Client, TestServer};
use estuary::middleware::Identity;
use estuary::{Conn, Event, Handler, Hub, Message, Target, WebSocketService};
use futures_util::StreamExt;
use http::Request;
use redis_server::RedisServer;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tower::ServiceBuilder;

/// Joins the channel in `?channel=`, takes the user in `?user=`, forwards events.
#[derive(Clone)]
struct Node;

impl Handler for Node {
    async fn on_open(&mut self, conn: &mut Conn) {
        if let Some(channel) = conn
            .session()
            .query_param("channel")
            .map(|c| c.into_owned())
        {
            conn.join(&channel).await.unwrap();
        }
        let _ = conn.send("ready");
    }

    async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}

    async fn on_event(&mut self, conn: &mut Conn, event: Event) {
        let json = String::from_utf8_lossy(event.as_json().unwrap_or_default()).into_owned();
        let _ = conn.send(format!("event:{json}"));
    }
}

async fn node(hub: &Hub) -> TestServer {
    let ws = WebSocketService::new(Node).with_hub(hub.clone());
    let service = ServiceBuilder::new()
        .map_request(|mut request: Request<hyper::body::Incoming>| {
            let user = request.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("user="))
                    .map(str::to_owned)
            });
            if let Some(user) = user {
                request.extensions_mut().insert(Identity::new(user));
            }
            request
        })
        .service(ws);
    serve(service).await
}

async fn join(server: &TestServer, user: &str, channel: &str) -> Client {
    let mut client = connect(&server.url(&format!("/?user={user}&channel={channel}"))).await;
    assert_eq!(next_text(&mut client).await, "ready");
    client
}

async fn next_text(client: &mut Client) -> String {
    match within("a message", client.next()).await {
        Some(Ok(WsMessage::Text(text))) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn quiet(client: &mut Client) {
    let next = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(next.is_err(), "unexpected extra message: {next:?}");
}

/// Waits until `hub` sees `count` members of `channel` across nodes.
async fn members_everywhere(hub: &Hub, channel: &str, count: usize) {
    within("presence converges", async {
        loop {
            if hub.members_everywhere(channel).await.ok().map(|m| m.len()) == Some(count) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn deliveries_cross_nodes_exactly_once_and_in_order() {
    let redis = RedisServer::start();
    let hub_a = Hub::with_redis(&redis.url()).await.unwrap();
    let hub_b = Hub::with_redis(&redis.url()).await.unwrap();
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let mut on_a = join(&node_a, "alice", "room").await;
    let mut on_b = join(&node_b, "bob", "room").await;
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
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn presence_lists_members_of_every_node_and_forgets_closed_ones() {
    let redis = RedisServer::start();
    let hub_a = Hub::with_redis(&redis.url()).await.unwrap();
    let hub_b = Hub::with_redis(&redis.url()).await.unwrap();
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let _alice = join(&node_a, "alice", "lobby").await;
    let bob = join(&node_b, "bob", "lobby").await;
    members_everywhere(&hub_a, "lobby", 2).await;
    let users: Vec<String> = hub_b
        .members_everywhere("lobby")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id)
        .collect();
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
async fn a_redis_restart_loses_no_local_delivery_and_cross_node_delivery_resumes() {
    let mut redis = RedisServer::start();
    let hub_a = Hub::with_redis(&redis.url()).await.unwrap();
    let hub_b = Hub::with_redis(&redis.url()).await.unwrap();
    let (node_a, node_b) = (node(&hub_a).await, node(&hub_b).await);
    let mut on_a = join(&node_a, "alice", "room").await;
    let mut on_b = join(&node_b, "bob", "room").await;
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
    // Send markers until one crosses: the nodes reconnect on their own.
    let crossed = within("cross-node delivery resumes", async {
        for attempt in 0.. {
            hub_a
                .send(Target::user("bob"), format!("marker {attempt}"))
                .unwrap();
            if let Ok(Some(Ok(WsMessage::Text(text)))) =
                tokio::time::timeout(Duration::from_millis(200), on_b.next()).await
            {
                return text.to_string();
            }
        }
        unreachable!()
    })
    .await;
    assert!(crossed.starts_with("marker"), "{crossed}");
    // The restarted Redis is empty; the nodes re-announce their members.
    members_everywhere(&hub_b, "room", 2).await;
    node_a.stop().await;
    node_b.stop().await;
}

/// What a node finds in Redis about the others: a member of a node whose heartbeat expired
/// is dropped from the listing and from Redis; a member of a live node stays, also one
/// whose node comes back and announces it again.
#[tokio::test]
async fn members_of_a_silent_node_are_forgotten_and_a_live_nodes_are_kept() {
    let redis = RedisServer::start();
    let hub = Hub::with_redis(&redis.url()).await.unwrap();
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (silent, live) = (format!("{:032x}", 1u128), format!("{:032x}", 2u128));
    let key = "estuary:presence:lobby";
    let member =
        |field: &str, value: String| redis::cmd("HSET").arg(key).arg(field).arg(value).clone();
    let heartbeat = |node: &str| {
        redis::cmd("SET")
            .arg(format!("estuary:node:{node}"))
            .arg(1)
            .arg("EX")
            .arg(60)
            .clone()
    };
    for command in [
        member("ghost", format!("{silent}|casper")),
        member("garbage", "no node here".into()),
        member("s-2", format!("{live}|lena")),
        heartbeat(&live),
    ] {
        let () = command.query_async(&mut raw).await.unwrap();
    }

    let users = |members: Vec<estuary::Member>| -> Vec<String> {
        members.into_iter().map(|m| m.user_id).collect()
    };
    assert_eq!(
        users(hub.members_everywhere("lobby").await.unwrap()),
        ["lena"]
    );
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(fields, ["s-2"], "stale entries are deleted from redis");

    // The silent node comes back: heartbeat first, then its member again.
    for command in [
        heartbeat(&silent),
        member("ghost", format!("{silent}|casper")),
    ] {
        let () = command.query_async(&mut raw).await.unwrap();
    }
    let mut listed = users(hub.members_everywhere("lobby").await.unwrap());
    listed.sort();
    assert_eq!(listed, ["casper", "lena"]);
}
