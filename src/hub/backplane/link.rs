//! Connections to Redis: one server, or a Redis Cluster (slots routed by the client,
//! sharded pub/sub), behind one [`Link`] type, and batches of commands sent in one round
//! trip to each server.
//!
//! Every connection speaks RESP3, so that deliveries to subscriptions arrive as push
//! messages beside ordinary replies, through the `Inbound` push sender of the connection
//! that subscribed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{AsyncPushSender, ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisError, RedisFuture, Value};

use super::RedisConfig;
use crate::hub::HubError;

/// How long to wait for a connection to be made (TCP, TLS, HELLO).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes connections to the configured Redis: a server or a cluster.
pub(super) struct Connector {
    target: Endpoint,
    /// The address as logs and errors show it, password redacted.
    shown: String,
}

enum Endpoint {
    Single(redis::Client),
    Cluster {
        nodes: Vec<redis::ConnectionInfo>,
        ca: Option<Vec<u8>>,
    },
}

impl Connector {
    pub(super) fn new(config: &RedisConfig) -> Result<Self, HubError> {
        let shown = config
            .urls
            .iter()
            .map(|url| redact(url))
            .collect::<Vec<_>>()
            .join(", ");
        let info = |url: &str| {
            let info = url
                .into_connection_info()
                .map_err(|e| HubError::redis(format!("invalid url {}", redact(url)), e))?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            Ok::<_, HubError>(info.set_redis_settings(settings))
        };
        let target = if config.cluster {
            let nodes = config
                .urls
                .iter()
                .map(|url| info(url))
                .collect::<Result<Vec<_>, _>>()?;
            Endpoint::Cluster {
                nodes,
                ca: config.ca_certificate.clone(),
            }
        } else {
            let url = config.urls.first().map(String::as_str).unwrap_or_default();
            let info = info(url)?;
            let client = match &config.ca_certificate {
                Some(ca) => redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.clone()),
                    },
                ),
                None => redis::Client::open(info),
            }
            .map_err(|e| HubError::redis(format!("invalid url {shown}"), e))?;
            Endpoint::Single(client)
        };
        Ok(Self { target, shown })
    }

    /// The Redis address(es), password redacted.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether this is a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.target, Endpoint::Cluster { .. })
    }

    /// A new connection whose replies must come within `response_timeout`, and whose push
    /// messages (deliveries to its subscriptions) go to `push`.
    pub(super) async fn connect(
        &self,
        response_timeout: Duration,
        push: Option<Arc<dyn PushHandler>>,
    ) -> Result<Link, RedisError> {
        match &self.target {
            Endpoint::Single(client) => {
                let mut config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout));
                if let Some(push) = push {
                    config = config.set_push_sender(SharedPush(push));
                }
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Link::Single(connection))
            }
            Endpoint::Cluster { nodes, ca } => {
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .retries(2);
                if let Some(ca) = ca {
                    builder = builder.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.clone()),
                    });
                }
                if let Some(push) = push {
                    builder = builder.push_sender(SharedPush(push));
                }
                let connection = builder.build()?.get_async_connection().await?;
                Ok(Link::Cluster(connection))
            }
        }
    }
}

/// A push sender shared by reference, so that one sender outlives the connections it is
/// given to.
pub(super) trait PushHandler: Send + Sync + 'static {
    fn push(&self, info: redis::PushInfo);
}

struct SharedPush(Arc<dyn PushHandler>);

impl AsyncPushSender for SharedPush {
    fn send(&self, info: redis::PushInfo) -> Result<(), redis::aio::SendError> {
        self.0.push(info);
        Ok(())
    }
}

/// One connection to a Redis server, or to a Redis Cluster (a connection per shard,
/// routed by key slot). Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(super) enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A command and the key it is routed by in a cluster.
pub(super) struct Keyed {
    pub(super) key: String,
    pub(super) cmd: Cmd,
}

impl Keyed {
    /// Takes the command built in `cmd`, routed by `key`.
    pub(super) fn new(key: impl Into<String>, cmd: &mut Cmd) -> Self {
        Self {
            key: key.into(),
            cmd: std::mem::replace(cmd, Cmd::new()),
        }
    }
}

impl Link {
    /// Sends `commands` in one round trip per server, in order per slot, and returns their
    /// replies in the same order (a failed command's reply is a `Value::ServerError`).
    /// On one server that is one pipeline; on a cluster, one pipeline per slot, all at
    /// once. Fails if a connection failed or a reply did not come in time.
    pub(super) async fn exec(&mut self, commands: Vec<Keyed>) -> Result<Vec<Value>, RedisError> {
        let (replies, error) = self.exec_each(commands).await;
        match error {
            Some(error) => Err(error),
            None => Ok(replies.into_iter().map(Option::unwrap_or_default).collect()),
        }
    }

    /// [`Link::exec`], for commands that stand alone: the replies that came (`None` where
    /// a pipeline failed, on a cluster only that shard's), and the first failure.
    pub(super) async fn exec_each(
        &mut self,
        commands: Vec<Keyed>,
    ) -> (Vec<Option<Value>>, Option<RedisError>) {
        if commands.is_empty() {
            return (Vec::new(), None);
        }
        match self {
            Link::Single(connection) => {
                let count = commands.len();
                let mut pipe = Pipeline::with_capacity(count);
                for keyed in commands {
                    pipe.add_command(keyed.cmd);
                }
                match connection.req_packed_commands(&pipe, 0, count).await {
                    Ok(replies) => (replies.into_iter().map(Some).collect(), None),
                    Err(e) => (vec![None; count], Some(e)),
                }
            }
            Link::Cluster(connection) => {
                let count = commands.len();
                let mut groups: HashMap<Slot, (Vec<usize>, Pipeline)> = HashMap::new();
                for (at, keyed) in commands.into_iter().enumerate() {
                    let (positions, pipe) = groups.entry(Slot::for_key(&keyed.key)).or_default();
                    positions.push(at);
                    pipe.add_command(keyed.cmd);
                }
                let sent = groups.into_values().map(|(positions, pipe)| {
                    let mut connection = connection.clone();
                    async move {
                        let replies = connection.req_packed_commands(&pipe, 0, pipe.len()).await;
                        (positions, replies)
                    }
                });
                let mut out = vec![None; count];
                let mut error = None;
                for (positions, replies) in join_all(sent).await {
                    match replies {
                        Ok(replies) => {
                            for (at, reply) in positions.into_iter().zip(replies) {
                                out[at] = Some(reply);
                            }
                        }
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                }
                (out, error)
            }
        }
    }

    /// Subscribes to `routes` (sharded pub/sub on a cluster); returns once Redis confirmed
    /// every one.
    pub(super) async fn subscribe(
        &mut self,
        routes: &[Arc<str>],
        sharded: bool,
    ) -> Result<(), RedisError> {
        self.subscription(routes, sharded, true).await
    }

    /// Unsubscribes from `routes`.
    pub(super) async fn unsubscribe(
        &mut self,
        routes: &[Arc<str>],
        sharded: bool,
    ) -> Result<(), RedisError> {
        self.subscription(routes, sharded, false).await
    }

    async fn subscription(
        &mut self,
        routes: &[Arc<str>],
        sharded: bool,
        on: bool,
    ) -> Result<(), RedisError> {
        // Redis takes many channels in one SUBSCRIBE; more than this many are sent as
        // several, so that no command grows without bound.
        const PER_COMMAND: usize = 1000;
        let names = |routes: &[Arc<str>]| {
            routes
                .iter()
                .map(|r| r.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        match self {
            Link::Single(connection) => {
                for chunk in routes.chunks(PER_COMMAND) {
                    match on {
                        true => connection.subscribe(names(chunk)).await?,
                        false => connection.unsubscribe(names(chunk)).await?,
                    }
                }
                Ok(())
            }
            Link::Cluster(connection) => {
                // One SSUBSCRIBE may only name channels of one slot.
                let mut groups: HashMap<Slot, Vec<Arc<str>>> = HashMap::new();
                if sharded {
                    for route in routes {
                        groups
                            .entry(Slot::for_key(route.as_bytes()))
                            .or_default()
                            .push(route.clone());
                    }
                } else {
                    groups.insert(Slot::for_key(b""), routes.to_vec());
                }
                let sent = groups.into_values().map(|group| {
                    let mut connection = connection.clone();
                    async move {
                        for chunk in group.chunks(PER_COMMAND) {
                            let chunk = names(chunk);
                            match (sharded, on) {
                                (true, true) => connection.ssubscribe(chunk).await?,
                                (true, false) => connection.sunsubscribe(chunk).await?,
                                (false, true) => connection.subscribe(chunk).await?,
                                (false, false) => connection.unsubscribe(chunk).await?,
                            }
                        }
                        Ok::<(), RedisError>(())
                    }
                });
                for result in join_all(sent).await {
                    result?;
                }
                Ok(())
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// `url` with its password, if any, replaced by `***`: `redis://user:***@host:6379/0`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        // A lone userinfo is a password to Redis (`redis://secret@host`).
        None if !userinfo.is_empty() => "***".to_owned(),
        None => String::new(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
            ("rediss://app:hunter2@h:1", "rediss://app:***@h:1"),
            ("redis://hunter2@h", "redis://***@h"),
            ("redis://app:p@ss:w@rd@h/3?x=1", "redis://app:***@h/3?x=1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert!(!redact(url).contains("hunter2") && !redact(url).contains("ss:w"));
        }
    }
}
