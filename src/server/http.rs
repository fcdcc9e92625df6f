//! The HTTP side of one connection: which protocol it speaks, hyper's builders with the
//! server's limits, and the task that drives the connection to its end.
//!
//! Without HTTP/2 a connection is served by hyper's HTTP/1.1 builder alone. With it,
//! hyper-util's auto builder serves both: it reads the first bytes and speaks HTTP/2 to
//! a client that opens with the HTTP/2 preface (over TLS, a client that chose `h2` by
//! ALPN; on plain TCP, h2c with prior knowledge), HTTP/1.1 to any other.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;

use super::activity::Activity;
use super::ServerBuilder;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Streams an HTTP/2 client may reset before the server has answered them, before the
/// connection is closed with GOAWAY (ENHANCE_YOUR_CALM): the "rapid reset" attack of 2023
/// (CVE-2023-44487) opens and cancels streams faster than a server can refuse them.
pub(crate) const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset because the client broke the protocol on them, before
/// the connection is closed: the same attack, provoking the resets instead of sending
/// them (CVE-2025-8671).
pub(crate) const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// hyper's connection builders, configured once from the server's settings.
#[derive(Clone)]
pub(crate) enum Builders {
    /// HTTP/1.1 only.
    Http1(hyper::server::conn::http1::Builder),
    /// HTTP/1.1, and HTTP/2 to a client that opens with its preface.
    Auto(Box<auto::Builder<TokioExecutor>>),
}

impl Builders {
    /// The builders for a connection: `http2` says whether it may speak HTTP/2.
    pub(crate) fn new(config: &ServerBuilder, http2: bool) -> Self {
        let header_bytes = config.max_header_size.max(8192);
        if !http2 {
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(TokioTimer::new())
                .header_read_timeout(config.header_read_timeout)
                .max_buf_size(header_bytes);
            return Builders::Http1(http1);
        }
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(header_bytes);
        let mut http2 = builder.http2();
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.http2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
        if config.websockets_over_http2 {
            http2.enable_connect_protocol();
        }
        Builders::Auto(Box::new(builder))
    }

    /// Serves `io` until the connection ends, finishing it gracefully (HTTP/1.1: after
    /// the request in flight; HTTP/2: GOAWAY, then the open streams run to their end)
    /// when `stop` is cancelled, when it has been idle for `idle_timeout`, or when it
    /// lost its pending-handshake place.
    pub(crate) async fn serve<I, S, B>(
        &self,
        io: I,
        service: S,
        stop: CancellationToken,
        activity: &Activity,
        idle_timeout: Duration,
        peer: SocketAddr,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let io = TokioIo::new(io);
        let result = match self {
            Builders::Http1(http1) => {
                let conn = http1.serve_connection(io, service).with_upgrades();
                drive(conn, stop, activity, idle_timeout)
                    .await
                    .map_err(BoxError::from)
            }
            Builders::Auto(builder) => {
                let conn = builder.serve_connection_with_upgrades(io, service);
                drive(conn, stop, activity, idle_timeout).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, %peer, "http connection ended with an error");
        }
    }
}

/// A connection future that can be asked to finish gracefully.
trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B> Graceful for auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Polls `conn` to its end, finishing it gracefully on `stop`, after `idle_timeout` with
/// nothing in flight, or once it lost its place.
async fn drive<C, E>(
    conn: C,
    stop: CancellationToken,
    activity: &Activity,
    idle_timeout: Duration,
) -> Result<(), E>
where
    C: Graceful<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    loop {
        let idle_since = activity.is_idle().then(tokio::time::Instant::now);
        let finish = tokio::select! {
            result = conn.as_mut() => return result,
            () = stop.cancelled() => true,
            () = activity.changed() => activity.place_lost(),
            () = sleep_until(idle_since.map(|since| since + idle_timeout)) => activity.is_idle(),
        };
        if finish {
            conn.as_mut().graceful_shutdown();
            return conn.await;
        }
    }
}

/// Completes at `deadline`, or never without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
