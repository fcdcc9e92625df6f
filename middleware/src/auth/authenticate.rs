use std::fmt;
use std::future::Future;

use super::{AuthError, AuthRequest};
use crate::Identity;

/// Decides who a request is: an [`Identity`] to let it in, or an [`AuthError`] to answer.
///
/// The method returns `impl Future + Send` rather than a boxed future so that an
/// implementation can be written as a plain `async fn` (checked to be `Send` by the
/// compiler) and can borrow the request while it awaits, with no allocation of its own.
/// The price is that the trait is not object-safe; combine authenticators with
/// [`or`](Self::or) or a closure ([`auth_fn`]) instead of `Box<dyn Authenticate>`.
///
/// ```
/// use estuary_middleware::auth::{AuthError, AuthRequest, Authenticate};
/// use estuary_middleware::Identity;
///
/// /// Lets in anyone who says who they are in `?user=`, except "root".
/// struct Honest;
///
/// impl Authenticate for Honest {
///     async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, AuthError> {
///         match request.query("user") {
///             Some(user) if user == "root" => Err(AuthError::forbidden("not you")),
///             Some(user) => Ok(Identity::new(user.into_owned())),
///             None => Err(AuthError::bearer_required("estuary")),
///         }
///     }
/// }
/// ```
pub trait Authenticate: Send + Sync + 'static {
    /// The identity behind `request`, or why it may not connect.
    fn authenticate(
        &self,
        request: &AuthRequest<'_>,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send;

    /// Tries `self`, then `other` if `self` rejects: for two ways of presenting
    /// credentials, such as a bearer header or a query token.
    ///
    /// When both reject, the answer is `self`'s, unless `self` only found no credentials
    /// ([`AuthError::credentials_missing`]): then it is `other`'s, which saw some.
    ///
    /// ```
    /// use estuary_middleware::auth::{Authenticate, AuthLayer, BearerTokens, QueryToken};
    ///
    /// let header = BearerTokens::new("chat").with_token("s3cret", "alice");
    /// let query = QueryToken::new("chat").with_token("s3cret", "alice");
    /// let layer = AuthLayer::new(header.or(query));
    /// # let _ = layer;
    /// ```
    fn or<B: Authenticate>(self, other: B) -> Or<Self, B>
    where
        Self: Sized,
    {
        Or {
            first: self,
            second: other,
        }
    }
}

/// Two authenticators tried in turn, made by [`Authenticate::or`].
///
/// ```
/// use estuary_middleware::auth::{AuthLayer, Authenticate, BearerTokens, Or, QueryToken};
///
/// // The Authorization header, or `?access_token=` for browsers.
/// let either: Or<BearerTokens, QueryToken> = BearerTokens::new("chat")
///     .with_token("t-alice", "alice")
///     .or(QueryToken::new("chat").with_token("t-alice", "alice"));
/// let layer = AuthLayer::new(either);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: Authenticate, B: Authenticate> Authenticate for Or<A, B> {
    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let first = match self.first.authenticate(request).await {
            Ok(identity) => return Ok(identity),
            Err(error) => error,
        };
        match self.second.authenticate(request).await {
            Ok(identity) => Ok(identity),
            Err(second) if first.credentials_missing() => Err(second),
            Err(_) => Err(first),
        }
    }
}

/// An authenticator from a closure.
///
/// The closure reads what it needs from the request right away and returns a `'static`
/// future, which is free to await a database or an identity provider.
///
/// ```
/// use estuary_middleware::auth::{auth_fn, AuthError, AuthLayer, AuthRequest};
/// use estuary_middleware::Identity;
///
/// let layer = AuthLayer::new(auth_fn(|request: &AuthRequest<'_>| {
///     let token = request.bearer().map(|bearer| bearer.token().to_owned());
///     async move {
///         match token.as_deref() {
///             Some("s3cret") => Ok(Identity::new("alice")),
///             Some(_) => Err(AuthError::bearer("estuary")),
///             None => Err(AuthError::bearer_required("estuary")),
///         }
///     }
/// }));
/// # let _ = layer;
/// ```
pub fn auth_fn<F, Fut>(f: F) -> AuthFn<F>
where
    F: Fn(&AuthRequest<'_>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Identity, AuthError>> + Send + 'static,
{
    AuthFn(f)
}

/// An [`Authenticate`] made from a closure by [`auth_fn`].
///
/// ```
/// use estuary_middleware::auth::{auth_fn, AuthError, AuthFn, AuthRequest};
/// use estuary_middleware::Identity;
/// use std::future::{ready, Ready};
///
/// // A name to store the authenticator under: a plain function makes the type nameable.
/// type Guest = AuthFn<fn(&AuthRequest<'_>) -> Ready<Result<Identity, AuthError>>>;
///
/// let everyone: fn(&AuthRequest<'_>) -> Ready<Result<Identity, AuthError>> =
///     |_request| ready(Ok(Identity::new("guest")));
/// let guest: Guest = auth_fn(everyone);
/// # let _ = guest;
/// ```
#[derive(Clone)]
pub struct AuthFn<F>(F);

impl<F> fmt::Debug for AuthFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFn").finish_non_exhaustive()
    }
}

impl<F, Fut> Authenticate for AuthFn<F>
where
    F: Fn(&AuthRequest<'_>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Identity, AuthError>> + Send + 'static,
{
    fn authenticate(
        &self,
        request: &AuthRequest<'_>,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        (self.0)(request)
    }
}
