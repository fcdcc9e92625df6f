//! Serving a tower service over TCP: socket2 binding, HTTP/1.1 with upgrades through
//! hyper-util, graceful shutdown.

mod pending;
mod refusals;
mod shutdown;
#[cfg(feature = "tls")]
mod tls;

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use estuary_middleware::key::DEFAULT_IPV6_PREFIX;
use estuary_middleware::PeerAddr;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower::ServiceExt;

use pending::PendingLimit;
use refusals::{close_if_refused, record_handshake, refuse_busy, RefusalLog};
pub use shutdown::Shutdown;
#[cfg(feature = "tls")]
pub use tls::{tls_from_pem, TlsError, TlsFile};

type BoxError = Box<dyn StdError + Send + Sync>;

/// How a [`Server`] binds and serves. Plain builder methods with documented defaults.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::time::Duration;
///
/// let server = estuary::Server::builder()
///     .reuse_port(true)
///     .drain_timeout(Duration::from_secs(10))
///     .bind("0.0.0.0:3000".parse().unwrap())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServerBuilder {
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    reuse_port: bool,
    backlog: i32,
    drain_timeout: Duration,
    header_read_timeout: Duration,
    max_header_size: usize,
    max_pending_handshakes: usize,
    max_pending_handshakes_per_ip: Option<usize>,
    ipv6_prefix: u8,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            #[cfg(feature = "tls")]
            tls: None,
            reuse_port: false,
            backlog: 1024,
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_ip: None,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

impl ServerBuilder {
    /// Sets SO_REUSEPORT, so several processes can share the port. Default off.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Serves https:// and wss:// with `config` (see [`tls_from_pem`]). The TLS
    /// handshake must finish within the header read timeout.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// Sets the listen backlog. Default 1024.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// How long shutdown waits for sockets to close before it gives up. Default 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a client may take to send its request headers. Default 10 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The largest request head, in bytes. Default 64 KiB.
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// The most connections that may be in their HTTP phase at once (handshakes, and
    /// plain HTTP requests beside the sockets); one more is answered 503 with
    /// `Retry-After` and closed. Upgraded sockets do not count. Default 1024.
    pub fn max_pending_handshakes(mut self, max: usize) -> Self {
        self.max_pending_handshakes = max;
        self
    }

    /// The most connections from one IP address (IPv6: one network, see
    /// [`ipv6_prefix`](Self::ipv6_prefix)) that may be in their HTTP phase at once, so
    /// that one address cannot take every place of
    /// [`max_pending_handshakes`](Self::max_pending_handshakes); one more is answered 503
    /// with `Retry-After` and closed. Idle keep-alive connections count. Default: no
    /// limit per address, because behind a reverse proxy every client has the proxy's
    /// address.
    ///
    /// ```no_run
    /// # fn run() -> std::io::Result<()> {
    /// let server = estuary::Server::builder()
    ///     .max_pending_handshakes(1024)
    ///     .max_pending_handshakes_per_ip(64)
    ///     .bind("0.0.0.0:3000".parse().unwrap())?;
    /// # Ok(()) }
    /// ```
    pub fn max_pending_handshakes_per_ip(mut self, max: usize) -> Self {
        self.max_pending_handshakes_per_ip = Some(max);
        self
    }

    /// How many leading bits of an IPv6 address make one client for the per-address
    /// limit: one host is routinely given a whole /64. Default 64.
    ///
    /// # Panics
    ///
    /// If `bits` is more than 128.
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        assert!(
            bits <= 128,
            "an IPv6 prefix is at most 128 bits, got {bits}"
        );
        self.ipv6_prefix = bits;
        self
    }

    /// Binds the listening socket (TCP_NODELAY on every accepted socket).
    pub fn bind(self, addr: SocketAddr) -> io::Result<Server> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if self.reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_tcp_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(self.backlog)?;
        let listener = TcpListener::from_std(socket.into())?;
        Ok(Server {
            listener,
            config: self,
            shutdown: Shutdown::new(),
        })
    }
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("ServerBuilder");
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls.is_some());
        debug
            .field("reuse_port", &self.reuse_port)
            .field("backlog", &self.backlog)
            .field("drain_timeout", &self.drain_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_size", &self.max_header_size)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .field(
                "max_pending_handshakes_per_ip",
                &self.max_pending_handshakes_per_ip,
            )
            .field("ipv6_prefix", &self.ipv6_prefix)
            .finish()
    }
}

/// An HTTP/1.1 server with WebSocket upgrades and graceful shutdown.
///
/// It puts a [`PeerAddr`] and its [`Shutdown`] in every request's extensions, so auth and
/// rate limits see the client address and `WebSocketService` registers its sockets for
/// shutdown without extra wiring.
///
/// ```no_run
/// use estuary::{handler_fn, Conn, Message, Server, WebSocketService};
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
///         let _ = conn.send(msg);
///     }));
///     Server::bind("127.0.0.1:3000".parse().unwrap())?
///         .serve(echo)
///         .await
/// }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: ServerBuilder,
    shutdown: Shutdown,
}

impl Server {
    /// A builder, for SO_REUSEPORT, timeouts and limits.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Binds `addr` with the default settings.
    pub fn bind(addr: SocketAddr) -> io::Result<Server> {
        ServerBuilder::default().bind(addr)
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The registry of this server's WebSocket connections.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn serve<S, B>(self, service: S) -> io::Result<()>
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
        self.serve_with_shutdown(service, shutdown_signal()).await
    }

    /// Serves until `signal` completes, then: stop accepting, close every socket with 1001
    /// "going away", wait for them (and for HTTP requests in flight) up to the drain
    /// timeout, and return.
    pub async fn serve_with_shutdown<S, B>(
        self,
        service: S,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()>
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
        let Server {
            listener,
            config,
            shutdown,
        } = self;
        // HTTP connections not (yet) upgraded: finished gracefully on shutdown.
        let http_conns = TaskTracker::new();
        let stop_http = CancellationToken::new();
        let stop_accepting = CancellationToken::new();
        // The accept loop is a task of its own, so it runs on a runtime worker: under
        // `#[tokio::main]` the caller's future runs on the thread that called `block_on`,
        // outside the workers, and every connection it spawned would have to be handed
        // across threads. From a worker, a new connection starts on the same thread.
        let acceptor = Acceptor {
            listener,
            config: config.clone(),
            shutdown: shutdown.clone(),
            http_conns: http_conns.clone(),
            stop_http: stop_http.clone(),
            stop: stop_accepting.clone(),
        };
        // Polled once before the first accept: a signal future such as
        // `shutdown_signal` installs its handlers when first polled, and a SIGTERM that
        // came before that would end the process with its sockets unclosed.
        tokio::pin!(signal);
        let signalled =
            std::future::poll_fn(|cx| Poll::Ready(signal.as_mut().poll(cx).is_ready())).await;
        if signalled {
            // Before the accept loop starts (on another worker, perhaps at once), so that
            // it never takes a connection waiting in the backlog.
            stop_accepting.cancel();
        }
        let mut accepting = AbortOnDropHandle::new(tokio::spawn(acceptor.run(service)));
        let stop = async {
            if !signalled {
                signal.as_mut().await;
            }
        };
        let accepted = tokio::select! {
            () = stop => {
                stop_accepting.cancel();
                (&mut accepting).await
            }
            ended = &mut accepting => ended,
        };
        if let Err(e) = accepted {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            return Err(io::Error::other("the accept loop was cancelled"));
        }

        tracing::info!("shutting down: no longer accepting connections");
        shutdown.begin();
        stop_http.cancel();
        http_conns.close();
        let drained = tokio::time::timeout(config.drain_timeout, async {
            tokio::join!(http_conns.wait(), shutdown.wait());
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = shutdown.connections(),
                "drain timeout passed with sockets still open"
            );
        }
        Ok(())
    }
}

/// The accept loop and what it hands to each connection.
struct Acceptor {
    listener: TcpListener,
    config: ServerBuilder,
    shutdown: Shutdown,
    http_conns: TaskTracker,
    stop_http: CancellationToken,
    /// Cancelled when the server stops accepting.
    stop: CancellationToken,
}

impl Acceptor {
    /// Accepts connections and serves HTTP on each until `stop` is cancelled; the listener
    /// closes when it returns.
    async fn run<S, B>(self, service: S)
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
        let Acceptor {
            listener,
            config,
            shutdown,
            http_conns,
            stop_http,
            stop,
        } = self;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_size.max(8192));
        let pending = PendingLimit::new(
            config.max_pending_handshakes,
            config.max_pending_handshakes_per_ip,
            config.ipv6_prefix,
        );
        let refusals = Arc::new(RefusalLog::new());

        loop {
            let (stream, peer) = tokio::select! {
                // A stop wins over a connection ready at the same time.
                biased;
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                            () = stop.cancelled() => break,
                        }
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let permit = match pending.try_acquire(peer.ip()) {
                Ok(permit) => permit,
                Err(busy) => {
                    http_conns.spawn(refuse_busy(stream, peer, busy, refusals.clone()));
                    continue;
                }
            };
            let service = service.clone();
            let registry = shutdown.clone();
            let refusals = refusals.clone();
            let per_request = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                request.extensions_mut().insert(registry.clone());
                let handshake =
                    is_websocket_upgrade(&request).then(|| request.uri().path().to_owned());
                let response = service.clone().oneshot(request);
                let refusals = refusals.clone();
                async move {
                    let mut response = response.await;
                    if let Ok(response) = &mut response {
                        let upgrade = handshake.is_some();
                        if let Some(path) = handshake {
                            record_handshake(response.status(), &path, peer, &refusals);
                        }
                        close_if_refused(response, upgrade);
                    }
                    response
                }
            });
            let http = http.clone();
            let stop = stop_http.clone();
            #[cfg(feature = "tls")]
            let tls = config.tls.clone();
            let handshake_timeout = config.header_read_timeout;
            http_conns.spawn(async move {
                // Held while the connection is in its HTTP phase: hyper's connection
                // future ends when the socket upgrades.
                let _permit = permit;
                #[cfg(feature = "tls")]
                if let Some(tls) = tls {
                    match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_http(&http, stream, per_request, stop, peer).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    return;
                }
                let _ = handshake_timeout;
                serve_http(&http, stream, per_request, stop, peer).await;
            });
        }
    }
}

/// Serves HTTP/1.1 with upgrades on one connection, finishing gracefully on `stop`.
async fn serve_http<I, S, B>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    stop: CancellationToken,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "http connection ended with an error");
    }
}

fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Completes on SIGINT or SIGTERM: the signal [`Server::serve`] waits for, and one to
/// hand to [`Shutdown::begin_on`] under another server.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use estuary::{handler_fn, shutdown_signal, Conn, Message, Server, WebSocketService};
///
/// let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
///     let _ = conn.send(msg);
/// }));
/// let server = Server::bind("127.0.0.1:3000".parse().unwrap())?;
/// // The same as `server.serve(echo)`; another future here stops it another way.
/// server.serve_with_shutdown(echo, shutdown_signal()).await
/// # }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
