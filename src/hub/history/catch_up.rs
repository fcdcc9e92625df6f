//! Live publications held back for members whose history is being read from Redis.
//!
//! A member that joins with a position is added to the channel with a buffer: until its
//! history has been read, what arrives live for it waits there. When the read is done,
//! the buffer is let go in one step, under the same locks as live delivery: what the
//! read covered (the same epoch, at or below the last offset read) is dropped, the rest
//! goes to the member's queue, and live publications go straight to the queue again. A
//! buffer holds at most the channel's history size; past it, publications are dropped
//! and the recovery reported incomplete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::super::ConnId;
#[cfg(feature = "redis")]
use super::super::Hub;
use crate::queue::Publication;

/// The members catching up on this node, with what is held for them.
#[derive(Default)]
pub(crate) struct CatchUps {
    /// How many buffers exist: live delivery looks at the map only when one does.
    count: AtomicUsize,
    buffers: Mutex<Buffers>,
}

/// A connection catches up on one channel at a time (`Conn::join_since` takes the
/// connection mutably).
#[derive(Default)]
pub(crate) struct Buffers(HashMap<ConnId, Buffer>);

struct Buffer {
    channel: Arc<str>,
    held: Vec<Publication>,
    max: usize,
    overflowed: bool,
}

impl Buffers {
    /// Holds `publication` if `id` is catching up on its channel: `Some(true)` if held,
    /// `Some(false)` if dropped for a full buffer, `None` if `id` is not catching up.
    pub(crate) fn hold(&mut self, id: ConnId, publication: &Publication) -> Option<bool> {
        let buffer = self.0.get_mut(&id)?;
        if *buffer.channel != *publication.channel() {
            return None;
        }
        if buffer.held.len() >= buffer.max {
            buffer.overflowed = true;
            return Some(false);
        }
        buffer.held.push(publication.clone());
        Some(true)
    }
}

impl CatchUps {
    /// The buffers, locked, if there are any.
    pub(crate) fn lock_if_any(&self) -> Option<MutexGuard<'_, Buffers>> {
        (self.count.load(Ordering::Acquire) > 0).then(|| self.lock())
    }

    #[cfg(feature = "redis")]
    /// Starts holding back `channel`'s live publications for `id`, at most `max`; they are
    /// let go when the returned guard finishes or drops.
    pub(crate) fn begin<'a>(
        &'a self,
        hub: &'a Hub,
        id: ConnId,
        channel: &str,
        max: usize,
    ) -> CatchUp<'a> {
        let buffer = Buffer {
            channel: Arc::from(channel),
            held: Vec::new(),
            max,
            overflowed: false,
        };
        let mut buffers = self.lock();
        if buffers.0.insert(id, buffer).is_none() {
            self.count.fetch_add(1, Ordering::Release);
        }
        CatchUp {
            hub,
            id,
            done: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buffers> {
        // Every change leaves the map consistent.
        self.buffers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One member catching up; dropping it lets go of everything held.
#[cfg(feature = "redis")]
pub(crate) struct CatchUp<'a> {
    hub: &'a Hub,
    id: ConnId,
    done: bool,
}

#[cfg(feature = "redis")]
impl CatchUp<'_> {
    /// Lets go of the held publications: those that `read` (an epoch and the last offset
    /// read from it) covered are dropped, the others queued for the member. True if none
    /// was dropped for a full buffer and none came from another epoch than the one read.
    pub(crate) fn finish(mut self, read: Option<(&str, u64)>) -> bool {
        self.done = true;
        self.release(read)
    }

    fn release(&self, read: Option<(&str, u64)>) -> bool {
        let catch_ups = &self.hub.inner.history.catch_up;
        // Live delivery locks the registry, then the buffers: the same order here, so that
        // no publication is queued between the held ones and the end of holding.
        let registry = self.hub.read();
        let mut buffers = catch_ups.lock();
        let Some(buffer) = buffers.0.remove(&self.id) else {
            return true;
        };
        catch_ups.count.fetch_sub(1, Ordering::Release);
        let mut clean = !buffer.overflowed;
        let handle = registry
            .handle(self.id)
            .filter(|_| registry.is_member(self.id, &buffer.channel));
        for publication in buffer.held {
            let position = publication.position();
            if let Some((epoch, top)) = read {
                if position.epoch == epoch && position.offset <= top {
                    continue;
                }
                clean &= position.epoch == epoch;
            }
            if let Some(handle) = handle {
                let _ = handle.send_publication(publication);
            }
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
