//! The log of refused connections, rate-limited: a flood of bad handshakes must not
//! become a flood of log lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}
