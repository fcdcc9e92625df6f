use std::borrow::Cow;
use std::fmt;

use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};

use crate::response::{self, ResponseBody};

/// Why a request was not let in: a status code, a short reason for the body, and the
/// headers the status calls for (`WWW-Authenticate` for a 401).
///
/// ```
/// use estuary_middleware::auth::AuthError;
/// use http::StatusCode;
///
/// let error = AuthError::bearer("chat");
/// assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(
///     error.headers()["www-authenticate"],
///     r#"Bearer realm="chat", error="invalid_token""#
/// );
/// ```
#[derive(Debug, Clone)]
pub struct AuthError(Box<Details>);

/// Boxed so that `Result<Identity, AuthError>` stays small on the path that lets in.
#[derive(Debug, Clone)]
struct Details {
    status: StatusCode,
    reason: Cow<'static, str>,
    headers: HeaderMap,
    credentials_missing: bool,
}

impl AuthError {
    /// An answer with any status and reason, and no headers yet.
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(Details {
            status,
            reason: reason.into(),
            headers: HeaderMap::new(),
            credentials_missing: false,
        }))
    }

    /// 401 with `WWW-Authenticate: Basic realm="<realm>"` (RFC 7617), the same whether
    /// credentials were missing or wrong.
    ///
    /// ```
    /// use estuary_middleware::auth::AuthError;
    ///
    /// let error = AuthError::basic("estuary");
    /// assert_eq!(error.headers()["www-authenticate"], r#"Basic realm="estuary""#);
    /// ```
    pub fn basic(realm: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication required")
            .with_challenge(format!("Basic realm={}", quoted(realm)))
    }

    /// 401 for a bearer token that was offered but is not valid:
    /// `WWW-Authenticate: Bearer realm="<realm>", error="invalid_token"` (RFC 6750 §3).
    pub fn bearer(realm: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid token").with_challenge(format!(
            "Bearer realm={}, error=\"invalid_token\"",
            quoted(realm)
        ))
    }

    /// 401 for a request that offered no bearer token at all:
    /// `WWW-Authenticate: Bearer realm="<realm>"`, without an `error` attribute, as RFC
    /// 6750 §3.1 asks when no credentials were sent. Marked
    /// [`credentials_missing`](Self::credentials_missing).
    ///
    /// ```
    /// use estuary_middleware::auth::AuthError;
    ///
    /// let error = AuthError::bearer_required("estuary");
    /// assert_eq!(error.headers()["www-authenticate"], r#"Bearer realm="estuary""#);
    /// assert!(error.credentials_missing());
    /// ```
    pub fn bearer_required(realm: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing bearer token")
            .with_challenge(format!("Bearer realm={}", quoted(realm)))
            .because_credentials_missing()
    }

    /// 403: the client is known, or its credentials are fine, but it may not connect.
    ///
    /// ```
    /// use estuary_middleware::auth::AuthError;
    /// use http::StatusCode;
    ///
    /// let error = AuthError::forbidden("account suspended");
    /// assert_eq!(error.status(), StatusCode::FORBIDDEN);
    /// assert_eq!(error.reason(), "account suspended");
    /// ```
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason)
    }

    /// Replaces the reason sent as the response body.
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.0.reason = reason.into();
        self
    }

    /// Adds a response header (appended, so a second `WWW-Authenticate` offers a second
    /// scheme).
    ///
    /// ```
    /// use estuary_middleware::auth::AuthError;
    /// use http::header::{HeaderName, HeaderValue};
    ///
    /// let error = AuthError::forbidden("wrong tenant").with_header(
    ///     HeaderName::from_static("x-tenant-hint"),
    ///     HeaderValue::from_static("acme"),
    /// );
    /// assert_eq!(error.headers()["x-tenant-hint"], "acme");
    /// ```
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.append(name, value);
        self
    }

    /// Marks this as the answer to a request that offered no credentials of the kind the
    /// authenticator reads; [`Authenticate::or`](super::Authenticate::or) then prefers
    /// the other authenticator's answer.
    pub fn because_credentials_missing(mut self) -> Self {
        self.0.credentials_missing = true;
        self
    }

    /// Whether the request offered no credentials (see
    /// [`because_credentials_missing`](Self::because_credentials_missing)).
    pub fn credentials_missing(&self) -> bool {
        self.0.credentials_missing
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The reason sent as the `text/plain` response body.
    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// The headers sent with the response.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The response this error is sent as.
    pub(crate) fn into_response<B>(self) -> Response<ResponseBody<B>> {
        let Details {
            status,
            reason,
            headers,
            ..
        } = *self.0;
        let reason = match reason {
            Cow::Borrowed(reason) => bytes::Bytes::from_static(reason.as_bytes()),
            Cow::Owned(reason) => bytes::Bytes::from(reason),
        };
        response::text(status, reason, headers)
    }

    fn with_challenge(self, challenge: String) -> Self {
        let value = HeaderValue::try_from(challenge)
            .expect("quoted() leaves only bytes that are valid in a header value");
        self.with_header(WWW_AUTHENTICATE, value)
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.status, self.0.reason)
    }
}

impl std::error::Error for AuthError {}

/// `text` as an HTTP quoted-string: `"` and `\` escaped, control characters dropped
/// (they can never appear in a header value).
fn quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_is_quoted_and_escaped() {
        let error = AuthError::basic("my \"quoted\" realm\\x\n");
        assert_eq!(
            error.headers()[WWW_AUTHENTICATE],
            r#"Basic realm="my \"quoted\" realm\\x""#
        );
    }

    #[test]
    fn non_ascii_realm_is_still_a_valid_header() {
        let error = AuthError::bearer("café");
        let value = error.headers()[WWW_AUTHENTICATE].as_bytes();
        assert_eq!(
            value,
            "Bearer realm=\"café\", error=\"invalid_token\"".as_bytes()
        );
    }

    #[test]
    fn display_names_status_and_reason() {
        let error = AuthError::forbidden("no");
        assert_eq!(error.to_string(), "403 Forbidden: no");
    }
}
