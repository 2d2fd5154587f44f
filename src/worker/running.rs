//! [`RunningJobs`]: the jobs this process runs (or holds prefetched), each
//! with its cancellation token, so that the heartbeat, NOTIFY-driven cancels
//! and the drain can reach them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a job's token was cancelled. A token cancelled with no reason set was
/// cancelled through its parent: the daemon is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelReason {
    /// An operator or app asked (`cancel_requested`).
    Requested,
    /// The job ran past its timeout.
    Timeout,
    /// This worker no longer holds the lease: another may run the job.
    LeaseLost,
}

struct RunningJob {
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

/// The running map; every method takes the lock briefly and never awaits.
#[derive(Default)]
pub(crate) struct RunningJobs {
    jobs: Mutex<HashMap<Uuid, RunningJob>>,
}

impl RunningJobs {
    /// Starts tracking `id` with a child of `parent`; returns its token and
    /// the slot its cancel reason is written to.
    pub fn track(
        &self,
        id: Uuid,
        parent: &CancellationToken,
    ) -> (CancellationToken, Arc<OnceLock<CancelReason>>) {
        let token = parent.child_token();
        let reason = Arc::new(OnceLock::new());
        if let Ok(mut m) = self.jobs.lock() {
            m.insert(
                id,
                RunningJob {
                    token: token.clone(),
                    reason: reason.clone(),
                },
            );
            metrics::gauge!("opsrunner_jobs_running").set(m.len() as f64);
        }
        (token, reason)
    }

    /// Stops tracking these jobs (their outcome was written or dropped).
    pub fn forget(&self, ids: impl Iterator<Item = Uuid>) {
        if let Ok(mut m) = self.jobs.lock() {
            for id in ids {
                m.remove(&id);
            }
            metrics::gauge!("opsrunner_jobs_running").set(m.len() as f64);
        }
    }

    /// The tracked job ids.
    pub fn ids(&self) -> Vec<Uuid> {
        self.jobs
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// How many jobs are tracked.
    pub fn len(&self) -> usize {
        self.jobs.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Cancels job `id` (once) for `why`.
    pub fn cancel(&self, id: Uuid, why: CancelReason) {
        let Ok(m) = self.jobs.lock() else { return };
        if let Some(job) = m.get(&id)
            && !job.token.is_cancelled()
        {
            let _ = job.reason.set(why);
            if why == CancelReason::Requested {
                metrics::counter!("opsrunner_cancel_requests_total").increment(1);
            }
            job.token.cancel();
            tracing::info!(job_id = %id, reason = ?why, "cancelling running job");
        }
    }
}
