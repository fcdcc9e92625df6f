//! Channel history on Redis Streams: a trimmed stream per channel with history, shared by
//! every node, and the scripts that write and read it.
//!
//! A publication is appended and published by one script ([`PUBLISH`]), which takes the
//! channel's next offset, builds the envelope with its position, appends it to the stream
//! (trimmed to about the history's size), refreshes the keys' expiry, and publishes the
//! same envelope on the channel's route, in one atomic step (one call for all of a
//! batch's publications to the channel): the stream's order is the order
//! in which every node receives the channel's publications, whichever node published
//! them. The script's keys and the route share the channel's hash tag, so on a Redis
//! Cluster they live on one shard and the script may touch them all. The publisher sends
//! it by its SHA1 (`EVALSHA`, in the outbox's pipeline), behind one `SCRIPT LOAD` of its
//! body per batch, so that a new or restarted Redis knows it.
//!
//! A join with a position reads the stream with [`READ`]: the channel's epoch and last
//! offset, and what the stream keeps after the position (everything it keeps, in another
//! epoch); the node leaves out those older than the history's ttl and past its size. A channel without a
//! position key (new, expired, or lost with a Redis restart) gets a new epoch, from the
//! first script that finds it missing.

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;
use sha1::{Digest, Sha1};

use super::super::history::{new_epoch, Found, History};
use super::super::{HubError, Payload, Target};
use super::link::Keyed;
use super::{envelope, wall_clock_ms, Backplane, Routing, Shared};
use crate::protocol::Prepared;
use crate::queue::Position;

/// Appends publications to a channel's stream and publishes them, in order, as one
/// bundle (see `envelope::split`). KEYS: stream, position. ARGV: route, envelope head,
/// size, ttl ms, position ttl ms, a new epoch (used if the channel has none), the publish
/// command, then the payloads. Returns the last offset. One call takes every publication
/// a batch has for the channel, and one message carries them to the nodes: the costs of
/// a call and of a message, several times a publication's, are paid once per batch.
pub(super) const PUBLISH: &str = r#"
local n = #ARGV - 7
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local last = redis.call('HINCRBY', KEYS[2], 'offset', n)
local head = ARGV[2]
local tail = string.char(#epoch) .. epoch
local bundle = {string.char(0xB5)}
for i = 1, n do
  local digits = string.format('%d', last - n + i)
  local envelope = head .. string.char(#digits) .. digits .. tail .. ARGV[7 + i]
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], digits .. '-0', 'e', envelope)
  local len = #envelope
  bundle[#bundle + 1] = string.char(math.floor(len / 16777216) % 256, math.floor(len / 65536) % 256, math.floor(len / 256) % 256, len % 256)
  bundle[#bundle + 1] = envelope
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call(ARGV[7], ARGV[1], table.concat(bundle))
return last
"#;

/// Reads a channel's position and what its stream keeps after a position. KEYS: stream,
/// position. ARGV: "1" if a position is given, its epoch, its offset, a new epoch,
/// position ttl ms. Returns [epoch, last offset, [offset, envelope, ...]].
pub(super) const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return {epoch, 0, {}}
end
local top = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')
if ARGV[1] ~= '1' then
  return {epoch, top, {}}
end
local start = '-'
if ARGV[2] == epoch then
  start = string.format('%d', ARGV[3] + 1) .. '-0'
end
local out = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], start, '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then
      table.insert(out, string.match(entry[1], '^(%d+)'))
      table.insert(out, fields[i + 1])
    end
  end
end
return {epoch, top, out}
"#;

/// The publish script's SHA1, as `EVALSHA` names it.
pub(super) fn publish_sha() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| {
        Sha1::digest(PUBLISH.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// Loads the publish script on the server of `key`'s slot.
pub(super) fn load(key: &str) -> Keyed {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(PUBLISH);
    Keyed::new(key, &mut cmd)
}

/// A publication on its way to a channel's stream: what the script needs beside the
/// route and the payload.
#[derive(Debug)]
pub(super) struct Append {
    pub(super) stream: String,
    pub(super) position: String,
    pub(super) head: Bytes,
    pub(super) size: usize,
    pub(super) ttl_ms: u64,
    pub(super) position_ttl_ms: u64,
}

impl Append {
    /// What it counts against the outbox's bound, beside the route and the payload.
    pub(super) fn size(&self) -> usize {
        self.stream.len() + self.position.len() + self.head.len()
    }
}

/// The script's command (by its SHA1) that appends `payloads` to the stream of `first`
/// (the first of them, whose settings and envelope head they share) and publishes them
/// on `route`, in order.
pub(super) fn append_command<'a>(
    first: &Append,
    route: &str,
    payloads: impl Iterator<Item = &'a [u8]>,
    publish: &str,
) -> Keyed {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(publish_sha())
        .arg(2)
        .arg(&first.stream)
        .arg(&first.position)
        .arg(route)
        .arg(first.head.as_ref())
        .arg(first.size)
        .arg(first.ttl_ms)
        .arg(first.position_ttl_ms)
        .arg(new_epoch())
        .arg(publish);
    for payload in payloads {
        cmd.arg(payload);
    }
    Keyed::new(first.stream.as_str(), &mut cmd)
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Backplane {
    /// Queues a publication on a channel with history: Redis gives it its position, keeps
    /// it, and publishes it to every node with members, this one included.
    pub(crate) fn publish_positioned(
        &self,
        channel: &Arc<str>,
        history: &History,
        frame: &Prepared,
    ) {
        let shared = &self.shared;
        let to = Target::Channel(channel.clone());
        let route = match shared.routing {
            Routing::Interest => shared.keys.route_of(&to),
            Routing::Broadcast => shared.keys.broadcast(),
        };
        let payload = Payload::Frame(frame.clone());
        let (head, body) =
            envelope::encode_unpositioned(shared.node, wall_clock_ms(), &to, &payload);
        let append = Append {
            stream: shared.keys.stream(channel),
            position: shared.keys.position(channel),
            head,
            size: history.size(),
            ttl_ms: millis(history.ttl()),
            position_ttl_ms: millis(history.position_ttl()),
        };
        shared
            .outbox
            .push_append(route, body, append, &shared.counters);
    }

    /// Reads `channel`'s position, and what its stream keeps after `since`.
    pub(crate) async fn read_stream(
        &self,
        channel: &str,
        history: &History,
        since: Option<&Position>,
    ) -> Result<Found, HubError> {
        read(&self.shared, channel, history, since).await
    }
}

/// Reads `channel`'s position, and what its stream keeps after `since`.
pub(super) async fn read(
    shared: &Shared,
    channel: &str,
    history: &History,
    since: Option<&Position>,
) -> Result<Found, HubError> {
    let shown = shared.connector.shown();
    let failed = |e: redis::RedisError| {
        HubError::redis(format!("reading a channel's history on {shown}"), e)
    };
    let stream = shared.keys.stream(channel);
    let read = || {
        let mut script = redis::cmd("EVAL");
        script
            .arg(READ)
            .arg(2)
            .arg(&stream)
            .arg(shared.keys.position(channel))
            .arg(if since.is_some() { "1" } else { "0" })
            .arg(since.map_or("", |p| p.epoch.as_str()))
            .arg(since.map_or(0, |p| p.offset))
            .arg(new_epoch())
            .arg(millis(history.position_ttl()));
        vec![Keyed::new(stream.as_str(), &mut script)]
    };
    // Twice at most: the shared connection may have died since it was last used (a
    // Redis restart), and a join should not fail for that alone.
    let mut reply = None;
    for attempt in 0..2 {
        let (mut link, generation) = shared
            .commands
            .get(&shared.connector)
            .await
            .map_err(failed)?;
        match link.exec(read()).await {
            Ok(mut replies) => {
                reply = Some(match replies.pop().unwrap_or_default() {
                    Value::ServerError(e) => Err(e.into()),
                    reply => Ok(reply),
                });
                break;
            }
            Err(e) if super::presence::lost_connection(&e) => {
                shared.commands.broken(generation).await;
                if attempt == 1 {
                    reply = Some(Err(e));
                }
            }
            Err(e) => {
                reply = Some(Err(e));
                break;
            }
        }
    }
    let reply = reply.expect("the loop ends with a reply or an error");
    let (epoch, top, flat): (String, u64, Vec<Vec<u8>>) =
        redis::from_redis_value(reply.map_err(failed)?).map_err(|e| failed(e.into()))?;
    // The stream is trimmed roughly (whole blocks of entries, which is cheap): it may
    // keep a few more than the history's size, which are left out here, as are those
    // older than its ttl (by the sender's clock, which the nodes keep in step).
    let oldest = wall_clock_ms().saturating_sub(millis(history.ttl()));
    let mut entries = Vec::with_capacity(flat.len() / 2);
    // [offset, envelope, offset, envelope, ...]: the envelopes carry their offsets.
    for bytes in flat.into_iter().skip(1).step_by(2) {
        match envelope::decode(Bytes::from(bytes)) {
            Ok(envelope::Envelope {
                payload: Payload::Frame(frame),
                position: Some(position),
                sent_at,
                ..
            }) => {
                if sent_at >= oldest {
                    entries.push((position.offset, frame));
                }
            }
            // Not one this version can read: left out, and the gap in offsets makes
            // the recovery incomplete.
            _ => super::Counters::add(&shared.counters.malformed, 1),
        }
    }
    if let Some(excess) = entries.len().checked_sub(history.size()) {
        entries.drain(..excess);
    }
    Ok(Found {
        epoch,
        top,
        entries,
    })
}
