//! How a layer answers a request itself: the one place that turns a status and a reason
//! into an HTTP response.
//!
//! Every rejection (401, 403, 405, 429, 500, 503) and every health answer is a short
//! `text/plain; charset=utf-8` body with a human-readable reason plus any headers the
//! status needs (`WWW-Authenticate`, `Retry-After`). So that each layer stays generic over
//! the inner service's body, the layers return [`ResponseBody<B>`]: either the inner body
//! untouched or the layer's text. This is tower-http's `ResponseBody` pattern (see its
//! `limit` layer); requiring `B: From<String>` instead would shut out `BoxBody`,
//! `Empty<Bytes>` and any body a user writes. It works as-is with hyper (any `Body`) and
//! axum (`Response<ResponseBody<axum::body::Body>>` is `IntoResponse`).

mod body;
mod future;

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

pub use body::ResponseBody;
pub use future::ResponseFuture;

/// A `text/plain` response with `status`, the human-readable `reason` as its body, and
/// `headers` added.
pub(crate) fn text<B>(
    status: StatusCode,
    reason: impl Into<bytes::Bytes>,
    headers: HeaderMap,
) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::text(reason));
    *response.status_mut() = status;
    let response_headers = response.headers_mut();
    response_headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response_headers.extend(headers);
    response
}

/// A `Retry-After` header in whole seconds, rounded up and at least 1 (a client told
/// "0" would retry at once and hit the same limit).
pub(crate) fn retry_after(wait: Duration) -> HeaderMap {
    let mut seconds = wait.as_secs();
    if wait.subsec_nanos() > 0 {
        seconds += 1;
    }
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let cases = [(0, "1"), (1, "1"), (999, "1"), (1000, "1"), (1001, "2")];
        for (millis, expected) in cases {
            let headers = retry_after(Duration::from_millis(millis));
            assert_eq!(headers[RETRY_AFTER], expected, "{millis} ms");
        }
    }

    #[test]
    fn text_response_carries_status_reason_and_headers() {
        let response = text::<()>(StatusCode::FORBIDDEN, "no", retry_after(Duration::ZERO));
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }
}
