//! Estuary: a WebSocket server framework on hyper, tower, tokio and fastwebsockets.
//!
//! The WebSocket upgrade is a tower [`Service`](tower_service::Service),
//! [`WebSocketService`], that ends in your per-connection [`Handler`]. Around it, the
//! layers in [`middleware`] add authentication, rate limits, connection caps, session
//! limits, health routing and origin checks; [`Server`] serves the stack with graceful
//! shutdown. Every piece also works on its own in an axum or hyper app.
//!
//! ```no_run
//! use estuary::{handler_fn, Conn, Message, Server, WebSocketService};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
//!         let _ = conn.send(msg);
//!     }));
//!     Server::bind("127.0.0.1:3000".parse().unwrap())?.serve(echo).await
//! }
//! ```
//!
//! The connection engine is strict RFC 6455: it validates UTF-8 as bytes arrive and fails
//! on the first invalid one, checks close codes and reasons, bounds message size, answers
//! pings, sends keep-alive pings, and coalesces writes so a burst of frames costs one
//! system call.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `metrics` (default) | connection, message, close and hub counters through the `metrics` facade |
//! | `client` | [`client`]: a WebSocket client with a handler, reconnect and keep-alive |
//! | `tls` | wss:// for the client, https:// and wss:// for the [`Server`], on rustls |
//! | `redis` | the [`Hub`] across nodes, on Redis or a Redis Cluster |
//! | `msgpack` | `Codec::MsgPack`: typed messages as MessagePack |
//! | `testing` | `testing`: a server on a free port and a client that asserts what it receives |
//! | `axum` | `middleware::peer_addr`: axum's `ConnectInfo` into the `PeerAddr` the layers read |
//!
//! The minimum supported Rust version is 1.88, what the dependencies of every feature
//! need (`redis`, and the URL crates it brings); `estuary-middleware` alone needs 1.85.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "client")]
pub mod client;
mod engine;
mod handler;
mod hub;
mod metrics;
mod protocol;
mod queue;
mod server;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
mod transport;
mod upgrade;

/// The tower layers (the `estuary-middleware` crate).
pub use estuary_middleware as middleware;

pub use engine::Shutdown;
pub use engine::WebSocketConfig;
pub use handler::{handler_fn, Conn, Handler, HandlerFn};
#[cfg(feature = "redis")]
pub use hub::{BackplaneStats, RedisConfig, Routing};
pub use hub::{
    Caller, History, HistoryStats, Hub, HubBuilder, HubError, HubLimits, HubPolicy, HubStats,
    Member, Recovery, Refused, Target,
};
pub use protocol::{
    close_code, CloseError, CloseReason, Codec, DecodeError, DecodeErrorKind, DeflateConfig,
    DeflateMode, EncodeError, Message, Prepared, ProtocolError, Utf8Bytes, MAX_CLOSE_REASON,
};
pub use queue::{Event, Position, Publication, SendError, SessionHandle, SlowConsumerPolicy};
pub use server::{shutdown_signal, Server, ServerBuilder};
#[cfg(feature = "tls")]
pub use server::{tls_from_pem, TlsError, TlsFile};
pub use session::Session;
pub use upgrade::{HandshakeError, WebSocketService};
