//! Ready-made authenticators over static credentials.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Future};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, AuthRequest, Authenticate, Bearer};
use crate::Identity;

/// Basic authentication against a fixed set of users and passwords.
///
/// Missing or malformed credentials and a wrong user or password all get 401 with
/// `WWW-Authenticate: Basic realm="<realm>"`. Passwords are kept as SHA-256 digests and
/// compared in constant time, and an unknown user costs the same as a wrong password.
///
/// ```
/// use estuary_middleware::auth::{AuthLayer, BasicUsers};
///
/// let users = BasicUsers::new("estuary")
///     .with_user("alice", "wonderland")
///     .with_users([("bob", "builder")]);
/// let layer = AuthLayer::new(users);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct BasicUsers {
    realm: Arc<str>,
    /// User name to the digest of the password.
    users: HashMap<String, Digest>,
}

impl BasicUsers {
    /// No users yet, answering with `realm` in the challenge.
    pub fn new(realm: impl Into<Arc<str>>) -> Self {
        Self {
            realm: realm.into(),
            users: HashMap::new(),
        }
    }

    /// Adds (or replaces) a user.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users
            .insert(name.into(), digest(password.into().as_bytes()));
        self
    }

    /// Adds (or replaces) several users.
    pub fn with_users<I, U, P>(self, users: I) -> Self
    where
        I: IntoIterator<Item = (U, P)>,
        U: Into<String>,
        P: Into<String>,
    {
        users.into_iter().fold(self, |this, (name, password)| {
            this.with_user(name, password)
        })
    }

    fn check(&self, request: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let Some(basic) = request.basic() else {
            return Err(AuthError::basic(&self.realm)
                .with_reason("missing or malformed Basic credentials")
                .because_credentials_missing());
        };
        let stored = self.users.get(basic.username());
        // An unknown user is compared against a placeholder, so it takes as long as a
        // known user with a wrong password.
        let given = digest(basic.password().as_bytes());
        let password_matches: bool = given.ct_eq(stored.unwrap_or(&[0; 32])).into();
        if stored.is_some() && password_matches {
            Ok(Identity::new(basic.username()))
        } else {
            Err(AuthError::basic(&self.realm).with_reason("invalid user name or password"))
        }
    }
}

impl Authenticate for BasicUsers {
    fn authenticate(
        &self,
        request: &AuthRequest<'_>,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        ready(self.check(request))
    }
}

impl fmt::Debug for BasicUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicUsers")
            .field("realm", &self.realm)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Bearer-token authentication (`Authorization: Bearer <token>`) against a fixed map of
/// tokens to user ids.
///
/// No token: 401 `Bearer realm="<realm>"`; an unknown token: 401
/// `Bearer realm="<realm>", error="invalid_token"` (RFC 6750). Tokens are kept as
/// SHA-256 digests, and an offered token is looked up by its digest.
///
/// ```
/// use estuary_middleware::auth::{AuthLayer, BearerTokens};
///
/// let tokens = BearerTokens::new("estuary")
///     .with_token("t-alice", "alice")
///     .with_tokens([("t-bob", "bob")]);
/// let layer = AuthLayer::new(tokens);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct BearerTokens {
    tokens: Tokens,
}

impl BearerTokens {
    /// No tokens yet, answering with `realm` in the challenge.
    pub fn new(realm: impl Into<Arc<str>>) -> Self {
        Self {
            tokens: Tokens::new(realm.into()),
        }
    }

    /// Lets `token` in as `user_id`.
    pub fn with_token(self, token: impl Into<String>, user_id: impl Into<Arc<str>>) -> Self {
        self.with_tokens([(token, user_id)])
    }

    /// Lets each `(token, user_id)` in.
    pub fn with_tokens<I, T, U>(mut self, tokens: I) -> Self
    where
        I: IntoIterator<Item = (T, U)>,
        T: Into<String>,
        U: Into<Arc<str>>,
    {
        self.tokens.extend(tokens);
        self
    }

    fn check(&self, request: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        self.tokens.identify(request.bearer().map(Bearer::token))
    }
}

impl Authenticate for BearerTokens {
    fn authenticate(
        &self,
        request: &AuthRequest<'_>,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        ready(self.check(request))
    }
}

/// Token authentication through a query parameter (`/ws?access_token=...`), for browsers,
/// which cannot set headers on a WebSocket handshake.
///
/// The parameter is `access_token` (RFC 6750 §2.3) unless set otherwise, and rejections
/// use the same `Bearer` challenges as [`BearerTokens`]. Query strings end up in access
/// logs: prefer short-lived tokens here.
///
/// ```
/// use estuary_middleware::auth::{AuthLayer, QueryToken};
///
/// let tokens = QueryToken::new("estuary")
///     .with_param("token")
///     .with_token("t-alice", "alice");
/// let layer = AuthLayer::new(tokens);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct QueryToken {
    param: Arc<str>,
    tokens: Tokens,
}

impl QueryToken {
    /// Reads `access_token`, with no tokens yet, answering with `realm` in the challenge.
    pub fn new(realm: impl Into<Arc<str>>) -> Self {
        Self {
            param: "access_token".into(),
            tokens: Tokens::new(realm.into()),
        }
    }

    /// Reads the token from query parameter `param` instead.
    pub fn with_param(mut self, param: impl Into<Arc<str>>) -> Self {
        self.param = param.into();
        self
    }

    /// Lets `token` in as `user_id`.
    pub fn with_token(self, token: impl Into<String>, user_id: impl Into<Arc<str>>) -> Self {
        self.with_tokens([(token, user_id)])
    }

    /// Lets each `(token, user_id)` in.
    pub fn with_tokens<I, T, U>(mut self, tokens: I) -> Self
    where
        I: IntoIterator<Item = (T, U)>,
        T: Into<String>,
        U: Into<Arc<str>>,
    {
        self.tokens.extend(tokens);
        self
    }

    fn check(&self, request: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let token = request.query(&self.param);
        self.tokens.identify(token.as_deref()).map_err(|error| {
            if error.credentials_missing() {
                error.with_reason(format!("missing \"{}\" query parameter", self.param))
            } else {
                error
            }
        })
    }
}

impl Authenticate for QueryToken {
    fn authenticate(
        &self,
        request: &AuthRequest<'_>,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        ready(self.check(request))
    }
}

/// The digests of tokens and the user each one lets in, and the realm of the challenges.
///
/// A hash lookup by digest rather than a constant-time scan: a guess is compared with
/// stored digests, never with stored tokens, and how long a comparison of SHA-256
/// digests takes says nothing a client could use to steer its next guess toward a
/// token. The tokens themselves are not kept, so no dump or `Debug` of this can show one.
#[derive(Clone)]
struct Tokens {
    realm: Arc<str>,
    users: HashMap<Digest, Arc<str>>,
}

impl Tokens {
    fn new(realm: Arc<str>) -> Self {
        Self {
            realm,
            users: HashMap::new(),
        }
    }

    fn extend<I, T, U>(&mut self, tokens: I)
    where
        I: IntoIterator<Item = (T, U)>,
        T: Into<String>,
        U: Into<Arc<str>>,
    {
        let tokens = tokens.into_iter();
        self.users
            .extend(tokens.map(|(token, user)| (digest(token.into().as_bytes()), user.into())));
    }

    /// The identity `offered` stands for; no token or an empty one is "missing".
    fn identify(&self, offered: Option<&str>) -> Result<Identity, AuthError> {
        let token = offered
            .filter(|token| !token.is_empty())
            .ok_or_else(|| AuthError::bearer_required(&self.realm))?;
        let user_id = self
            .users
            .get(&digest(token.as_bytes()))
            .ok_or_else(|| AuthError::bearer(&self.realm))?;
        Ok(Identity::new(user_id.clone()))
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("realm", &self.realm)
            .field("count", &self.users.len())
            .finish()
    }
}

/// A SHA-256 digest.
type Digest = [u8; 32];

/// The SHA-256 digest of a password or token: what is kept instead of the secret.
fn digest(secret: &[u8]) -> Digest {
    Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> http::Request<()> {
        use headers::{Authorization, HeaderMapExt};
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .typed_insert(Authorization::basic(user, password));
        request
    }

    fn bearer(token: &str) -> http::Request<()> {
        let mut request = http::Request::new(());
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
        request
    }

    #[test]
    fn passwords_match_only_exactly() {
        let users = BasicUsers::new("r").with_user("alice", "secret");
        let check = |user, password| users.check(&AuthRequest::new(&basic(user, password)));
        assert_eq!(check("alice", "secret").unwrap().user_id(), "alice");
        for (user, password) in [
            ("alice", "secreT"),
            ("alice", "secret2"),
            ("alice", ""),
            ("bob", "secret"),
            ("", "secret"),
        ] {
            assert!(check(user, password).is_err(), "{user}:{password}");
        }
    }

    #[test]
    fn tokens_are_kept_as_digests_and_match_only_exactly() {
        let tokens = BearerTokens::new("r").with_token("tok-456", "bob");
        assert!(tokens.tokens.users.contains_key(&digest(b"tok-456")));
        let check = |token| tokens.check(&AuthRequest::new(&bearer(token)));
        assert_eq!(check("tok-456").unwrap().user_id(), "bob");
        for token in ["tok-45", "tok-4567", "TOK-456"] {
            assert!(check(token).is_err(), "{token}");
        }
    }

    #[test]
    fn debug_output_shows_no_secrets() {
        let users = format!("{:?}", BasicUsers::new("r").with_user("alice", "pw-123"));
        let tokens = format!("{:?}", BearerTokens::new("r").with_token("tok-456", "bob"));
        assert!(
            users.contains("alice") && !users.contains("pw-123"),
            "{users}"
        );
        assert!(
            !tokens.contains("tok-456") && !tokens.contains("bob"),
            "{tokens}"
        );
    }
}
