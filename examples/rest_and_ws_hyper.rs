//! `rest_and_ws.rs` on plain hyper, without axum: one `service_fn` that routes by method
//! and path, with the WebSocket stack as one of its branches.
//!
//! ```text
//! cargo run --example rest_and_ws_hyper
//! curl localhost:3000/api/time
//! curl -d '{"hello":"world"}' localhost:3000/api/echo
//! websocat 'ws://localhost:3000/ws?access_token=t-alice'
//! ```

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use estuary::middleware::auth::{AuthLayer, Authenticate, BearerTokens, QueryToken};
use estuary::middleware::session_limits::SessionLimitsLayer;
use estuary::{handler_fn, Conn, Message, Server, WebSocketService};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let header = BearerTokens::new("estuary").with_token("t-alice", "alice");
    let query = QueryToken::new("estuary").with_token("t-alice", "alice");
    let websocket = ServiceBuilder::new()
        .layer(AuthLayer::new(header.or(query)))
        .layer(
            SessionLimitsLayer::new()
                .with_idle_timeout(Duration::from_secs(120))
                .with_max_message_size(1 << 20),
        )
        .service(WebSocketService::new(handler_fn(echo_with_name)));

    let app = service_fn(move |request: Request<Incoming>| {
        let websocket = websocket.clone();
        async move {
            let response = match (request.method(), request.uri().path()) {
                (_, "/ws") => websocket.oneshot(request).await?.map(Either::Right),
                (&Method::GET, "/api/time") => time(),
                (&Method::POST, "/api/echo") => echo(request).await,
                // A route that posts to a user's sockets goes here too, with the `Hub`
                // that the `WebSocketService` gets with `with_hub`.
                _ => text(StatusCode::NOT_FOUND, "not found"),
            };
            Ok::<_, Infallible>(response)
        }
    });

    let server = Server::bind("127.0.0.1:3000".parse().expect("a valid address"))?;
    println!("listening on http://{}", server.local_addr()?);
    server.serve(app).await
}

/// What the REST routes answer with; the WebSocket stack's responses are the other side
/// of the `Either`.
type Rest<B> = Response<Either<Full<Bytes>, B>>;

/// `GET /api/time`: the server's clock.
fn time<B>() -> Rest<B> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json_response(&json!({ "unix_ms": since_epoch.as_millis() }))
}

/// `POST /api/echo`: the JSON body, back.
async fn echo<B>(request: Request<Incoming>) -> Rest<B> {
    let Ok(body) = request.into_body().collect().await else {
        return text(StatusCode::BAD_REQUEST, "could not read the body");
    };
    match serde_json::from_slice::<Value>(&body.to_bytes()) {
        Ok(value) => json_response(&value),
        Err(e) => text(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    }
}

fn json_response<B>(value: &Value) -> Rest<B> {
    let mut response = Response::new(Either::Left(Full::from(value.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text<B>(status: StatusCode, text: &str) -> Rest<B> {
    let mut response = Response::new(Either::Left(Full::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

/// Every WebSocket message back, signed with the name the token stands for.
fn echo_with_name(conn: &mut Conn, msg: Message) {
    let text = msg.as_text().unwrap_or("(binary)");
    let reply = format!("{}: {text}", conn.session().user_id());
    let _ = conn.send(reply);
}
