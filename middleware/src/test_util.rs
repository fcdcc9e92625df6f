//! Helpers shared by the unit tests of every layer.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};

/// The body the test handlers answer with.
pub(crate) type TestBody = Full<Bytes>;

/// A handler that answers 200 "inner" to every request.
pub(crate) async fn inner_ok<B>(_request: Request<B>) -> Result<Response<TestBody>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"inner"))))
}

/// A handler that answers with a given status and drops the request.
pub(crate) fn answer<B>(
    status: StatusCode,
) -> impl Fn(Request<B>) -> std::future::Ready<Result<Response<TestBody>, Infallible>> + Clone {
    move |_request| {
        let mut response = Response::new(Full::new(Bytes::from_static(b"inner")));
        *response.status_mut() = status;
        std::future::ready(Ok(response))
    }
}

/// An empty GET request to `uri`.
pub(crate) fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .body(Empty::new())
        .expect("test URIs are valid")
}

/// The whole body of a response as text.
pub(crate) async fn text<B>(response: Response<B>) -> String
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("test bodies do not fail")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("test bodies are UTF-8")
}
