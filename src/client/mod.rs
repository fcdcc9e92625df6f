//! A WebSocket client (feature `client`; `wss://` with feature `tls`) that reconnects,
//! keeps the connection alive and sends from any task.
//!
//! [`Client::connect`] opens a `ws://` or `wss://` connection (hyper's HTTP/1.1 client
//! does the upgrade) and runs your [`ClientHandler`] on a task that owns the socket. With
//! an [`Http2Connection`] ([`ClientBuilder::http2`]), several clients open their
//! WebSockets as streams of one HTTP/2 connection instead (RFC 8441). The
//! frames go through the same strict RFC 6455 codec as the server's: messages arrive
//! reassembled and UTF-8 validated, pings are answered, bad frames fail the connection
//! with the right close code. The task keeps the connection alive with pings and a pong
//! deadline, and when the connection ends asks the handler's
//! [`on_close`](ClientHandler::on_close) whether to reconnect, after an
//! exponential [`Backoff`] with jitter. The [`Client`] handle is cheap to clone and sends
//! from any task; [`WhileReconnecting`] says whether sends made while disconnected wait
//! or fail.
//!
//! Every frame sent and received and every state change is logged with `tracing` at debug
//! level, in a `ws_client` span that names the URL (its query, which may carry a token,
//! redacted): `RUST_LOG=estuary=debug` shows the whole conversation.
//!
//! ```no_run
//! use estuary::client::{Client, ClientConfig, ClientHandler, Connected, DisconnectReason, Reconnect};
//! use estuary::Message;
//! use std::time::Duration;
//!
//! struct Echoes;
//!
//! impl ClientHandler for Echoes {
//!     async fn on_open(&mut self, client: &Client, _connected: &Connected) {
//!         let _ = client.send("hello");
//!     }
//!
//!     async fn on_message(&mut self, _client: &Client, message: Message) {
//!         println!("< {}", message.as_text().unwrap_or("(binary)"));
//!     }
//!
//!     async fn on_close(&mut self, _c: &Client, reason: &DisconnectReason, attempt: u32) -> Reconnect {
//!         eprintln!("{reason}; reconnect attempt {}", attempt + 1);
//!         Reconnect::AfterBackoff
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let client = Client::builder("ws://127.0.0.1:3000/echo")
//!         .header("authorization", "Bearer s3cret")
//!         .config(ClientConfig::default().with_keepalive(Some(Duration::from_secs(15)), Duration::from_secs(5)))
//!         .connect(Echoes)
//!         .await?;
//!     client.send("from main")?;
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     client.close(1000, "bye")?;
//!     client.closed().await;
//!     Ok(())
//! }
//! ```
//!
//! Closing follows RFC 6455: the client sends its close frame (or answers the server's
//! with the same code), then waits, up to [`ClientConfig::close_timeout`], for the server
//! to close the TCP connection first.

mod builder;
mod config;
mod connection;
mod error;
mod handle;
mod handler;
mod handshake;
mod http2;
mod runner;
mod stream;
#[cfg(feature = "tls")]
mod tls;

pub use builder::ClientBuilder;
pub use config::{Backoff, ClientConfig, WhileReconnecting};
pub use error::{ConnectError, SendError};
pub use handle::{Client, ClientState};
pub use handler::{ClientHandler, Connected, DisconnectReason, Reconnect};
pub use http2::Http2Connection;

/// The rustls crate the `tls` feature uses, for [`ClientBuilder::add_root_certificate`]
/// and [`ClientBuilder::tls_config`].
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;
