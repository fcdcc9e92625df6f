//! Connecting: the URL, the TCP connection, TLS, and the HTTP/1.1 upgrade (RFC 6455 4.1)
//! on hyper's client connection, or an extended CONNECT on a shared HTTP/2 connection
//! (RFC 8441).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use super::error::ConnectError;
use super::handler::Connected;
use super::http2::{Http2Connection, Origin};
use super::stream::Stream;
use crate::protocol::deflate::{negotiation, Negotiated};
use crate::protocol::DeflateConfig;

/// The GUID RFC 6455 appends to the key for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// How much of a rejection's body the error keeps.
const REJECTION_BODY: usize = 512;

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL for logs and errors, its query redacted.
    pub(crate) url: String,
    secure: bool,
    /// The host without IPv6 brackets, to dial and to name in TLS.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: HeaderValue,
    /// The request target in origin form (`/path?query`).
    path: Uri,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, ConnectError> {
        let invalid = |problem| ConnectError::InvalidUrl {
            url: redact_query(url),
            problem,
        };
        if !url.contains("://") {
            return Err(invalid("no scheme: start it with ws:// or wss://"));
        }
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("not a URL (fragments are not allowed either)"))?;
        let secure = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => false,
            Some(s) if s.eq_ignore_ascii_case("wss") => true,
            Some(_) => return Err(invalid("the scheme must be ws or wss")),
            None => return Err(invalid("no scheme: start it with ws:// or wss://")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid(
                "user info in the URL is not supported: add an Authorization header instead",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target {
            url: redact_query(url),
            secure,
            host: host.to_owned(),
            port: authority
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 }),
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|_| invalid("the host is not a valid Host header"))?,
            path: path
                .parse()
                .map_err(|_| invalid("the path is not a valid request target"))?,
        })
    }

    /// Scheme, host and port.
    pub(crate) fn origin(&self) -> Origin {
        Origin {
            secure: self.secure,
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// `url` with its query, which often carries a token, replaced by `<redacted>`: what logs,
/// spans and errors show of a URL.
pub(crate) fn redact_query(url: &str) -> String {
    let Some(start) = url.find('?') else {
        return url.to_owned();
    };
    let fragment = url[start..].find('#').map_or("", |at| &url[start + at..]);
    format!("{}?<redacted>{fragment}", &url[..start])
}

/// An open WebSocket connection, right after the 101.
pub(crate) struct Established {
    pub(crate) stream: Stream,
    /// Bytes the server sent right behind its 101, which hyper had already read.
    pub(crate) read_buf: Bytes,
    pub(crate) connected: Connected,
    /// permessage-deflate, when the server accepted it.
    pub(crate) deflate: Option<Negotiated>,
}

/// Everything needed to connect, again and again: built once by the client builder.
pub(crate) struct Connector {
    pub(crate) target: Target,
    headers: HeaderMap,
    /// The subprotocols offered, in order, and the header that offers them.
    protocols: Vec<String>,
    protocol_header: Option<HeaderValue>,
    /// permessage-deflate's settings and the offer they make.
    compression: Option<(DeflateConfig, HeaderValue)>,
    timeout: Duration,
    /// The HTTP/2 connection this client opens its WebSockets on, if it shares one.
    http2: Option<Http2Connection>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Connector {
    pub(crate) fn new(
        target: Target,
        headers: HeaderMap,
        protocols: Vec<String>,
        compression: Option<DeflateConfig>,
        timeout: Duration,
        http2: Option<Http2Connection>,
        #[cfg(feature = "tls")] tls: &super::tls::TlsSettings,
    ) -> Result<Self, ConnectError> {
        if target.secure && cfg!(not(feature = "tls")) {
            return Err(ConnectError::TlsNotEnabled);
        }
        let protocol_header = offer_header(&protocols)?;
        let compression = compression.map(|config| {
            let offer = HeaderValue::from_str(&negotiation::offer(&config))
                .expect("the offer is tokens and digits");
            (config, offer)
        });
        Ok(Connector {
            compression,
            #[cfg(feature = "tls")]
            tls: target
                .secure
                .then(|| tls.connector(http2.is_some()))
                .transpose()?,
            http2,
            target,
            headers,
            protocols,
            protocol_header,
            timeout,
        })
    }

    /// Connects and upgrades, within the connect timeout.
    pub(crate) async fn connect(&self) -> Result<Established, ConnectError> {
        tracing::debug!(url = %self.target.url, "connecting");
        tokio::time::timeout(self.timeout, self.upgrade())
            .await
            .unwrap_or(Err(ConnectError::Timeout(self.timeout)))
    }

    async fn upgrade(&self) -> Result<Established, ConnectError> {
        if let Some(shared) = &self.http2 {
            return self.extended_connect(shared).await;
        }
        let stream = self.open_stream().await?;
        let key = fastwebsockets::handshake::generate_key();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Http)?;
        // The connection task ends when the upgrade hands the socket over, or when the
        // request is abandoned (the sender dropped on a timeout).
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "HTTP connection for the upgrade ended with an error");
            }
        });
        let response = sender
            .send_request(self.request(&key))
            .await
            .map_err(ConnectError::Http)?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(rejection(response).await);
        }
        self.check_upgrade(&response, &key)?;
        let (connected, deflate) = self.negotiated(response.headers())?;
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(ConnectError::Http)?;
        let parts = upgraded
            .downcast::<TokioIo<Stream>>()
            .expect("hyper upgrades the io it was given, which is a TokioIo<Stream>");
        tracing::debug!(protocol = connected.protocol(), "connected");
        Ok(Established {
            stream: parts.io.into_inner(),
            read_buf: parts.read_buf,
            connected,
            deflate,
        })
    }

    /// Opens the WebSocket as a stream of the shared HTTP/2 connection (RFC 8441 4): an
    /// extended CONNECT with `:protocol = websocket`, answered 200.
    async fn extended_connect(
        &self,
        shared: &Http2Connection,
    ) -> Result<Established, ConnectError> {
        let origin = self.target.origin();
        let mut streams = shared.sender(&origin, || self.open_http2()).await?;
        streams.sender.ready().await.map_err(ConnectError::Http)?;
        let response = match streams.sender.send_request(self.connect_request()).await {
            Ok(response) => response,
            // A server that does not advertise extended CONNECT resets the stream; its
            // SETTINGS came before that, so the flag says why.
            Err(_) if !streams.connect_enabled() => {
                return Err(ConnectError::Http2NotOffered(format!(
                    "{origin} does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL"
                )));
            }
            Err(error) => return Err(ConnectError::Http(error)),
        };
        if !response.status().is_success() {
            return Err(rejection(response).await);
        }
        let (connected, deflate) = self.negotiated(response.headers())?;
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(ConnectError::Http)?;
        tracing::debug!(protocol = connected.protocol(), "connected over HTTP/2");
        Ok(Established {
            stream: Stream::Http2(TokioIo::new(upgraded)),
            read_buf: Bytes::new(),
            connected,
            deflate,
        })
    }

    /// A new connection for HTTP/2: TLS that agreed on `h2` by ALPN, or plain TCP (h2c).
    async fn open_http2(&self) -> Result<Stream, ConnectError> {
        let stream = self.open_stream().await?;
        #[cfg(feature = "tls")]
        if let Stream::Tls(tls) = &stream {
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(ConnectError::Http2NotOffered(format!(
                    "{} did not choose h2 by ALPN",
                    self.target.origin()
                )));
            }
        }
        Ok(stream)
    }

    /// The extended CONNECT: the URL's scheme (`https`/`http`), authority and path,
    /// `:protocol = websocket`, and the headers of the HTTP/1.1 handshake less those
    /// HTTP/2 has no use for (`Upgrade`, `Connection`, `Sec-WebSocket-Key`).
    fn connect_request(&self) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::CONNECT;
        *request.version_mut() = Version::HTTP_2;
        let mut headers = self.headers.clone();
        // A `Host` given to the builder names the authority, as it does over HTTP/1.1.
        let authority = headers
            .remove(header::HOST)
            .unwrap_or_else(|| self.target.authority.clone());
        let path = self
            .target
            .path
            .path_and_query()
            .map_or("/", |p| p.as_str());
        let scheme = if self.target.secure { "https" } else { "http" };
        *request.uri_mut() = Uri::builder()
            .scheme(scheme)
            .authority(authority.as_bytes())
            .path_and_query(path)
            .build()
            .expect("the URL's authority and path, checked when parsed");
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        if let Some(offer) = &self.protocol_header {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, offer.clone());
        }
        if let Some((_, offer)) = &self.compression {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, offer.clone());
        }
        *request.headers_mut() = headers;
        request
    }

    async fn open_stream(&self) -> Result<Stream, ConnectError> {
        let Target { host, port, .. } = &self.target;
        let tcp = TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|error| ConnectError::Tcp {
                addr: if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                },
                error,
            })?;
        // Frames are written whole and coalesced already; Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return super::tls::handshake(tls, host, tcp).await;
        }
        Ok(Stream::Plain(tcp))
    }

    fn request(&self, key: &str) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.target.path.clone();
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, self.target.authority.clone());
        }
        let fixed = [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            ),
            (
                header::SEC_WEBSOCKET_KEY,
                HeaderValue::from_str(key).expect("a base64 key is a header value"),
            ),
        ];
        for (name, value) in fixed {
            headers.insert(name, value);
        }
        if let Some(offer) = &self.protocol_header {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, offer.clone());
        }
        if let Some((_, offer)) = &self.compression {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, offer.clone());
        }
        request
    }

    /// Checks a 101 response's upgrade headers the way RFC 6455 4.1 asks a client to.
    fn check_upgrade(&self, response: &Response<Incoming>, key: &str) -> Result<(), ConnectError> {
        let headers = response.headers();
        let invalid = |problem: String| Err(ConnectError::InvalidResponse(problem));
        let upgrade = headers.get(header::UPGRADE);
        if !upgrade.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
            return invalid(format!("Upgrade must be \"websocket\", got {upgrade:?}"));
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return invalid("Connection must include \"Upgrade\"".into());
        }
        if headers
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .map(|v| v.as_bytes())
            != Some(accept_key(key).as_bytes())
        {
            return invalid("Sec-WebSocket-Accept does not match the key the client sent".into());
        }
        Ok(())
    }

    /// The extension and subprotocol the server accepted, checked against the offer (the
    /// same over HTTP/1.1 and HTTP/2).
    fn negotiated(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Connected, Option<Negotiated>), ConnectError> {
        let invalid = |problem: String| Err(ConnectError::InvalidResponse(problem));
        let accepted = headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(|v| v.to_str().unwrap_or("(not ASCII)"))
            .collect::<Vec<_>>();
        let deflate = match (&self.compression, accepted.first()) {
            (_, None) => None,
            (None, Some(first)) => {
                return invalid(format!(
                    "the server accepted extensions the client did not offer: {first:?}"
                ))
            }
            (Some((config, _)), Some(_)) => negotiation::confirm(config, accepted.iter().copied())
                .map_err(ConnectError::InvalidResponse)?,
        };
        let compression = deflate.is_some().then(|| accepted.join(", "));
        let mut chosen = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        let protocol = match (chosen.next(), chosen.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                return invalid("more than one Sec-WebSocket-Protocol header".into())
            }
            (Some(value), None) => {
                let value = value.to_str().unwrap_or_default().trim();
                if !self.protocols.iter().any(|offered| offered == value) {
                    return Err(ConnectError::UnofferedProtocol(value.to_owned()));
                }
                Some(value.to_owned())
            }
        };
        Ok((
            Connected::new(protocol, compression, headers.clone()),
            deflate,
        ))
    }
}

/// The `Sec-WebSocket-Protocol` offer, after checking each name is an HTTP token.
fn offer_header(protocols: &[String]) -> Result<Option<HeaderValue>, ConnectError> {
    if protocols.is_empty() {
        return Ok(None);
    }
    for protocol in protocols {
        let is_token = !protocol.is_empty()
            && protocol
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            return Err(ConnectError::Config(format!(
                "subprotocol {protocol:?} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"
            )));
        }
    }
    let offer = HeaderValue::from_str(&protocols.join(", ")).expect("tokens are header values");
    Ok(Some(offer))
}

/// `base64(SHA-1(key + GUID))`: what the server must answer to `key`.
fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID);
    STANDARD.encode(sha1.finalize())
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The error for a non-101 answer, with the start of its body: servers often say why.
async fn rejection(response: Response<Incoming>) -> ConnectError {
    let status = response.status();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while text.len() < REJECTION_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    text.truncate(REJECTION_BODY);
    let body = String::from_utf8_lossy(&text).trim().to_owned();
    ConnectError::Rejected { status, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn urls_parse_into_host_port_and_origin_form_path() {
        let t = Target::parse("ws://127.0.0.1:3000/echo?room=a").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.secure),
            ("127.0.0.1", 3000, false)
        );
        assert_eq!(t.authority, "127.0.0.1:3000");
        assert_eq!(t.path, "/echo?room=a");

        let t = Target::parse("WSS://example.com").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.secure),
            ("example.com", 443, true)
        );
        assert_eq!(t.path, "/");

        let t = Target::parse("ws://[::1]:9001/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9001));
        assert_eq!(t.authority, "[::1]:9001");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://example.com/", "the scheme must be ws or wss"),
            ("example.com/socket", "no scheme"),
            ("ws://user:pw@example.com/", "Authorization header"),
            ("ws://exa mple.com/", "not a URL"),
        ] {
            let error = Target::parse(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn queries_are_redacted_for_logs_and_errors() {
        let t = Target::parse("ws://127.0.0.1:3000/echo?token=s3cret&room=a").unwrap();
        assert_eq!(t.url, "ws://127.0.0.1:3000/echo?<redacted>");
        assert_eq!(t.path, "/echo?token=s3cret&room=a");
        assert_eq!(redact_query("ws://h/p"), "ws://h/p");
        assert_eq!(
            redact_query("ws://h/p?x=1#frag"),
            "ws://h/p?<redacted>#frag"
        );
        let error = Target::parse("http://h/p?token=s3cret")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn subprotocols_must_be_tokens() {
        let offer = offer_header(&["v1.chat".into(), "v2".into()]).unwrap();
        assert_eq!(offer.unwrap(), "v1.chat, v2");
        let error = offer_header(&["two words".into()]).unwrap_err().to_string();
        assert!(
            error.contains("\"two words\" is not an HTTP token"),
            "{error}"
        );
    }
}
