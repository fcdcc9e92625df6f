use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;

use crate::protocol::CloseReason;
use crate::queue::{Outbound, SessionHandle};

/// Graceful shutdown for WebSocket connections: a registry of live sockets and their tasks.
///
/// The [`crate::Server`] puts its `Shutdown` in every request's extensions, where
/// `WebSocketService` finds it; in your own hyper or axum app, create one and pass it with
/// `WebSocketService::with_shutdown`. [`Shutdown::begin`] stops new upgrades (503) and
/// closes every open socket with 1001 "going away"; [`Shutdown::wait`] returns when every
/// connection task has finished, `on_close` included.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let shutdown = estuary::Shutdown::new();
/// assert_eq!(shutdown.connections(), 0);
/// shutdown.begin();
/// assert!(shutdown.is_draining());
/// shutdown.wait().await; // nothing open: returns at once
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    draining: AtomicBool,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, SessionHandle>>,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A registry with no connections, not draining.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`Shutdown::begin`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// How many sockets are open.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// Refuses new sockets and asks every open one to close with 1001 "going away".
    pub fn begin(&self) {
        let conns = {
            let conns = self.lock();
            self.inner.draining.store(true, Ordering::Release);
            conns.values().cloned().collect::<Vec<_>>()
        };
        tracing::info!(connections = conns.len(), "draining websocket connections");
        for handle in conns {
            let _ = handle.push(Outbound::Close(CloseReason::Shutdown));
        }
        self.inner.tasks.close();
    }

    /// A future that waits for `signal`, then [begins](Shutdown::begin) the shutdown: what
    /// `axum::serve(..).with_graceful_shutdown(..)` takes, so that under axum every
    /// socket gets 1001 "going away" when the server stops, as under [`crate::Server`].
    ///
    /// axum stops accepting when it resolves and waits for HTTP requests in flight, but
    /// not for upgraded sockets: await [`Shutdown::wait`] after `axum::serve` returns
    /// (bounded, with `tokio::time::timeout`) for their close handshakes and `on_close`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use estuary::{handler_fn, shutdown_signal, Conn, Message, Shutdown, WebSocketService};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let shutdown = Shutdown::new();
    /// let ws = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .with_shutdown(shutdown.clone());
    /// let app = axum::Router::new().route_service("/ws", ws);
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(shutdown.clone().begin_on(shutdown_signal()))
    ///     .await?;
    /// let _ = tokio::time::timeout(Duration::from_secs(30), shutdown.wait()).await;
    /// # Ok(()) }
    /// ```
    pub async fn begin_on(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.begin();
    }

    /// Waits until every connection task has finished (after [`Shutdown::begin`]).
    pub async fn wait(&self) {
        self.inner.tasks.wait().await;
    }

    /// Registers a socket; `None` once draining, when the upgrade must be refused.
    pub(crate) fn register(&self, handle: SessionHandle) -> Option<Registration> {
        let mut conns = self.lock();
        if self.is_draining() {
            return None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, handle);
        Some(Registration {
            shutdown: self.clone(),
            id,
        })
    }

    /// Runs a connection task, tracked so that [`Shutdown::wait`] waits for it.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(task);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SessionHandle>> {
        // The map stays consistent even if a holder panicked: each operation is one call.
        self.inner
            .conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("draining", &self.is_draining())
            .field("connections", &self.connections())
            .finish()
    }
}

/// Removes a socket from the registry when its task ends.
pub(crate) struct Registration {
    shutdown: Shutdown,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shutdown.lock().remove(&self.id);
    }
}
