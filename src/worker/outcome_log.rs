//! Job outcomes in the log, at the levels River, Oban and Graphile Worker
//! use by default: `failed`, rescued and refused completions at WARN,
//! retried and cancelled at INFO, each with the job's id, type, queue,
//! attempt, run time and bounded error (never its payload or result).
//!
//! A poison flood (thousands of failures a second) must not flood the
//! journal: at most [`PER_WINDOW`] lines per [`WINDOW`]; past that the
//! outcomes are counted, and one summary line per window says how many of
//! each were not logged. Metrics count every outcome either way.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines per window before the summary takes over. 50 per 10 s is five
/// lines a second: readable in `journalctl -f`, and far under journald's
/// default rate limit (10,000 messages per 30 s per service).
pub const PER_WINDOW: u32 = 50;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// What happened to a job, as the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// Out of attempts, or refused for good.
    Failed,
    /// Will run again after a delay.
    Retried,
    /// Cancelled while running.
    Cancelled,
    /// Its worker stopped renewing the lease: requeued or failed by the rescuer.
    Rescued,
    /// This daemon's completion was refused: it had lost the lease.
    Refused,
}

impl Logged {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: [u64; 5],
}

/// The limiter; one per daemon.
#[derive(Debug)]
pub struct OutcomeLog {
    window: Mutex<Window>,
}

impl Default for OutcomeLog {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: [0; 5],
            }),
        }
    }
}

impl OutcomeLog {
    /// Whether a line for `what` may be written now; if not, it is counted
    /// for the window's summary.
    pub fn allow(&self, what: Logged) -> bool {
        self.allow_at(what, Instant::now())
    }

    fn allow_at(&self, what: Logged, now: Instant) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        roll(&mut w, now);
        if w.logged < PER_WINDOW {
            w.logged += 1;
            true
        } else {
            w.suppressed[what.index()] += 1;
            false
        }
    }

    /// Writes the summary of a finished window that suppressed lines
    /// (called at each completion batch and maintenance tick, so that the
    /// summary comes even when the flood has stopped).
    pub fn flush_if_due(&self) {
        if let Ok(mut w) = self.window.lock() {
            roll(&mut w, Instant::now());
        }
    }
}

/// Starts a new window once the current one is over, first logging what
/// it suppressed.
fn roll(w: &mut Window, now: Instant) {
    if now.duration_since(w.started) < WINDOW {
        return;
    }
    let [failed, retried, cancelled, rescued, refused] = w.suppressed;
    let total = failed + retried + cancelled + rescued + refused;
    if total > 0 {
        tracing::warn!(
            suppressed = total,
            failed,
            retried,
            cancelled,
            rescued,
            refused,
            window_seconds = WINDOW.as_secs(),
            "more job outcomes than the log takes ({PER_WINDOW} lines per {}s): \
             these were counted, not logged (metrics have every one)",
            WINDOW.as_secs()
        );
    }
    *w = Window {
        started: now,
        logged: 0,
        suppressed: [0; 5],
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_budget_lines_are_counted_and_a_new_window_allows_again() {
        let log = OutcomeLog::default();
        let t0 = Instant::now();
        let allowed = (0..PER_WINDOW + 30)
            .filter(|_| log.allow_at(Logged::Failed, t0))
            .count();
        assert_eq!(allowed, PER_WINDOW as usize);
        assert_eq!(log.window.lock().unwrap().suppressed[0], 30);
        assert!(log.allow_at(Logged::Retried, t0 + WINDOW));
        assert_eq!(log.window.lock().unwrap().suppressed, [0; 5]);
    }
}
