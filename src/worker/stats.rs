//! [`Stats`]: counters readable while the worker runs (tests, embedders,
//! STATUS=). Prometheus gets the same events through `metrics`.

use std::sync::atomic::AtomicU64;

/// Counters since the worker started.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs claimed.
    pub claimed: AtomicU64,
    /// Outcomes written as `succeeded`.
    pub succeeded: AtomicU64,
    /// Outcomes written as `failed`.
    pub failed: AtomicU64,
    /// Outcomes written as a retry (back to `queued` after a backoff).
    pub retried: AtomicU64,
    /// Outcomes written as `cancelled`.
    pub cancelled: AtomicU64,
    /// Jobs handed back unstarted or unfinished, attempt refunded (stop,
    /// prefetch hand-back).
    pub requeued: AtomicU64,
    /// Completions refused by the fencing check.
    pub stale_completions: AtomicU64,
    /// Jobs claimed by a fetch that a NOTIFY woke.
    pub notify_claims: AtomicU64,
    /// Jobs claimed by a fetch that the poll timer woke.
    pub poll_claims: AtomicU64,
    /// NOTIFYs received on the jobs channel.
    pub notifications: AtomicU64,
    /// Times the LISTEN connection was re-established.
    pub listener_reconnects: AtomicU64,
    /// Jobs the elected rescuer returned or failed after their lease expired.
    pub rescued: AtomicU64,
    /// Database calls that failed.
    pub db_errors: AtomicU64,
}
