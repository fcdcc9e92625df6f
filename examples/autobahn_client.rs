//! Drives `estuary::client` through the Autobahn TestSuite's client cases, served by
//! `kosoku -m fuzzingserver`: asks the suite for its case count, runs every case with a
//! client that echoes each message back, then asks the suite to write its reports.
//! `scripts/autobahn-client.sh` runs it and judges the reports.
//!
//! ```text
//! kosoku -m fuzzingserver 127.0.0.1:9001 -x '12.*' -x '13.*' -o target/autobahn/client &
//! cargo run --release --features client --example autobahn_client -- --url ws://127.0.0.1:9001
//! ```

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use estuary::client::{Client, ClientConfig, ClientHandler, DisconnectReason, Reconnect};
use estuary::Message;
use tokio::sync::oneshot;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Run the Autobahn client cases against estuary::client")]
struct Args {
    /// The fuzzing server's base URL.
    #[arg(long, default_value = "ws://127.0.0.1:9001")]
    url: String,
    /// The agent name the reports file the results under.
    #[arg(long, default_value = "estuary")]
    agent: String,
    /// The longest one case may take, in seconds.
    #[arg(long, default_value_t = 120)]
    case_timeout: u64,
}

/// Echoes every message, and never reconnects: one connection per case.
struct Echo;

impl ClientHandler for Echo {
    async fn on_message(&mut self, client: &Client, message: Message) {
        let _ = client.send(message);
    }

    async fn on_close(&mut self, _: &Client, _: &DisconnectReason, _: u32) -> Reconnect {
        Reconnect::Stop
    }
}

/// Keeps the first message, for `/getCaseCount`.
struct FirstMessage(Option<oneshot::Sender<Message>>);

impl ClientHandler for FirstMessage {
    async fn on_message(&mut self, _client: &Client, message: Message) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(message);
        }
    }

    async fn on_close(&mut self, _: &Client, _: &DisconnectReason, _: u32) -> Reconnect {
        Reconnect::Stop
    }
}

fn config() -> ClientConfig {
    // The suite counts every frame: no keep-alive pings of our own.
    // It offers permessage-deflate, for the 12.* and 13.* cases, and compresses every
    // message: those cases cannot read an uncompressed one on a compressed connection.
    ClientConfig::default()
        .with_keepalive(None, Duration::from_secs(1))
        .with_max_queued_bytes(64 << 20)
        .with_compression(estuary::DeflateConfig::default().with_threshold(0))
}

async fn connect<H: estuary::client::ClientHandler>(
    url: &str,
    handler: H,
) -> anyhow::Result<Client> {
    Client::builder(url)
        .config(config())
        .connect(handler)
        .await
        .with_context(|| format!("connect {url}"))
}

async fn case_count(base: &str) -> anyhow::Result<u32> {
    let (tx, rx) = oneshot::channel();
    let url = format!("{base}/getCaseCount");
    let client = connect(&url, FirstMessage(Some(tx))).await?;
    let message = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .context("no case count within 10 s")?
        .context("the suite closed without sending the case count")?;
    let _ = client.close(1000, "");
    client.closed().await;
    let text = message.as_text().context("the case count is not text")?;
    text.trim()
        .parse()
        .with_context(|| format!("the case count {text:?} is not a number"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let base = args.url.trim_end_matches('/');

    let count = case_count(base).await?;
    println!("{count} cases");
    let mut stuck = Vec::new();
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={}", args.agent);
        match connect(&url, Echo).await {
            Ok(client) => {
                let limit = Duration::from_secs(args.case_timeout);
                if tokio::time::timeout(limit, client.closed()).await.is_err() {
                    eprintln!("case {case}: still open after {limit:?}; moving on");
                    let _ = client.close(1001, "case timed out");
                    stuck.push(case);
                }
            }
            Err(error) => eprintln!("case {case}: {error:#}"),
        }
        if case % 50 == 0 {
            println!("{case}/{count} cases run");
        }
    }

    let url = format!("{base}/updateReports?agent={}", args.agent);
    let client = connect(&url, Echo).await?;
    if tokio::time::timeout(Duration::from_secs(60), client.closed())
        .await
        .is_err()
    {
        bail!("the suite did not close /updateReports within 60 s");
    }
    if !stuck.is_empty() {
        bail!("cases that did not finish in time: {stuck:?}");
    }
    println!("all {count} cases run; reports updated");
    Ok(())
}
