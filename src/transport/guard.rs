//! Running user callbacks so that a panic in one is an error, not a dead task.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// Runs a handler callback, turning a panic into an error: one while the callback
/// builds its future (a closure handler does all its work there) or while the future
/// runs.
pub(crate) async fn guarded<F: Future>(callback: impl FnOnce() -> F) -> Result<F::Output, ()> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(callback)).map_err(|_| ())?;
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|_| ())
}
