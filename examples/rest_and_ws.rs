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
//! `route_service`, and the REST routes never see its layers. estuary's `Server` serves
//! the router: it gives every request its peer address and registers every socket for
//! graceful shutdown. (With `axum::serve` instead, hand the `WebSocketService` a
//! `Shutdown` of its own with `with_shutdown`.) `rest_and_ws_hyper.rs` is the same app
//! on plain hyper.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use estuary::middleware::auth::{AuthLayer, Authenticate, BearerTokens, QueryToken};
use estuary::middleware::session_limits::SessionLimitsLayer;
use estuary::{handler_fn, Conn, Hub, Message, Server, Target, WebSocketService};
use serde_json::{json, Value};
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // The same hub for the sockets and the REST routes that deliver to them.
    let hub = Hub::new();
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
        .service(WebSocketService::new(handler_fn(echo_with_name)).with_hub(hub.clone()));

    let app = Router::new()
        .route("/api/time", get(time))
        .route("/api/echo", post(echo))
        .route("/api/users/{user}/messages", post(post_to_user))
        .with_state(hub)
        .route_service("/ws", websocket);

    let server = Server::bind("127.0.0.1:3000".parse().expect("a valid address"))?;
    println!("listening on http://{}", server.local_addr()?);
    server.serve(app).await
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

/// Every WebSocket message back, signed with the name the token stands for.
fn echo_with_name(conn: &mut Conn, msg: Message) {
    let text = msg.as_text().unwrap_or("(binary)");
    let reply = format!("{}: {text}", conn.session().user_id());
    let _ = conn.send(reply);
}
