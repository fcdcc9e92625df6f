//! The Redis backplane: every node publishes its deliveries on one Redis pub/sub channel
//! and delivers what the other nodes publish to its own sessions.
//!
//! - Exactly once: a node delivers its own sends locally and ignores their echo from
//!   Redis; every other node delivers each message once, to the sessions it holds.
//! - In order per sender: one task per node publishes, in send order, on one connection.
//! - Pub/sub is at-most-once: while a node is cut off from Redis, cross-node messages to
//!   and from it are lost (and logged); local delivery never waits for Redis.
//! - Presence: channel members live in a Redis hash per channel, tagged with their node;
//!   nodes refresh a heartbeat key, and members of a node whose heartbeat expired are
//!   dropped when listed. A node that finds its heartbeat key gone (Redis restarted
//!   empty, or the node was cut off too long) re-announces all its members, so presence
//!   heals by itself.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::{ConnId, Hub, HubError, HubInner, Member, Payload, Target};
use crate::protocol::{Message, Prepared, Utf8Bytes};

const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_TTL_SECS: u64 = 6;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const WIRE_VERSION: u8 = 1;

/// Deletes a presence entry (KEYS[1], field ARGV[1]) if it still holds ARGV[2] and its
/// node's heartbeat key (KEYS[2], when given) is still absent; atomic, so that it never
/// removes what a node that came back has announced again.
const FORGET_STALE_MEMBER: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"#;

fn context(context: impl Into<String>) -> impl FnOnce(redis::RedisError) -> HubError {
    let context = context.into();
    move |source| HubError::redis(context, source)
}

enum Command {
    Publish(Target, Payload),
    Presence {
        channel: String,
        member: Member,
        joined: bool,
    },
}

/// A node's link to Redis.
pub(crate) struct Backplane {
    node: u128,
    prefix: String,
    commands: mpsc::UnboundedSender<Command>,
    queries: ConnectionManager,
}

impl Backplane {
    pub(crate) fn publish(&self, to: Target, payload: Payload) {
        let _ = self.commands.send(Command::Publish(to, payload));
    }

    fn deliveries_channel(prefix: &str) -> String {
        format!("{prefix}:deliver")
    }

    fn presence_key(prefix: &str, channel: &str) -> String {
        format!("{prefix}:presence:{channel}")
    }

    fn node_key(prefix: &str, node: u128) -> String {
        format!("{prefix}:node:{node:032x}")
    }
}

impl Hub {
    /// A hub whose deliveries also reach sessions on every other node connected to the
    /// same Redis (`redis://host:port/db`). Fails if Redis cannot be reached now; later
    /// outages are survived (see the module docs).
    pub async fn with_redis(url: &str) -> Result<Hub, HubError> {
        Self::with_redis_prefix(url, "estuary").await
    }

    /// Like [`Hub::with_redis`], with Redis keys and channels under `prefix`, so several
    /// clusters can share one Redis.
    pub async fn with_redis_prefix(url: &str, prefix: &str) -> Result<Hub, HubError> {
        let client = redis::Client::open(url).map_err(context(format!("invalid url {url:?}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let publisher = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(context(format!("connecting to {url}")))?;
        let queries = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(context(format!("connecting to {url}")))?;
        let node: u128 = rand::random();
        let prefix = prefix.to_owned();
        // The heartbeat exists before any member is announced (see `beat`).
        let () = publisher
            .clone()
            .set_ex(Backplane::node_key(&prefix, node), 1, HEARTBEAT_TTL_SECS)
            .await
            .map_err(context(format!("registering this node on {url}")))?;
        // Subscribed before we return: a delivery sent once this hub exists reaches it.
        let pubsub = subscribe(&client, &Backplane::deliveries_channel(&prefix))
            .await
            .map_err(context(format!("subscribing on {url}")))?;
        let (commands, rx) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|weak: &Weak<HubInner>| {
            tokio::spawn(publish_loop(
                publisher,
                rx,
                weak.clone(),
                node,
                prefix.clone(),
            ));
            tokio::spawn(subscribe_loop(
                client,
                pubsub,
                weak.clone(),
                node,
                prefix.clone(),
            ));
            HubInner {
                backplane: Some(Backplane {
                    node,
                    prefix,
                    commands,
                    queries,
                }),
                ..HubInner::default()
            }
        });
        tracing::info!(node = %format!("{node:032x}"), "hub joined the redis backplane");
        Ok(Hub { inner })
    }

    pub(crate) async fn redis_members(
        &self,
        backplane: &Backplane,
        channel: &str,
    ) -> Result<Vec<Member>, HubError> {
        let mut redis = backplane.queries.clone();
        let key = Backplane::presence_key(&backplane.prefix, channel);
        let entries: HashMap<String, String> = redis
            .hgetall(&key)
            .await
            .map_err(context(format!("listing {key}")))?;
        let own = format!("{:032x}", backplane.node);
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut members = Vec::new();
        let mut stale = Vec::new();
        for (session_id, value) in entries {
            let Some((node, user_id)) = value.split_once('|') else {
                stale.push((session_id, value, None));
                continue;
            };
            if node == own {
                // This node's members come from its own registry, below: exact, and
                // not behind the publisher's queue.
                continue;
            }
            let node_key = || {
                u128::from_str_radix(node, 16)
                    .ok()
                    .map(|id| Backplane::node_key(&backplane.prefix, id))
            };
            let live = match alive.get(node) {
                Some(&live) => live,
                None => {
                    let live = match node_key() {
                        Some(node_key) => redis
                            .exists(node_key)
                            .await
                            .map_err(context("checking node heartbeats"))?,
                        None => false,
                    };
                    alive.insert(node.to_owned(), live);
                    live
                }
            };
            if live {
                members.push(Member {
                    session_id,
                    user_id: user_id.to_owned(),
                });
            } else {
                stale.push((session_id, value.clone(), node_key()));
            }
        }
        for (session_id, value, node_key) in stale {
            // Only if the entry is still the one read and its node is still silent: the
            // node may have come back and announced it again since.
            let mut forget = redis::cmd("EVAL");
            forget
                .arg(FORGET_STALE_MEMBER)
                .arg(if node_key.is_some() { 2 } else { 1 })
                .arg(&key);
            if let Some(node_key) = node_key {
                forget.arg(node_key);
            }
            let _: Result<i64, _> = forget
                .arg(session_id)
                .arg(value)
                .query_async(&mut redis)
                .await;
        }
        members.extend(self.members(channel));
        members.sort();
        Ok(members)
    }

    /// Tells the other nodes that a session joined or left a channel.
    pub(crate) fn presence_changed(&self, id: ConnId, channel: &str, joined: bool) {
        let Some(backplane) = &self.inner.backplane else {
            return;
        };
        if let Some(member) = self.read().member(id) {
            let _ = backplane.commands.send(Command::Presence {
                channel: channel.to_owned(),
                member,
                joined,
            });
        }
    }
}

/// Publishes deliveries and presence changes in order, and keeps the node's heartbeat.
async fn publish_loop(
    mut redis: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Command>,
    hub: Weak<HubInner>,
    node: u128,
    prefix: String,
) {
    let channel = Backplane::deliveries_channel(&prefix);
    let node_key = Backplane::node_key(&prefix, node);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    let mut unannounced = false;
    loop {
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else { break };
                let result: redis::RedisResult<()> = match command {
                    Command::Publish(target, payload) => {
                        redis.publish(&channel, encode(node, &target, &payload).as_ref()).await
                    }
                    Command::Presence { channel, member, joined } => {
                        let key = Backplane::presence_key(&prefix, &channel);
                        if joined {
                            let value = format!("{node:032x}|{}", member.user_id);
                            redis.hset(key, member.session_id, value).await
                        } else {
                            redis.hdel(key, member.session_id).await
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "redis write failed; cross-node delivery or presence update lost");
                }
            }
            _ = heartbeat.tick() => {
                let Some(inner) = hub.upgrade() else { break };
                if let Err(e) = beat(&mut redis, &Hub { inner }, node, &prefix, &mut unannounced).await {
                    tracing::warn!(error = %e, "redis heartbeat failed");
                }
            }
        }
    }
    let _: redis::RedisResult<()> = redis.del(&node_key).await;
}

/// Refreshes the node's heartbeat, then, if it had expired or vanished, re-announces every
/// local channel membership. `unannounced` carries an announcement that failed over to
/// the next beat.
async fn beat(
    redis: &mut ConnectionManager,
    hub: &Hub,
    node: u128,
    prefix: &str,
    unannounced: &mut bool,
) -> redis::RedisResult<()> {
    let node_key = Backplane::node_key(prefix, node);
    let alive: bool = redis.exists(&node_key).await?;
    // The heartbeat goes first: a member announced below is never seen without it, and so
    // never taken for a silent node's and forgotten.
    let () = redis.set_ex(&node_key, 1, HEARTBEAT_TTL_SECS).await?;
    *unannounced |= !alive;
    if *unannounced {
        let memberships = hub.read().memberships();
        if !memberships.is_empty() {
            tracing::info!(
                count = memberships.len(),
                "announcing channel members to redis"
            );
        }
        for (channel, member) in memberships {
            let value = format!("{node:032x}|{}", member.user_id);
            let () = redis
                .hset(
                    Backplane::presence_key(prefix, &channel),
                    member.session_id,
                    value,
                )
                .await?;
        }
        *unannounced = false;
    }
    Ok(())
}

/// Receives other nodes' deliveries on `pubsub`, then on a new subscription each time
/// Redis goes away and comes back (with backoff).
async fn subscribe_loop(
    client: redis::Client,
    pubsub: redis::aio::PubSub,
    hub: Weak<HubInner>,
    node: u128,
    prefix: String,
) {
    let channel = Backplane::deliveries_channel(&prefix);
    let mut backoff = Duration::from_millis(100);
    let mut subscribed = Some(pubsub);
    loop {
        let pubsub = match subscribed.take() {
            Some(pubsub) => pubsub,
            None => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if hub.strong_count() == 0 {
                    return;
                }
                match subscribe(&client, &channel).await {
                    Ok(pubsub) => {
                        tracing::info!("reconnected to redis; cross-node delivery resumes");
                        backoff = Duration::from_millis(100);
                        pubsub
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot subscribe to redis");
                        continue;
                    }
                }
            }
        };
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Some(inner) = hub.upgrade() else { return };
            match decode(message.get_payload_bytes()) {
                Ok((from, _, _)) if from == node => {}
                Ok((_, target, payload)) => {
                    Hub { inner }.deliver_local(&target, &payload);
                }
                Err(why) => tracing::warn!(why, "ignoring a malformed backplane message"),
            }
        }
        tracing::warn!("lost the redis connection; local delivery goes on, reconnecting");
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

const KIND_TEXT: u8 = 0;
const KIND_BINARY: u8 = 1;
const KIND_EVENT: u8 = 2;

/// `version, node (16), kind, target tag, target strings (u16 length + bytes), payload`.
fn encode(node: u128, target: &Target, payload: &Payload) -> Bytes {
    let (kind, body): (u8, &[u8]) = match payload {
        Payload::Frame(frame) => match frame.message_payload() {
            (true, bytes) => (KIND_TEXT, bytes),
            (false, bytes) => (KIND_BINARY, bytes),
        },
        Payload::Event(json) => (KIND_EVENT, json),
    };
    let mut out = BytesMut::with_capacity(body.len() + 64);
    out.put_u8(WIRE_VERSION);
    out.put_u128(node);
    out.put_u8(kind);
    let strings: &[&str] = match target {
        Target::Session(s) => {
            out.put_u8(0);
            &[s]
        }
        Target::User(u) => {
            out.put_u8(1);
            &[u]
        }
        Target::UserSession { user, session } => {
            out.put_u8(2);
            &[user, session]
        }
        Target::Channel(c) => {
            out.put_u8(3);
            &[c]
        }
        Target::Name(n) => {
            out.put_u8(4);
            &[n]
        }
    };
    for s in strings {
        let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        out.put_u16(s.len() as u16);
        out.put_slice(s);
    }
    out.put_slice(body);
    out.freeze()
}

fn decode(bytes: &[u8]) -> Result<(u128, Target, Payload), &'static str> {
    let mut buf = bytes;
    if buf.remaining() < 19 || buf.get_u8() != WIRE_VERSION {
        return Err("unknown version or truncated header");
    }
    let node = buf.get_u128();
    let kind = buf.get_u8();
    let tag = buf.get_u8();
    let mut string = || -> Result<Arc<str>, &'static str> {
        if buf.remaining() < 2 {
            return Err("truncated target");
        }
        let len = buf.get_u16() as usize;
        if buf.remaining() < len {
            return Err("truncated target");
        }
        let s = std::str::from_utf8(&buf[..len]).map_err(|_| "target is not UTF-8")?;
        let s = Arc::from(s);
        buf.advance(len);
        Ok(s)
    };
    let target = match tag {
        0 => Target::Session(string()?),
        1 => Target::User(string()?),
        2 => Target::UserSession {
            user: string()?,
            session: string()?,
        },
        3 => Target::Channel(string()?),
        4 => Target::Name(string()?),
        _ => return Err("unknown target"),
    };
    let body = Bytes::copy_from_slice(buf);
    let payload = match kind {
        KIND_TEXT => {
            let text = Utf8Bytes::try_from(body).map_err(|_| "text is not UTF-8")?;
            Payload::Frame(Prepared::new(&Message::Text(text)))
        }
        KIND_BINARY => Payload::Frame(Prepared::new(&Message::Binary(body))),
        KIND_EVENT => Payload::Event(body),
        _ => return Err("unknown payload kind"),
    };
    Ok((node, target, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_every_target_and_kind() {
        let targets = [
            Target::session("s1"),
            Target::user("alice"),
            Target::user_session("alice", "s2"),
            Target::channel("lobby"),
            Target::name("referee"),
        ];
        let payloads = [
            Payload::Frame(Prepared::new(&Message::text("héllo"))),
            Payload::Frame(Prepared::new(&Message::binary(vec![0u8; 70_000]))),
            Payload::Event(Bytes::from_static(br#"{"k":1}"#)),
        ];
        for target in &targets {
            for payload in &payloads {
                let (node, back, body) = decode(&encode(42, target, payload)).unwrap();
                assert_eq!((node, &back), (42, target));
                match (payload, body) {
                    (Payload::Frame(a), Payload::Frame(b)) => assert_eq!(a, &b),
                    (Payload::Event(a), Payload::Event(b)) => assert_eq!(a, &b),
                    _ => panic!("kind changed"),
                }
            }
        }
    }

    #[test]
    fn malformed_envelopes_are_rejected_not_panicked_on() {
        let body = br#"{"k":1}"#;
        for target in [
            Target::session("s1"),
            Target::user("alice"),
            Target::user_session("alice", "s2"),
            Target::channel("lobby"),
            Target::name("referee"),
        ] {
            let good = encode(7, &target, &Payload::Event(Bytes::from_static(body)));
            assert!(decode(&good).is_ok(), "{target:?}");
            // The body runs to the end of the envelope, so a cut inside it cannot show;
            // a cut anywhere before it (version, node, kind, target) must.
            let framing = good.len() - body.len();
            for cut in 0..framing {
                assert!(
                    decode(&good[..cut]).is_err(),
                    "{target:?}: the first {cut} of {} bytes decoded",
                    good.len()
                );
            }
        }
        assert!(decode(&[9; 40]).is_err());
    }
}
