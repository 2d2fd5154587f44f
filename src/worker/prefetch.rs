//! Prefetch: while jobs are short, a claim also takes up to
//! `worker.prefetch` jobs beyond the free slots. Each waits in its task for a
//! slot, so a slot freed by a finished job starts the next one at once rather
//! than after a round trip. Held jobs are `running` rows with this worker's
//! lease, renewed by the heartbeat like any other; one that waits too long,
//! whose type gets disabled, or that is still waiting when the worker stops
//! goes back to `queued` with its attempt refunded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::executor::ClaimedJob;
use super::state::Shared;

/// Jobs shorter than this on average are prefetched (see `jobs_are_short`).
pub(crate) const PREFETCH_SHORT_JOB: Duration = Duration::from_millis(50);

/// A prefetched job that waited this long for a slot goes back to the queue,
/// so that a misjudged burst of long jobs does not hold rows that another
/// worker could run.
pub(crate) const PREFETCH_MAX_WAIT: Duration = Duration::from_secs(2);

/// Why a job claimed by a daemon that began to stop went back unstarted.
pub(crate) const STOPPED_BEFORE_START: &str = "the worker stopped before the job started";

/// How many jobs to claim now, given the free slots, the jobs already
/// waiting for one and the prefetch allowance. While every slot is busy,
/// nothing is claimed until half of the allowance is used up: many small
/// claims cost far more than a few large ones (measured: 10-row claims and
/// completions cost 150 µs of CPU per job, 200-row ones 55 µs).
pub(crate) fn claim_room(free: usize, waiting: usize, prefetch: usize) -> usize {
    if free == 0 && waiting * 2 > prefetch {
        return 0;
    }
    (free + prefetch).saturating_sub(waiting)
}

/// The prefetch state of one worker.
pub(crate) struct Prefetch {
    /// Recent job run time in µs (moving average), for the prefetch rule.
    job_time_us: AtomicU64,
    /// Claimed jobs waiting for a slot.
    pub waiting: Arc<AtomicUsize>,
}

impl Default for Prefetch {
    fn default() -> Self {
        Self {
            // Unknown until jobs have run: assume long, so a daemon that
            // starts on a queue of hour-long jobs holds none back.
            job_time_us: AtomicU64::new(PREFETCH_SHORT_JOB.as_micros() as u64),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Prefetch {
    /// Folds one job's run time into the moving average (weight 1/8).
    /// Concurrent updates may lose one sample; the average stays sound.
    pub fn record_job_time(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let old = self.job_time_us.load(Ordering::Relaxed);
        self.job_time_us
            .store(old - old / 8 + us / 8, Ordering::Relaxed);
    }

    /// A prefetched job waited too long for a slot: count jobs as long.
    pub fn record_long_wait(&self) {
        self.job_time_us
            .fetch_max(PREFETCH_SHORT_JOB.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prefetching pays only while jobs are about as short as a claim's
    /// round trip; for longer jobs the saved round trip is noise, and a job
    /// held here waits while another worker might be idle.
    pub fn jobs_are_short(&self) -> bool {
        self.job_time_us.load(Ordering::Relaxed) < PREFETCH_SHORT_JOB.as_micros() as u64
    }
}

/// A claimed job's slot: taken at claim time, or to wait for.
pub(crate) enum Slot {
    Taken(OwnedSemaphorePermit),
    Wait(Prefetched),
}

/// What a prefetched job's task needs while it waits for a slot.
pub(crate) struct Prefetched {
    pub slots: Arc<Semaphore>,
    pub count: Arc<AtomicUsize>,
    pub stop: CancellationToken,
}

impl Prefetched {
    /// A slot, or no slot when the job was cancelled meanwhile (the executor
    /// then ends it at once without running the handler), or the reason to
    /// hand the job back to the queue.
    pub async fn wait_for_slot(
        self,
        shared: &Shared,
        job: &ClaimedJob,
        token: &CancellationToken,
    ) -> std::result::Result<Option<OwnedSemaphorePermit>, &'static str> {
        let waited = tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(STOPPED_BEFORE_START),
            _ = token.cancelled() => Ok(None),
            p = self.slots.acquire_owned() => p.map(Some).map_err(|_| "no slots"),
            _ = tokio::time::sleep(PREFETCH_MAX_WAIT) => {
                // The slots are held by jobs longer than the average said:
                // stop prefetching until short jobs are seen again, or the
                // returned jobs would be claimed back at once.
                shared.prefetch.record_long_wait();
                Err("waited too long for a slot in this worker")
            }
        };
        let n = self.count.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("opsrunner_jobs_prefetched").set(n as f64);
        let permit = waited?;
        // The flag may have been turned off while the job waited; a disabled
        // type is not started, as if it had not been claimed.
        if permit.is_some() && !shared.live.job_type_enabled(&job.job_type) {
            // The slot goes to the next waiting job, or back to the claimer.
            drop(permit);
            shared.signals.slot_freed.notify_one();
            return Err("its job type was disabled before it started");
        }
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::claim_room;

    #[test]
    fn without_prefetch_a_claim_takes_the_free_slots() {
        assert_eq!(claim_room(5, 0, 0), 5);
        assert_eq!(claim_room(0, 0, 0), 0);
    }

    #[test]
    fn an_idle_worker_claims_its_slots_plus_the_allowance() {
        assert_eq!(claim_room(10, 0, 10), 20);
    }

    #[test]
    fn a_busy_worker_refills_only_once_half_the_allowance_is_used() {
        // Every slot busy, 6 of 10 still waiting: no small claim.
        assert_eq!(claim_room(0, 6, 10), 0);
        // 5 of 10 waiting: top up to 10.
        assert_eq!(claim_room(0, 5, 10), 5);
        assert_eq!(claim_room(0, 0, 10), 10);
    }

    #[test]
    fn waiting_jobs_never_make_the_room_negative() {
        assert_eq!(claim_room(1, 20, 10), 0);
    }
}
