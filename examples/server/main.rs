//! The example server: WebSocket echo behind every Estuary layer, configured by a TOML
//! file.
//!
//! ```text
//! cargo run --release --example server -- --bind 127.0.0.1:3000
//! cargo run --release --example server -- --config examples/server.toml
//! ```
//!
//! With no config file it runs with the defaults: `/echo` echoes every message back,
//! `/health` answers "OK", web pages other than its own may not open a socket, and no
//! address may hold more than its share of connections. `examples/server.toml` lists every key with a comment; a bad
//! value stops the server at startup with a message that names the key. SIGINT or
//! SIGTERM starts a graceful shutdown: the server stops accepting, `/health` answers 503
//! on connections still open, and every socket closes with 1001.

mod app;
mod chat;
mod config;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use estuary::Server;
use tracing_subscriber::EnvFilter;

use crate::app::{App, Shared};
use crate::config::Config;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Estuary example server")]
struct Args {
    /// TOML config file (see examples/server.toml); without it, the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the config file's `bind`.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match args.config.as_deref().map(Config::load) {
        None => Config::default(),
        Some(Ok(config)) => config,
        Some(Err(error)) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    init_logs(config.show_debug_logs);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shared = Shared {
        hub: hub(&config).await?,
        metrics: match config.metrics_path {
            Some(_) => Some(
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .install_recorder()
                    .context("metrics_path: cannot install the Prometheus recorder")?,
            ),
            None => None,
        },
    };
    let app = App::build(&config, app::echo(), shared);
    let builder = Server::builder();
    #[cfg(feature = "tls")]
    let builder = match &config.tls {
        Some(tls) => builder.tls(tls.load()?),
        None => builder,
    };
    // Every WebSocket route takes requests of any method (routes go by path), so it
    // accepts HTTP/2's extended CONNECT, and advertising it keeps the promise.
    let server = builder
        .http2(config.http2)
        .h2c(config.h2c)
        .websockets_over_http2(true)
        .reuse_port(config.reuse_port)
        .drain_timeout(config.shutdown_timeout)
        .header_read_timeout(config.header_read_timeout)
        .max_pending_handshakes(config.max_pending_handshakes.get())
        .max_pending_handshakes_per_ip(config.max_pending_handshakes_per_ip.get())
        .ipv6_prefix(config.ipv6_prefix)
        .bind(config.bind)
        .with_context(|| format!("bind: cannot listen on {}", config.bind))?;
    tracing::info!(addr = %server.local_addr()?, "listening");
    let draining = app.draining.clone();
    let signal = async move {
        estuary::shutdown_signal().await;
        draining.start();
    };
    server.serve_with_shutdown(app.service, signal).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The hub, with the `[hub]` limits, channel rules and histories: on Redis when `[redis]`
/// is set (checked by `Config::parse`).
async fn hub(config: &Config) -> anyhow::Result<estuary::Hub> {
    let mut builder = estuary::Hub::builder()
        .limits(config.hub.limits())
        .policy(chat::ChatRules::new(&config.hub.channels));
    // A rule is whole: the longest pattern that matches a channel decides its history
    // too, so a rule without `history_size` keeps none.
    for (pattern, rule) in &config.hub.channels {
        builder = builder.history(pattern, rule.history());
    }
    #[cfg(feature = "redis")]
    if let Some(redis) = &config.redis {
        let backplane = redis.backplane()?;
        // The error says which Redis, with its password redacted.
        return builder
            .redis(backplane)
            .await
            .context("redis.url: cannot join the backplane");
    }
    Ok(builder.build())
}

/// Info-level logs, or debug-level for estuary with `show_debug_logs`; RUST_LOG wins.
fn init_logs(show_debug_logs: bool) {
    let default = if show_debug_logs {
        "info,estuary=debug,estuary_middleware=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}
