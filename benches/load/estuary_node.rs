//! An Estuary node for the hub scenarios: a bare `WebSocketService` on a hub, on a Redis
//! backplane (`Hub::builder().redis(..)`) or in-process, run by
//! `load --serve estuary-node --bind ADDR [--redis URL [--broadcast]]`.
//!
//! A connection joins the channels in `?join=a,b` and says "ready"; a text message
//! `CHANNEL PAYLOAD` goes to every member of `CHANNEL`, on every node. Channels named
//! `h-*` keep history (the last 1,000 publications, for a minute): their publications
//! reach members with their position, as `OFFSET PAYLOAD`, formatted once per node. The
//! Redis backplane needs the `redis` feature (`cargo bench --bench load --features
//! redis`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use estuary::{
    Conn, Handler, History, Hub, HubBuilder, Message, Publication, Server, Target, WebSocketService,
};

#[derive(Clone)]
struct Node;

/// A publication as members get it: its offset, then the payload.
fn with_offset(publication: &Publication) -> Message {
    let text = publication.message().as_text().unwrap_or_default();
    Message::text(format!("{} {text}", publication.position().offset))
}

impl Handler for Node {
    async fn on_open(&mut self, conn: &mut Conn) {
        let channels = conn.session().query_param("join").map(|c| c.into_owned());
        for channel in channels.iter().flat_map(|c| c.split(',')) {
            if let Err(e) = conn.join(channel).await {
                eprintln!("estuary-node: joining {channel}: {e}");
            }
        }
        let _ = conn.send("ready");
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let Some((channel, payload)) = msg.as_text().and_then(|t| t.split_once(' ')) else {
            return;
        };
        let payload = payload.to_owned();
        let _ = conn.hub().send(Target::channel(channel), payload);
    }

    fn on_publication(&mut self, conn: &mut Conn, publication: Publication) {
        let _ = conn.send_prepared(&publication.frame_with(with_offset));
    }
}

/// The hub's builder: history for `h-*`.
fn builder() -> HubBuilder {
    Hub::builder().history("h-*", History::new(1000, Duration::from_secs(60)))
}

/// Serves a node on `addr` until the process is killed: on the Redis at `redis`, or
/// in-process without one.
pub fn serve(addr: SocketAddr, redis: Option<&str>, broadcast: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the estuary node's runtime")?;
    runtime.block_on(async {
        let hub = match redis {
            Some(url) => on_redis(url, broadcast).await?,
            None => builder().build(),
        };
        let service = WebSocketService::new(Node).with_hub(hub);
        Server::bind(addr)
            .with_context(|| format!("estuary-node: binding {addr}"))?
            .serve(service)
            .await
            .context("estuary-node")
    })
}

#[cfg(feature = "redis")]
async fn on_redis(url: &str, broadcast: bool) -> anyhow::Result<Hub> {
    use estuary::{RedisConfig, Routing};
    let routing = if broadcast {
        Routing::Broadcast
    } else {
        Routing::Interest
    };
    builder()
        .redis(RedisConfig::new(url).with_routing(routing))
        .await
        .context("estuary-node: joining the backplane")
}

/// Without the `redis` feature there is no backplane to serve on.
#[cfg(not(feature = "redis"))]
async fn on_redis(_url: &str, _broadcast: bool) -> anyhow::Result<Hub> {
    anyhow::bail!(
        "estuary-node on Redis needs the redis feature: cargo bench --bench load --features redis"
    )
}
