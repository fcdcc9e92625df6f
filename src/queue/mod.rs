//! The per-connection outbound queue, the handle other tasks send through, and what
//! happens when a peer reads too slowly.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::task::AtomicWaker;

use crate::protocol::{validate_outgoing, CloseError, CloseReason, EncodeError, Message, Prepared};

mod event;
mod publication;

pub use event::Event;
pub use publication::{Position, Publication};

/// What other tasks put in a connection's queue.
pub(crate) enum Outbound {
    /// A frame, encoded once, written as it is.
    Frame(Prepared),
    /// An event for the handler's `on_event`.
    Event(Event),
    /// A publication on a channel with history, for the handler's `on_publication`.
    Publication(Publication),
    /// Close the connection for this reason.
    Close(CloseReason),
}

impl Outbound {
    /// What the item counts against the queue's bound, in bytes: a close request counts
    /// nothing, so that it always fits.
    fn cost(&self) -> usize {
        match self {
            Outbound::Frame(frame) => frame.len(),
            Outbound::Event(event) => event.cost(),
            Outbound::Publication(publication) => publication.cost(),
            Outbound::Close(_) => 0,
        }
    }
}

/// One connection's queue, shared by its handles and its engine. The bound is kept in
/// bytes, beside the queue, so that a close request always fits; an empty queue holds
/// no allocation, which keeps idle connections small.
pub(crate) struct QueueState {
    items: Mutex<VecDeque<Outbound>>,
    /// How many items wait, readable without the lock.
    len: AtomicUsize,
    waker: AtomicWaker,
    /// The bytes queued, frames and events (see [`Outbound::cost`]).
    queued: AtomicUsize,
    max: usize,
    policy: SlowConsumerPolicy,
    closed: AtomicBool,
    /// A slow-consumer close was requested.
    doomed: AtomicBool,
}

impl QueueState {
    /// The engine's side: registers the task to wake, and, if anything waits, locks the
    /// queue to take from it. An empty queue costs no lock.
    pub(crate) fn drain(&self, waker: &std::task::Waker) -> Option<Drain<'_>> {
        self.waker.register(waker);
        // After `register`: a push that this load misses wakes the task.
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(Drain {
            items: self.lock(),
            state: self,
        })
    }

    /// Whether a sender found the queue full under [`SlowConsumerPolicy::Disconnect`].
    pub(crate) fn is_doomed(&self) -> bool {
        self.doomed.load(Ordering::Relaxed)
    }

    /// Gives back the queue's room, if it is empty (for a connection gone quiet).
    pub(crate) fn release_if_empty(&self) {
        let mut items = self.lock();
        if items.is_empty() && items.capacity() > 0 {
            *items = VecDeque::new();
        }
    }

    /// The engine stopped reading the queue: later sends fail with `Closed`, and what
    /// is still queued is dropped.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let dropped = {
            let mut items = self.lock();
            self.len.store(0, Ordering::Release);
            std::mem::take(&mut *items)
        };
        drop(dropped);
    }

    fn push(&self, item: Outbound) -> Result<(), SendError> {
        {
            let mut items = self.lock();
            // Checked under the lock: nothing is queued after `close` emptied the queue.
            if self.closed.load(Ordering::Relaxed) {
                return Err(SendError::Closed);
            }
            items.push_back(item);
            self.len.store(items.len(), Ordering::Release);
        }
        self.waker.wake();
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Outbound>> {
        // A push or a pop cannot leave the queue half-changed, so a poisoned lock still
        // guards a consistent queue.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's hold on a non-empty queue, to take items off it in order.
pub(crate) struct Drain<'a> {
    items: MutexGuard<'a, VecDeque<Outbound>>,
    state: &'a QueueState,
}

impl Drain<'_> {
    /// The next item, no longer counted against the bound.
    pub(crate) fn pop(&mut self) -> Option<Outbound> {
        let item = self.items.pop_front()?;
        self.state.len.store(self.items.len(), Ordering::Release);
        self.state.queued.fetch_sub(item.cost(), Ordering::Relaxed);
        Some(item)
    }
}

/// What a connection does when its peer reads slower than the server sends to it.
///
/// ```
/// use estuary::{SlowConsumerPolicy, WebSocketConfig};
///
/// let config = WebSocketConfig::default().with_slow_consumer(SlowConsumerPolicy::DropNewest);
/// assert_eq!(config.slow_consumer, SlowConsumerPolicy::DropNewest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Close the connection with 1008 "slow consumer" (the default).
    #[default]
    Disconnect,
    /// Refuse the message that does not fit; the sender gets `SendError::QueueFull`.
    DropNewest,
}

/// A cloneable handle that sends to one connection from any task.
///
/// Get one from `Conn::handle`. Sends are queued and written by the connection's own task,
/// in order; they fail with a clear [`SendError`] once the connection is closing or when
/// its queue is full.
///
/// ```
/// use estuary::{Conn, Handler, Message};
///
/// #[derive(Clone)]
/// struct Ticker;
///
/// impl Handler for Ticker {
///     async fn on_open(&mut self, conn: &mut Conn) {
///         let handle = conn.handle();
///         tokio::spawn(async move {
///             let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
///             // Stops when the connection closes and `send` starts failing.
///             while handle.send(Message::text("tick")).is_ok() {
///                 tick.tick().await;
///             }
///         });
///     }
///
///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
/// }
/// ```
#[derive(Clone)]
pub struct SessionHandle {
    state: Arc<QueueState>,
}

impl SessionHandle {
    /// A handle and the engine's end of the same queue.
    pub(crate) fn new(max: usize, policy: SlowConsumerPolicy) -> (Self, Arc<QueueState>) {
        let state = Arc::new(QueueState {
            items: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
            queued: AtomicUsize::new(0),
            max,
            policy,
            closed: AtomicBool::new(false),
            doomed: AtomicBool::new(false),
        });
        (
            Self {
                state: state.clone(),
            },
            state,
        )
    }

    /// Queues a message for the client.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_prepared(&Prepared::new(message))
    }

    /// Queues a frame encoded once for many connections: its bytes are shared, not copied.
    pub fn send_prepared(&self, frame: &Prepared) -> Result<(), SendError> {
        self.reserve(frame.len())?;
        self.push_counted(Outbound::Frame(frame.clone()))
    }

    /// Queues a server-side event for the handler's `on_event`. Events count against the
    /// queue's bound like messages ([`Event::cost`]) and meet the same slow-consumer
    /// policy: a connection whose handler falls behind its events is closed, or the event
    /// refused, as for a peer that stops reading.
    pub fn send_event(&self, event: Event) -> Result<(), SendError> {
        self.reserve(event.cost())?;
        self.push_counted(Outbound::Event(event))
    }

    /// Queues a publication for the handler's `on_publication`; it counts against the
    /// queue's bound like a frame.
    pub(crate) fn send_publication(&self, publication: Publication) -> Result<(), SendError> {
        self.reserve(publication.cost())?;
        self.push_counted(Outbound::Publication(publication))
    }

    /// Asks the connection to close with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), CloseError> {
        validate_outgoing(code, reason)?;
        let reason = CloseReason::Local {
            code,
            reason: reason.to_owned(),
        };
        self.push(Outbound::Close(reason))
            .map_err(|_| CloseError::AlreadyClosing)
    }

    /// Whether the connection has stopped taking messages.
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn push(&self, item: Outbound) -> Result<(), SendError> {
        self.state.push(item)
    }

    /// Pushes an item whose cost [`SessionHandle::reserve`] counted; gives the count back
    /// if the queue is closed.
    fn push_counted(&self, item: Outbound) -> Result<(), SendError> {
        let cost = item.cost();
        self.push(item).inspect_err(|_| {
            self.state.queued.fetch_sub(cost, Ordering::Relaxed);
        })
    }

    fn reserve(&self, len: usize) -> Result<(), SendError> {
        let state = &self.state;
        // Full means a backlog at the limit already; one message larger than the limit
        // still goes out when the peer has kept up.
        let before = state.queued.fetch_add(len, Ordering::Relaxed);
        if before < state.max {
            return Ok(());
        }
        state.queued.fetch_sub(len, Ordering::Relaxed);
        match state.policy {
            SlowConsumerPolicy::DropNewest => Err(SendError::QueueFull),
            SlowConsumerPolicy::Disconnect => {
                // The bound is in bytes beside the queue, so the close request always
                // fits; later sends fail with `Closed` once the engine closes.
                if !state.doomed.swap(true, Ordering::Relaxed) {
                    let _ = state.push(Outbound::Close(CloseReason::SlowConsumer));
                }
                Err(SendError::SlowConsumer)
            }
        }
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("queued", &self.state.queued.load(Ordering::Relaxed))
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why a message was not queued.
///
/// ```
/// assert_eq!(estuary::SendError::Closed.to_string(), "the connection is closed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closing or closed.
    Closed,
    /// The queue is full and the policy drops new messages; this one was dropped.
    QueueFull,
    /// The queue is full and the connection is being closed as a slow consumer.
    SlowConsumer,
    /// A ping payload over 125 bytes.
    PingTooLong,
    /// The value could not be encoded (`Conn::send_value`).
    Encode(EncodeError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "the connection is closed",
            SendError::QueueFull => "the connection's outbound queue is full; message dropped",
            SendError::SlowConsumer => "the connection is too slow to read and is being closed",
            SendError::PingTooLong => "a ping payload may be at most 125 bytes",
            SendError::Encode(e) => return e.fmt(f),
        })
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<EncodeError> for SendError {
    fn from(e: EncodeError) -> Self {
        SendError::Encode(e)
    }
}
