//! The WebSocket upgrade as a tower `Service`: an HTTP/1.1 `GET` with `Upgrade`, or an
//! HTTP/2 extended `CONNECT` (RFC 8441).

mod handshake;

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use estuary_middleware::SessionLimits;
use http::{Request, Response};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

pub use handshake::HandshakeError;
use handshake::Opening;

use crate::engine::{Engine, Shutdown, WebSocketConfig};
use crate::handler::{Conn, Handler};
use crate::hub::Hub;
use crate::protocol::deflate::Negotiated;
use crate::queue::{QueueState, SessionHandle};
use crate::session::Session;

/// The WebSocket upgrade: a tower `Service` that validates the handshake, answers 101 (or
/// 200, to an HTTP/2 extended `CONNECT`), and runs the connection with a clone of its
/// [`Handler`].
///
/// It takes any request body type, so it mounts in axum, in plain hyper, or behind any
/// tower layer. Bad handshakes get a [`HandshakeError`] response: 400, 426 or 501 with a
/// body that says what was wrong. On success the request's headers, URI and extensions
/// move into the [`Session`].
///
/// Over HTTP/2 (RFC 8441) a WebSocket is one stream of the connection, opened by a
/// `CONNECT` with `:protocol = websocket`: subprotocols and permessage-deflate are
/// negotiated as over HTTP/1.1, and the same handler runs through the same engine, the
/// stream's flow control pushing back as TCP would. The server must advertise it (see
/// [`ServerBuilder::websockets_over_http2`](crate::ServerBuilder::websockets_over_http2)),
/// and the service must see `CONNECT` requests: mount it for every method.
///
/// ```
/// use estuary::{handler_fn, Conn, Message, WebSocketConfig, WebSocketService};
///
/// let service = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
///     let _ = conn.send(msg);
/// }))
/// .with_config(WebSocketConfig::default().with_max_message_size(1 << 20));
/// # let _ = service;
/// ```
#[derive(Clone)]
pub struct WebSocketService<H> {
    handler: H,
    config: Arc<WebSocketConfig>,
    shutdown: Option<Shutdown>,
    hub: Hub,
    keep_credentials: bool,
}

impl<H: Handler> WebSocketService<H> {
    /// A service that runs a clone of `handler` for every connection.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            config: Arc::new(WebSocketConfig::default()),
            shutdown: None,
            hub: Hub::new(),
            keep_credentials: false,
        }
    }

    /// Keeps the request's `Authorization`, `Proxy-Authorization` and `Cookie` headers in
    /// the [`Session`], for a handler that reads them itself (a cookie it checks, a token
    /// it passes on).
    ///
    /// By default they are dropped at the upgrade: the layers in front have checked
    /// them, and a session that lives for hours should not carry a secret it does not
    /// need (into a `Debug` print, a heap dump, a handler that logs its headers).
    ///
    /// ```
    /// use estuary::{handler_fn, Conn, Message, WebSocketService};
    ///
    /// let service = WebSocketService::new(handler_fn(|conn: &mut Conn, _msg: Message| {
    ///     let has_cookie = conn.session().headers().contains_key("cookie");
    ///     let _ = conn.send(if has_cookie { "cookie" } else { "none" });
    /// }))
    /// .keep_credentials();
    /// # let _ = service;
    /// ```
    pub fn keep_credentials(mut self) -> Self {
        self.keep_credentials = true;
        self
    }

    /// Registers connections in `hub` (by default each service has a hub of its own).
    pub fn with_hub(mut self, hub: Hub) -> Self {
        self.hub = hub;
        self
    }

    /// The hub connections register in.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Sets the engine configuration.
    pub fn with_config(mut self, config: WebSocketConfig) -> Self {
        self.config = Arc::new(config);
        self
    }

    /// Registers connections with `shutdown`, instead of the `Shutdown` the
    /// [`crate::Server`] puts in each request's extensions.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    fn upgrade<B>(&self, mut request: Request<B>) -> Result<Response<Full<Bytes>>, HandshakeError> {
        let opening = handshake::validate(&request)?;
        if request.extensions().get::<OnUpgrade>().is_none() {
            return Err(HandshakeError::NotUpgradable);
        }
        let protocol = {
            let offered = handshake::offered_protocols(request.headers());
            self.handler
                .select_protocol(&offered)
                .filter(|chosen| offered.contains(chosen))
                .map(Arc::<str>::from)
        };
        let shutdown = self
            .shutdown
            .clone()
            .or_else(|| request.extensions().get::<Shutdown>().cloned());
        let (handle, queue) =
            SessionHandle::new(self.config.max_queued_bytes, self.config.slow_consumer);
        let shutdown_registration = match &shutdown {
            Some(shutdown) => Some(
                shutdown
                    .register(handle.clone())
                    .ok_or(HandshakeError::ShuttingDown)?,
            ),
            None => None,
        };
        let deflate = match &self.config.compression {
            Some(config) => handshake::negotiate_deflate(config, request.headers())?,
            None => None,
        };
        let agreed = deflate.as_ref().map(|agreed| agreed.header.as_str());
        let response = match opening {
            Opening::Upgrade => {
                handshake::switching_protocols(request.headers(), protocol.as_deref(), agreed)
            }
            Opening::ExtendedConnect => handshake::connect_accepted(protocol.as_deref(), agreed),
        };
        let on_upgrade = hyper::upgrade::on(&mut request);

        let (parts, _body) = request.into_parts();
        let limits = self
            .config
            .limits_for(parts.extensions.get::<SessionLimits>());
        let headers = if self.keep_credentials {
            parts.headers
        } else {
            Session::without_credentials(parts.headers)
        };
        let mut session = Session::new(parts.uri, headers, parts.extensions, protocol.clone());
        session.set_http_version(parts.version);
        if let Some(agreed) = &deflate {
            session.set_compression(&agreed.header);
        }
        let span = tracing::debug_span!(
            "ws",
            session = session.id(),
            user = session.user_id(),
            peer = ?session.peer_addr(),
            http = ?parts.version,
        );
        let registration = self
            .hub
            .register(
                session.id_arc().clone(),
                session.user_id_arc().clone(),
                session.identity().cloned(),
                handle.clone(),
            )
            .map_err(|_| HandshakeError::SessionIdInUse)?;
        let conn = Conn::new(
            session,
            handle,
            registration,
            self.config.max_queued_bytes,
            self.config.slow_consumer,
            deflate.as_ref(),
        );
        // Boxed, so that the task holds a pointer until the upgrade completes, and then
        // only the engine: a connection's whole state lives in one allocation of its own.
        let pending = Box::new(Pending {
            handler: self.handler.clone(),
            conn,
            config: self.config.clone(),
            limits,
            queue,
            deflate,
        });
        let task = async move {
            let _registration = shutdown_registration;
            // Deliveries from other nodes to this session reach it before `on_open`.
            let (upgraded, ()) = tokio::join!(on_upgrade, pending.conn.until_routed());
            match upgraded {
                Ok(upgraded) => pending.into_engine(upgraded).await,
                Err(e) => tracing::debug!(error = %e, "upgrade failed after the handshake"),
            }
        }
        .instrument(span);
        match shutdown {
            Some(shutdown) => shutdown.spawn(task),
            None => {
                tokio::spawn(task);
            }
        }

        Ok(response)
    }
}

/// What a connection needs once hyper hands over the upgraded socket.
struct Pending<H> {
    handler: H,
    conn: Conn,
    config: Arc<WebSocketConfig>,
    limits: SessionLimits,
    queue: Arc<QueueState>,
    deflate: Option<Negotiated>,
}

impl<H: Handler> Pending<H> {
    /// The engine for the upgraded socket, as one boxed future. On a plain TCP socket it
    /// runs on the `TcpStream` itself, without hyper's upgrade wrapper in every read and
    /// write (hyper-util's auto builder wraps the socket once more, which its `downcast`
    /// sees through); anything else (TLS, an HTTP/2 stream) runs on the `Upgraded`. A
    /// plain function, not an `async` one, so that nothing is held twice.
    /// Takes the box, so that it is freed here rather than when the connection ends.
    #[allow(clippy::boxed_local)] // the box is the point: see above
    fn into_engine(
        self: Box<Self>,
        upgraded: Upgraded,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let Pending {
            handler,
            conn,
            config,
            limits,
            queue,
            deflate,
        } = *self;
        let deflate = deflate.as_ref();
        let tcp = hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded)
            .map(|parts| (parts.io, parts.read_buf))
            .or_else(|upgraded| {
                upgraded
                    .downcast::<TokioIo<TcpStream>>()
                    .map(|parts| (parts.io, parts.read_buf))
            });
        match tcp {
            Ok((io, read_buf)) => {
                // Bytes the client sent right behind its handshake. `read_buf` is a view
                // into hyper's whole read buffer: copy what is there, and let hyper's
                // buffer go now rather than when the connection ends.
                let rbuf = BytesMut::from(&read_buf[..]);
                drop(read_buf);
                let engine = Engine::new(io.into_inner(), rbuf, config, limits, queue, deflate);
                Box::pin(engine.run(handler, conn))
            }
            Err(upgraded) => {
                let io = TokioIo::new(upgraded);
                let engine = Engine::new(io, BytesMut::new(), config, limits, queue, deflate);
                Box::pin(engine.run(handler, conn))
            }
        }
    }
}

impl<H, B> tower_service::Service<Request<B>> for WebSocketService<H>
where
    H: Handler,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let version = request.version();
        let response = self.upgrade(request).unwrap_or_else(|error| {
            tracing::debug!(%error, "websocket handshake rejected");
            error.into_response_for(version)
        });
        ready(Ok(response))
    }
}

impl<H> std::fmt::Debug for WebSocketService<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketService")
            .field("config", &self.config)
            .field("keep_credentials", &self.keep_credentials)
            .finish_non_exhaustive()
    }
}
