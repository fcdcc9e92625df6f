//! Handshake checks, in the order RFC 6455 4.2.1 lists them, each rejection its own error
//! with the status it answers and a body that says what was wrong.

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
    /// Not a GET request (400).
    MethodNotGet(Method),
    /// Not HTTP/1.1 (400).
    NotHttp11(Version),
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
            | HandshakeError::MissingKey
            | HandshakeError::KeyNotBase64
            | HandshakeError::InvalidKey { .. }
            | HandshakeError::MalformedExtensions(_) => StatusCode::BAD_REQUEST,
            HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::UnsupportedVersion(_) => StatusCode::UPGRADE_REQUIRED,
            HandshakeError::NotUpgradable => StatusCode::INTERNAL_SERVER_ERROR,
            HandshakeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            HandshakeError::SessionIdInUse => StatusCode::CONFLICT,
        }
    }

    /// The response: status, a plain-text body with the reason, the headers RFC 6455
    /// asks for (`Sec-WebSocket-Version: 13` with a version mismatch, `Upgrade` with 426),
    /// and `Connection: close`: a client refused an upgrade does not keep its connection.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(format!("{self}\n"))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status() == StatusCode::UPGRADE_REQUIRED {
            // RFC 9110 7.8: whoever sends `Upgrade` names it in `Connection` too.
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                header::CONNECTION,
                HeaderValue::from_static("upgrade, close"),
            );
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        } else {
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

/// Checks that `request` is a valid WebSocket opening handshake.
pub(crate) fn validate<B>(request: &Request<B>) -> Result<(), HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet(request.method().clone()));
    }
    if request.version() != Version::HTTP_11 {
        return Err(HandshakeError::NotHttp11(request.version()));
    }
    let headers = request.headers();
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes() == b"13" => {}
        other => {
            let got = other.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(HandshakeError::UnsupportedVersion(got));
        }
    }
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
    if let Some(protocol) = protocol {
        let value = HeaderValue::from_str(protocol).expect("offered protocols are header values");
        out.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(extensions) = extensions {
        let value = HeaderValue::from_str(extensions).expect("the answer is tokens and digits");
        out.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }
    response
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
        assert_eq!(validate(&handshake().body(()).unwrap()), Ok(()));
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
