use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{eventually, within, TestClient, TestClientBuilder, DEFAULT_TIMEOUT};
use crate::engine::Shutdown;
use crate::handler::Handler;
use crate::hub::Hub;
use crate::server::{Server, ServerBuilder};
use crate::upgrade::WebSocketService;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A server on 127.0.0.1 with a port of its own, serving a service in-process until
/// [`TestServer::stop`] (or until it is dropped, which starts the same graceful shutdown
/// in the background).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use estuary::testing::TestServer;
/// use estuary::{handler_fn, Conn, Message};
///
/// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
///     let _ = conn.send(msg);
/// }))
/// .await;
/// let mut client = server.connect("/").await;
/// client.send("ping?").await;
/// client.expect_text("ping?").await;
/// assert_eq!(server.hub().stats().sessions, 1);
/// drop(client);
/// server.stop().await;
/// # }
/// ```
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Shutdown,
    hub: Option<Hub>,
    timeout: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Serves `service` (a [`WebSocketService`], or a stack of layers around one, or an
    /// axum `Router`) on a free port, with a drain timeout of 5 s.
    pub async fn start<S, B>(service: S) -> TestServer
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        TestServer::builder().start(service).await
    }

    /// Serves `handler` as a plain [`WebSocketService`] on every path, with its hub
    /// readable through [`TestServer::hub`].
    pub async fn handler<H: Handler>(handler: H) -> TestServer {
        TestServer::builder().handler(handler).await
    }

    /// A builder, for a server configuration, a fixed address, a hub or a timeout.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The server's registry of open sockets: [`Shutdown::connections`] counts them.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The hub the server's connections register in.
    ///
    /// # Panics
    ///
    /// If the server was started from a service without telling the kit its hub: start
    /// it with [`TestServer::handler`], or with [`TestServerBuilder::hub`].
    pub fn hub(&self) -> &Hub {
        self.hub.as_ref().expect(
            "this TestServer was not given a hub: use TestServer::handler, or \
             TestServer::builder().hub(hub.clone()).start(service)",
        )
    }

    /// Waits until `check` holds for the hub (polled every 10 ms), or fails the test
    /// naming `what`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use estuary::testing::TestServer;
    /// # use estuary::{handler_fn, Conn, Message};
    /// let server = TestServer::handler(handler_fn(|conn: &mut Conn, msg: Message| {
    ///     let _ = conn.send(msg);
    /// }))
    /// .await;
    /// let client = server.connect("/").await;
    /// assert_eq!(server.hub().stats().sessions, 1); // registered before the 101
    /// drop(client);
    /// server.until_hub("the socket is forgotten", |hub| hub.stats().sessions == 0).await;
    /// # }
    /// ```
    pub async fn until_hub(&self, what: &str, mut check: impl FnMut(&Hub) -> bool) {
        let hub = self.hub();
        eventually(what, self.timeout, || check(hub)).await;
    }

    /// A client builder for `path` on this server, with the server's timeout.
    pub fn client(&self, path: &str) -> TestClientBuilder {
        TestClient::builder(self.url(path)).timeout(self.timeout)
    }

    /// Connects a client to `path`, failing the test unless the server answers 101.
    pub async fn connect(&self, path: &str) -> TestClient {
        self.client(path).connect().await
    }

    /// Shuts down as [`Server`] does (no new connections, 1001 to every socket, a wait
    /// for them within the drain timeout), and fails the test if serving failed.
    ///
    /// A [`TestClient`] answers the server's close only while something reads it: the
    /// server waits for one left open and unread up to its close timeout. Drop such
    /// clients first, or read their close (`expect_close(1001)`) while this runs.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let timeout = self.timeout;
        within("the server shuts down", timeout, &mut self.task)
            .await
            .expect("the server task panicked")
            .expect("the server failed");
    }
}

/// Builds a [`TestServer`]: the [`ServerBuilder`] to serve with, the address, the hub to
/// read, and how long waits last.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use estuary::middleware::session_limits::SessionLimitsLayer;
/// use estuary::testing::TestServer;
/// use estuary::{handler_fn, Conn, Hub, Message, WebSocketService};
/// use tower::Layer;
///
/// let hub = Hub::new();
/// let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
///     let _ = conn.send(msg);
/// }))
/// .with_hub(hub.clone());
/// let stack = SessionLimitsLayer::new()
///     .with_max_message_size(16)
///     .layer(echo);
/// let server = TestServer::builder()
///     .hub(hub)
///     .timeout(Duration::from_secs(5))
///     .start(stack)
///     .await;
/// let mut client = server.connect("/").await;
/// client.send("x".repeat(17)).await;
/// assert_eq!(client.expect_close(1009).await, "message too big");
/// server.until_hub("the session is gone", |hub| hub.stats().sessions == 0).await;
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct TestServerBuilder {
    server: ServerBuilder,
    addr: SocketAddr,
    hub: Option<Hub>,
    timeout: Duration,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        Self {
            server: Server::builder().drain_timeout(Duration::from_secs(5)),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl TestServerBuilder {
    /// Serves with `server`'s settings (timeouts, caps) instead of the defaults with a
    /// 5 s drain timeout.
    pub fn server(mut self, server: ServerBuilder) -> Self {
        self.server = server;
        self
    }

    /// Listens on `addr` instead of a free port on 127.0.0.1: a server restarted where
    /// a client expects it.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The hub that [`TestServer::hub`] reads: the one given to the service's
    /// `WebSocketService::with_hub`.
    pub fn hub(mut self, hub: Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// How long each wait of the server and of its clients lasts (default
    /// [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Serves `handler` as a plain [`WebSocketService`] with the builder's hub (or a new
    /// one).
    pub async fn handler<H: Handler>(self, handler: H) -> TestServer {
        let hub = self.hub.clone().unwrap_or_default();
        let service = WebSocketService::new(handler).with_hub(hub.clone());
        self.hub(hub).start(service).await
    }

    /// Binds and serves `service`.
    ///
    /// # Panics
    ///
    /// If the address cannot be bound.
    pub async fn start<S, B>(self, service: S) -> TestServer
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let addr = self.addr;
        let server = self
            .server
            .bind(addr)
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = server
            .local_addr()
            .unwrap_or_else(|e| panic!("the address of the server bound to {addr}: {e}"));
        let shutdown = server.shutdown_handle();
        let (stop, stopped) = oneshot::channel::<()>();
        // A dropped `TestServer` drops `stop`, which ends the wait too.
        let task = tokio::spawn(server.serve_with_shutdown(service, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            shutdown,
            hub: self.hub,
            timeout: self.timeout,
            stop: Some(stop),
            task,
        }
    }
}

impl std::fmt::Debug for TestServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServerBuilder")
            .field("addr", &self.addr)
            .field("hub", &self.hub.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
