//! Load for the reliability tests: many clients at once, bounded in count and time, and
//! the small pieces they share (Basic credentials, chat events, waiting for a condition).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{within, Client};

/// `Basic <base64>` for "user:password".
pub fn basic_auth(user_colon_password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_colon_password)
    )
}

/// The next text message as JSON (the chat's events), skipping pings and pongs.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    loop {
        match within("a chat event", client.next()).await {
            Some(Ok(WsMessage::Text(text))) => {
                return serde_json::from_str(&text).expect("chat events are JSON")
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected a chat event, got {other:?}"),
        }
    }
}

/// Runs `job(0..count)` with at most `in_flight` running at once; the first job that
/// panics fails the caller with its panic.
pub async fn run_bounded<F, Fut>(count: usize, in_flight: usize, job: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut jobs = JoinSet::new();
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let run = job(i);
        jobs.spawn(async move {
            run.await;
            drop(permit);
        });
        // Reap finished jobs as we go, so a failure stops the run early.
        while let Some(done) = jobs.try_join_next() {
            done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        }
    }
    while let Some(done) = jobs.join_next().await {
        done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
