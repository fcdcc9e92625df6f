//! The example server's routes and the layers in front of them, built from a [`Config`].
//!
//! ```text
//! RateLimitLayer (per client IP, every route)
//!   -> HealthLayer (health_path)
//!     -> routes, by path:
//!          echo_path -> OriginLayer -> ConnectionLimitLayer (total, and per IP)
//!                       -> AuthLayer -> SessionLimitsLayer -> WebSocketService (echo)
//!          chat_path -> the same layers -> WebSocketService (chat, on the hub)
//!          /         -> the chat page
//!          metrics_path -> Prometheus text (the library's metrics, the hub's registry)
//!          anything else -> 404
//! ```
//!
//! Every WebSocket route sits behind the same [`WebSocketLayers`], so the connection cap
//! counts across routes; the rate limiter counts every request, whatever its route, so
//! that health checks, pages and 404s cost a client its budget too. Without
//! `allowed_origins` the origin check allows the server's own pages only. A new route is one more `route` call in
//! [`App::with_echo`]. The config switches layers on and off at run time, so each route is
//! boxed into one [`Route`] type: a box per layer costs nothing next to a handshake.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use estuary::middleware::auth::{AuthLayer, Authenticate, BasicUsers, BearerTokens, QueryToken};
use estuary::middleware::conn_limit::ConnectionLimitLayer;
use estuary::middleware::health::{Draining, HealthLayer};
use estuary::middleware::key::PeerIp;
use estuary::middleware::origin::OriginLayer;
use estuary::middleware::rate_limit::RateLimitLayer;
use estuary::middleware::session_limits::SessionLimitsLayer;
use estuary::middleware::{MessageRate, SessionLimits};
use estuary::{handler_fn, Conn, Handler, Hub, Message, WebSocketConfig, WebSocketService};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, Service, ServiceExt};

use crate::chat::Chat;
use crate::config::{AuthMode, Config};

/// The response body every route answers with.
pub type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One route, or the whole app: a request in, a response out, never an error.
pub type Route = BoxCloneSyncService<Request<Incoming>, Response<Body>, Infallible>;

/// The example server's service, and the switch that turns `/health` to 503 on shutdown.
#[derive(Clone)]
pub struct App {
    /// What the server serves.
    pub service: Route,
    /// Flip this when shutdown begins.
    pub draining: Draining,
}

/// What the app shares with the rest of the process.
#[derive(Clone, Default)]
pub struct Shared {
    /// The hub the chat delivers through (in-process, or on Redis).
    pub hub: Hub,
    /// Renders the metrics, when `metrics_path` is on and a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

impl App {
    /// The example server: `echo` on `echo_path` (tests put their own handler there,
    /// behind the same layers), the chat on `chat_path` and `/`.
    pub fn build<H: Handler + Sync>(config: &Config, echo: H, shared: Shared) -> App {
        let websocket = WebSocketLayers::new(config);
        let mut engine = WebSocketConfig::default()
            .with_keepalive(config.keepalive_interval, config.keepalive_timeout);
        engine.compression = config.compression.deflate();
        let chat = WebSocketService::new(Chat::default())
            .with_hub(shared.hub.clone())
            .with_config(engine.clone());
        let mut routes = Routes::default()
            .route(
                &config.echo_path,
                websocket.wrap(WebSocketService::new(echo).with_config(engine)),
            )
            .route(&config.chat_path, websocket.wrap(chat))
            .route("/", page());
        if let (Some(path), Some(metrics)) = (&config.metrics_path, shared.metrics) {
            routes = routes.route(path, metrics_route(metrics, shared.hub));
        }
        let draining = Draining::new();
        let health = HealthLayer::new(config.health_path.as_str()).with_draining(draining.clone());
        let service = boxed(health.layer(routes.into_service()));
        App {
            service: optional(rate_limit(config).as_ref(), service),
            draining,
        }
    }
}

/// The per-IP request budget `[rate_limit]` asks for, if any.
fn rate_limit(config: &Config) -> Option<RateLimitLayer<PeerIp>> {
    config.rate_limit.map(|rate| {
        let layer = RateLimitLayer::per_second(rate.per_second);
        let layer = match rate.burst {
            Some(burst) => layer.with_burst(burst),
            None => layer,
        };
        layer.with_key(PeerIp::default().with_ipv6_prefix(config.ipv6_prefix))
    })
}

/// Every message echoed back unchanged.
pub fn echo() -> impl Handler + Sync {
    handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    })
}

/// The layers in front of every WebSocket route, in the order of the request path.
///
/// Built once: the connection cap keeps its counts in the layer, shared by every route
/// it wraps.
#[derive(Clone)]
pub struct WebSocketLayers {
    origin: OriginLayer,
    connections: ConnectionLimitLayer<PeerIp>,
    auth: crate::config::Auth,
    limits: SessionLimitsLayer,
}

impl WebSocketLayers {
    /// The layers `config` asks for.
    pub fn new(config: &Config) -> Self {
        let origin = if config.allowed_origins.is_empty() {
            OriginLayer::same_origin()
        } else {
            OriginLayer::new(&config.allowed_origins).expect("Config::parse checked the origins")
        };
        let mut limits =
            SessionLimits::default().with_max_message_size(config.max_message_size.get());
        limits.idle_timeout = config.idle_timeout;
        limits.max_age = config.max_connection_age;
        limits.max_age_jitter = Some(config.max_connection_age_jitter);
        limits.message_rate = config
            .transmission_limit
            .map(|limit| MessageRate::new(limit.capacity.get(), limit.duration));
        let per_ip = PeerIp::default().with_ipv6_prefix(config.ipv6_prefix);
        Self {
            origin,
            connections: ConnectionLimitLayer::new(config.max_connections.get())
                .per_client(per_ip, config.max_connections_per_ip.get()),
            auth: config.auth.clone(),
            limits: SessionLimitsLayer::from_limits(limits),
        }
    }

    /// `websocket` behind the layers.
    pub fn wrap<H: Handler + Sync>(&self, websocket: WebSocketService<H>) -> Route {
        let route = boxed(self.limits.layer(websocket));
        let route = self.authenticated(route);
        let route = boxed(self.connections.layer(route));
        boxed(self.origin.layer(route))
    }

    fn authenticated(&self, route: Route) -> Route {
        let auth = &self.auth;
        let bearer = || BearerTokens::new(auth.realm.as_str()).with_tokens(auth.tokens.clone());
        match (auth.mode, &auth.query_param) {
            (AuthMode::None, _) => route,
            (AuthMode::Basic, _) => {
                let users = BasicUsers::new(auth.realm.as_str()).with_users(auth.users.clone());
                boxed(AuthLayer::new(users).layer(route))
            }
            (AuthMode::Bearer, None) => boxed(AuthLayer::new(bearer()).layer(route)),
            (AuthMode::Bearer, Some(param)) => {
                let query = QueryToken::new(auth.realm.as_str())
                    .with_param(param.as_str())
                    .with_tokens(auth.tokens.clone());
                boxed(AuthLayer::new(bearer().or(query)).layer(route))
            }
        }
    }
}

/// The single-page chat client.
fn page() -> Route {
    const PAGE: &str = include_str!("chat.html");
    BoxCloneSyncService::new(service_fn(|_request: Request<Incoming>| async {
        let mut response = Response::new(full(PAGE.to_owned()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        Ok(response)
    }))
}

/// The metrics the library records, in Prometheus text format, and the size of this
/// process's hub registry at the moment of the scrape: `estuary_hub_sessions`,
/// `estuary_hub_users`, `estuary_hub_channels` and `estuary_hub_names` (gauges).
fn metrics_route(metrics: PrometheusHandle, hub: Hub) -> Route {
    BoxCloneSyncService::new(service_fn(move |_request: Request<Incoming>| {
        let mut text = metrics.render();
        let stats = hub.stats();
        for (name, help, value) in [
            (
                "sessions",
                "Connections registered with the hub.",
                stats.sessions,
            ),
            ("users", "Users with at least one connection.", stats.users),
            (
                "channels",
                "Channels with at least one member.",
                stats.channels,
            ),
            ("names", "Unique names held.", stats.names),
        ] {
            text.push_str(&format!(
                "# HELP estuary_hub_{name} {help}\n# TYPE estuary_hub_{name} gauge\nestuary_hub_{name} {value}\n"
            ));
        }
        async move {
            let mut response = Response::new(full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
    }))
}

/// Routes by exact path; anything else is 404.
#[derive(Default)]
struct Routes(HashMap<String, Route>);

impl Routes {
    fn route(mut self, path: &str, route: Route) -> Self {
        self.0.insert(path.to_owned(), route);
        self
    }

    fn into_service(self) -> Route {
        let routes = Arc::new(self.0);
        BoxCloneSyncService::new(service_fn(move |request: Request<Incoming>| {
            let route = routes.get(request.uri().path()).cloned();
            async move {
                match route {
                    Some(route) => route.oneshot(request).await,
                    None => Ok(not_found(request.uri().path())),
                }
            }
        }))
    }
}

fn not_found(path: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("no route for {path}")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `route` behind `layer`, when there is one.
fn optional<L>(layer: Option<&L>, route: Route) -> Route
where
    L: Layer<Route>,
    L::Service: Service<Request<Incoming>, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request<Incoming>>>::Future: Send + 'static,
    <L::Service as Service<Request<Incoming>>>::Response: IntoBody,
{
    match layer {
        Some(layer) => boxed(layer.layer(route)),
        None => route,
    }
}

/// Erases a service's type, and its response body's.
fn boxed<S>(service: S) -> Route
where
    S: Service<Request<Incoming>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Response: IntoBody,
{
    BoxCloneSyncService::new(service.map_response(IntoBody::into_body))
}

/// A response whose body can be boxed into [`Body`].
trait IntoBody {
    fn into_body(self) -> Response<Body>;
}

impl<B> IntoBody for Response<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn into_body(self) -> Response<Body> {
        self.map(|body| body.map_err(Into::into).boxed_unsync())
    }
}
