use std::borrow::Cow;
use std::net::SocketAddr;

use headers::authorization::{Authorization, Basic, Bearer};
use headers::HeaderMapExt;
use http::{Extensions, HeaderMap, Method, Request, Uri};

use crate::PeerAddr;

/// What an [`Authenticate`](super::Authenticate) implementation sees of a request: the
/// headers, the query, the `Authorization` credentials already parsed, and the peer.
///
/// Credentials that are absent or malformed (bad base64, no colon, not UTF-8, another
/// scheme, an empty token) are simply `None`: parsing never fails, the
/// authenticator just finds nothing and rejects.
///
/// ```
/// use estuary_middleware::auth::AuthRequest;
/// use estuary_middleware::PeerAddr;
///
/// let mut request = http::Request::get("/ws?room=lobby&token=a%2Bb")
///     .header("authorization", "Basic YWxpY2U6c2VjcmV0") // alice:secret
///     .body(())
///     .unwrap();
/// request.extensions_mut().insert(PeerAddr("192.0.2.1:5000".parse().unwrap()));
///
/// let auth = AuthRequest::new(&request);
/// assert_eq!(auth.query("room").as_deref(), Some("lobby"));
/// assert_eq!(auth.query("token").as_deref(), Some("a+b"));
/// assert_eq!(auth.basic().map(|basic| basic.username()), Some("alice"));
/// assert!(auth.bearer().is_none());
/// assert_eq!(auth.peer_addr(), Some("192.0.2.1:5000".parse().unwrap()));
/// ```
#[derive(Debug)]
pub struct AuthRequest<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
    basic: Option<Basic>,
    bearer: Option<Bearer>,
}

impl<'a> AuthRequest<'a> {
    /// Views `request`, parsing its `Authorization` header once.
    pub fn new<B>(request: &'a Request<B>) -> Self {
        let headers = request.headers();
        let basic = headers
            .typed_get::<Authorization<Basic>>()
            .map(|auth| auth.0);
        let bearer = headers
            .typed_get::<Authorization<Bearer>>()
            .map(|auth| auth.0)
            // RFC 6750's b64token has no spaces: "Bearer a b" is not a token.
            .filter(|bearer| {
                let token = bearer.token();
                !token.is_empty() && !token.contains([' ', '\t'])
            });
        Self {
            method: request.method(),
            uri: request.uri(),
            headers,
            extensions: request.extensions(),
            basic,
            bearer,
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request URI (path and query).
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// All request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions, with whatever outer layers or the server put there.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a space, as
    /// browsers' `URLSearchParams` write it; a literal plus is `%2B`). Bytes that do not
    /// decode to UTF-8 become U+FFFD, so they never match a stored token.
    pub fn query(&self, name: &str) -> Option<Cow<'a, str>> {
        self.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Every query parameter in order, percent-decoded like [`query`](Self::query).
    pub fn query_pairs(&self) -> impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + 'a {
        let query = self.uri.query().unwrap_or("");
        form_urlencoded::parse(query.as_bytes())
    }

    /// The `Authorization: Basic` user name and password, when present and well-formed.
    pub fn basic(&self) -> Option<&Basic> {
        self.basic.as_ref()
    }

    /// The `Authorization: Bearer` token, when present, not empty, and visible ASCII
    /// without spaces.
    pub fn bearer(&self) -> Option<&Bearer> {
        self.bearer.as_ref()
    }

    /// The TCP peer's address, when the server inserted a [`PeerAddr`].
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.extensions.get::<PeerAddr>().map(|peer| peer.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_authorization(value: &[u8]) -> Request<()> {
        let mut request = Request::new(());
        let value = HeaderValue::from_bytes(value).expect("test header values are valid");
        request.headers_mut().insert("authorization", value);
        request
    }

    #[test]
    fn malformed_basic_credentials_are_absent() {
        for value in [
            &b"Basic !!!not-base64!!!"[..],
            b"Basic YWxpY2U=",   // "alice": no colon
            b"Basic /zp4",       // [0xff, ':', 'x']: not UTF-8
            b"Basic ",           // nothing after the scheme
            b"Basic",            // not even a space
            b"Basicx YWxpY2U6c", // another scheme
            b"Bearer abc",
        ] {
            let request = with_authorization(value);
            let auth = AuthRequest::new(&request);
            assert!(
                auth.basic().is_none(),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn basic_credentials_may_hold_a_colon_in_the_password() {
        let request = with_authorization(b"Basic YWxpY2U6YTpi"); // alice:a:b
        let auth = AuthRequest::new(&request);
        let basic = auth.basic().expect("well-formed credentials");
        assert_eq!((basic.username(), basic.password()), ("alice", "a:b"));
    }

    #[test]
    fn malformed_bearer_tokens_are_absent() {
        for value in [
            &b"Bearer \xff\xfe"[..],
            b"Bearer ",
            b"Bearer    ",
            b"Bearer",
            b"Bearer two words",
            b"Bearer tab\there",
            b"Basic YWxpY2U6c2VjcmV0",
        ] {
            let request = with_authorization(value);
            let auth = AuthRequest::new(&request);
            assert!(
                auth.bearer().is_none(),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let request = with_authorization(b"bearer s3cret");
        let auth = AuthRequest::new(&request);
        assert_eq!(auth.bearer().map(Bearer::token), Some("s3cret"));
    }

    #[test]
    fn query_values_are_percent_decoded_and_invalid_utf8_is_replaced() {
        let request = Request::get("/ws?a=x%20y+z&b=%FF&a=second&c")
            .body(())
            .unwrap();
        let auth = AuthRequest::new(&request);
        assert_eq!(auth.query("a").as_deref(), Some("x y z"));
        assert_eq!(auth.query("b").as_deref(), Some("\u{FFFD}"));
        assert_eq!(auth.query("c").as_deref(), Some(""));
        assert_eq!(auth.query("d"), None);
        assert_eq!(auth.query_pairs().count(), 4);
    }

    #[test]
    fn request_without_query_or_peer_has_neither() {
        let request = Request::new(());
        let auth = AuthRequest::new(&request);
        assert_eq!(auth.query_pairs().count(), 0);
        assert_eq!(auth.peer_addr(), None);
    }
}
