//! The outbox: deliveries waiting for Redis, bounded by the delivery deadline and by
//! bytes, and the task that publishes them.
//!
//! A publication on a channel with history goes as the stream script (see `stream`),
//! which stores it and publishes it in one step; anything else as a plain publish.
//!
//! The task keeps one batch in flight: everything queued since the last round trip goes
//! in one pipeline (one per shard on a cluster), and the next batch waits for its
//! replies. A round trip that does not come back within the deadline (Redis stalled)
//! costs the connection, so that nothing more is written into a socket that Redis is not
//! reading; while it reconnects, the outbox drops what passes the deadline. What Redis
//! still holds of the last batch when it wakes up is dropped by the receivers, which
//! check each delivery's age.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use redis::cluster_routing::Slot;
use redis::{RedisError, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::link::{Keyed, Link};
use super::stream::{self, Append};
use super::{reconnect, Backoff, Counters, Routing, Shared, Throttle};

/// What one queued delivery costs beside its bytes (the entry, the route's allocation).
const ENTRY_OVERHEAD: usize = 64;

/// Deliveries on their way to Redis.
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    deadline: Duration,
    max_bytes: usize,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    bytes: usize,
}

struct Outgoing {
    queued: Instant,
    route: String,
    /// The envelope, or for a publication with history the payload the script puts
    /// behind the envelope's head.
    envelope: Bytes,
    append: Option<Box<Append>>,
}

impl Outgoing {
    fn size(&self) -> usize {
        let append = self.append.as_ref().map_or(0, |a| a.size());
        self.route.len() + self.envelope.len() + append + ENTRY_OVERHEAD
    }

    /// The command that publishes a delivery without history.
    fn command(&self, publish: &str) -> Keyed {
        let mut cmd = redis::cmd(publish);
        cmd.arg(&self.route).arg(self.envelope.as_ref());
        Keyed::new(self.route.as_str(), &mut cmd)
    }
}

impl Outbox {
    pub(super) fn new(deadline: Duration, max_bytes: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            deadline,
            max_bytes,
        }
    }

    /// Queues a delivery for `route`. What has waited past the deadline goes first, then
    /// the oldest until the new one fits; a delivery larger than the whole bound still
    /// goes, alone.
    pub(super) fn push(&self, route: String, envelope: Bytes, counters: &Counters) {
        self.push_item(route, envelope, None, counters);
    }

    /// Queues a publication for a channel's stream: `payload` goes behind `append`'s head.
    pub(super) fn push_append(
        &self,
        route: String,
        payload: Bytes,
        append: Append,
        counters: &Counters,
    ) {
        self.push_item(route, payload, Some(Box::new(append)), counters);
    }

    fn push_item(
        &self,
        route: String,
        envelope: Bytes,
        append: Option<Box<Append>>,
        counters: &Counters,
    ) {
        let now = Instant::now();
        let item = Outgoing {
            queued: now,
            route,
            envelope,
            append,
        };
        let (expired, full) = {
            let mut queue = self.lock();
            let expired = queue.drop_expired(now, self.deadline);
            let mut full = 0;
            while queue.bytes + item.size() > self.max_bytes && queue.pop_front().is_some() {
                full += 1;
            }
            queue.bytes += item.size();
            queue.items.push_back(item);
            (expired, full)
        };
        Counters::add(&counters.dropped_deadline, expired);
        Counters::add(&counters.dropped_outbox_full, full);
        self.ready.notify_one();
    }

    /// Everything queued, without what has passed the deadline (counted as dropped).
    fn take(&self, counters: &Counters) -> VecDeque<Outgoing> {
        let (items, expired) = {
            let mut queue = self.lock();
            let expired = queue.drop_expired(Instant::now(), self.deadline);
            queue.bytes = 0;
            (std::mem::take(&mut queue.items), expired)
        };
        Counters::add(&counters.dropped_deadline, expired);
        items
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A push or a take leaves the queue consistent, so a poisoned lock still guards a
        // usable queue.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Queue {
    fn pop_front(&mut self) -> Option<Outgoing> {
        let item = self.items.pop_front()?;
        self.bytes -= item.size();
        Some(item)
    }

    fn drop_expired(&mut self, now: Instant, deadline: Duration) -> u64 {
        let mut expired = 0;
        while self
            .items
            .front()
            .is_some_and(|item| now.duration_since(item.queued) > deadline)
        {
            self.pop_front();
            expired += 1;
        }
        expired
    }
}

/// The publisher's connection: replies must come within the deadline.
pub(super) async fn connect(shared: &Shared) -> Result<Link, RedisError> {
    shared.connector.connect(shared.deadline, None).await
}

/// The most publications one call of the stream script takes, and their most bytes, so
/// that no call holds Redis for long and no bundle comes near a subscriber's output
/// buffer limit (32 MiB by default).
const MAX_PER_APPEND: usize = 512;
const MAX_APPEND_BYTES: usize = 1 << 20;

/// What one command of a batch does.
enum Planned {
    /// Loads the stream script on the server of this key.
    Load(usize),
    /// Publishes this item.
    Plain(usize),
    /// Appends these items (all to one channel) and publishes them, in order.
    Append(Vec<usize>),
}

/// The commands that publish `batch`, and for each the items it publishes (none for a
/// script load). Every channel's publications with history go in one call of the stream
/// script (at most [`MAX_PER_APPEND`] and [`MAX_APPEND_BYTES`]), at the place of the
/// first: each channel keeps its
/// order, and the script's own cost is paid once per channel and batch, not per
/// publication. The script goes by its SHA1, after a `SCRIPT LOAD` of its body in the same
/// pipeline (one per shard on a cluster): Redis runs the load first, so that a new or
/// restarted Redis knows the script without a failed round trip.
fn commands_for(
    batch: &VecDeque<Outgoing>,
    publish: &str,
    cluster: bool,
) -> (Vec<Keyed>, Vec<Vec<usize>>) {
    let mut plan: Vec<Planned> = Vec::with_capacity(batch.len() + 1);
    let mut loaded: HashSet<Slot> = HashSet::new();
    // The open append of each channel: its index in `plan`, and its bytes.
    let mut open: HashMap<&str, (usize, usize)> = HashMap::new();
    for (at, item) in batch.iter().enumerate() {
        let Some(append) = &item.append else {
            plan.push(Planned::Plain(at));
            continue;
        };
        let bytes = item.envelope.len() + append.head.len();
        if let Some((index, open_bytes)) = open.get_mut(append.stream.as_str()) {
            if let Planned::Append(items) = &mut plan[*index] {
                if items.len() < MAX_PER_APPEND && *open_bytes + bytes <= MAX_APPEND_BYTES {
                    items.push(at);
                    *open_bytes += bytes;
                    continue;
                }
            }
        }
        let slot = Slot::for_key(if cluster { append.stream.as_str() } else { "" });
        if loaded.insert(slot) {
            plan.push(Planned::Load(at));
        }
        open.insert(append.stream.as_str(), (plan.len(), bytes));
        plan.push(Planned::Append(vec![at]));
    }
    let mut commands = Vec::with_capacity(plan.len());
    let mut owners = Vec::with_capacity(plan.len());
    for planned in plan {
        match planned {
            Planned::Load(at) => {
                let stream = &batch[at].append.as_ref().expect("an append").stream;
                commands.push(stream::load(stream));
                owners.push(Vec::new());
            }
            Planned::Plain(at) => {
                commands.push(batch[at].command(publish));
                owners.push(vec![at]);
            }
            Planned::Append(items) => {
                let first = &batch[items[0]];
                let append = first.append.as_ref().expect("an append");
                let payloads = items.iter().map(|&at| batch[at].envelope.as_ref());
                commands.push(stream::append_command(
                    append,
                    &first.route,
                    payloads,
                    publish,
                ));
                owners.push(items);
            }
        }
    }
    (commands, owners)
}

/// Publishes the outbox, one batch per round trip, until the hub is dropped.
pub(super) async fn publish_loop(shared: Arc<Shared>, link: Link) {
    let mut link = Some(link);
    let mut backoff = Backoff::new();
    let mut failures = Throttle::new(Duration::from_secs(10));
    let command = match (shared.routing, shared.sharded) {
        (Routing::Interest, true) => "SPUBLISH",
        _ => "PUBLISH",
    };
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = shared.outbox.ready.notified() => {}
        }
        loop {
            let connected = match &mut link {
                Some(connected) => connected,
                None => {
                    let waiting = "cross-node deliveries wait, within the deadline";
                    let made = reconnect(&shared, &mut backoff, &mut failures, waiting, || {
                        connect(&shared)
                    });
                    let Some(made) = made.await else { return };
                    tracing::info!(
                        redis = shared.connector.shown(),
                        "publishing to redis again"
                    );
                    backoff.reset();
                    link.insert(made)
                }
            };
            let batch = shared.outbox.take(&shared.counters);
            if batch.is_empty() {
                break;
            }
            let count = batch.len() as u64;
            let (commands, owners) = commands_for(&batch, command, shared.connector.is_cluster());
            let (all_replies, error) = connected.exec_each(commands).await;
            // Each item's reply: that of the command that published it.
            let mut replies: Vec<Option<Value>> = vec![None; batch.len()];
            for (reply, items) in all_replies.into_iter().zip(&owners) {
                for &at in items {
                    replies[at] = reply.clone();
                }
            }
            let ok = |reply: &Option<Value>| matches!(reply, Some(reply) if !matches!(reply, Value::ServerError(_)));
            let published = replies.iter().filter(|reply| ok(reply)).count() as u64;
            let stored = batch
                .iter()
                .zip(&replies)
                .filter(|(item, reply)| item.append.is_some() && ok(reply))
                .count() as u64;
            Counters::add(&shared.counters.published, published);
            Counters::add(&shared.counters.dropped_failed, count - published);
            shared.history.stored(stored);
            if let Some((item, Some(Value::ServerError(e)))) = batch
                .iter()
                .zip(&replies)
                .find(|(item, reply)| item.append.is_some() && !ok(reply))
            {
                if let Some(unlogged) = failures.ready() {
                    tracing::warn!(error = %e, unlogged, route = item.route, "storing a publication in a channel's history failed");
                }
            }
            if let Some(e) = error {
                if let Some(unlogged) = failures.ready() {
                    tracing::warn!(error = %e, unlogged, redis = shared.connector.shown(), "publishing to redis failed; reconnecting");
                }
                // Nothing more goes into a connection whose last batch did not come back:
                // Redis may be stalled, and would run it late. A cluster connection
                // reconnects each shard by itself, and keeps the shards that answered.
                if !shared.connector.is_cluster() {
                    link = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_waits_past_the_deadline_is_dropped_and_counted() {
        let deadline = Duration::from_millis(50);
        let outbox = Outbox::new(deadline, 1 << 20);
        let counters = Counters::default();
        outbox.push("r".into(), Bytes::from_static(b"old"), &counters);
        tokio::time::sleep(deadline * 2).await;
        outbox.push("r".into(), Bytes::from_static(b"new"), &counters);
        let batch = outbox.take(&counters);
        assert_eq!(batch.len(), 1);
        assert_eq!(&batch[0].envelope[..], b"new");
        assert_eq!(counters.snapshot().dropped_deadline, 1);
        // Expired by the time it is taken, with no push since.
        outbox.push("r".into(), Bytes::from_static(b"late"), &counters);
        tokio::time::sleep(deadline * 2).await;
        assert!(outbox.take(&counters).is_empty());
        assert_eq!(counters.snapshot().dropped_deadline, 2);
    }

    #[tokio::test]
    async fn a_full_outbox_drops_the_oldest_and_stays_within_its_bytes() {
        let item = 100 + ENTRY_OVERHEAD + 1;
        let outbox = Outbox::new(Duration::from_secs(2), item * 10);
        let counters = Counters::default();
        for i in 0..25u8 {
            outbox.push("r".into(), Bytes::from(vec![i; 100]), &counters);
            assert!(outbox.lock().bytes <= item * 10);
        }
        let batch = outbox.take(&counters);
        assert_eq!(batch.len(), 10);
        assert_eq!(batch[0].envelope[0], 15, "the newest ten are kept");
        assert_eq!(counters.snapshot().dropped_outbox_full, 15);
        assert_eq!(outbox.lock().bytes, 0);
    }
}
