//! Handshake checks, in the order RFC 6455 4.2.1 lists them (for HTTP/2, RFC 8441 5),
//! each rejection its own error with the status it answers and a body that says what
//! was wrong.

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Full;

use crate::protocol::deflate::{negotiation, Negotiated};
use crate::protocol::DeflateConfig;

/// Why a request was not upgraded to a WebSocket.
///
/// ```
/// use estuary::HandshakeError;
///
/// let err = HandshakeError::InvalidKey { decoded_len: 12 };
/// assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
/// assert_eq!(err.to_string(), "Sec-WebSocket-Key must be 16 bytes of base64, got 12");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// An HTTP/1.1 request that is not a GET (400).
    MethodNotGet(Method),
    /// Neither HTTP/1.1 nor HTTP/2 (400).
    NotHttp11(Version),
    /// An HTTP/2 request that is not a `CONNECT` (400): over HTTP/2 a WebSocket opens
    /// with an extended `CONNECT` (RFC 8441).
    MethodNotConnect(Method),
    /// An HTTP/2 `CONNECT` whose `:protocol` is not `websocket` (501), or that has none
    /// (a tunnel request); the protocol it named, if any.
    UnsupportedConnectProtocol(Option<String>),
    /// No `Upgrade: websocket` header (426).
    MissingUpgrade,
    /// No `Connection: upgrade` header (426).
    MissingConnectionUpgrade,
    /// A `Sec-WebSocket-Version` other than 13, or none (426).
    UnsupportedVersion(Option<String>),
    /// No `Sec-WebSocket-Key` header (400).
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not base64 (400).
    KeyNotBase64,
    /// A `Sec-WebSocket-Key` that does not decode to 16 bytes (400).
    InvalidKey {
        /// How many bytes it decoded to.
        decoded_len: usize,
    },
    /// The connection was not served with upgrades enabled (500).
    NotUpgradable,
    /// The server is shutting down (503).
    ShuttingDown,
    /// A `Sec-WebSocket-Extensions` header that does not parse (400); the reason says
    /// where. (An offer the server cannot accept is declined, not refused.)
    MalformedExtensions(String),
    /// Another connection on this node has the session id the authenticator gave (409).
    SessionIdInUse,
}

impl HandshakeError {
    /// The HTTP status this error answers with: the one place that decides it.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::MethodNotGet(_)
            | HandshakeError::NotHttp11(_)
            | HandshakeError::MethodNotConnect(_)
            | HandshakeError::MissingKey
            | HandshakeError::KeyNotBase64
            | HandshakeError::InvalidKey { .. }
            | HandshakeError::MalformedExtensions(_) => StatusCode::BAD_REQUEST,
            HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::UnsupportedVersion(_) => StatusCode::UPGRADE_REQUIRED,
            HandshakeError::UnsupportedConnectProtocol(_) => StatusCode::NOT_IMPLEMENTED,
            HandshakeError::NotUpgradable => StatusCode::INTERNAL_SERVER_ERROR,
            HandshakeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            HandshakeError::SessionIdInUse => StatusCode::CONFLICT,
        }
    }

    /// The response to an HTTP/1.1 request: status, a plain-text body with the reason,
    /// the headers RFC 6455 asks for (`Sec-WebSocket-Version: 13` with a version
    /// mismatch, `Upgrade` with 426), and `Connection: close`: a client refused an
    /// upgrade does not keep its connection.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        self.into_response_for(Version::HTTP_11)
    }

    /// The response to a request of this HTTP `version`. Over HTTP/2 it has no
    /// `Connection` or `Upgrade` header (HTTP/2 has none): the refused stream is
    /// answered, and the connection's other streams go on.
    ///
    /// ```
    /// use estuary::HandshakeError;
    /// use http::Version;
    ///
    /// let refused = HandshakeError::UnsupportedConnectProtocol(Some("webtransport".into()))
    ///     .into_response_for(Version::HTTP_2);
    /// assert_eq!(refused.status(), http::StatusCode::NOT_IMPLEMENTED);
    /// assert!(refused.headers().get("connection").is_none());
    /// ```
    pub fn into_response_for(self, version: Version) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(format!("{self}\n"))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let http1 = version <= Version::HTTP_11;
        if self.status() == StatusCode::UPGRADE_REQUIRED {
            if http1 {
                // RFC 9110 7.8: whoever sends `Upgrade` names it in `Connection` too.
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(
                    header::CONNECTION,
                    HeaderValue::from_static("upgrade, close"),
                );
            }
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        } else if http1 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self == HandshakeError::ShuttingDown {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::MethodNotGet(method) => {
                write!(f, "WebSocket handshake must be a GET request, got {method}")
            }
            HandshakeError::NotHttp11(version) => {
                write!(f, "WebSocket handshake must be HTTP/1.1, got {version:?}")
            }
            HandshakeError::MethodNotConnect(method) => write!(
                f,
                "a WebSocket over HTTP/2 opens with an extended CONNECT \
                 (:protocol = websocket, RFC 8441), got {method}"
            ),
            HandshakeError::UnsupportedConnectProtocol(None) => f.write_str(
                "CONNECT without :protocol is a tunnel request: this endpoint only speaks \
                 WebSocket (:protocol = websocket)",
            ),
            HandshakeError::UnsupportedConnectProtocol(Some(protocol)) => write!(
                f,
                "unsupported :protocol {protocol:?}: this endpoint only speaks WebSocket \
                 (:protocol = websocket)"
            ),
            HandshakeError::MissingUpgrade => f.write_str(
                "missing \"Upgrade: websocket\" header: this endpoint only speaks WebSocket",
            ),
            HandshakeError::MissingConnectionUpgrade => {
                f.write_str("missing \"Connection: upgrade\" header")
            }
            HandshakeError::UnsupportedVersion(None) => {
                f.write_str("missing Sec-WebSocket-Version header: this server speaks version 13")
            }
            HandshakeError::UnsupportedVersion(Some(v)) => {
                write!(
                    f,
                    "unsupported Sec-WebSocket-Version {v:?}: this server speaks version 13"
                )
            }
            HandshakeError::MissingKey => f.write_str("missing Sec-WebSocket-Key header"),
            HandshakeError::KeyNotBase64 => f.write_str("Sec-WebSocket-Key is not valid base64"),
            HandshakeError::InvalidKey { decoded_len } => {
                write!(
                    f,
                    "Sec-WebSocket-Key must be 16 bytes of base64, got {decoded_len}"
                )
            }
            HandshakeError::NotUpgradable => f.write_str(
                "this connection cannot be upgraded: serve it with hyper's upgrades enabled",
            ),
            HandshakeError::ShuttingDown => f.write_str("server is shutting down"),
            HandshakeError::MalformedExtensions(why) => f.write_str(why),
            HandshakeError::SessionIdInUse => {
                f.write_str("the session id is in use by another connection")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// How a valid handshake opens its WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// An HTTP/1.1 `GET` with `Upgrade: websocket`, answered 101.
    Upgrade,
    /// An HTTP/2 extended `CONNECT` with `:protocol = websocket`, answered 200.
    ExtendedConnect,
}

/// Checks that `request` is a valid WebSocket opening handshake: RFC 6455 4.2.1 for
/// HTTP/1.1, RFC 8441 5 for HTTP/2.
pub(crate) fn validate<B>(request: &Request<B>) -> Result<Opening, HandshakeError> {
    match request.version() {
        Version::HTTP_11 => validate_upgrade(request).map(|()| Opening::Upgrade),
        Version::HTTP_2 => validate_connect(request).map(|()| Opening::ExtendedConnect),
        other => Err(HandshakeError::NotHttp11(other)),
    }
}

fn validate_upgrade<B>(request: &Request<B>) -> Result<(), HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet(request.method().clone()));
    }
    let headers = request.headers();
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    validate_version(headers)?;
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::MissingKey)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| HandshakeError::KeyNotBase64)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::InvalidKey {
            decoded_len: decoded.len(),
        });
    }
    Ok(())
}

/// RFC 8441 5: `:method = CONNECT`, `:protocol = websocket`, and the version header as
/// over HTTP/1.1; there is no key, and no `Upgrade` or `Connection` header.
fn validate_connect<B>(request: &Request<B>) -> Result<(), HandshakeError> {
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotConnect(request.method().clone()));
    }
    match request.extensions().get::<hyper::ext::Protocol>() {
        // An upgrade token, so case-insensitive (RFC 9110 7.8), as `Upgrade: websocket` is.
        Some(protocol) if protocol.as_str().eq_ignore_ascii_case("websocket") => {}
        Some(protocol) => {
            let named = protocol.as_str().to_owned();
            return Err(HandshakeError::UnsupportedConnectProtocol(Some(named)));
        }
        None => return Err(HandshakeError::UnsupportedConnectProtocol(None)),
    }
    validate_version(request.headers())
}

fn validate_version(headers: &HeaderMap) -> Result<(), HandshakeError> {
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes() == b"13" => Ok(()),
        other => {
            let got = other.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            Err(HandshakeError::UnsupportedVersion(got))
        }
    }
}

/// The 101 response: `Sec-WebSocket-Accept` from the validated key, the chosen
/// subprotocol and the accepted extension, if any.
pub(crate) fn switching_protocols(
    headers: &HeaderMap,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Response<Full<Bytes>> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .expect("validate() checked the key");
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept =
        HeaderValue::from_str(&accept_key(key.as_bytes())).expect("base64 is a header value");
    out.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    negotiated_headers(out, protocol, extensions);
    response
}

/// The 200 to an extended CONNECT (RFC 8441 5): no `Sec-WebSocket-Accept`, the chosen
/// subprotocol and the accepted extension, if any.
pub(crate) fn connect_accepted(
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    negotiated_headers(response.headers_mut(), protocol, extensions);
    response
}

fn negotiated_headers(out: &mut HeaderMap, protocol: Option<&str>, extensions: Option<&str>) {
    if let Some(protocol) = protocol {
        let value = HeaderValue::from_str(protocol).expect("offered protocols are header values");
        out.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(extensions) = extensions {
        let value = HeaderValue::from_str(extensions).expect("the answer is tokens and digits");
        out.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }
}

/// permessage-deflate for this handshake: the offer accepted, if any; an error only for
/// a header that does not parse.
pub(crate) fn negotiate_deflate(
    config: &DeflateConfig,
    headers: &HeaderMap,
) -> Result<Option<Negotiated>, HandshakeError> {
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|value| value.to_str().map_err(|_| "a value that is not ASCII"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| {
            HandshakeError::MalformedExtensions(format!(
                "malformed Sec-WebSocket-Extensions header: {why}"
            ))
        })?;
    negotiation::accept(config, offers)
        .map_err(|e| HandshakeError::MalformedExtensions(e.to_string()))
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 4.2.2): base64 of the SHA-1 of the key and
/// the protocol's GUID.
pub(crate) fn accept_key(key: &[u8]) -> String {
    use sha1::Digest;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// The subprotocols the client offered, in its order.
pub(crate) fn offered_protocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Whether a comma-separated header has `token`, case-insensitively.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake() -> http::request::Builder {
        Request::get("/ws")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn accepts_the_rfc_example_with_a_token_list() {
        assert_eq!(
            validate(&handshake().body(()).unwrap()),
            Ok(Opening::Upgrade)
        );
    }

    #[test]
    fn rejects_each_broken_header_with_its_own_error() {
        let post = handshake().method("POST").body(()).unwrap();
        assert_eq!(
            validate(&post),
            Err(HandshakeError::MethodNotGet(Method::POST))
        );
        let v8 = handshake().header("sec-websocket-version", "8");
        let mut req = v8.body(()).unwrap();
        req.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(
            validate(&req),
            Err(HandshakeError::UnsupportedVersion(Some("8".into())))
        );
        let mut req = handshake().body(()).unwrap();
        req.headers_mut().insert(
            "sec-websocket-key",
            HeaderValue::from_static("AAAAAAAAAAAAAAAA"),
        );
        assert_eq!(
            validate(&req),
            Err(HandshakeError::InvalidKey { decoded_len: 12 })
        );
        req.headers_mut()
            .insert("sec-websocket-key", HeaderValue::from_static("not base64!"));
        assert_eq!(validate(&req), Err(HandshakeError::KeyNotBase64));
        req.headers_mut().remove("upgrade");
        assert_eq!(validate(&req), Err(HandshakeError::MissingUpgrade));
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn version_mismatch_answers_426_with_the_version_we_speak() {
        let response = HandshakeError::UnsupportedVersion(None).into_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert_eq!(response.headers()["connection"], "upgrade, close");
    }

    #[test]
    fn every_refusal_says_the_connection_closes() {
        for error in [
            HandshakeError::MissingKey,
            HandshakeError::MethodNotGet(Method::POST),
            HandshakeError::ShuttingDown,
            HandshakeError::NotUpgradable,
        ] {
            let response = error.clone().into_response();
            assert_eq!(response.headers()["connection"], "close", "{error}");
        }
    }

    fn extended_connect(protocol: Option<&'static str>) -> Request<()> {
        let mut request = Request::connect("https://example.com/ws")
            .version(Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        if let Some(protocol) = protocol {
            request
                .extensions_mut()
                .insert(hyper::ext::Protocol::from_static(protocol));
        }
        request
    }

    #[test]
    fn an_extended_connect_for_websocket_opens_without_a_key() {
        let request = extended_connect(Some("websocket"));
        assert_eq!(validate(&request), Ok(Opening::ExtendedConnect));
        let response = connect_accepted(Some("chat.v2"), None);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
        assert!(response.headers().get("sec-websocket-accept").is_none());
    }

    #[test]
    fn http2_requests_that_are_not_websocket_connects_get_their_own_errors() {
        assert_eq!(
            validate(&extended_connect(Some("webtransport"))),
            Err(HandshakeError::UnsupportedConnectProtocol(Some(
                "webtransport".into()
            )))
        );
        assert_eq!(
            validate(&extended_connect(None)),
            Err(HandshakeError::UnsupportedConnectProtocol(None))
        );
        let mut get = extended_connect(Some("websocket"));
        *get.method_mut() = Method::GET;
        assert_eq!(
            validate(&get),
            Err(HandshakeError::MethodNotConnect(Method::GET))
        );
        let mut old = extended_connect(Some("websocket"));
        old.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            validate(&old),
            Err(HandshakeError::UnsupportedVersion(Some("8".into())))
        );
    }

    #[test]
    fn refusals_over_http2_carry_no_connection_or_upgrade_header() {
        for error in [
            HandshakeError::UnsupportedVersion(None),
            HandshakeError::ShuttingDown,
            HandshakeError::MethodNotConnect(Method::GET),
        ] {
            let response = error.clone().into_response_for(Version::HTTP_2);
            assert!(response.headers().get("connection").is_none(), "{error}");
            assert!(response.headers().get("upgrade").is_none(), "{error}");
        }
        let response = HandshakeError::UnsupportedVersion(None).into_response_for(Version::HTTP_2);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn offered_protocols_are_split_and_trimmed() {
        let req = handshake()
            .header("sec-websocket-protocol", "chat.v2, chat.v1")
            .header("sec-websocket-protocol", "mqtt")
            .body(())
            .unwrap();
        assert_eq!(
            offered_protocols(req.headers()),
            ["chat.v2", "chat.v1", "mqtt"]
        );
    }
}
