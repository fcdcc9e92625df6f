//! Live publications held back, then filtered, for members whose history is read from
//! Redis.
//!
//! A member that joins with a position is added to the channel *holding*: until its
//! history has been read, what arrives live for it waits in a buffer. When the read is
//! done (the stream's epoch and the last offset it covered), the buffer is let go in one
//! step, under the same locks as live delivery: what the read covered (the same epoch, at
//! or below the last offset read) is dropped, the rest goes to the member's queue.
//!
//! A publication the read covered may still be on its way live: the read and the
//! subscription are different connections, so its live copy can arrive after the read's
//! reply. So the member goes on *filtering*: live publications at or below the last
//! offset read are dropped, until the first one above it, after which none at or below
//! can come (a channel's publications arrive in stream order). A buffer holds at most the
//! channel's history size; past it, publications are dropped and the recovery reported
//! incomplete. A member that leaves is forgotten here too.
//!
//! Only a hub on Redis catches up: in-process, a join reads its history under the lock
//! its channel's publications take, and no member is ever found here.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::super::ConnId;
#[cfg(feature = "redis")]
use super::super::Hub;
use crate::queue::Publication;

/// The members catching up on this node.
#[derive(Default)]
pub(crate) struct CatchUps {
    /// How many members are catching up: live delivery looks at the map only when some
    /// are. Kept equal to the map's length, under its lock.
    count: AtomicUsize,
    members: Mutex<HashMap<ConnId, Vec<CatchingUp>>>,
}

/// A connection catching up on a channel. It reads one channel's history at a time
/// (`Conn::join_since` takes the connection mutably), and may be filtering others'.
struct CatchingUp {
    channel: Arc<str>,
    phase: Phase,
}

enum Phase {
    /// The history is being read: live publications wait.
    Holding {
        held: Vec<Publication>,
        max: usize,
        overflowed: bool,
    },
    /// The history has been read up to `floor` in `epoch`: live copies of what it covered
    /// are dropped.
    Filtering { epoch: String, floor: u64 },
}

/// What live delivery does with a publication for a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Queue it: the member is not catching up on its channel (any longer).
    Deliver,
    /// Held back for the member.
    Held,
    /// Dropped: the member's history covered it, or its buffer is full.
    Dropped,
}

/// The catching-up members, locked, for live delivery.
pub(crate) struct Catching<'a> {
    members: MutexGuard<'a, HashMap<ConnId, Vec<CatchingUp>>>,
    count: &'a AtomicUsize,
}

impl Catching<'_> {
    /// What to do with `publication` for member `id`.
    pub(crate) fn check(&mut self, id: ConnId, publication: &Publication) -> Check {
        let Some(channels) = self.members.get_mut(&id) else {
            return Check::Deliver;
        };
        let Some(at) = channels
            .iter()
            .position(|c| *c.channel == *publication.channel())
        else {
            return Check::Deliver;
        };
        match &mut channels[at].phase {
            Phase::Holding {
                held,
                max,
                overflowed,
            } => {
                if held.len() >= *max {
                    *overflowed = true;
                    return Check::Dropped;
                }
                held.push(publication.clone());
                Check::Held
            }
            Phase::Filtering { epoch, floor } => {
                let position = publication.position();
                if position.epoch == *epoch && position.offset <= *floor {
                    return Check::Dropped;
                }
                // Past what the history covered: nothing older can follow.
                self.remove(id, Some(publication.channel()));
                Check::Deliver
            }
        }
    }

    /// Takes out `id`'s catching up on `channel` (on every channel, for `None`).
    fn remove(&mut self, id: ConnId, channel: Option<&str>) -> Option<CatchingUp> {
        let channels = self.members.get_mut(&id)?;
        let taken = match channel {
            Some(channel) => {
                let at = channels.iter().position(|c| *c.channel == *channel)?;
                Some(channels.swap_remove(at))
            }
            None => {
                channels.clear();
                None
            }
        };
        if channels.is_empty() {
            self.members.remove(&id);
        }
        taken
    }

    /// Starts `id`'s catching up on a channel, in place of any it had there.
    fn insert(&mut self, id: ConnId, member: CatchingUp) {
        let _ = self.remove(id, Some(&member.channel));
        self.members.entry(id).or_default().push(member);
    }

    fn len(&self) -> usize {
        self.members.values().map(Vec::len).sum()
    }
}

impl Drop for Catching<'_> {
    fn drop(&mut self) {
        let len = self.len();
        self.count.store(len, Ordering::Release);
    }
}

impl CatchUps {
    /// The catching-up members, locked, if there are any.
    pub(crate) fn lock_if_any(&self) -> Option<Catching<'_>> {
        (self.count.load(Ordering::Acquire) > 0).then(|| self.lock())
    }

    /// Forgets `id`'s catching up on `channel`, which it left (on every channel, for
    /// `None`: it closed).
    pub(crate) fn forget(&self, id: ConnId, channel: Option<&str>) {
        if self.count.load(Ordering::Acquire) > 0 {
            self.lock().remove(id, channel);
        }
    }

    /// Starts holding back `channel`'s live publications for `id`, at most `max`; they
    /// are let go when the returned guard finishes or drops.
    #[cfg(feature = "redis")]
    pub(crate) fn begin<'a>(
        &'a self,
        hub: &'a Hub,
        id: ConnId,
        channel: &str,
        max: usize,
    ) -> CatchUp<'a> {
        let member = CatchingUp {
            channel: Arc::from(channel),
            phase: Phase::Holding {
                held: Vec::new(),
                max,
                overflowed: false,
            },
        };
        self.lock().insert(id, member);
        CatchUp {
            hub,
            id,
            channel: Arc::from(channel),
            done: false,
        }
    }

    fn lock(&self) -> Catching<'_> {
        Catching {
            // Every change leaves the map consistent.
            members: self.members.lock().unwrap_or_else(|p| p.into_inner()),
            count: &self.count,
        }
    }
}

/// One member's history being read; dropping it lets go of everything held.
#[cfg(feature = "redis")]
pub(crate) struct CatchUp<'a> {
    hub: &'a Hub,
    id: ConnId,
    channel: Arc<str>,
    done: bool,
}

#[cfg(feature = "redis")]
impl CatchUp<'_> {
    /// Lets go of the held publications: those that `read` (an epoch and the last offset
    /// read from it) covered are dropped, the others queued for the member, and from now
    /// on the live copies of what `read` covered are dropped. True if none was dropped
    /// for a full buffer and none came from another epoch than the one read.
    pub(crate) fn finish(mut self, read: Option<(&str, u64)>) -> bool {
        self.done = true;
        self.release(read)
    }

    fn release(&self, read: Option<(&str, u64)>) -> bool {
        // Live delivery locks the registry, then the members: the same order here, so
        // that no publication is queued between the held ones and the end of holding.
        let registry = self.hub.read();
        let mut catching = self.hub.inner.history.catch_up.lock();
        let Some(member) = catching.remove(self.id, Some(&self.channel)) else {
            return true;
        };
        let Phase::Holding {
            held, overflowed, ..
        } = member.phase
        else {
            return true;
        };
        let mut clean = !overflowed;
        let mut past_the_read = false;
        let handle = registry
            .handle(self.id)
            .filter(|_| registry.is_member(self.id, &member.channel));
        for publication in held {
            let position = publication.position();
            if let Some((epoch, top)) = read {
                if position.epoch == epoch && position.offset <= top {
                    continue;
                }
                clean &= position.epoch == epoch;
            }
            past_the_read = true;
            if let Some(handle) = handle {
                let _ = handle.send_publication(publication);
            }
        }
        if let (Some((epoch, top)), false, Some(_)) = (read, past_the_read, handle) {
            catching.insert(
                self.id,
                CatchingUp {
                    channel: member.channel,
                    phase: Phase::Filtering {
                        epoch: epoch.to_owned(),
                        floor: top,
                    },
                },
            );
        }
        clean
    }
}

#[cfg(feature = "redis")]
impl Drop for CatchUp<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.release(None);
        }
    }
}
