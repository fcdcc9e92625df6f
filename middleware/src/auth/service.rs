use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{AuthRequest, Authenticate};
use crate::response::ResponseBody;

/// Layer that lets a request through only once an [`Authenticate`] gives it an
/// [`Identity`](crate::Identity), which it puts into the request extensions.
///
/// ```
/// use estuary_middleware::auth::{AuthLayer, BasicUsers};
///
/// let layer = AuthLayer::new(BasicUsers::new("estuary").with_user("alice", "wonderland"));
/// # let _ = layer;
/// ```
pub struct AuthLayer<A> {
    authenticator: Arc<A>,
}

impl<A: Authenticate> AuthLayer<A> {
    /// Authenticates every request with `authenticator`.
    pub fn new(authenticator: A) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
        }
    }
}

impl<A> Clone for AuthLayer<A> {
    fn clone(&self) -> Self {
        Self {
            authenticator: self.authenticator.clone(),
        }
    }
}

impl<A: fmt::Debug> fmt::Debug for AuthLayer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authenticator", &self.authenticator)
            .finish()
    }
}

impl<S, A> Layer<S> for AuthLayer<A> {
    type Service = Auth<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// Middleware that authenticates each request, then calls the inner service with the
/// [`Identity`](crate::Identity) in the extensions, or answers with the
/// [`AuthError`](super::AuthError).
///
/// Built by [`AuthLayer`].
///
/// ```
/// use estuary_middleware::auth::{Auth, AuthLayer, BearerTokens};
/// use http::{Request, Response, StatusCode};
/// use std::convert::Infallible;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let tokens = BearerTokens::new("chat").with_token("t-alice", "alice");
/// let service: Auth<_, _> = AuthLayer::new(tokens).layer(inner);
/// let request = Request::get("/ws")
///     .header("authorization", "Bearer t-alice")
///     .body(())
///     .unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// # }
/// ```
pub struct Auth<S, A> {
    inner: S,
    authenticator: Arc<A>,
}

impl<S: Clone, A> Clone for Auth<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            authenticator: self.authenticator.clone(),
        }
    }
}

impl<S: fmt::Debug, A: fmt::Debug> fmt::Debug for Auth<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("authenticator", &self.authenticator)
            .finish()
    }
}

impl<S, A, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    A: Authenticate,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready goes with this request; a clone stays for
        // the next one (tower's usual take-the-ready-service move).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        // An async block, because the authenticator's future borrows the request that
        // the same future must later hand to the inner service.
        let future = async move {
            let verdict = authenticator
                .authenticate(&AuthRequest::new(&request))
                .await;
            match verdict {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                    let response = inner.call(request).await?;
                    Ok(response.map(ResponseBody::new))
                }
                Err(error) => Ok(error.into_response()),
            }
        };
        ResponseFuture {
            future: Box::pin(future),
        }
    }
}

/// Response future of [`Auth`]: authentication, then the inner service.
///
/// Boxed because it holds the request and the authenticator's future that borrows it.
pub struct ResponseFuture<B, E> {
    future: BoxFuture<Result<Response<ResponseBody<B>>, E>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{auth_fn, AuthError, BasicUsers, BearerTokens, QueryToken};
    use crate::test_util::{get, text, TestBody};
    use crate::{Identity, PeerAddr};
    use bytes::Bytes;
    use headers::{Authorization, HeaderMapExt};
    use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
    use http::StatusCode;
    use http_body_util::Empty;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    /// The inner service: answers with the user id it finds in the extensions.
    async fn whoami(request: Request<Empty<Bytes>>) -> Result<Response<TestBody>, Infallible> {
        let identity = request.extensions().get::<Identity>();
        let user = identity.map_or("nobody", Identity::user_id);
        Ok(Response::new(TestBody::new(Bytes::from(user.to_owned()))))
    }

    async fn send<A: Authenticate>(
        authenticator: A,
        request: Request<Empty<Bytes>>,
    ) -> Response<ResponseBody<TestBody>> {
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(authenticator))
            .service(service_fn(whoami));
        service.oneshot(request).await.unwrap()
    }

    fn users() -> BasicUsers {
        BasicUsers::new("estuary").with_user("alice", "wonderland")
    }

    fn tokens() -> BearerTokens {
        BearerTokens::new("estuary").with_token("t-alice", "alice")
    }

    fn with_authorization(value: &[u8]) -> Request<Empty<Bytes>> {
        let mut request = get("/ws");
        let value = HeaderValue::from_bytes(value).expect("test header values are valid");
        request.headers_mut().insert(AUTHORIZATION, value);
        request
    }

    fn basic(user: &str, password: &str) -> Request<Empty<Bytes>> {
        let mut request = get("/ws");
        request
            .headers_mut()
            .typed_insert(Authorization::basic(user, password));
        request
    }

    fn challenge(response: &Response<ResponseBody<TestBody>>) -> &str {
        response.headers()[WWW_AUTHENTICATE].to_str().unwrap()
    }

    #[tokio::test]
    async fn valid_basic_credentials_put_the_identity_into_the_extensions() {
        let response = send(users(), basic("alice", "wonderland")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "alice");
    }

    #[tokio::test]
    async fn missing_basic_credentials_get_401_with_the_exact_challenge() {
        let response = send(users(), get("/ws")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&response), r#"Basic realm="estuary""#);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            text(response).await,
            "missing or malformed Basic credentials"
        );
    }

    #[tokio::test]
    async fn wrong_password_or_unknown_user_gets_401() {
        for request in [basic("alice", "wrong"), basic("mallory", "wonderland")] {
            let response = send(users(), request).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(challenge(&response), r#"Basic realm="estuary""#);
            assert_eq!(text(response).await, "invalid user name or password");
        }
    }

    #[tokio::test]
    async fn malformed_basic_credentials_get_401_not_a_panic() {
        for value in [
            &b"Basic !!!not-base64!!!"[..],
            b"Basic YWxpY2U=", // "alice": no colon
            b"Basic /zp4",     // [0xff, ':', 'x']: not UTF-8
            b"Basic \xff\xfe",
            b"Basic",
        ] {
            let response = send(users(), with_authorization(value)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(challenge(&response), r#"Basic realm="estuary""#);
        }
    }

    #[tokio::test]
    async fn valid_bearer_token_puts_the_identity_into_the_extensions() {
        let response = send(tokens(), with_authorization(b"Bearer t-alice")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "alice");
    }

    #[tokio::test]
    async fn missing_bearer_token_gets_401_without_an_error_attribute() {
        let response = send(tokens(), get("/ws")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&response), r#"Bearer realm="estuary""#);
        assert_eq!(text(response).await, "missing bearer token");
    }

    #[tokio::test]
    async fn wrong_bearer_token_gets_401_invalid_token() {
        for value in [&b"Bearer t-bob"[..], b"Bearer t-alice2", b"Bearer T-ALICE"] {
            let response = send(tokens(), with_authorization(value)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let expected = r#"Bearer realm="estuary", error="invalid_token""#;
            assert_eq!(challenge(&response), expected);
            assert_eq!(text(response).await, "invalid token");
        }
    }

    #[tokio::test]
    async fn non_utf8_bearer_token_gets_401() {
        let response = send(tokens(), with_authorization(b"Bearer t-\xe9lice")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&response), r#"Bearer realm="estuary""#);
    }

    #[tokio::test]
    async fn query_token_puts_the_identity_into_the_extensions() {
        let tokens = QueryToken::new("estuary")
            .with_param("token")
            .with_token("a+b/c", "alice");
        let response = send(tokens, get("/ws?room=1&token=a%2Bb%2Fc")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "alice");
    }

    #[tokio::test]
    async fn bad_or_missing_query_token_gets_401() {
        let tokens = QueryToken::new("estuary").with_token("t-alice", "alice");
        let invalid = r#"Bearer realm="estuary", error="invalid_token""#;
        for (uri, expected) in [
            ("/ws?access_token=t-bob", invalid),
            ("/ws?access_token=t-%FFlice", invalid), // not UTF-8 once decoded
            ("/ws?access_token=", r#"Bearer realm="estuary""#),
            ("/ws?token=t-alice", r#"Bearer realm="estuary""#),
        ] {
            let response = send(tokens.clone(), get(uri)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{uri}");
            assert_eq!(challenge(&response), expected, "{uri}");
        }
        let response = send(tokens, get("/ws")).await;
        assert_eq!(
            text(response).await,
            "missing \"access_token\" query parameter"
        );
    }

    #[tokio::test]
    async fn either_a_header_or_a_query_token_gets_in() {
        let query = QueryToken::new("estuary").with_token("t-alice", "alice");
        let both = || tokens().or(query.clone());
        let response = send(both(), with_authorization(b"Bearer t-alice")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = send(both(), get("/ws?access_token=t-alice")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn or_answers_with_the_rejection_of_the_credentials_offered() {
        let query = QueryToken::new("estuary").with_token("t-alice", "alice");
        let both = || tokens().or(query.clone());
        let invalid = r#"Bearer realm="estuary", error="invalid_token""#;

        let response = send(both(), get("/ws?access_token=nope")).await;
        assert_eq!(challenge(&response), invalid);
        let response = send(both(), with_authorization(b"Bearer nope")).await;
        assert_eq!(challenge(&response), invalid);
        let response = send(both(), get("/ws")).await;
        assert_eq!(challenge(&response), r#"Bearer realm="estuary""#);
    }

    #[tokio::test]
    async fn custom_rejection_keeps_its_status_reason_and_headers() {
        let banned = auth_fn(|_request: &AuthRequest<'_>| async {
            Err(AuthError::forbidden("account suspended").with_header(
                HeaderName::from_static("x-support"),
                HeaderValue::from_static("help@example.com"),
            ))
        });
        let response = send(banned, get("/ws")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["x-support"], "help@example.com");
        assert_eq!(text(response).await, "account suspended");
    }

    #[tokio::test]
    async fn authenticator_sees_the_peer_address_and_query() {
        let by_address = auth_fn(|request: &AuthRequest<'_>| {
            let peer = request.peer_addr();
            let room = request.query("room").map(|room| room.into_owned());
            async move {
                match (peer, room) {
                    (Some(peer), Some(room)) => Ok(Identity::new(format!("{peer}/{room}"))),
                    _ => Err(AuthError::forbidden("who are you?")),
                }
            }
        });
        let mut request = get("/ws?room=lobby");
        let addr = "192.0.2.1:4000".parse().unwrap();
        request.extensions_mut().insert(PeerAddr(addr));
        let response = send(by_address, request).await;
        assert_eq!(text(response).await, "192.0.2.1:4000/lobby");
    }

    #[tokio::test]
    async fn rejected_request_never_reaches_the_inner_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let service = ServiceBuilder::new()
            .layer(AuthLayer::new(users()))
            .service(service_fn(move |request| {
                counted.fetch_add(1, Ordering::SeqCst);
                whoami(request)
            }));
        service
            .clone()
            .oneshot(basic("alice", "nope"))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        service.oneshot(basic("alice", "wonderland")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
