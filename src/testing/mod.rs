//! A test kit for applications built on estuary (feature `testing`): a real server on a
//! free loopback port, and a client that asserts what it receives, every wait bounded.
//!
//! [`TestServer`] serves any [`WebSocketService`](crate::WebSocketService), or any tower
//! stack that ends in one, through [`Server`](crate::Server), exactly as production
//! would: HTTP/1.1, the upgrade, the layers, graceful shutdown. [`TestClient`] connects
//! with headers and subprotocols, sends, and expects a message, a typed value, a close
//! code or silence, each within a timeout ([`DEFAULT_TIMEOUT`] unless set), failing the
//! test with what arrived instead. [`TestServer::hub`] and [`TestServer::until_hub`]
//! read the hub's state: who is connected, who is in which channel.
//!
//! The client is tokio-tungstenite, an implementation independent of estuary's own
//! codec and client: a test passes only if a peer that shares none of estuary's code
//! understands the server.
//!
//! # Example: testing a handler
//!
//! ```
//! use estuary::testing::TestServer;
//! use estuary::{Conn, Handler, Message, Target};
//!
//! /// Joins the room named in the query, and says every message to it.
//! #[derive(Clone)]
//! struct Room;
//!
//! impl Handler for Room {
//!     async fn on_open(&mut self, conn: &mut Conn) {
//!         let room = conn.session().query_param("room").unwrap_or_default().into_owned();
//!         if conn.join(&room).await.is_err() {
//!             let _ = conn.close(1008, "no such room");
//!         }
//!     }
//!
//!     async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
//!         for room in conn.channels() {
//!             let _ = conn.send_to(Target::channel(room), msg.clone());
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = TestServer::handler(Room).await;
//! let mut alice = server.connect("/ws?room=lobby").await;
//! let mut bob = server.connect("/ws?room=lobby").await;
//! server.until_hub("both in the lobby", |hub| hub.members("lobby").len() == 2).await;
//!
//! alice.send("hello").await;
//! bob.expect_text("hello").await;
//! alice.expect_text("hello").await;
//!
//! // Longer than the hub allows (256 bytes): the join is refused.
//! let mut nobody = server.connect(&format!("/ws?room={}", "x".repeat(300))).await;
//! assert_eq!(nobody.expect_close(1008).await, "no such room");
//!
//! bob.close(1000, "bye").await;
//! server.until_hub("bob left", |hub| hub.members("lobby").len() == 1).await;
//!
//! // Shutting down closes alice's socket with 1001, as `estuary::Server` does.
//! let stopping = tokio::spawn(server.stop());
//! assert_eq!(alice.expect_close(1001).await, "going away");
//! stopping.await.unwrap();
//! # }
//! ```

mod client;
mod server;

use std::future::Future;
use std::time::Duration;

pub use client::{Closed, Received, Rejected, TestClient, TestClientBuilder};
pub use server::{TestServer, TestServerBuilder};

/// The client's stream type, for [`TestClient::into_inner`]: tokio-tungstenite, as the
/// kit uses it (re-exported, so that its version is the kit's).
pub use tokio_tungstenite;

/// How long each wait of the kit lasts before it fails the test, unless set with
/// [`TestClientBuilder::timeout`] or [`TestServerBuilder::timeout`]: long enough for a
/// busy CI machine, short enough that a hung test says so.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use estuary::testing::{within, DEFAULT_TIMEOUT};
///
/// within("a quick step", DEFAULT_TIMEOUT, tokio::task::yield_now()).await;
/// # }
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future` for at most `timeout`, or fails the test naming `what`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let answer = estuary::testing::within("the answer", Duration::from_secs(1), async { 42 }).await;
/// assert_eq!(answer, 42);
/// # }
/// ```
pub async fn within<F: Future>(what: &str, timeout: Duration, future: F) -> F::Output {
    match tokio::time::timeout(timeout, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {timeout:?}: {what}"),
    }
}

/// Polls `check` every 10 ms until it holds, for at most `timeout`, or fails the test
/// naming `what`: for state that settles a moment after the event that changes it (a
/// session leaving the hub after its socket closed).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let hub = estuary::Hub::new();
/// estuary::testing::eventually("an empty hub", Duration::from_secs(1), || {
///     hub.stats().sessions == 0
/// })
/// .await;
/// # }
/// ```
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    within(what, timeout, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
