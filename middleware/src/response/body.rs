use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of every Estuary layer: the inner service's body, or the short
    /// text a layer answered with itself ("OK", "rate limit exceeded", ...).
    ///
    /// Wrapping keeps every layer generic over the inner body (`Full<Bytes>`, `BoxBody`,
    /// `axum::body::Body`, `Empty<Bytes>`...), the way tower-http's `RequestBodyLimit` does;
    /// use [`ResponseBody::new`] when you need to give a response that did not go
    /// through a layer the same type.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use estuary_middleware::ResponseBody;
    /// use http_body::Body;
    /// use http_body_util::Full;
    ///
    /// let body = ResponseBody::new(Full::new(Bytes::from_static(b"hello")));
    /// assert_eq!(body.size_hint().exact(), Some(5));
    /// ```
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Text { text: Option<Bytes> },
        Inner { #[pin] body: B },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body, unchanged.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body made of one chunk of text written by a layer.
    pub(crate) fn text(text: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Text {
                text: Some(text.into()),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Text { text } => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
            KindProj::Inner { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Text { text } => text.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Text { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |text| text.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
        }
    }
}
