//! Channel history: which channels keep it ([`History`], by name or pattern), the stores
//! (in-process here, Redis Streams in the backplane), and joins that deliver what a
//! client missed ([`Conn::join_since`](crate::Conn::join_since)).
//!
//! - `rules`: which channels have history, by name or by prefix.
//! - `memory`: the in-process store, for a hub without a backplane.
//! - `catch_up`: live publications held back for a member while its history is read from
//!   Redis, then filtered, so that none arrives before the history, twice, or not at all.
//!
//! # The switch from history to live
//!
//! Every publication on a channel with history gets its position in one step with its
//! delivery: in-process under the stream's lock, on Redis in one script that appends to
//! the stream and publishes. So a channel's members see publications in stream order, on
//! every node.
//!
//! A join with a position must deliver everything after it, then everything live, each
//! once. In-process, the join reads the stream and becomes a member under the same lock
//! that publications take, so nothing can fall between. On Redis, the member is added
//! with its live publications held back, the node's subscription is confirmed, then the
//! stream is read: a publication stored before the read is in it, one stored after comes
//! live (the script publishes what it stored), and the held-back ones at or below the
//! last offset read are dropped; the rest go to the member's queue after the history.
//! Live copies of what the read covered that arrive later still (the read and the
//! subscription are different connections) are dropped too, until the first live one
//! past the read.

mod catch_up;
mod memory;
mod rules;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use catch_up::CatchUps;
use catch_up::Check;
pub(crate) use memory::MemoryStore;
pub(crate) use rules::Rules;

#[cfg(feature = "redis")]
use super::registry::Joined;
use super::{ConnId, Hub, HubError};
use crate::protocol::Prepared;
use crate::queue::{Position, Publication};

/// How much of a channel's past to keep: the last `size` publications, none older than
/// `ttl`. Set per channel name or pattern with
/// [`HubBuilder::history`](crate::HubBuilder::history).
///
/// A channel's position (its epoch and last offset) outlives its publications, for
/// `position_ttl` after the last one (default: a day, and never less than `ttl`): a
/// client that missed nothing recovers completely even after the publications it could
/// have missed expired, and a channel unused for longer starts a new epoch.
///
/// ```
/// use std::time::Duration;
/// use estuary::{History, Hub};
///
/// let ten_minutes = History::new(100, Duration::from_secs(600));
/// assert_eq!(ten_minutes.size(), 100);
/// let hub = Hub::builder()
///     .history("lobby", ten_minutes)
///     .history("room-*", History::new(1000, Duration::from_secs(3600)))
///     .history("room-scratch", None)
///     .build();
/// # let _ = hub;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    size: usize,
    ttl: Duration,
    position_ttl: Duration,
}

/// How long a channel's position outlives its last publication, by default.
const POSITION_TTL: Duration = Duration::from_secs(24 * 3600);

impl History {
    /// The last `size` publications, none older than `ttl`.
    ///
    /// # Panics
    ///
    /// If `size` is 0 or `ttl` is zero or under a millisecond: such a history would keep
    /// nothing; leave the channel without history instead.
    pub fn new(size: usize, ttl: Duration) -> Self {
        assert!(size > 0, "a history must keep at least one publication");
        assert!(
            ttl >= Duration::from_millis(1),
            "a history must keep publications for at least a millisecond"
        );
        Self {
            size,
            ttl,
            position_ttl: POSITION_TTL.max(ttl),
        }
    }

    /// How long the channel's position outlives its last publication (at least `ttl`).
    pub fn with_position_ttl(mut self, position_ttl: Duration) -> Self {
        self.position_ttl = position_ttl.max(self.ttl);
        self
    }

    /// The most publications kept.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How long a publication is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long the channel's position outlives its last publication.
    pub fn position_ttl(&self) -> Duration {
        self.position_ttl
    }
}

/// What [`Conn::join_since`](crate::Conn::join_since) did: whether the connection joined,
/// what it missed, and whether that is everything it missed.
///
/// ```
/// # async fn run(conn: &mut estuary::Conn, since: Option<estuary::Position>) {
/// let recovery = conn.join_since("lobby", since.as_ref()).await.unwrap();
/// let missed = recovery.publications.len();
/// for publication in recovery.publications {
///     let _ = conn.send_prepared(publication.frame());
/// }
/// if !recovery.complete {
///     let _ = conn.send("some messages were lost while you were away: reload");
/// }
/// # let _ = missed;
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Recovery {
    /// True if the connection was not a member before. A member already recovers
    /// nothing: it is being sent the channel's publications.
    pub joined: bool,
    /// What was published after the position given, oldest first, each one
    /// [`Publication::is_recovered`]: send them to the client now, before the callback
    /// returns. Live publications wait in the connection's queue behind them, with none
    /// of these among them and none missing in between. After an incomplete recovery,
    /// whatever the channel still keeps of what came after.
    pub publications: Vec<Publication>,
    /// True if `publications` is everything published after the position given (or no
    /// position was given). False if some of it is no longer kept (the position is older
    /// than the history), if the stream's epoch changed (its store was lost: a Redis
    /// restarted empty, an evicted in-process stream), if the position was never the
    /// channel's, if the channel keeps no history, or if Redis could not be read: the
    /// application should fetch its state afresh.
    pub complete: bool,
    /// The channel's position once the client has `publications`: the client has seen
    /// everything up to it. `None` if the channel keeps no history, or Redis could not be
    /// read.
    pub position: Option<Position>,
}

impl Recovery {
    fn none(joined: bool, since: Option<&Position>) -> Self {
        Recovery {
            joined,
            publications: Vec::new(),
            complete: since.is_none(),
            position: None,
        }
    }
}

/// What channel history did on this node since the hub started; the same counts go to the
/// `metrics` facade (`estuary_history_stored_total`,
/// `estuary_history_recoveries_total{outcome}`).
///
/// ```
/// let stats = estuary::Hub::new().history_stats();
/// assert_eq!(stats, estuary::HistoryStats::default());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryStats {
    /// Publications this node stored in a channel's stream (on Redis: that Redis took).
    pub stored: u64,
    /// Joins with a position that got everything after it.
    pub recoveries_complete: u64,
    /// Joins with a position that could not get everything after it.
    pub recoveries_incomplete: u64,
}

/// The counters behind [`HistoryStats`], shared with the backplane's publisher.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    stored: AtomicU64,
    complete: AtomicU64,
    incomplete: AtomicU64,
}

impl Counters {
    pub(crate) fn stored(&self, n: u64) {
        if n > 0 {
            self.stored.fetch_add(n, Ordering::Relaxed);
            crate::metrics::history_stored(n);
        }
    }

    fn recovered(&self, complete: bool) {
        let counter = if complete {
            &self.complete
        } else {
            &self.incomplete
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::metrics::history_recovery(complete);
    }

    fn snapshot(&self) -> HistoryStats {
        HistoryStats {
            stored: self.stored.load(Ordering::Relaxed),
            recoveries_complete: self.complete.load(Ordering::Relaxed),
            recoveries_incomplete: self.incomplete.load(Ordering::Relaxed),
        }
    }
}

/// The hub's history: its rules, the in-process store, the members catching up.
#[derive(Default)]
pub(crate) struct Histories {
    pub(crate) rules: Rules,
    pub(crate) memory: MemoryStore,
    pub(crate) catch_up: CatchUps,
    pub(crate) counters: Arc<Counters>,
}

/// What a store found for a join: the stream's epoch and last offset, and the kept
/// publications after the position (all of them, if its epoch is another), oldest first.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) epoch: String,
    pub(crate) top: u64,
    pub(crate) entries: Vec<(u64, Prepared)>,
}

impl Found {
    /// Whether the entries are everything after `since`.
    pub(crate) fn complete(&self, since: Option<&Position>) -> bool {
        let Some(since) = since else { return true };
        if since.epoch != self.epoch || since.offset > self.top {
            return false;
        }
        if since.offset == self.top {
            return true;
        }
        self.entries.first().map(|(offset, _)| *offset) == Some(since.offset + 1)
    }

    /// The offset after which a store selects entries for `since`: its own, in the same
    /// epoch; 0 (everything) in another.
    pub(crate) fn after(since: Option<&Position>, epoch: &str) -> u64 {
        match since {
            Some(since) if since.epoch == epoch => since.offset,
            _ => 0,
        }
    }
}

/// A new epoch: 64 random bits in hex.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Hub {
    /// Publishes `frame` to a channel with history: it gets its position and goes to the
    /// members, in-process at once, on Redis once Redis has stored it. Returns how many
    /// local members it is for.
    pub(super) fn publish(&self, channel: &Arc<str>, history: &History, frame: &Prepared) -> usize {
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            backplane.publish_positioned(channel, history, frame);
            return self.read().member_count(channel);
        }
        let histories = &self.inner.history;
        let delivered = histories
            .memory
            .publish(channel, history, frame, |publication| {
                self.deliver_publication(publication)
            });
        histories.counters.stored(1);
        delivered
    }

    /// Queues a publication for this node's members of its channel; a member catching up
    /// gets it in its catch-up buffer instead.
    pub(crate) fn deliver_publication(&self, publication: &Publication) -> usize {
        let registry = self.read();
        // Looked at with the registry locked: a member added after its catch-up began is
        // seen catching up.
        let mut catching_up = self.inner.history.catch_up.lock_if_any();
        let mut delivered = 0;
        let to = super::Target::Channel(publication.channel_arc().clone());
        registry.for_each(&to, |id, handle| {
            let check = catching_up
                .as_mut()
                .map_or(Check::Deliver, |c| c.check(id, publication));
            delivered += match check {
                Check::Deliver => handle.send_publication(publication.clone()).is_ok() as usize,
                Check::Held => 1,
                Check::Dropped => 0,
            };
        });
        crate::metrics::hub_delivered(delivered);
        delivered
    }

    /// What channel history did on this node.
    pub fn history_stats(&self) -> HistoryStats {
        self.inner.history.counters.snapshot()
    }

    /// [`Conn::join_since`](crate::Conn::join_since).
    pub(crate) async fn join_since_conn(
        &self,
        id: ConnId,
        channel: &str,
        since: Option<&Position>,
    ) -> Result<Recovery, HubError> {
        let Some(history) = self.inner.history.rules.find(channel).copied() else {
            let joined = self.join_conn(id, channel).await?;
            return Ok(self.counted(since, Recovery::none(joined, since)));
        };
        self.may_join(id, channel)?;
        #[cfg(feature = "redis")]
        if self.inner.backplane.is_some() {
            return self.join_since_redis(id, channel, &history, since).await;
        }
        let memory = &self.inner.history.memory;
        let found = memory.join(channel, &history, since, || self.add_member(id, channel))?;
        Ok(match found {
            Some(found) => self.counted(since, recovery(true, channel, since, found)),
            None => Recovery::none(false, since),
        })
    }

    /// Counts a recovery, if a position was given.
    fn counted(&self, since: Option<&Position>, recovery: Recovery) -> Recovery {
        if since.is_some() && recovery.joined {
            self.inner.history.counters.recovered(recovery.complete);
        }
        recovery
    }

    /// A join with a position on Redis: held back, subscribed, read, switched.
    #[cfg(feature = "redis")]
    async fn join_since_redis(
        &self,
        id: ConnId,
        channel: &str,
        history: &History,
        since: Option<&Position>,
    ) -> Result<Recovery, HubError> {
        let backplane = self
            .inner
            .backplane
            .as_ref()
            .expect("called with a backplane");
        let catch_up = self
            .inner
            .history
            .catch_up
            .begin(self, id, channel, history.size());
        let joined = self.add_member(id, channel)?;
        let Joined::Now { channel, .. } = joined else {
            return Ok(Recovery::none(false, since));
        };
        backplane
            .until_routed(&[(super::RouteKind::Channel, channel.clone())])
            .await;
        let found = backplane.read_stream(&channel, history, since).await;
        let recovery = match found {
            Ok(found) => {
                let (top, epoch) = (found.top, found.epoch.clone());
                let mut recovery = recovery(true, &channel, since, found);
                let clean = catch_up.finish(Some((epoch.as_str(), top)));
                recovery.complete &= clean;
                recovery
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a channel's history failed; the member joins without it");
                catch_up.finish(None);
                Recovery::none(true, since)
            }
        };
        Ok(self.counted(since, recovery))
    }
}

/// The recovery a store's findings make.
fn recovery(joined: bool, channel: &str, since: Option<&Position>, found: Found) -> Recovery {
    let complete = found.complete(since);
    let channel: Arc<str> = Arc::from(channel);
    let epoch = found.epoch;
    let publications = match since {
        // A join without a position starts from now.
        None => Vec::new(),
        Some(_) => found
            .entries
            .into_iter()
            .map(|(offset, frame)| {
                let position = Position::new(offset, epoch.clone());
                Publication::new(channel.clone(), position, frame, true)
            })
            .collect(),
    };
    Recovery {
        joined,
        publications,
        complete,
        position: Some(Position::new(found.top, epoch)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Message;

    fn found(epoch: &str, top: u64, offsets: &[u64]) -> Found {
        Found {
            epoch: epoch.into(),
            top,
            entries: offsets
                .iter()
                .map(|&o| (o, Prepared::new(Message::text(o.to_string()))))
                .collect(),
        }
    }

    #[test]
    fn a_recovery_is_complete_only_when_nothing_after_the_position_is_missing() {
        let at = |offset| Some(Position::new(offset, "e"));
        assert!(
            found("e", 5, &[]).complete(None),
            "no position: nothing to miss"
        );
        assert!(
            found("e", 5, &[]).complete(at(5).as_ref()),
            "saw everything"
        );
        assert!(found("e", 5, &[4, 5]).complete(at(3).as_ref()));
        assert!(
            !found("e", 5, &[5]).complete(at(3).as_ref()),
            "4 was trimmed"
        );
        assert!(!found("e", 5, &[]).complete(at(3).as_ref()), "all trimmed");
        assert!(
            !found("e", 5, &[]).complete(at(6).as_ref()),
            "ahead of the stream"
        );
        let other_epoch = Some(Position::new(5, "old"));
        assert!(!found("e", 5, &[1, 2]).complete(other_epoch.as_ref()));
        assert_eq!(Found::after(other_epoch.as_ref(), "e"), 0);
        assert_eq!(Found::after(at(3).as_ref(), "e"), 3);
        assert_eq!(Found::after(None, "e"), 0);
    }
}
