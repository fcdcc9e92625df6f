use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use tower_layer::Layer;
use tower_service::Service;

use crate::response::{self, ResponseBody, ResponseFuture};

/// The longest piece of a rejected `Origin` header echoed back in the reason.
const ECHO_LIMIT: usize = 100;

/// Layer that answers 403 to requests whose `Origin` is not on its allow-list.
///
/// ```
/// use estuary_middleware::origin::OriginLayer;
///
/// let layer = OriginLayer::new(["https://app.example.com", "http://localhost:8080"])
///     .expect("valid origins")
///     .strict();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct OriginLayer {
    allowed: Arc<Allowed>,
    strict: bool,
    same_origin: bool,
}

/// The allow-list, reduced and also serialized the way browsers send an origin, so that
/// the usual request matches one string without being parsed.
#[derive(Debug)]
struct Allowed {
    sites: HashSet<SiteOrigin>,
    serialized: HashSet<String>,
}

impl OriginLayer {
    /// Allows the given origins, each written `scheme://host[:port]`.
    ///
    /// A trailing `/` is tolerated; a path, query, or user name is an error that names
    /// the entry, so a typo in a config file fails at startup.
    ///
    /// ```
    /// use estuary_middleware::origin::OriginLayer;
    ///
    /// let error = OriginLayer::new(["app.example.com"]).unwrap_err();
    /// assert_eq!(
    ///     error.to_string(),
    ///     "invalid origin \"app.example.com\": expected scheme://host[:port]"
    /// );
    /// ```
    pub fn new<I>(origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let sites: HashSet<SiteOrigin> = origins
            .into_iter()
            .map(|origin| {
                let origin = origin.as_ref();
                SiteOrigin::parse(origin.strip_suffix('/').unwrap_or(origin)).ok_or_else(|| {
                    InvalidOrigin {
                        origin: origin.to_owned(),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        let serialized = sites.iter().map(SiteOrigin::serialize).collect();
        Ok(Self {
            allowed: Arc::new(Allowed { sites, serialized }),
            strict: false,
            same_origin: false,
        })
    }

    /// Allows only pages served by this server: an `Origin` whose host and port are the
    /// request's `Host` (or, without one, the host of the request URI, as in HTTP/2).
    ///
    /// For a server that serves its own pages and has no list of origins: any other web
    /// page gets 403. It trusts `Host` as the browser sent it, so it does not stop DNS
    /// rebinding (a hostile name that resolves to this server); an allow-list does.
    ///
    /// ```
    /// use estuary_middleware::origin::OriginLayer;
    /// use http::{Request, Response, StatusCode};
    /// use http_body_util::Full;
    /// use bytes::Bytes;
    /// use std::convert::Infallible;
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let service = ServiceBuilder::new()
    ///     .layer(OriginLayer::same_origin())
    ///     .service(service_fn(|_request: Request<()>| async {
    ///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("websocket"))))
    ///     }));
    /// let from = |origin| {
    ///     let request = Request::get("/ws").header("host", "127.0.0.1:3000");
    ///     request.header("origin", origin).body(()).unwrap()
    /// };
    /// let response = service.clone().oneshot(from("http://127.0.0.1:3000")).await.unwrap();
    /// assert_eq!(response.status(), StatusCode::OK);
    /// let response = service.oneshot(from("http://127.0.0.1:8000")).await.unwrap();
    /// assert_eq!(response.status(), StatusCode::FORBIDDEN);
    /// # }
    /// ```
    pub fn same_origin() -> Self {
        Self {
            allowed: Arc::new(Allowed {
                sites: HashSet::new(),
                serialized: HashSet::new(),
            }),
            strict: false,
            same_origin: true,
        }
    }

    /// Rejects requests without an `Origin` header too (403 "missing Origin header"),
    /// for servers that only browsers may use.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }
}

impl<S> Layer<S> for OriginLayer {
    type Service = CheckOrigin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CheckOrigin {
            inner,
            allowed: self.allowed.clone(),
            strict: self.strict,
            same_origin: self.same_origin,
        }
    }
}

/// Middleware that checks the `Origin` header against an allow-list, or against `Host`.
///
/// Built by [`OriginLayer`].
///
/// ```
/// use estuary_middleware::origin::{CheckOrigin, OriginLayer};
/// use http::{Request, Response, StatusCode};
/// use std::convert::Infallible;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let layer = OriginLayer::new(["https://app.example.com"]).expect("a valid origin");
/// let service: CheckOrigin<_> = layer.layer(inner);
/// let request = Request::get("/ws")
///     .header("origin", "https://evil.example")
///     .body(())
///     .unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::FORBIDDEN);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CheckOrigin<S> {
    inner: S,
    allowed: Arc<Allowed>,
    strict: bool,
    same_origin: bool,
}

impl<S> CheckOrigin<S> {
    /// Why a request with `headers` for `uri` may not pass, or `None` when it may.
    fn rejection(&self, headers: &HeaderMap, uri: &Uri) -> Option<String> {
        let mut values = headers.get_all(ORIGIN).iter();
        let Some(value) = values.next() else {
            return self.strict.then(|| "missing Origin header".to_owned());
        };
        if values.next().is_some() {
            return Some("more than one Origin header".to_owned());
        }
        let allowed = value.to_str().is_ok_and(|text| {
            self.allowed.serialized.contains(text)
                || SiteOrigin::parse(text).is_some_and(|site| {
                    self.allowed.sites.contains(&site)
                        || (self.same_origin && site.is_served_by(headers, uri))
                })
        });
        if allowed {
            return None;
        }
        let shown: String = String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(ECHO_LIMIT)
            .collect();
        Some(format!("origin \"{shown}\" is not allowed"))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CheckOrigin<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.rejection(request.headers(), request.uri()) {
            None => ResponseFuture::inner(self.inner.call(request)),
            Some(reason) => ResponseFuture::answered(response::text(
                StatusCode::FORBIDDEN,
                reason,
                HeaderMap::new(),
            )),
        }
    }
}

/// An allow-list entry that is not `scheme://host[:port]`.
///
/// ```
/// use estuary_middleware::origin::OriginLayer;
///
/// assert!(OriginLayer::new(["https://example.com/app"]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin {
    origin: String,
}

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid origin \"{}\": expected scheme://host[:port]",
            self.origin
        )
    }
}

impl std::error::Error for InvalidOrigin {}

/// An origin reduced to what decides "same site": lowercase scheme and host, and the
/// port with the scheme's default removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SiteOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl SiteOrigin {
    /// Whether this is the origin of the server the request went to: the same host and
    /// port as its `Host` header, or its URI's authority when it has no `Host`. A `Host`
    /// without a port means the origin scheme's default port.
    fn is_served_by(&self, headers: &HeaderMap, uri: &Uri) -> bool {
        let host = match headers.get(HOST) {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<http::uri::Authority>().ok()),
            None => uri.authority().cloned(),
        };
        let Some(host) = host else { return false };
        if host.as_str().contains('@') {
            return false;
        }
        let port = host
            .port_u16()
            .filter(|&port| Some(port) != default_port(&self.scheme));
        host.host().eq_ignore_ascii_case(&self.host) && port == self.port
    }

    fn parse(text: &str) -> Option<Self> {
        let uri: Uri = text.parse().ok()?;
        let authority = uri.authority()?;
        let bare = uri.path_and_query().is_none_or(|pq| pq.as_str() == "/");
        if !bare || text.ends_with('/') || authority.as_str().contains('@') {
            return None;
        }
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let port = authority
            .port_u16()
            .filter(|&port| Some(port) != default_port(&scheme));
        Some(Self {
            host: authority.host().to_ascii_lowercase(),
            scheme,
            port,
        })
    }

    /// The origin as a browser sends it (RFC 6454, 6.2): `scheme://host`, and `:port`
    /// unless it is the scheme's default.
    fn serialize(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

/// The port a URL of `scheme` means when it names none.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{get, inner_ok, text};
    use bytes::Bytes;
    use http_body_util::Empty;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    fn allowing(origins: &[&str]) -> OriginLayer {
        OriginLayer::new(origins).expect("test origins are valid")
    }

    async fn answer(layer: OriginLayer, request: Request<Empty<Bytes>>) -> (StatusCode, String) {
        let service = ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(inner_ok));
        let response = service.oneshot(request).await.unwrap();
        (response.status(), text(response).await)
    }

    async fn status_for(layer: OriginLayer, origin: Option<&str>) -> (StatusCode, String) {
        let mut request = get("/ws");
        if let Some(origin) = origin {
            request.headers_mut().insert(
                ORIGIN,
                origin.parse().expect("test origins are header values"),
            );
        }
        answer(layer, request).await
    }

    #[tokio::test]
    async fn allowed_origin_reaches_the_inner_service() {
        let layer = allowing(&["https://app.example.com"]);
        let (status, body) = status_for(layer, Some("https://app.example.com")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "inner");
    }

    #[tokio::test]
    async fn scheme_and_host_match_case_insensitively() {
        let layer = allowing(&["https://App.Example.com"]);
        let (status, _) = status_for(layer, Some("HTTPS://app.EXAMPLE.com")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn default_port_is_the_same_origin() {
        let layer = allowing(&["https://app.example.com:443", "http://localhost"]);
        let (status, _) = status_for(layer.clone(), Some("https://app.example.com")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = status_for(layer, Some("http://localhost:80")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn allowed_origins_are_serialized_as_browsers_send_them() {
        let layer = allowing(&[
            "HTTPS://App.Example.com:443/",
            "http://localhost:8080",
            "http://[::1]:80",
        ]);
        let mut serialized: Vec<_> = layer.allowed.serialized.iter().cloned().collect();
        serialized.sort();
        assert_eq!(
            serialized,
            [
                "http://[::1]",
                "http://localhost:8080",
                "https://app.example.com"
            ]
        );
    }

    #[tokio::test]
    async fn ipv6_origin_matches() {
        let layer = allowing(&["http://[::1]:8080"]);
        let (status, _) = status_for(layer.clone(), Some("http://[::1]:8080")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = status_for(layer, Some("http://[::1]:8081")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn foreign_origin_is_403_naming_it() {
        let layer = allowing(&["https://app.example.com"]);
        let (status, body) = status_for(layer, Some("https://evil.example")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, "origin \"https://evil.example\" is not allowed");
    }

    #[tokio::test]
    async fn other_scheme_or_port_is_foreign() {
        let layer = allowing(&["https://app.example.com"]);
        for origin in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://sub.app.example.com",
            "https://app.example.com.evil.example",
        ] {
            let (status, _) = status_for(layer.clone(), Some(origin)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
        }
    }

    #[tokio::test]
    async fn null_or_garbage_origin_is_403() {
        let layer = allowing(&["https://app.example.com"]);
        for origin in [
            "null",
            "",
            "https://app.example.com/path",
            "app.example.com",
        ] {
            let (status, _) = status_for(layer.clone(), Some(origin)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?}");
        }
    }

    #[tokio::test]
    async fn very_long_origin_is_cut_in_the_reason() {
        let origin = format!("https://{}.example", "a".repeat(500));
        let (status, body) = status_for(allowing(&[]), Some(&origin)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.len() < 200, "{body}");
    }

    #[tokio::test]
    async fn two_origin_headers_are_403() {
        let mut request = get("/ws");
        request
            .headers_mut()
            .append(ORIGIN, "https://app.example.com".parse().unwrap());
        request
            .headers_mut()
            .append(ORIGIN, "https://evil.example".parse().unwrap());
        let (status, body) = answer(allowing(&["https://app.example.com"]), request).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, "more than one Origin header");
    }

    async fn same_origin_status(host: Option<&str>, uri: &str, origin: &str) -> StatusCode {
        let mut request = get(uri);
        if let Some(host) = host {
            request.headers_mut().insert(HOST, host.parse().unwrap());
        }
        request
            .headers_mut()
            .insert(ORIGIN, origin.parse().unwrap());
        answer(OriginLayer::same_origin(), request).await.0
    }

    #[tokio::test]
    async fn same_origin_lets_in_pages_of_the_host_they_connect_to() {
        for (host, origin) in [
            ("127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("Chat.Example", "https://chat.example"),
            ("chat.example:443", "https://chat.example"),
            ("chat.example", "http://chat.example:80"),
            ("[::1]:3000", "http://[::1]:3000"),
        ] {
            let status = same_origin_status(Some(host), "/ws", origin).await;
            assert_eq!(status, StatusCode::OK, "{host} {origin}");
        }
        // HTTP/2 has no Host header: the URI's authority stands for it.
        let status =
            same_origin_status(None, "http://chat.example/ws", "http://chat.example").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn same_origin_turns_other_pages_away_with_403() {
        for (host, origin) in [
            ("127.0.0.1:3000", "http://127.0.0.1:8000"),
            ("127.0.0.1:3000", "http://localhost:3000"),
            ("chat.example", "https://chat.example.evil"),
            ("chat.example", "https://chat.example:8443"),
            ("chat.example:80", "https://chat.example"),
            ("chat.example", "null"),
            ("not a host", "http://not a host"),
        ] {
            let status = same_origin_status(Some(host), "/ws", origin).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host} {origin}");
        }
        let status = same_origin_status(None, "/ws", "http://chat.example").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no Host and no authority");
        let (status, _) = status_for(OriginLayer::same_origin(), None).await;
        assert_eq!(status, StatusCode::OK, "no Origin: not a browser page");
    }

    #[tokio::test]
    async fn missing_origin_passes_by_default() {
        let (status, _) = status_for(allowing(&["https://app.example.com"]), None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn strict_rejects_missing_origin() {
        let layer = allowing(&["https://app.example.com"]).strict();
        let (status, body) = status_for(layer, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, "missing Origin header");
    }

    #[test]
    fn allow_list_accepts_origins_with_ports_ipv6_and_a_trailing_slash() {
        let layer = allowing(&[
            "http://[::1]:8080",
            "wss://chat.example/",
            "http://127.0.0.1:3000",
        ]);
        assert_eq!(layer.allowed.sites.len(), 3);
    }

    #[test]
    fn allow_list_rejects_entries_that_are_not_origins() {
        for entry in [
            "app.example.com",
            "https://",
            "https://app.example.com/app",
            "https://app.example.com?x=1",
            "https://user@app.example.com",
            "*",
        ] {
            let error = OriginLayer::new([entry]).unwrap_err();
            assert!(error.to_string().contains(entry), "{entry}: {error}");
        }
    }
}
