//! An Estuary node on a Redis backplane, for the cross-node scenarios: a bare
//! `WebSocketService` on a hub with `Hub::builder().redis(..)`, run by
//! `load --serve estuary-node --bind ADDR --redis URL [--broadcast]`.
//!
//! A connection joins the channels in `?join=a,b` and says "ready"; a text message
//! `CHANNEL PAYLOAD` goes to every member of `CHANNEL`, on every node. It needs the
//! `redis` feature (`cargo bench --bench load --features redis`).

use std::net::SocketAddr;

/// Serves a node on `addr`, on the Redis at `redis`, until the process is killed.
#[cfg(feature = "redis")]
pub fn serve(addr: SocketAddr, redis: &str, broadcast: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use estuary::{
        Conn, Handler, Hub, Message, RedisConfig, Routing, Server, Target, WebSocketService,
    };

    #[derive(Clone)]
    struct Node;

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
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the estuary node's runtime")?;
    runtime.block_on(async {
        let routing = if broadcast {
            Routing::Broadcast
        } else {
            Routing::Interest
        };
        let hub = Hub::builder()
            .redis(RedisConfig::new(redis).with_routing(routing))
            .await
            .context("estuary-node: joining the backplane")?;
        let service = WebSocketService::new(Node).with_hub(hub);
        Server::bind(addr)
            .with_context(|| format!("estuary-node: binding {addr}"))?
            .serve(service)
            .await
            .context("estuary-node")
    })
}

/// Without the `redis` feature there is no backplane to serve on.
#[cfg(not(feature = "redis"))]
pub fn serve(_addr: SocketAddr, _redis: &str, _broadcast: bool) -> anyhow::Result<()> {
    anyhow::bail!("estuary-node needs the redis feature: cargo bench --bench load --features redis")
}
