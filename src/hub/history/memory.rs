//! The in-process store: a bounded stream per channel, in this process's memory.
//!
//! Each stream keeps its epoch, its last offset and its last publications, trimmed to the
//! channel's `size` and `ttl` as it goes. A publication takes its offset, goes into the
//! stream and to the channel's members under the stream's lock, so members see the
//! stream's order; a join with a position reads the stream and becomes a member under the
//! same lock. Every stream together is bounded in bytes (`HubBuilder::history_memory`):
//! past the bound, the streams published to least recently are forgotten, and a client
//! joining one of them again learns that its recovery was incomplete (a new epoch).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::time::Instant;

use super::super::registry::Joined;
use super::super::HubError;
use super::{new_epoch, Found, History};
use crate::protocol::Prepared;
use crate::queue::{Position, Publication};

/// What a stream costs beside its publications.
const STREAM_OVERHEAD: usize = 160;
/// What a kept publication costs beside its frame.
const ENTRY_OVERHEAD: usize = 64;

/// The default bound on every stream together.
pub(crate) const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// Every channel's stream, bounded in bytes.
pub(crate) struct MemoryStore {
    streams: RwLock<HashMap<Arc<str>, Arc<Mutex<Stream>>>>,
    bytes: AtomicUsize,
    max_bytes: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

struct Stream {
    channel: Arc<str>,
    epoch: String,
    top: u64,
    entries: VecDeque<Entry>,
    /// What it counts against the store's bound.
    bytes: usize,
    /// The last publication, or the stream's start.
    last_published: Instant,
    /// Taken out of the store: whoever holds it must look the channel up again.
    evicted: bool,
}

struct Entry {
    offset: u64,
    at: Instant,
    frame: Prepared,
}

impl Stream {
    fn new(channel: Arc<str>, now: Instant) -> Self {
        Stream {
            bytes: STREAM_OVERHEAD + channel.len(),
            channel,
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            last_published: now,
            evicted: false,
        }
    }

    /// Drops what `history` no longer keeps; a stream unused for longer than its position
    /// is kept starts a new epoch. Returns the bytes given back.
    fn expire(&mut self, now: Instant, history: &History) -> usize {
        let before = self.bytes;
        if now.duration_since(self.last_published) > history.position_ttl() {
            self.entries.clear();
            self.bytes = STREAM_OVERHEAD + self.channel.len();
            self.epoch = new_epoch();
            self.top = 0;
            self.last_published = now;
            return before - self.bytes;
        }
        while self
            .entries
            .front()
            .is_some_and(|e| now.duration_since(e.at) > history.ttl())
        {
            self.pop();
        }
        before - self.bytes
    }

    fn pop(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= ENTRY_OVERHEAD + entry.frame.len();
        }
    }

    /// What a join from `since` finds.
    fn find(&self, since: Option<&Position>) -> Found {
        let after = Found::after(since, &self.epoch);
        let entries = match since {
            None => Vec::new(),
            Some(_) => self
                .entries
                .iter()
                .filter(|e| e.offset > after)
                .map(|e| (e.offset, e.frame.clone()))
                .collect(),
        };
        Found {
            epoch: self.epoch.clone(),
            top: self.top,
            entries,
        }
    }
}

impl MemoryStore {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            streams: RwLock::new(HashMap::new()),
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    /// Gives `frame` the next position in `channel`'s stream, keeps it, and hands it to
    /// `deliver` before the next publication can take a position.
    pub(crate) fn publish(
        &self,
        channel: &Arc<str>,
        history: &History,
        frame: &Prepared,
        deliver: impl FnOnce(&Publication) -> usize,
    ) -> usize {
        let delivered = self.with_stream(channel, |stream| {
            let now = Instant::now();
            let mut freed = stream.expire(now, history);
            stream.top += 1;
            let position = Position::new(stream.top, stream.epoch.clone());
            let publication =
                Publication::new(stream.channel.clone(), position, frame.clone(), false);
            let added = ENTRY_OVERHEAD + frame.len();
            stream.entries.push_back(Entry {
                offset: stream.top,
                at: now,
                frame: frame.clone(),
            });
            stream.bytes += added;
            stream.last_published = now;
            while stream.entries.len() > history.size() {
                let before = stream.bytes;
                stream.pop();
                freed += before - stream.bytes;
            }
            self.bytes.fetch_add(added, Ordering::Relaxed);
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            deliver(&publication)
        });
        if self.bytes.load(Ordering::Relaxed) > self.max_bytes {
            self.evict();
        }
        delivered
    }

    /// Runs `add` (the registry's join) with `channel`'s stream locked, so that no
    /// publication falls between what it finds and what the new member is sent live;
    /// `None` if `add` found the connection a member already.
    pub(crate) fn join(
        &self,
        channel: &str,
        history: &History,
        since: Option<&Position>,
        add: impl FnOnce() -> Result<Joined, HubError>,
    ) -> Result<Option<Found>, HubError> {
        let found = self.with_stream(channel, |stream| {
            let freed = stream.expire(Instant::now(), history);
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            match add()? {
                Joined::Already => Ok(None),
                Joined::Now { .. } => Ok(Some(stream.find(since))),
            }
        });
        // A join makes the stream of a channel that has none: joins count against the
        // bound as publications do.
        if self.bytes.load(Ordering::Relaxed) > self.max_bytes {
            self.evict();
        }
        found
    }

    /// The bytes every stream holds together.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Runs `f` on `channel`'s stream (made if it has none), locked.
    fn with_stream<R>(&self, channel: &str, f: impl FnOnce(&mut Stream) -> R) -> R {
        loop {
            let stream = self.stream(channel);
            let mut guard = lock(&stream);
            // Evicted between the lookup and the lock: look again.
            if !guard.evicted {
                return f(&mut guard);
            }
        }
    }

    fn stream(&self, channel: &str) -> Arc<Mutex<Stream>> {
        if let Some(stream) = read(&self.streams).get(channel) {
            return stream.clone();
        }
        let mut streams = write(&self.streams);
        if let Some(stream) = streams.get(channel) {
            return stream.clone();
        }
        let channel: Arc<str> = Arc::from(channel);
        let stream = Stream::new(channel.clone(), Instant::now());
        self.bytes.fetch_add(stream.bytes, Ordering::Relaxed);
        let stream = Arc::new(Mutex::new(stream));
        streams.insert(channel, stream.clone());
        stream
    }

    /// Forgets the streams published to least recently until the store holds three
    /// quarters of its bound.
    fn evict(&self) {
        let mut streams = write(&self.streams);
        if self.bytes.load(Ordering::Relaxed) <= self.max_bytes {
            return;
        }
        let mut by_age: Vec<(Instant, Arc<str>)> = streams
            .iter()
            .map(|(channel, stream)| (lock(stream).last_published, channel.clone()))
            .collect();
        by_age.sort_unstable();
        let goal = self.max_bytes / 4 * 3;
        let mut evicted = 0;
        for (_, channel) in by_age {
            if self.bytes.load(Ordering::Relaxed) <= goal {
                break;
            }
            if let Some(stream) = streams.remove(&channel) {
                let mut stream = lock(&stream);
                stream.evicted = true;
                self.bytes.fetch_sub(stream.bytes, Ordering::Relaxed);
                evicted += 1;
            }
        }
        tracing::info!(
            streams = evicted,
            bound = self.max_bytes,
            "channel history over its memory bound; forgot the least recently used streams"
        );
    }
}

// Every change to a stream or the map leaves it consistent, so a poisoned lock still
// guards usable data.
fn lock(stream: &Mutex<Stream>) -> MutexGuard<'_, Stream> {
    stream.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::Message;

    fn joined(channel: &str) -> impl FnOnce() -> Result<Joined, HubError> + '_ {
        move || {
            Ok(Joined::Now {
                channel: Arc::from(channel),
                first: true,
            })
        }
    }

    #[test]
    fn a_stream_keeps_its_last_publications_and_offsets_count_on() {
        let store = MemoryStore::default();
        let history = History::new(3, Duration::from_secs(60));
        let channel: Arc<str> = Arc::from("c");
        let mut positions = Vec::new();
        for i in 0..10 {
            let frame = Prepared::new(Message::text(i.to_string()));
            store.publish(&channel, &history, &frame, |p| {
                positions.push(p.position().clone());
                1
            });
        }
        let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, (1..=10).collect::<Vec<_>>());
        let found = store
            .join("c", &history, Some(&positions[0]), joined("c"))
            .unwrap()
            .unwrap();
        let kept: Vec<u64> = found.entries.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(kept, [8, 9, 10]);
        assert!(!found.complete(Some(&positions[0])));
        assert!(
            found.complete(Some(&positions[6])),
            "7 saw everything up to 8"
        );
    }

    #[test]
    fn the_store_stays_within_its_bytes_by_forgetting_the_least_recently_published() {
        let max = 64 << 10;
        let store = MemoryStore::new(max);
        let history = History::new(10, Duration::from_secs(60));
        let frame = Prepared::new(Message::text("x".repeat(1000)));
        let mut first = None;
        for i in 0..500 {
            let channel: Arc<str> = Arc::from(format!("c{i}"));
            store.publish(&channel, &history, &frame, |p| {
                first.get_or_insert_with(|| p.position().clone());
                1
            });
            assert!(store.bytes() <= max, "{} bytes after {i}", store.bytes());
        }
        let first = first.unwrap();
        let found = store
            .join("c0", &history, Some(&first), joined("c0"))
            .unwrap()
            .unwrap();
        assert_ne!(found.epoch, first.epoch, "c0 was forgotten: a new stream");
        assert!(!found.complete(Some(&first)));
        let recent = store
            .join("c499", &history, None, joined("c499"))
            .unwrap()
            .unwrap();
        assert_eq!(recent.top, 1, "the newest stream is kept");
    }
}
