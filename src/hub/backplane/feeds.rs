//! Each history channel's live feed on this node: the last offset delivered to its
//! members, so that a publication this node missed live is read from the channel's
//! stream instead of leaving a gap its members could not see.
//!
//! Publications of a channel with history arrive in stream order, each exactly once, for
//! as long as the subscriber's connection lasts. When it is cut and made again, those
//! published meanwhile never arrive: the next one shows a gap in offsets. The feed then
//! holds what arrives live, reads the missing ones from the stream, and delivers them,
//! then what it held, in order: the members see every offset once, late rather than
//! never. A gap the stream no longer covers (trimmed, or a new epoch) is let through and
//! logged. A copy of one already delivered is dropped.
//!
//! A feed is forgotten when the node's last member of its channel leaves (the node stops
//! listening), and whenever a publication finds no member here, so that a feed starts
//! afresh with the first publication after the next join.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::super::history::History;
use super::super::{Hub, HubInner};
use super::{stream, Counters, Shared, Throttle};
use crate::queue::{Position, Publication};

/// Every history channel's feed on this node.
pub(super) struct Feeds {
    feeds: Mutex<HashMap<Arc<str>, Feed>>,
    /// Channels whose feed must go, noted under the registry's lock (which the feeds'
    /// lock must never wait inside) and applied before the next publication.
    forgotten: Mutex<Vec<Arc<str>>>,
    unfilled: Mutex<Throttle>,
}

struct Feed {
    epoch: String,
    /// The last offset delivered.
    last: u64,
    /// While the missing publications are read: what arrived live meanwhile.
    filling: Option<Vec<Publication>>,
}

impl Feeds {
    pub(super) fn new() -> Self {
        Self {
            feeds: Mutex::new(HashMap::new()),
            forgotten: Mutex::new(Vec::new()),
            unfilled: Mutex::new(Throttle::new(Duration::from_secs(10))),
        }
    }

    /// Forgets `channel`'s feed: this node no longer listens to it.
    pub(super) fn forget(&self, channel: Arc<str>) {
        relock(&self.forgotten).push(channel);
    }

    /// Delivers a live publication to the members of its channel on this node, in its
    /// channel's order; reads what is missing before it first. Returns how many it was
    /// delivered to (0 also while held for a fill).
    pub(super) fn receive(
        &self,
        shared: &Arc<Shared>,
        hub: &Hub,
        history: &History,
        publication: Publication,
    ) -> usize {
        let mut feeds = relock(&self.feeds);
        for channel in std::mem::take(&mut *relock(&self.forgotten)) {
            feeds.remove(&channel);
        }
        if !hub.read().has_channel(publication.channel()) {
            // No member here (the last one left, the unsubscribe is on its way): no feed
            // either, so that the next member's starts from what it is sent.
            feeds.remove(publication.channel());
            return 0;
        }
        let position = publication.position().clone();
        let feed = feeds
            .entry(publication.channel_arc().clone())
            .or_insert_with(|| Feed {
                epoch: position.epoch.clone(),
                last: position.offset.saturating_sub(1),
                filling: None,
            });
        if let Some(held) = &mut feed.filling {
            if held.len() < history.size() {
                held.push(publication);
            }
            return 0;
        }
        if position.epoch != feed.epoch {
            // A new stream (its store was lost): nothing to read from the old one.
            feed.epoch = position.epoch;
            feed.last = position.offset;
            return hub.deliver_publication(&publication);
        }
        if position.offset <= feed.last {
            return 0;
        }
        if position.offset == feed.last + 1 {
            feed.last = position.offset;
            return hub.deliver_publication(&publication);
        }
        let since = Position::new(feed.last, feed.epoch.clone());
        feed.filling = Some(vec![publication.clone()]);
        let task = fill(
            shared.clone(),
            Arc::downgrade(&hub.inner),
            publication.channel_arc().clone(),
            *history,
            since,
        );
        tokio::spawn(task);
        0
    }
}

/// Reads what `channel`'s feed missed after `since`, and delivers it and what the feed
/// held meanwhile.
async fn fill(
    shared: Arc<Shared>,
    hub: Weak<HubInner>,
    channel: Arc<str>,
    history: History,
    since: Position,
) {
    let found = stream::read(&shared, &channel, &history, Some(&since)).await;
    let Some(inner) = hub.upgrade() else { return };
    let hub = Hub { inner };
    let feeds = &shared.feeds;
    let mut all = relock(&feeds.feeds);
    let Some(feed) = all.get_mut(&channel) else {
        return;
    };
    let held = feed.filling.take().unwrap_or_default();
    let mut refilled = 0;
    match found {
        Ok(found) if found.epoch == feed.epoch => {
            for (offset, frame) in found.entries {
                if offset <= feed.last {
                    continue;
                }
                let position = Position::new(offset, feed.epoch.clone());
                let publication = Publication::new(channel.clone(), position, frame, false);
                hub.deliver_publication(&publication);
                feed.last = offset;
                refilled += 1;
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "reading publications this node missed failed"),
    }
    Counters::add(&shared.counters.refilled, refilled);
    let mut unfilled = 0;
    for publication in held {
        let position = publication.position();
        if position.epoch == feed.epoch && position.offset <= feed.last {
            continue;
        }
        if position.epoch == feed.epoch {
            unfilled += position.offset - feed.last - 1;
        }
        feed.epoch = position.epoch.clone();
        feed.last = position.offset;
        hub.deliver_publication(&publication);
    }
    if !hub.read().has_channel(&channel) {
        all.remove(&channel);
    }
    if unfilled > 0 {
        if let Some(unlogged) = relock(&feeds.unfilled).ready() {
            tracing::warn!(
                missed = unfilled,
                unlogged,
                "this node missed publications of a channel with history that its stream no \
                 longer keeps; its members did not get them"
            );
        }
    }
}

fn relock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change leaves the maps consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
