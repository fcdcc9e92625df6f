//! The per-connection handler API: what a user writes.

mod conn;

use std::future::Future;

pub use conn::Conn;

use crate::protocol::{CloseReason, Message};
use crate::queue::{Event, Publication};

/// A connection's behaviour: what it does when the socket opens, a message or a
/// server-side event arrives, and the socket closes, as async methods.
///
/// The service clones its handler for every connection, so fields are per-connection
/// state, usually filled in `on_open`. Every callback gets the [`Conn`]: the session, and
/// `send`, `close` and `ping`. Callbacks run one at a time on the connection's own task.
///
/// ```
/// use estuary::{CloseReason, Conn, Handler, Message};
///
/// #[derive(Clone, Default)]
/// struct Counter {
///     seen: usize,
/// }
///
/// impl Handler for Counter {
///     async fn on_open(&mut self, conn: &mut Conn) {
///         let _ = conn.send("welcome");
///     }
///
///     async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
///         self.seen += 1;
///         let _ = conn.send(format!("message {} was {} bytes", self.seen, msg.len()));
///     }
///
///     async fn on_close(&mut self, conn: &mut Conn, reason: CloseReason) {
///         tracing::info!(session = conn.session().id(), %reason, seen = self.seen, "closed");
///     }
/// }
///
/// let service = estuary::WebSocketService::new(Counter::default());
/// # let _ = service;
/// ```
pub trait Handler: Clone + Send + 'static {
    /// Picks one of the subprotocols the client offered in `Sec-WebSocket-Protocol`, in
    /// the client's order. Called on the service's handler before the upgrade. Default:
    /// none.
    fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
        let _ = offered;
        None
    }

    /// Runs once the socket is open, before any message: greet, join channels, or refuse
    /// with `conn.close(..)`.
    fn on_open(&mut self, conn: &mut Conn) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }

    /// A whole message from the client: reassembled from fragments, text already UTF-8
    /// validated.
    fn on_message(&mut self, conn: &mut Conn, message: Message) -> impl Future<Output = ()> + Send;

    /// A server-side event sent to this connection from elsewhere.
    fn on_event(&mut self, conn: &mut Conn, event: Event) -> impl Future<Output = ()> + Send {
        let _ = (conn, event);
        async {}
    }

    /// A publication on a channel with history that this connection is a member of,
    /// with its position: put it on the wire. By default the message goes as it was
    /// published; override this to give the client the position
    /// ([`Publication::frame_with`]), so that it can join again from there after a
    /// dropped connection ([`Conn::join_since`]).
    ///
    /// It is not async: it runs while the connection's queue is being written to the
    /// socket, between frames, at the cost of a function call. Do no waiting here; send
    /// an [`Event`] to yourself (through [`Conn::handle`]) for work that must wait.
    /// Plain channels (without history) deliver their messages straight to the socket
    /// and never call it.
    fn on_publication(&mut self, conn: &mut Conn, publication: Publication) {
        let _ = conn.send_prepared(publication.frame());
    }

    /// The connection ended, for `reason`. Sends fail from here on.
    fn on_close(
        &mut self,
        conn: &mut Conn,
        reason: CloseReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (conn, reason);
        async {}
    }
}

/// A handler made of one closure run on every message: the one-line echo.
///
/// ```
/// use estuary::{handler_fn, Conn, Message, WebSocketService};
///
/// let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
///     let _ = conn.send(msg);
/// }));
/// # let _ = echo;
/// ```
pub fn handler_fn<F>(f: F) -> HandlerFn<F>
where
    F: Fn(&mut Conn, Message) + Clone + Send + 'static,
{
    HandlerFn(f)
}

/// The handler [`handler_fn`] returns: the closure, run on every message.
///
/// ```
/// use estuary::{handler_fn, Conn, HandlerFn, Message};
///
/// fn upper(conn: &mut Conn, msg: Message) {
///     let _ = conn.send(msg.as_text().unwrap_or_default().to_uppercase());
/// }
///
/// let handler: HandlerFn<fn(&mut Conn, Message)> = handler_fn(upper);
/// # let _ = handler;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HandlerFn<F>(F);

impl<F> Handler for HandlerFn<F>
where
    F: Fn(&mut Conn, Message) + Clone + Send + 'static,
{
    fn on_message(&mut self, conn: &mut Conn, message: Message) -> impl Future<Output = ()> + Send {
        (self.0)(conn, message);
        std::future::ready(())
    }
}
