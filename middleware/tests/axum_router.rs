//! The whole layer stack mounted on an axum `Router`, beside a REST route, in the order
//! of DESIGN.md's request path, driven with `oneshot` (no sockets: the over-the-wire
//! tests live with the server).

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use estuary_middleware::auth::{AuthLayer, Authenticate, BearerTokens, QueryToken};
use estuary_middleware::conn_limit::ConnectionLimitLayer;
use estuary_middleware::health::{Draining, HealthLayer};
use estuary_middleware::origin::OriginLayer;
use estuary_middleware::rate_limit::RateLimitLayer;
use estuary_middleware::session_limits::SessionLimitsLayer;
use estuary_middleware::{ConnectionPermit, Identity, PeerAddr, SessionLimits};
use http::header::{ORIGIN, RETRY_AFTER, WWW_AUTHENTICATE};
use http::StatusCode;
use tower::{ServiceBuilder, ServiceExt};

struct Stack {
    router: Router,
    draining: Draining,
    connections: ConnectionLimitLayer,
}

/// `/ws` behind every layer; `/api/ping` a plain REST route on the same router.
fn stack(max_connections: usize, per_second: u32) -> Stack {
    let draining = Draining::new();
    let connections = ConnectionLimitLayer::new(max_connections);
    let tokens = BearerTokens::new("estuary").with_token("t-alice", "alice");
    let query = QueryToken::new("estuary").with_token("t-alice", "alice");
    let per_second = NonZeroU32::new(per_second).expect("test rates are not zero");
    let ws_layers = ServiceBuilder::new()
        .layer(OriginLayer::new(["https://app.example.com"]).expect("valid origin"))
        .layer(RateLimitLayer::per_second(per_second))
        .layer(connections.clone())
        .layer(AuthLayer::new(tokens.or(query)))
        .layer(SessionLimitsLayer::new().with_idle_timeout(Duration::from_secs(30)));
    let router = Router::new()
        .route("/ws", get(stand_in_upgrade).route_layer(ws_layers))
        .route("/api/ping", get(|| async { "pong" }))
        .layer(HealthLayer::new("/health").with_draining(draining.clone()));
    Stack {
        router,
        draining,
        connections,
    }
}

/// What the WebSocket upgrade would read from the extensions, as text.
async fn stand_in_upgrade(request: Request) -> String {
    let extensions = request.extensions();
    let user = extensions
        .get::<Identity>()
        .map(|identity| identity.user_id().to_owned());
    let permit = extensions.get::<ConnectionPermit>().is_some();
    let idle = extensions
        .get::<SessionLimits>()
        .and_then(|limits| limits.idle_timeout);
    format!("user={user:?} permit={permit} idle={idle:?}")
}

fn request(uri: &str) -> Request {
    let mut request = http::Request::get(uri)
        .header(ORIGIN, "https://app.example.com")
        .body(Body::empty())
        .expect("test requests are valid");
    let peer = "192.0.2.1:40000".parse().expect("valid address");
    request.extensions_mut().insert(PeerAddr(peer));
    request
}

async fn call(router: &Router, request: Request) -> (StatusCode, http::HeaderMap, String) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e: Infallible| match e {});
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 16)
        .await
        .expect("short body");
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8 body");
    (parts.status, parts.headers, text)
}

#[tokio::test]
async fn authenticated_request_reaches_the_handler_with_identity_permit_and_limits() {
    let stack = stack(10, 100);
    let (status, _, body) = call(&stack.router, request("/ws?access_token=t-alice")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "user=Some(\"alice\") permit=true idle=Some(30s)");
    assert_eq!(
        stack.connections.live(),
        0,
        "the handler dropped the request"
    );
}

#[tokio::test]
async fn missing_token_gets_401_and_gives_its_connection_slot_back() {
    let stack = stack(10, 100);
    let (status, headers, body) = call(&stack.router, request("/ws")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[WWW_AUTHENTICATE], r#"Bearer realm="estuary""#);
    assert_eq!(body, "missing \"access_token\" query parameter");
    assert_eq!(stack.connections.live(), 0);
}

#[tokio::test]
async fn foreign_origin_gets_403_before_anything_else() {
    let stack = stack(10, 100);
    let mut foreign = request("/ws?access_token=t-alice");
    foreign
        .headers_mut()
        .insert(ORIGIN, "https://evil.example".parse().unwrap());
    let (status, _, body) = call(&stack.router, foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "origin \"https://evil.example\" is not allowed");
}

#[tokio::test]
async fn burst_plus_one_handshake_gets_429() {
    let stack = stack(10, 2);
    for _ in 0..2 {
        let (status, _, _) = call(&stack.router, request("/ws?access_token=t-alice")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, _) = call(&stack.router, request("/ws?access_token=t-alice")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[RETRY_AFTER], "1");
}

#[tokio::test]
async fn full_server_answers_503() {
    let stack = stack(0, 100);
    let (status, headers, _) = call(&stack.router, request("/ws?access_token=t-alice")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[RETRY_AFTER], "5");
}

#[tokio::test]
async fn health_and_rest_routes_stay_open_without_credentials() {
    let stack = stack(0, 100);
    let (status, _, body) = call(&stack.router, request("/health")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));
    let (status, _, body) = call(&stack.router, request("/api/ping")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "pong"));

    stack.draining.start();
    let (status, _, body) = call(&stack.router, request("/health")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    );
}
