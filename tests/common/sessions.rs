//! An echo handler that notes what the server saw of each session: its HTTP version, its
//! client's address, and why it closed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use estuary::{CloseReason, Conn, Handler, Message};

/// A session as the server saw it: its HTTP version and its client's address.
pub type Opened = (http::Version, Option<SocketAddr>);

/// Echoes every message, picks the subprotocol `echo.v1` when offered, and notes each
/// session.
#[derive(Clone, Default)]
pub struct SessionEcho {
    opened: Arc<Mutex<Vec<Opened>>>,
    closed: Arc<Mutex<Vec<CloseReason>>>,
}

impl SessionEcho {
    /// Each session's HTTP version and peer address, in the order they opened.
    pub fn opened(&self) -> Vec<Opened> {
        self.opened.lock().unwrap().clone()
    }

    /// Why each session closed, in the order they closed.
    pub fn closed(&self) -> Vec<CloseReason> {
        self.closed.lock().unwrap().clone()
    }
}

impl Handler for SessionEcho {
    fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
        offered.iter().copied().find(|p| *p == "echo.v1")
    }

    async fn on_open(&mut self, conn: &mut Conn) {
        let session = conn.session();
        let seen = (session.http_version(), session.peer_addr());
        self.opened.lock().unwrap().push(seen);
    }

    async fn on_message(&mut self, conn: &mut Conn, message: Message) {
        let _ = conn.send(message);
    }

    async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
        self.closed.lock().unwrap().push(reason);
    }
}
