//! `[worker]`: the daemon's slots, intervals, leases and drain.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Check;

/// The longest lease a daemon may take. The rescuer requeues running rows
/// whose lease lies further ahead (or is missing): no daemon wrote those.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// `[worker]`: the daemon's slots, intervals, leases and drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs run at once by this daemon.
    pub concurrency: usize,
    /// Queues this daemon serves; empty means every queue.
    pub queues: Vec<String>,
    /// Fetch even without a NOTIFY this often (the backstop for lost wake-ups).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claimed job is ours without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often the leases of running jobs are renewed (at most half the lease).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often the elected rescuer looks for expired leases.
    #[serde(with = "humantime_serde")]
    pub rescue_interval: Duration,
    /// How often the elected scheduler enqueues due schedule slots (cron
    /// has one-second resolution, so at most 1 s keeps slots on time).
    #[serde(with = "humantime_serde")]
    pub schedule_interval: Duration,
    /// Periodic flag reload, the backstop for a missed flag NOTIFY.
    #[serde(with = "humantime_serde")]
    pub flags_reload_interval: Duration,
    /// On SIGTERM, how long running jobs may finish before they are cancelled
    /// and returned to the queue.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Timeout for a job whose row sets none.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// How long a cancelled handler may take to stop before it is abandoned.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most outcomes written by one completion statement.
    pub completion_batch: usize,
    /// Jobs claimed beyond the free slots, held in the worker so that a slot
    /// freed by a short job starts the next one without a round trip. Unset:
    /// as many as `concurrency`; 0 turns prefetching off. Only used while
    /// jobs run shorter than 50 ms on average; a held job goes back to the
    /// queue (attempt refunded) when it waited 2 s or the worker stops.
    pub prefetch: Option<usize>,
    /// The largest offset between this worker's clock and the database's
    /// that is tolerated: past it the worker logs a warning and refuses to
    /// sign webhook timestamps (time comparisons that matter use the
    /// database's clock anyway).
    #[serde(with = "humantime_serde")]
    pub clock_offset_limit: Duration,
    /// Warn when a snapshot held elsewhere in the database (an idle
    /// transaction, a replication slot's session) is older than this: every
    /// claim slows while it lives.
    #[serde(with = "humantime_serde")]
    pub snapshot_warn_after: Duration,
}

impl WorkerConfig {
    /// The prefetch allowance: `prefetch`, or `concurrency` when unset.
    pub fn prefetch(&self) -> usize {
        self.prefetch.unwrap_or(self.concurrency)
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 10,
            queues: Vec::new(),
            poll_interval: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            rescue_interval: Duration::from_secs(5),
            schedule_interval: Duration::from_secs(1),
            flags_reload_interval: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(30),
            default_timeout: Duration::from_secs(300),
            cancel_grace: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            completion_batch: 500,
            prefetch: None,
            clock_offset_limit: Duration::from_secs(5),
            snapshot_warn_after: Duration::from_secs(300),
        }
    }
}

impl WorkerConfig {
    /// The `[worker]` rules (Oban-style: one line per rule).
    pub(crate) fn check(&self, c: &mut Check) {
        c.range("worker.concurrency", self.concurrency, 1..=10_000);
        c.names("worker.queues", &self.queues);
        for (key, d) in [
            ("worker.poll_interval", self.poll_interval),
            ("worker.lease", self.lease),
            ("worker.heartbeat_interval", self.heartbeat_interval),
            ("worker.rescue_interval", self.rescue_interval),
            ("worker.schedule_interval", self.schedule_interval),
            ("worker.flags_reload_interval", self.flags_reload_interval),
            ("worker.default_timeout", self.default_timeout),
            ("worker.backoff_base", self.backoff_base),
        ] {
            c.nonzero(key, d);
        }
        c.rule(
            "worker.heartbeat_interval",
            self.heartbeat_interval * 2 <= self.lease,
            "must be at most half of worker.lease, or a single slow heartbeat loses every lease",
        );
    }

    /// How long a running job may go without a known lease renewal before
    /// this worker stops it itself (self-fencing):
    /// `lease - heartbeat_interval - call_timeout`. Whatever the heartbeat
    /// call is doing, the handler is then cancelled before the lease can
    /// expire and another worker be handed the job.
    pub fn fence_after(&self, call_timeout: Duration) -> Duration {
        self.lease
            .saturating_sub(self.heartbeat_interval)
            .saturating_sub(call_timeout)
    }

    /// The rules that tie `[worker]` to `db.call_timeout`.
    pub(crate) fn check_with_db(&self, call_timeout: Duration, c: &mut Check) {
        c.rule(
            "worker.heartbeat_interval",
            (self.heartbeat_interval + call_timeout) * 2 <= self.lease,
            "plus db.call_timeout must be at most half of worker.lease, or a heartbeat that is \
             merely slow would make the worker stop its own jobs (self-fencing)",
        );
        c.rule(
            "worker.backoff_max",
            self.backoff_max >= self.backoff_base,
            "must not be below worker.backoff_base",
        );
        c.range("worker.completion_batch", self.completion_batch, 1..=10_000);
        c.nonzero("worker.clock_offset_limit", self.clock_offset_limit);
        c.rule(
            "worker.lease",
            self.lease <= MAX_LEASE,
            "must be at most 1 hour (the rescuer treats longer leases as forged)",
        );
        c.nonzero("worker.snapshot_warn_after", self.snapshot_warn_after);
        if let Some(p) = self.prefetch {
            c.range("worker.prefetch", p, 0..=10_000);
        }
    }
}
