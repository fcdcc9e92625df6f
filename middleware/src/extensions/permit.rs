use std::fmt;
use std::sync::Arc;

/// A connection slot held for as long as the socket lives.
///
/// A connection-cap layer inserts one into the request extensions; because the upgrade
/// moves the extensions into the session, the slot is returned when the socket closes
/// (when this value is dropped), not when the HTTP request ends.
///
/// `http::Extensions` only holds `Clone` values, so clones share the slot: it is returned
/// once, when the last clone is dropped.
///
/// ```
/// use estuary_middleware::ConnectionPermit;
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
///
/// let live = Arc::new(AtomicUsize::new(1));
/// let counter = live.clone();
/// let permit = ConnectionPermit::new(move || { counter.fetch_sub(1, Ordering::SeqCst); });
/// let copy = permit.clone();
/// drop(permit);
/// assert_eq!(live.load(Ordering::SeqCst), 1);
/// drop(copy);
/// assert_eq!(live.load(Ordering::SeqCst), 0);
/// ```
#[derive(Clone)]
pub struct ConnectionPermit {
    release: Arc<Release>,
}

impl ConnectionPermit {
    /// A permit that runs `release` once, when it (and every clone of it) is dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            release: Arc::new(Release(Some(Box::new(release)))),
        }
    }
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("clones", &Arc::strong_count(&self.release))
            .finish()
    }
}

/// The release action, run when the last permit sharing it goes away.
struct Release(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}
