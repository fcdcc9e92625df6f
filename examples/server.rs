//! The example server: `/echo` echoes every message back unchanged, `/health` answers
//! "OK".
//!
//! ```text
//! cargo run --release --example server -- --bind 127.0.0.1:3000
//! ```

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use estuary::{handler_fn, Conn, Message, Server, WebSocketService};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{service_fn, ServiceExt};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Estuary example server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    }));
    let app = service_fn(move |request: Request<Incoming>| {
        let echo = echo.clone();
        async move {
            match request.uri().path() {
                "/echo" => echo.oneshot(request).await,
                "/health" => Ok(plain(StatusCode::OK, "OK")),
                _ => Ok(plain(StatusCode::NOT_FOUND, "not found")),
            }
        }
    });

    let server = Server::bind(args.bind)?;
    tracing::info!(addr = %server.local_addr()?, "listening");
    server.serve(app).await?;
    Ok(())
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
