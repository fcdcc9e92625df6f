//! Presence in Redis: each node's members of each channel, written by one task that
//! heals after any failure, refreshed so that a dead node's members expire, and listed
//! across nodes.
//!
//! A node keeps its members of a channel in one hash (connection id -> `[session,
//! user]`) with a TTL, and its id in the channel's set of nodes. Joins and leaves are
//! queued in the registry's order and written in batches. Every third of the TTL the
//! node refreshes the TTL of each of its hashes; a hash found missing (Redis restarted
//! empty, or the node was cut off longer than the TTL) is written again. Any failed
//! write, an overflowing queue, or a new connection makes the node write all its members
//! again, each channel's hash replaced at once by a script, so that presence converges
//! on what the registry holds whatever was lost. Listing reads the set, then each node's
//! hash; a node whose hash has expired is taken out of the set.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::{RedisError, Value};
use tokio::sync::Notify;

use super::super::{ConnId, Hub, HubError, HubInner, Member};
use super::link::{Connector, Keyed, Link};
use super::{Backoff, Counters, Shared, Throttle};

/// How long presence writes and listings may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most joins and leaves waiting to be written; past it they are dropped and the
/// node writes all its members again instead, which costs what it holds, not what came.
const MAX_QUEUED: usize = 10_000;

/// Replaces one node's members of one channel: KEYS = [hash, node set], ARGV = [ttl ms,
/// node, connection, member, connection, member, ...]. Atomic, so that a listing never
/// sees the hash half written.
const REPLACE_MEMBERS: &str = r#"
redis.call('DEL', KEYS[1])
if #ARGV > 2 then
  for i = 3, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
"#;

/// Takes a node (ARGV[1]) out of a channel's node set (KEYS[2]) if its hash (KEYS[1]) is
/// gone; atomic, so that it never removes a node that has just written its members.
const FORGET_NODE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
"#;

/// The joins and leaves waiting for the presence task.
pub(super) struct Presence {
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<Op>,
    /// Write everything again: the ops are not enough (one failed, or they overflowed).
    resync: bool,
}

enum Op {
    Join {
        channel: Arc<str>,
        conn: ConnId,
        value: String,
    },
    Leave {
        channel: Arc<str>,
        conn: ConnId,
        last: bool,
    },
}

impl Presence {
    pub(super) fn new() -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        }
    }

    pub(super) fn joined(&self, channel: &Arc<str>, conn: ConnId, member: &Member) {
        let value = serde_json::to_string(&(&member.session_id, &member.user_id))
            .expect("two strings serialize");
        self.push(Op::Join {
            channel: channel.clone(),
            conn,
            value,
        });
    }

    pub(super) fn left(&self, channel: &Arc<str>, conn: ConnId, last: bool) {
        self.push(Op::Leave {
            channel: channel.clone(),
            conn,
            last,
        });
    }

    /// Asks for all members to be written again.
    pub(super) fn resync(&self) {
        {
            let mut queue = self.lock();
            queue.ops.clear();
            queue.resync = true;
        }
        self.wake.notify_one();
    }

    fn push(&self, op: Op) {
        {
            let mut queue = self.lock();
            if queue.resync {
                // The resync reads the registry, which has this change already.
            } else if queue.ops.len() >= MAX_QUEUED {
                queue.ops.clear();
                queue.resync = true;
            } else {
                queue.ops.push_back(op);
            }
        }
        self.wake.notify_one();
    }

    fn take(&self) -> (VecDeque<Op>, bool) {
        let mut queue = self.lock();
        let resync = std::mem::take(&mut queue.resync);
        (std::mem::take(&mut queue.ops), resync)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Pushes and takes leave the queue consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connection presence and listings share, made on first use and again after a
/// failure; its generation tells the presence task that a new one was made.
pub(super) struct SharedLink {
    current: tokio::sync::Mutex<Option<(Link, u64)>>,
    made: AtomicU64,
}

impl SharedLink {
    pub(super) fn new() -> Self {
        Self {
            current: tokio::sync::Mutex::new(None),
            made: AtomicU64::new(0),
        }
    }

    /// The connection, and its generation.
    pub(super) async fn get(&self, connector: &Connector) -> Result<(Link, u64), RedisError> {
        let mut current = self.current.lock().await;
        if let Some((link, generation)) = &*current {
            return Ok((link.clone(), *generation));
        }
        let link = connector.connect(RESPONSE_TIMEOUT, None).await?;
        let generation = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        *current = Some((link.clone(), generation));
        Ok((link, generation))
    }

    /// Drops connection `generation` after it failed, unless it was replaced already.
    pub(super) async fn broken(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(_, g)| *g == generation) {
            *current = None;
        }
    }
}

/// A failure that may have cost the connection, rather than one command.
pub(super) fn lost_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Writes presence as it changes, refreshes it, and heals it, until the hub is dropped.
pub(super) async fn presence_loop(hub: Weak<HubInner>, shared: Arc<Shared>) {
    let mut announced: HashSet<Arc<str>> = HashSet::new();
    let mut seen_generation = 0;
    let mut backoff = Backoff::new();
    let mut failures = Throttle::new(Duration::from_secs(10));
    let mut beat = tokio::time::interval(shared.presence_ttl / 3);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat_due = false;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = shared.presence.wake.notified() => {}
            _ = beat.tick() => beat_due = true,
        }
        let Some(inner) = hub.upgrade() else { return };
        let hub = Hub { inner };
        let (mut link, generation) = match shared.commands.get(&shared.connector).await {
            Ok(link) => link,
            Err(e) => {
                if let Some(unlogged) = failures.ready() {
                    tracing::warn!(error = %e, unlogged, redis = shared.connector.shown(), "cannot connect to redis for presence; retrying");
                }
                shared.presence.resync();
                drop(hub);
                backoff.wait(&shared.cancel).await;
                continue;
            }
        };
        if generation != seen_generation {
            // A new connection: whatever the last one was writing may be lost, and Redis
            // may have restarted.
            shared.presence.resync();
            seen_generation = generation;
        }
        let beat = std::mem::take(&mut beat_due);
        match sync(&shared, &hub, &mut link, &mut announced, beat).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                if let Some(unlogged) = failures.ready() {
                    tracing::warn!(error = %e, unlogged, redis = shared.connector.shown(), "a presence write failed; all of this node's members will be written again");
                }
                if lost_connection(&e) {
                    shared.commands.broken(generation).await;
                }
                shared.presence.resync();
                drop(hub);
                backoff.wait(&shared.cancel).await;
            }
        }
    }
}

/// One round: a full rewrite if one is due, else the queued joins and leaves, then the
/// refresh if `beat`.
async fn sync(
    shared: &Shared,
    hub: &Hub,
    link: &mut Link,
    announced: &mut HashSet<Arc<str>>,
    beat: bool,
) -> Result<(), RedisError> {
    // The channels to refresh are read before the queue is taken: every join they show
    // was queued before, so its writes go first and the refresh finds its hash.
    let refresh: Vec<Arc<str>> = if beat {
        hub.read()
            .channel_members()
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    } else {
        Vec::new()
    };
    let (ops, resync) = shared.presence.take();
    if resync {
        rewrite_all(shared, hub, link, announced).await?;
    }
    let keys = &shared.keys;
    let ttl = ttl_ms(shared);
    let node = format!("{:032x}", shared.node);
    let mut commands = Vec::with_capacity(ops.len() * 4 + refresh.len() * 2);
    let mut joined = Vec::new();
    let mut emptied = Vec::new();
    for op in ops {
        match op {
            Op::Join {
                channel,
                conn,
                value,
            } => {
                let (members, nodes) = (keys.members(&channel, shared.node), keys.nodes(&channel));
                commands.push(Keyed::new(
                    &*members,
                    cmd("HSET").arg(&members).arg(conn_field(conn)).arg(value),
                ));
                commands.push(Keyed::new(&*members, cmd("PEXPIRE").arg(&members).arg(ttl)));
                commands.push(Keyed::new(&*nodes, cmd("SADD").arg(&nodes).arg(&node)));
                commands.push(Keyed::new(&*nodes, cmd("PEXPIRE").arg(&nodes).arg(ttl)));
                joined.push(channel);
            }
            Op::Leave {
                channel,
                conn,
                last,
            } => {
                let members = keys.members(&channel, shared.node);
                commands.push(Keyed::new(
                    &*members,
                    cmd("HDEL").arg(&members).arg(conn_field(conn)),
                ));
                if last {
                    let nodes = keys.nodes(&channel);
                    commands.push(Keyed::new(&*nodes, cmd("SREM").arg(&nodes).arg(&node)));
                    emptied.push(channel);
                }
            }
        }
    }
    let writes = commands.len();
    for channel in &refresh {
        let (members, nodes) = (keys.members(channel, shared.node), keys.nodes(channel));
        commands.push(Keyed::new(&*members, cmd("PEXPIRE").arg(&members).arg(ttl)));
        commands.push(Keyed::new(&*nodes, cmd("PEXPIRE").arg(&nodes).arg(ttl)));
    }
    let replies = link.exec(commands).await?;
    if let Some(Value::ServerError(e)) = replies[..writes]
        .iter()
        .find(|r| matches!(r, Value::ServerError(_)))
    {
        return Err(e.clone().into());
    }
    // Written: remember which channels may hold this node's keys.
    announced.extend(joined);
    for channel in emptied {
        if !hub.read().has_channel(&channel) {
            announced.remove(&channel);
        }
    }
    let missing: Vec<Arc<str>> = refresh
        .into_iter()
        .zip(replies[writes..].chunks(2))
        .filter(|(_, refreshed)| refreshed.iter().any(|r| !matches!(r, Value::Int(1))))
        .map(|(channel, _)| channel)
        .collect();
    if !missing.is_empty() {
        // Still here? (One left since the refresh was planned, and took its hash along.)
        let missing: Vec<Arc<str>> = {
            let registry = hub.read();
            missing
                .into_iter()
                .filter(|c| registry.has_channel(c))
                .collect()
        };
        if !missing.is_empty() {
            tracing::info!(
                channels = missing.len(),
                "presence missing in redis (restarted, or this node was cut off too long); writing it again"
            );
            rewrite(shared, hub, link, &missing).await?;
            announced.extend(missing);
            Counters::add(&shared.counters.presence_resyncs, 1);
        }
    }
    Ok(())
}

/// Writes every local member of every channel again, and clears the channels this node
/// announced and has left since.
async fn rewrite_all(
    shared: &Shared,
    hub: &Hub,
    link: &mut Link,
    announced: &mut HashSet<Arc<str>>,
) -> Result<(), RedisError> {
    let channels: Vec<Arc<str>> = hub
        .read()
        .channel_members()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let present: HashSet<Arc<str>> = channels.iter().cloned().collect();
    let mut all = channels;
    all.extend(announced.difference(&present).cloned());
    rewrite(shared, hub, link, &all).await?;
    *announced = present;
    Counters::add(&shared.counters.presence_resyncs, 1);
    Ok(())
}

/// Replaces this node's members of each of `channels` with what the registry holds.
async fn rewrite(
    shared: &Shared,
    hub: &Hub,
    link: &mut Link,
    channels: &[Arc<str>],
) -> Result<(), RedisError> {
    let ttl = ttl_ms(shared);
    let node = format!("{:032x}", shared.node);
    let commands: Vec<Keyed> = {
        let registry = hub.read();
        channels
            .iter()
            .map(|channel| {
                let members = shared.keys.members(channel, shared.node);
                let mut script = cmd("EVAL");
                script
                    .arg(REPLACE_MEMBERS)
                    .arg(2)
                    .arg(&members)
                    .arg(shared.keys.nodes(channel))
                    .arg(ttl)
                    .arg(&node);
                for conn in registry.members_of(channel) {
                    if let Some(member) = registry.member(conn) {
                        let value = serde_json::to_string(&(&member.session_id, &member.user_id))
                            .expect("two strings serialize");
                        script.arg(conn_field(conn)).arg(value);
                    }
                }
                Keyed::new(members, &mut script)
            })
            .collect()
    };
    let replies = link.exec(commands).await?;
    match replies
        .into_iter()
        .find(|r| matches!(r, Value::ServerError(_)))
    {
        Some(Value::ServerError(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// A channel's members on every node: the other nodes' from Redis, this node's from its
/// registry (exact, and not behind the presence queue).
pub(super) async fn members(
    shared: &Shared,
    hub: &Hub,
    channel: &str,
) -> Result<Vec<Member>, HubError> {
    let shown = shared.connector.shown();
    let failed = |e| HubError::redis(format!("listing members on {shown}"), e);
    let (mut link, generation) = shared
        .commands
        .get(&shared.connector)
        .await
        .map_err(failed)?;
    let listed = list(shared, &mut link, channel).await;
    if let Err(e) = &listed {
        if lost_connection(e) {
            shared.commands.broken(generation).await;
        }
    }
    let mut members = listed.map_err(failed)?;
    members.extend(hub.members(channel));
    members.sort();
    Ok(members)
}

async fn list(shared: &Shared, link: &mut Link, channel: &str) -> Result<Vec<Member>, RedisError> {
    let nodes_key = shared.keys.nodes(channel);
    let nodes: Vec<String> = cmd("SMEMBERS").arg(&nodes_key).query_async(link).await?;
    let others: Vec<(String, String)> = nodes
        .into_iter()
        .filter_map(|node| u128::from_str_radix(&node, 16).ok().map(|id| (node, id)))
        .filter(|(_, id)| *id != shared.node)
        .map(|(node, id)| (node, shared.keys.members(channel, id)))
        .collect();
    let reads = others
        .iter()
        .map(|(_, key)| Keyed::new(key.as_str(), cmd("HGETALL").arg(key)))
        .collect();
    let replies = link.exec(reads).await?;
    let mut members = Vec::new();
    let mut gone = Vec::new();
    for ((node, key), reply) in others.into_iter().zip(replies) {
        let entries: HashMap<String, String> = match reply {
            Value::ServerError(e) => return Err(e.into()),
            reply => redis::from_redis_value(reply)?,
        };
        if entries.is_empty() {
            gone.push((node, key));
        }
        members.extend(entries.into_values().filter_map(|value| {
            let (session_id, user_id) = serde_json::from_str::<(String, String)>(&value).ok()?;
            Some(Member {
                session_id,
                user_id,
            })
        }));
    }
    if !gone.is_empty() {
        // Nodes whose members expired (they died): out of the set too, so that the next
        // listing does not read them. Not needed for the answer, so failures are ignored.
        let forget = gone
            .into_iter()
            .map(|(node, key)| {
                let mut script = cmd("EVAL");
                script
                    .arg(FORGET_NODE)
                    .arg(2)
                    .arg(&key)
                    .arg(&nodes_key)
                    .arg(node);
                Keyed::new(key, &mut script)
            })
            .collect();
        let _ = link.exec(forget).await;
    }
    Ok(members)
}

fn cmd(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

fn conn_field(conn: ConnId) -> String {
    format!("{conn:016x}")
}

fn ttl_ms(shared: &Shared) -> u64 {
    shared.presence_ttl.as_millis() as u64
}
