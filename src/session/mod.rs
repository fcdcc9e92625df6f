//! What a connection knows about its peer.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use estuary_middleware::{Identity, PeerAddr};
use http::{Extensions, HeaderMap, Uri, Version};

/// One WebSocket connection's identity and the request that opened it.
///
/// The upgrade moves the request's headers, URI and extensions here, so values that layers
/// put in the extensions (an [`Identity`], a connection permit) live as long as the socket.
/// Credentials (`Authorization`, `Proxy-Authorization`, `Cookie`) are left out unless the
/// service [keeps them](crate::WebSocketService::keep_credentials), and `Debug` shows the
/// URI without its query, which may carry a token.
///
/// ```
/// use estuary::{Conn, Handler, Message};
///
/// #[derive(Clone)]
/// struct Greeter;
///
/// impl Handler for Greeter {
///     async fn on_open(&mut self, conn: &mut Conn) {
///         let session = conn.session();
///         let room = session.query_param("room").unwrap_or("lobby".into()).into_owned();
///         let greeting = format!("hello {} in {room}", session.user_id());
///         let _ = conn.send(greeting);
///     }
///
///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
/// }
/// ```
pub struct Session {
    id: Arc<str>,
    user_id: Arc<str>,
    peer: Option<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    protocol: Option<Arc<str>>,
    compression: Option<Arc<str>>,
    http_version: Version,
    opened_at: Instant,
}

impl Session {
    /// A session for a request: ids from its [`Identity`], random 128-bit ids otherwise.
    pub(crate) fn new(
        uri: Uri,
        headers: HeaderMap,
        extensions: Extensions,
        protocol: Option<Arc<str>>,
    ) -> Self {
        let identity = extensions.get::<Identity>();
        let id = identity
            .and_then(Identity::session_id)
            .map_or_else(random_id, Arc::from);
        let user_id = identity.map_or_else(random_id, |i| i.user_id_arc().clone());
        let peer = extensions.get::<PeerAddr>().map(|p| p.0);
        Self {
            id,
            user_id,
            peer,
            uri: owned_uri(uri),
            headers: owned_headers(headers),
            extensions,
            protocol,
            compression: None,
            http_version: Version::HTTP_11,
            opened_at: Instant::now(),
        }
    }

    /// The request headers less the credentials: what a session keeps by default.
    pub(crate) fn without_credentials(mut headers: HeaderMap) -> HeaderMap {
        for name in CREDENTIAL_HEADERS {
            headers.remove(name);
        }
        headers
    }

    /// The session id: the authenticator's choice, or 128 random bits in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    pub(crate) fn user_id_arc(&self) -> &Arc<str> {
        &self.user_id
    }

    /// The user id: the authenticated user, or 128 random bits in hex when anonymous.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The identity that authentication established, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.extensions.get()
    }

    /// The peer's address, when the server (or the app) put a `PeerAddr` in the request.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The request URI, query included (`Debug` leaves the query out).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The first query parameter called `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.uri.query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request extensions (whatever the layers inserted).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The request extensions, to keep per-connection values next to the session.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The subprotocol the handler picked, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The permessage-deflate parameters agreed on (the `Sec-WebSocket-Extensions` the
    /// server answered), when the connection is compressed.
    pub fn compression(&self) -> Option<&str> {
        self.compression.as_deref()
    }

    pub(crate) fn set_compression(&mut self, agreed: &str) {
        self.compression = Some(Arc::from(agreed));
    }

    /// The HTTP version of the handshake: `HTTP/1.1` for an upgraded connection,
    /// `HTTP/2.0` for a WebSocket on a stream of an HTTP/2 connection (RFC 8441).
    ///
    /// ```
    /// use estuary::{Conn, Handler, Message};
    ///
    /// #[derive(Clone)]
    /// struct Report;
    ///
    /// impl Handler for Report {
    ///     async fn on_open(&mut self, conn: &mut Conn) {
    ///         let over = format!("{:?}", conn.session().http_version());
    ///         let _ = conn.send(over);
    ///     }
    ///
    ///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
    /// }
    /// ```
    pub fn http_version(&self) -> Version {
        self.http_version
    }

    pub(crate) fn set_http_version(&mut self, version: Version) {
        self.http_version = version;
    }

    /// When the socket opened.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("peer", &self.peer)
            .field("uri", &Redacted(&self.uri))
            .field("protocol", &self.protocol)
            .field("http_version", &self.http_version)
            .finish_non_exhaustive()
    }
}

/// The URI with its query replaced by `<redacted>`: query strings carry tokens.
struct Redacted<'a>(&'a Uri);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.query() {
            None => write!(f, "\"{}\"", self.0.path()),
            Some(_) => write!(f, "\"{}?<redacted>\"", self.0.path()),
        }
    }
}

/// Headers that carry credentials, which a session keeps only when asked to.
const CREDENTIAL_HEADERS: [http::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
];

/// Headers that only served the handshake.
const HANDSHAKE_HEADERS: [http::HeaderName; 5] = [
    http::header::CONNECTION,
    http::header::UPGRADE,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
];

/// The request headers, less the handshake's own, in allocations of their own.
///
/// hyper parses header values as views into its read buffer (8 KiB or more); a session
/// that kept them would keep that buffer for the life of the socket.
fn owned_headers(headers: HeaderMap) -> HeaderMap {
    let kept = headers
        .iter()
        .filter(|(name, _)| !HANDSHAKE_HEADERS.contains(name))
        .count();
    let mut owned = HeaderMap::with_capacity(kept);
    for (name, value) in &headers {
        if HANDSHAKE_HEADERS.contains(name) {
            continue;
        }
        let mut copy = http::HeaderValue::from_bytes(value.as_bytes())
            .expect("a header value copied byte for byte is still valid");
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

/// The URI in an allocation of its own (see [`owned_headers`]).
fn owned_uri(uri: Uri) -> Uri {
    let Some(path_and_query) = uri.path_and_query() else {
        return uri;
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(path_and_query.as_str())
            .expect("a path copied byte for byte is still valid"),
    );
    Uri::from_parts(parts).unwrap_or(uri)
}

fn random_id() -> Arc<str> {
    hex_id(rand::random())
}

/// `bits` as 32 lowercase hex digits, in one allocation.
fn hex_id(bits: u128) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = HEX[(bits >> (124 - 4 * i) & 0xf) as usize];
    }
    Arc::from(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_bits_in_hex() {
        for bits in [
            0,
            1,
            0xdead_beef,
            u128::MAX,
            1 << 127,
            0x0123_4567_89ab_cdef << 64,
        ] {
            assert_eq!(&*hex_id(bits), format!("{bits:032x}"));
        }
    }

    #[test]
    fn anonymous_sessions_get_distinct_128_bit_ids() {
        let a = Session::new(
            Uri::from_static("/"),
            HeaderMap::new(),
            Extensions::new(),
            None,
        );
        let b = Session::new(
            Uri::from_static("/"),
            HeaderMap::new(),
            Extensions::new(),
            None,
        );
        assert_eq!(a.id().len(), 32);
        assert!(a
            .id()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(a.id(), b.id());
        assert_ne!(a.user_id(), b.user_id());
    }

    #[test]
    fn debug_shows_the_path_and_never_the_query() {
        let s = Session::new(
            Uri::from_static("/ws?access_token=s3cret-42&room=a"),
            HeaderMap::new(),
            Extensions::new(),
            None,
        );
        let debug = format!("{s:?} {s:#?}");
        assert!(!debug.contains("s3cret-42"), "{debug}");
        assert!(debug.contains("/ws?<redacted>"), "{debug}");
        assert_eq!(s.query_param("access_token").as_deref(), Some("s3cret-42"));
        let plain = Session::new(
            Uri::from_static("/ws"),
            HeaderMap::new(),
            Extensions::new(),
            None,
        );
        assert!(format!("{plain:?}").contains("uri: \"/ws\""), "{plain:?}");
    }

    #[test]
    fn credentials_are_left_out_unless_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        headers.insert("proxy-authorization", "Basic eDp5".parse().unwrap());
        headers.insert("cookie", "sid=s3cret".parse().unwrap());
        headers.insert("user-agent", "test".parse().unwrap());
        let kept = Session::without_credentials(headers.clone());
        assert_eq!(
            kept.keys().map(|name| name.as_str()).collect::<Vec<_>>(),
            ["user-agent"]
        );
        let s = Session::new(Uri::from_static("/"), headers, Extensions::new(), None);
        assert!(s.headers().contains_key("cookie"));
    }

    #[test]
    fn identity_supplies_user_and_session_ids() {
        let mut ext = Extensions::new();
        ext.insert(Identity::new("alice").with_session_id("tab-1"));
        let s = Session::new(
            Uri::from_static("/ws?room=a%20b"),
            HeaderMap::new(),
            ext,
            None,
        );
        assert_eq!(s.user_id(), "alice");
        assert_eq!(s.id(), "tab-1");
        assert_eq!(s.query_param("room").as_deref(), Some("a b"));
    }
}
