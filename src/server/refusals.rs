//! How the server refuses: the 503 for a connection over a pending-handshake limit,
//! `Connection: close` on a refused HTTP/1.1 upgrade (HTTP/2 has no such header: a
//! refused stream is answered, and its connection goes on), and a log of refusals that is rate-limited,
//! so that a flood of bad handshakes is neither a flood of idle connections nor a flood
//! of log lines.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Response, StatusCode};

use super::pending::Busy;

/// How many refusals are logged per window; the rest are counted.
const LOGGED_PER_WINDOW: u32 = 10;
/// The window.
const WINDOW: Duration = Duration::from_secs(1);

/// Decides which refusals are logged: the first [`LOGGED_PER_WINDOW`] of each second.
/// The others are counted, and the next line logged says how many were left out.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    /// Refusals not logged since the last one that was.
    suppressed: u64,
}

impl RefusalLog {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this refusal is to be logged, `n` being how many before it were
    /// not; `None` when it is only counted.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(window.started) >= WINDOW {
            window.started = now;
            window.logged = 0;
        }
        if window.logged < LOGGED_PER_WINDOW {
            window.logged += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

/// Answers a connection over a pending-handshake limit with 503 and closes it.
pub(crate) async fn refuse_busy(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    busy: Busy,
    refusals: Arc<RefusalLog>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let why = match busy {
        Busy::Server => "too many handshakes in progress",
        Busy::Address => "too many handshakes in progress from this address",
    };
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{why}\n",
        why.len() + 1
    );
    if let Some(suppressed) = refusals.admit() {
        tracing::info!(%peer, suppressed, "{why}: refused with 503");
    }
    crate::metrics::handshake(false, StatusCode::SERVICE_UNAVAILABLE);
    // A socket closed with the request still unread is reset, and the reset can reach
    // the client before the answer does: so send the answer, shut down writing, and read
    // (and drop) what the client sent until it closes, all within one second.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}

/// Counts a handshake's outcome and logs a refusal once, whichever layer refused it; in a
/// flood, only the first few of each second are logged, and the next line logged says how
/// many were not (`suppressed`).
pub(crate) fn record_handshake(
    accepted: bool,
    status: StatusCode,
    path: &str,
    peer: SocketAddr,
    refusals: &RefusalLog,
) {
    crate::metrics::handshake(accepted, status);
    if !accepted {
        if let Some(suppressed) = refusals.admit() {
            tracing::info!(
                status = status.as_u16(),
                path,
                %peer,
                suppressed,
                "websocket handshake refused"
            );
        }
    }
}

/// Adds `close` to the `Connection` header of a refusal, so that hyper closes the
/// connection once it is sent: a refused upgrade (any answer but 101), and any request
/// told to back off (429, 503). Such a client gives its place back rather than keeping
/// an idle connection open.
pub(crate) fn close_if_refused<B>(response: &mut Response<B>, upgrade: bool) {
    let status = response.status();
    let refused = (upgrade && status != StatusCode::SWITCHING_PROTOCOLS)
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE;
    if refused {
        add_connection_close(response.headers_mut());
    }
}

/// Puts the `close` option in `Connection`, keeping the options already there.
fn add_connection_close(headers: &mut http::HeaderMap) {
    let has_close = headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    if has_close {
        return;
    }
    let mut options: Vec<u8> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        options.extend_from_slice(value.as_bytes());
        options.extend_from_slice(b", ");
    }
    options.extend_from_slice(b"close");
    let value = HeaderValue::from_bytes(&options).expect("header values joined by commas");
    headers.insert(header::CONNECTION, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_the_first_few_and_counts_the_rest_in_the_next_line() {
        let log = RefusalLog::new();
        let start = Instant::now();
        let admitted: Vec<_> = (0..1000).map(|_| log.admit_at(start)).collect();
        let logged: Vec<_> = admitted.iter().flatten().collect();
        assert_eq!(logged.len(), LOGGED_PER_WINDOW as usize);
        assert!(logged.iter().all(|&&suppressed| suppressed == 0));

        let later = start + WINDOW;
        assert_eq!(
            log.admit_at(later),
            Some(1000 - u64::from(LOGGED_PER_WINDOW))
        );
        assert_eq!(log.admit_at(later), Some(0));
    }

    fn connection(response: &Response<()>) -> Vec<&str> {
        let values = response.headers().get_all(header::CONNECTION);
        values.iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn a_refused_upgrade_is_told_the_connection_closes() {
        let mut refused = Response::new(());
        *refused.status_mut() = StatusCode::UPGRADE_REQUIRED;
        refused
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        close_if_refused(&mut refused, true);
        assert_eq!(connection(&refused), ["upgrade, close"]);

        let mut forbidden = Response::new(());
        *forbidden.status_mut() = StatusCode::FORBIDDEN;
        close_if_refused(&mut forbidden, true);
        assert_eq!(connection(&forbidden), ["close"]);

        let mut closing = Response::new(());
        *closing.status_mut() = StatusCode::BAD_REQUEST;
        closing
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Close"));
        close_if_refused(&mut closing, true);
        assert_eq!(connection(&closing), ["Close"]);
    }

    #[test]
    fn accepted_upgrades_and_ordinary_answers_keep_the_connection() {
        let mut accepted = Response::new(());
        *accepted.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        close_if_refused(&mut accepted, true);
        assert!(connection(&accepted).is_empty());
        for status in [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
        ] {
            let mut plain = Response::new(());
            *plain.status_mut() = status;
            close_if_refused(&mut plain, false);
            assert!(connection(&plain).is_empty(), "{status}");
        }
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let mut back_off = Response::new(());
            *back_off.status_mut() = status;
            close_if_refused(&mut back_off, false);
            assert_eq!(connection(&back_off), ["close"], "{status}");
        }
    }
}
