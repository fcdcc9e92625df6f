//! Serving a tower service over TCP: socket2 binding, HTTP/1.1 with upgrades and HTTP/2
//! (with WebSockets over it, RFC 8441) through hyper-util, TLS, graceful shutdown.

mod activity;
mod http;
mod pending;
mod refusals;
#[cfg(feature = "tls")]
mod tls;

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::http::{Method, Request, Response, StatusCode, Version};
use estuary_middleware::key::DEFAULT_IPV6_PREFIX;
use estuary_middleware::PeerAddr;
use hyper::body::Incoming;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower::ServiceExt;

use crate::engine::Shutdown;
use activity::{Activity, Tracked};
use http::Builders;
use pending::PendingLimit;
use refusals::{close_if_refused, record_handshake, refuse_busy, RefusalLog};
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
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    http2: bool,
    h2c: bool,
    websockets_over_http2: bool,
    http2_max_concurrent_streams: u32,
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
            http2: true,
            h2c: false,
            websockets_over_http2: false,
            http2_max_concurrent_streams: 100,
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
    /// handshake must finish within the header read timeout. The server sets the ALPN
    /// protocols itself: `h2` and `http/1.1` with [`http2`](Self::http2) on, `http/1.1`
    /// alone with it off.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Speaks HTTP/2 over TLS to clients that choose it by ALPN (browsers do), as well as
    /// HTTP/1.1. Default on. On plain TCP, see [`h2c`](Self::h2c); for WebSockets over
    /// HTTP/2, [`websockets_over_http2`](Self::websockets_over_http2).
    ///
    /// HTTP/2's own limits: [`http2_max_concurrent_streams`](Self::http2_max_concurrent_streams)
    /// streams at once per connection; a header list of at most
    /// [`max_header_size`](Self::max_header_size); at most 20 streams the client resets
    /// before they are answered (the "rapid reset" attack of 2023, CVE-2023-44487) and
    /// 256 streams the server resets for the client's protocol errors (CVE-2025-8671),
    /// after which the connection is closed with GOAWAY. An HTTP/2 connection with
    /// nothing in flight for the [`header_read_timeout`](Self::header_read_timeout) is
    /// closed, as an idle HTTP/1.1 connection is. It holds a place of
    /// [`max_pending_handshakes`](Self::max_pending_handshakes) (and of the per-address
    /// limit) while it carries no WebSocket, like an HTTP/1.1 connection before its
    /// upgrade, and gives it back while it carries one; the limits count connections,
    /// not streams.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Speaks HTTP/2 on plain TCP to clients that open with the HTTP/2 preface (h2c with
    /// prior knowledge), as well as HTTP/1.1. Default off: browsers never use h2c, and a
    /// reverse proxy in front usually speaks HTTP/1.1 to its backends. It costs every
    /// HTTP/1.1 connection one small read, to tell the protocols apart. Needs
    /// [`http2`](Self::http2) on.
    ///
    /// ```no_run
    /// # fn run() -> std::io::Result<()> {
    /// let server = estuary::Server::builder()
    ///     .h2c(true)
    ///     .websockets_over_http2(true)
    ///     .bind("127.0.0.1:3000".parse().unwrap())?;
    /// # Ok(()) }
    /// ```
    pub fn h2c(mut self, on: bool) -> Self {
        self.h2c = on;
        self
    }

    /// Advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL` on HTTP/2 connections, so that
    /// clients open WebSockets as streams of the connection (RFC 8441, extended
    /// `CONNECT`) instead of a TCP connection each. Default off.
    ///
    /// Turn it on only if *every* path a client may open a WebSocket on accepts
    /// `CONNECT`: browsers take the setting as a promise, and a WebSocket refused for its
    /// method (405) is not retried over HTTP/1.1, it fails. [`WebSocketService`]
    /// accepts `CONNECT` wherever it is mounted for every method: served alone, in a
    /// router that routes by path, or in axum with `route_service` or `any_service`.
    /// Mounted for `GET` only (axum's `get_service`), it gets no `CONNECT`, and this
    /// must stay off. Needs [`http2`](Self::http2) on.
    ///
    /// [`WebSocketService`]: crate::WebSocketService
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = estuary::Server::builder()
    ///     .tls(estuary::tls_from_pem("cert.pem", "key.pem")?)
    ///     .websockets_over_http2(true)
    ///     .bind("0.0.0.0:443".parse()?)?;
    /// # Ok(()) }
    /// ```
    pub fn websockets_over_http2(mut self, on: bool) -> Self {
        self.websockets_over_http2 = on;
        self
    }

    /// The most streams (requests and WebSockets) one HTTP/2 connection may have open at
    /// once; the client is told in its SETTINGS, and a stream over it is refused.
    /// Default 100, the least RFC 9113 recommends.
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.http2_max_concurrent_streams = max;
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

    /// The largest request head, in bytes (HTTP/2: the largest header list). Default
    /// 64 KiB.
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
        #[cfg(feature = "tls")]
        let tls = self.tls.as_ref().map(|config| {
            let mut config = tokio_rustls::rustls::ServerConfig::clone(config);
            config.alpn_protocols = if self.http2 {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        Ok(Server {
            listener,
            config: self,
            #[cfg(feature = "tls")]
            tls,
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
            .field("http2", &self.http2)
            .field("h2c", &self.h2c)
            .field("websockets_over_http2", &self.websockets_over_http2)
            .field(
                "http2_max_concurrent_streams",
                &self.http2_max_concurrent_streams,
            )
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

/// An HTTP/1.1 and HTTP/2 server with WebSocket upgrades and graceful shutdown.
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
pub struct Server {
    listener: TcpListener,
    config: ServerBuilder,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
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
            #[cfg(feature = "tls")]
            tls,
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
            #[cfg(feature = "tls")]
            tls,
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
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
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
            #[cfg(feature = "tls")]
            tls,
            shutdown,
            http_conns,
            stop_http,
            stop,
        } = self;
        let plain = Builders::new(&config, config.http2 && config.h2c);
        #[cfg(feature = "tls")]
        let secure = Builders::new(&config, config.http2);
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
            // Held while the connection is in its HTTP phase: see `activity`.
            let activity = Activity::new(pending.clone(), peer.ip(), permit);
            let per_request = per_request(
                service.clone(),
                peer,
                shutdown.clone(),
                activity.clone(),
                refusals.clone(),
            );
            let stop = stop_http.clone();
            let timeout = config.header_read_timeout;
            #[cfg(feature = "tls")]
            if let Some(tls) = tls.clone() {
                let http = secure.clone();
                http_conns.spawn(async move {
                    match tokio::time::timeout(timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            http.serve(stream, per_request, stop, &activity, timeout, peer)
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    activity.end();
                });
                continue;
            }
            let http = plain.clone();
            http_conns.spawn(async move {
                http.serve(stream, per_request, stop, &activity, timeout, peer)
                    .await;
                activity.end();
            });
        }
    }
}

/// What the service answers a request with: a response whose body keeps the request
/// counted in flight until it is sent.
type Answer<B, E> = Result<Response<Tracked<B>>, E>;

/// The service hyper calls for each request of one connection: it puts the client's
/// address and the server's [`Shutdown`] in the request's extensions, counts the request
/// in flight until its response is sent, records a WebSocket handshake's outcome, and
/// tells a refused HTTP/1.1 client that the connection closes.
fn per_request<S, B>(
    service: S,
    peer: SocketAddr,
    shutdown: Shutdown,
    activity: Arc<Activity>,
    refusals: Arc<RefusalLog>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<B>>,
    Error = S::Error,
    Future = impl Future<Output = Answer<B, S::Error>> + Send + 'static,
> + Send
       + 'static
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
{
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let in_flight = activity.request();
        request.extensions_mut().insert(PeerAddr(peer));
        request.extensions_mut().insert(shutdown.clone());
        let http2 = request.version() == Version::HTTP_2;
        let handshake = is_websocket_handshake(&request).then(|| request.uri().path().to_owned());
        // An HTTP/2 WebSocket is a stream of this connection: the session carries the
        // lease, so that the connection knows while it has WebSockets open.
        let lease = (http2 && handshake.is_some()).then(|| {
            let lease = activity.websocket();
            let watch = lease.watch();
            request.extensions_mut().insert(lease);
            watch
        });
        let response = service.clone().oneshot(request);
        let refusals = refusals.clone();
        async move {
            let mut response = response.await;
            if let Ok(response) = &mut response {
                let status = response.status();
                let accepted = if http2 {
                    status.is_success()
                } else {
                    status == StatusCode::SWITCHING_PROTOCOLS
                };
                if let Some(path) = &handshake {
                    record_handshake(accepted, status, path, peer, &refusals);
                }
                if accepted {
                    if let Some(lease) = &lease {
                        lease.opened();
                    }
                }
                // HTTP/2 has no `Connection` header: a refused stream is simply answered,
                // and the connection goes on.
                if !http2 {
                    close_if_refused(response, handshake.is_some());
                }
            }
            response.map(|response| response.map(|body| Tracked::new(body, in_flight)))
        }
    })
}

/// Whether `request` opens a WebSocket: an HTTP/1.1 `Upgrade: websocket`, or an HTTP/2
/// extended `CONNECT` with `:protocol = websocket`.
fn is_websocket_handshake<B>(request: &Request<B>) -> bool {
    if request.method() == Method::CONNECT {
        return request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
    }
    request
        .headers()
        .get(::http::header::UPGRADE)
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
