//! REST routes and a WebSocket on one port: an axum `Router` with `GET /api/time`,
//! `POST /api/echo`, `POST /api/users/{user}/messages` (delivered to that user's open
//! sockets through the `Hub`), and `/ws` behind authentication and session limits.
//!
//! ```text
//! cargo run --example rest_and_ws
//! curl localhost:3000/api/time
//! curl -H 'content-type: application/json' -d '{"hello":"world"}' localhost:3000/api/echo
//! websocat 'ws://localhost:3000/ws?access_token=t-alice'  # or Authorization: Bearer t-alice
//! curl -d 'hello from REST' localhost:3000/api/users/alice/messages   # arrives in websocat
//! ```
//!
//! The WebSocket stack is an ordinary tower service, so axum mounts it with
//! `route_service`, and the REST routes never see its layers. `axum::serve` serves the
//! router, with two pieces of glue that estuary's own `Server` would otherwise provide:
//!
//! - `PeerAddrLayer` (feature `axum`) turns axum's `ConnectInfo<SocketAddr>` into the
//!   `PeerAddr` that the layers and the session read;
//! - a `Shutdown` given to the `WebSocketService`: `Shutdown::begin_on(signal)` is the
//!   graceful-shutdown future axum takes, and closes every socket with 1001 "going away"
//!   when the signal comes; `Shutdown::wait` then waits for their close handshakes.
//!
//! `rest_and_ws_hyper.rs` is the same app on plain hyper, served by estuary's `Server`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use estuary::middleware::auth::{AuthLayer, Authenticate, BearerTokens, QueryToken};
use estuary::middleware::peer_addr::PeerAddrLayer;
use estuary::middleware::session_limits::SessionLimitsLayer;
use estuary::{
    handler_fn, shutdown_signal, Conn, Hub, Message, Shutdown, Target, WebSocketService,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// How long shutdown waits for sockets to finish their close handshake.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[allow(dead_code)] // tests/axum_serve.rs runs `serve`, not `main`
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, shutdown_signal()).await
}

/// Serves the app on `listener` until `signal`, then closes every socket with 1001 and
/// waits (up to [`DRAIN_TIMEOUT`]) for them to finish.
pub async fn serve(
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = Shutdown::new();
    let app = app(Hub::new(), shutdown.clone());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().begin_on(signal))
    .await?;
    // axum has finished the HTTP requests in flight; the sockets are estuary's.
    if tokio::time::timeout(DRAIN_TIMEOUT, shutdown.wait())
        .await
        .is_err()
    {
        eprintln!(
            "{} sockets still open after {DRAIN_TIMEOUT:?}",
            shutdown.connections()
        );
    }
    Ok(())
}

/// The REST routes and `/ws`, its sockets registered in `hub` and `shutdown`.
pub fn app(hub: Hub, shutdown: Shutdown) -> Router {
    // A token in the Authorization header, or in ?access_token= (browsers cannot set
    // headers on a WebSocket).
    let header = BearerTokens::new("estuary").with_token("t-alice", "alice");
    let query = QueryToken::new("estuary").with_token("t-alice", "alice");
    let websocket = ServiceBuilder::new()
        .layer(AuthLayer::new(header.or(query)))
        .layer(
            SessionLimitsLayer::new()
                .with_idle_timeout(Duration::from_secs(120))
                .with_max_message_size(1 << 20),
        )
        .service(
            WebSocketService::new(handler_fn(echo_with_name))
                .with_hub(hub.clone())
                .with_shutdown(shutdown),
        );

    Router::new()
        .route("/api/time", get(time))
        .route("/api/echo", post(echo))
        .route("/api/users/{user}/messages", post(post_to_user))
        .with_state(hub)
        .route_service("/ws", websocket)
        // Outermost, so that every route and layer sees the client's address.
        .layer(PeerAddrLayer::new())
}

/// `GET /api/time`: the server's clock.
async fn time() -> Json<Value> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Json(json!({ "unix_ms": since_epoch.as_millis() }))
}

/// `POST /api/echo`: the JSON body, back.
async fn echo(Json(body): Json<Value>) -> Json<Value> {
    Json(body)
}

/// `POST /api/users/{user}/messages`: the body, as a text message to every open socket
/// of `user`; 404 when the user has none.
async fn post_to_user(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    body: String,
) -> (StatusCode, Json<Value>) {
    match hub.send(Target::user(user.as_str()), body) {
        Ok(0) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "user": user, "delivered": 0 })),
        ),
        Ok(delivered) => (
            StatusCode::ACCEPTED,
            Json(json!({ "user": user, "delivered": delivered })),
        ),
        // A user id no session could have (longer than the hub allows).
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        ),
    }
}

/// Every WebSocket message back, signed with the name the token stands for and the
/// address the socket came from.
fn echo_with_name(conn: &mut Conn, msg: Message) {
    let text = msg.as_text().unwrap_or("(binary)");
    let session = conn.session();
    let from = session
        .peer_addr()
        .map_or_else(|| "?".to_owned(), |addr| addr.ip().to_string());
    let reply = format!("{}@{from}: {text}", session.user_id());
    let _ = conn.send(reply);
}
