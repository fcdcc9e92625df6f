use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::ResponseBody;

pin_project! {
    /// Response future of the layers that either answer a request themselves or pass it on
    /// (health, origin, rate limit, connection limit).
    ///
    /// It resolves to the layer's own response, or to the inner service's response with
    /// its body wrapped in [`ResponseBody`].
    #[derive(Debug)]
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, B> {
        Answered { response: Option<Response<ResponseBody<B>>> },
        Inner { #[pin] future: F },
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// Waits for the inner service.
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// Resolves at once to the layer's own response.
    pub(crate) fn answered(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after it completed"))),
            KindProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::new)))
            }
        }
    }
}
