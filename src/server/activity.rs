//! What one connection is doing: how many of its requests are in flight and how many of
//! its HTTP/2 streams carry a WebSocket. From that the server decides when a connection is
//! idle (it is closed after the header read timeout, as HTTP/1.1 closes an idle
//! keep-alive connection) and whether it holds a pending-handshake place.
//!
//! An HTTP/1.1 connection holds its place until it upgrades, and then it is gone. An
//! HTTP/2 connection never upgrades: its WebSockets are streams beside its requests. It
//! holds a place while it carries no WebSocket (it is in its HTTP phase, like an HTTP/1.1
//! connection before its 101), gives it back when its first WebSocket opens, and takes
//! one again when its last one closes; if none is free then, the connection is told to
//! finish (GOAWAY), as a new connection would be refused.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use super::pending::{PendingLimit, PendingPermit};

/// One connection's requests, WebSocket streams and pending-handshake place.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<State>,
    /// Woken when the connection may have fallen idle or lost its place.
    changed: Notify,
    limit: Arc<PendingLimit>,
    ip: IpAddr,
}

#[derive(Debug)]
struct State {
    /// Requests whose response has not been sent to its end.
    in_flight: usize,
    /// HTTP/2 streams carrying a WebSocket.
    websockets: usize,
    place: Option<PendingPermit>,
    /// The last WebSocket closed and no place was free: the connection must finish.
    place_lost: bool,
    /// The connection is over: its streams no longer take places.
    ended: bool,
}

impl Activity {
    /// A connection from `ip` holding `place`.
    pub(crate) fn new(limit: Arc<PendingLimit>, ip: IpAddr, place: PendingPermit) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                websockets: 0,
                place: Some(place),
                place_lost: false,
                ended: false,
            }),
            changed: Notify::new(),
            limit,
            ip,
        })
    }

    /// A request starts; it counts until the returned guard is dropped.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.lock().in_flight += 1;
        InFlight(self.clone())
    }

    /// A lease for an HTTP/2 WebSocket stream, to put in the request's extensions; it
    /// counts once [`WebSocketLease::opened`] says the handshake was accepted, and until
    /// the session that took the extensions ends.
    pub(crate) fn websocket(self: &Arc<Self>) -> WebSocketLease {
        WebSocketLease(Arc::new(LeaseInner {
            activity: self.clone(),
            open: Mutex::new(false),
        }))
    }

    /// Whether nothing is in flight and no WebSocket is open.
    pub(crate) fn is_idle(&self) -> bool {
        let state = self.lock();
        state.in_flight == 0 && state.websockets == 0
    }

    /// Whether the connection must finish: its last WebSocket closed with no place free.
    pub(crate) fn place_lost(&self) -> bool {
        self.lock().place_lost
    }

    /// Waits for the next change that may make the connection idle or lose its place.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The connection is over: its place is given back, and streams that end later take
    /// none.
    pub(crate) fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        state.place = None;
    }

    fn websocket_opened(&self) {
        let mut state = self.lock();
        state.websockets += 1;
        // Carrying a WebSocket, the connection is out of its HTTP phase.
        state.place = None;
    }

    fn websocket_closed(&self) {
        let mut state = self.lock();
        state.websockets -= 1;
        if state.websockets == 0 && !state.ended {
            match self.limit.try_acquire(self.ip) {
                Ok(place) => state.place = Some(place),
                Err(_) => state.place_lost = true,
            }
        }
        drop(state);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is one short critical section: a panic cannot leave it half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request in flight; dropped when its response has been sent to its end.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let idle = {
            let mut state = self.0.lock();
            state.in_flight -= 1;
            state.in_flight == 0
        };
        if idle {
            self.0.changed.notify_one();
        }
    }
}

/// An HTTP/2 WebSocket stream's claim on its connection, carried in the request's
/// extensions, so that it lives as long as the session does.
#[derive(Debug, Clone)]
pub(crate) struct WebSocketLease(Arc<LeaseInner>);

#[derive(Debug)]
struct LeaseInner {
    activity: Arc<Activity>,
    /// Whether the handshake was accepted and the stream counted.
    open: Mutex<bool>,
}

impl WebSocketLease {
    /// A handle that does not keep the lease alive, to mark it opened after the response.
    pub(crate) fn watch(&self) -> WeakLease {
        WeakLease(Arc::downgrade(&self.0))
    }
}

/// A [`WebSocketLease`] seen from the connection, which must not keep it alive.
#[derive(Debug)]
pub(crate) struct WeakLease(Weak<LeaseInner>);

impl WeakLease {
    /// The handshake was accepted: the stream counts as an open WebSocket until the
    /// session holding the lease ends. Nothing, if it ended already.
    pub(crate) fn opened(&self) {
        if let Some(lease) = self.0.upgrade() {
            let mut open = lease.open.lock().unwrap_or_else(|e| e.into_inner());
            if !*open {
                *open = true;
                lease.activity.websocket_opened();
            }
        }
    }
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        if *self.open.get_mut().unwrap_or_else(|e| e.into_inner()) {
            self.activity.websocket_closed();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends or is dropped.
    #[derive(Debug)]
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn a_request_keeps_the_connection_busy_until_its_response_ends() {
        let limit = PendingLimit::new(4, None, 64);
        let activity = Activity::new(limit.clone(), ip(), limit.try_acquire(ip()).unwrap());
        assert!(activity.is_idle());
        let request = activity.request();
        assert!(!activity.is_idle());
        drop(request);
        assert!(activity.is_idle());
    }

    #[test]
    fn an_http2_connection_gives_its_place_back_while_it_carries_websockets() {
        let limit = PendingLimit::new(1, None, 64);
        let activity = Activity::new(limit.clone(), ip(), limit.try_acquire(ip()).unwrap());
        assert!(
            limit.try_acquire(ip()).is_err(),
            "the connection holds the place"
        );

        let lease = activity.websocket();
        lease.watch().opened();
        assert!(!activity.is_idle());
        let other = limit.try_acquire(ip()).expect("the place is free again");
        drop(other);

        drop(lease);
        assert!(activity.is_idle());
        assert!(!activity.place_lost());
        assert!(limit.try_acquire(ip()).is_err(), "the place is taken again");
    }

    #[test]
    fn the_last_websocket_closing_with_no_place_free_loses_the_connection() {
        let limit = PendingLimit::new(1, None, 64);
        let activity = Activity::new(limit.clone(), ip(), limit.try_acquire(ip()).unwrap());
        let lease = activity.websocket();
        lease.watch().opened();
        let newcomer = limit.try_acquire(ip()).unwrap();
        drop(lease);
        assert!(activity.place_lost());
        drop(newcomer);
    }

    #[test]
    fn a_refused_handshake_never_counts_as_a_websocket() {
        let limit = PendingLimit::new(1, None, 64);
        let activity = Activity::new(limit.clone(), ip(), limit.try_acquire(ip()).unwrap());
        let lease = activity.websocket();
        let watch = lease.watch();
        drop(lease);
        watch.opened();
        assert!(activity.is_idle());
        assert!(
            limit.try_acquire(ip()).is_err(),
            "the connection kept its place"
        );
    }
}
