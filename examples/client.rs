//! A line client for the example server's `/echo`: every line typed on stdin is sent,
//! every message that comes back is printed, and when the server restarts the client
//! reconnects (lines typed meanwhile wait in the queue and go out once it is back).
//!
//! ```text
//! cargo run --release --example server
//! cargo run --features client --example client -- --url ws://127.0.0.1:3000/echo
//! ```
//!
//! `RUST_LOG=estuary=debug` shows every frame and state change. End with Ctrl-D: the
//! client closes with 1000 and waits for the close handshake.

use std::time::Duration;

use clap::Parser;
use estuary::client::{
    Client, ClientConfig, ClientHandler, Connected, DisconnectReason, Reconnect,
};
use estuary::Message;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Send stdin lines to a WebSocket server and print what comes back")]
struct Args {
    /// The server to connect to.
    #[arg(long, default_value = "ws://127.0.0.1:3000/echo")]
    url: String,
}

/// Prints what happens to the connection.
struct Printer;

impl ClientHandler for Printer {
    async fn on_open(&mut self, _client: &Client, _connected: &Connected) {
        eprintln!("* connected");
    }

    async fn on_message(&mut self, _client: &Client, message: Message) {
        match message.as_text() {
            Some(text) => println!("< {text}"),
            None => println!("< ({} bytes of binary)", message.len()),
        }
    }

    async fn on_close(
        &mut self,
        _client: &Client,
        reason: &DisconnectReason,
        attempt: u32,
    ) -> Reconnect {
        eprintln!("* {reason}; reconnecting (attempt {})", attempt + 1);
        Reconnect::AfterBackoff
    }

    async fn on_stop(&mut self, _client: &Client, reason: DisconnectReason) {
        eprintln!("* stopped: {reason}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let config = ClientConfig::default()
        .with_keepalive(Some(Duration::from_secs(15)), Duration::from_secs(5));
    let client = Client::builder(&args.url)
        .config(config)
        .connect(Printer)
        .await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => {
                    if let Err(error) = client.send(line) {
                        eprintln!("* not sent: {error}");
                    }
                }
                None => break,
            },
            () = client.closed() => return Ok(()),
        }
    }
    // Give the last echoes a moment to arrive before closing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = client.close(1000, "bye");
    client.closed().await;
    Ok(())
}
