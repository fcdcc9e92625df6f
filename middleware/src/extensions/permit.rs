use std::fmt;

/// A connection slot held for as long as the socket lives.
///
/// A connection-cap layer inserts one into the request extensions; because the upgrade
/// moves the extensions into the session, the slot is returned when the socket closes
/// (when this value is dropped), not when the HTTP request ends.
///
/// ```
/// use estuary_middleware::ConnectionPermit;
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
///
/// let live = Arc::new(AtomicUsize::new(1));
/// let counter = live.clone();
/// let permit = ConnectionPermit::new(move || { counter.fetch_sub(1, Ordering::SeqCst); });
/// drop(permit);
/// assert_eq!(live.load(Ordering::SeqCst), 0);
/// ```
pub struct ConnectionPermit {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl ConnectionPermit {
    /// A permit that runs `release` once, when it is dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit").finish_non_exhaustive()
    }
}
