//! Prefetch: a claim also takes jobs beyond the free slots, up to
//! `worker.prefetch` while jobs are short, and for longer jobs as many as
//! start during two claims (see [`Prefetch::allowance`]). Each waits in its
//! task for a slot, so a slot freed by a finished job starts the next one at
//! once rather than after a claim's round trip and commit. Held jobs are `running` rows with this worker's
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
    /// Recent claim time in µs (moving average): the round trip and commit
    /// a freed slot would wait for without a job at hand.
    claim_time_us: AtomicU64,
    /// Claimed jobs waiting for a slot.
    pub waiting: Arc<AtomicUsize>,
}

impl Default for Prefetch {
    fn default() -> Self {
        Self {
            // Unknown (0) until a job has run: assumed long, so a daemon
            // that starts on a queue of hour-long jobs holds none back.
            job_time_us: AtomicU64::new(0),
            // Until measured: a claim's typical 2-5 ms on a local server.
            claim_time_us: AtomicU64::new(5_000),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Prefetch {
    /// Folds one job's run time into the moving average (weight 1/8).
    /// Concurrent updates may lose one sample; the average stays sound.
    pub fn record_job_time(&self, d: Duration) {
        fold(&self.job_time_us, d);
    }

    /// Folds one claim's duration into its moving average (weight 1/8).
    pub fn record_claim_time(&self, d: Duration) {
        fold(&self.claim_time_us, d);
    }

    /// How many jobs may wait here for a slot. Short jobs (under 50 ms on
    /// average): `configured`, since a round trip per job would cost more
    /// than the job. Longer ones: the jobs that start while four claims run
    /// when every slot is busy (Little's law: `slots / job time` start per
    /// second), so that a freed slot finds one at hand instead of waiting for
    /// the next claim, and no more, so that no job waits here long while
    /// another worker is idle: 500 slots of 100 ms jobs with 5 ms claims
    /// hold 100; hour-long jobs hold none. Four, not two: claim times on a
    /// busy disk vary by 10x (`opsrunner bench --long-jobs`, 100 ms jobs:
    /// none held 81 % of 500 slots busy and 77 % of 2,000, two claims' worth
    /// 93 % and 77 %, four 96.5 % and 95.3 %).
    pub fn allowance(&self, configured: usize, slots: usize) -> usize {
        let job = self.job_time_us.load(Ordering::Relaxed);
        if job == 0 {
            return 0;
        }
        if job < PREFETCH_SHORT_JOB.as_micros() as u64 {
            return configured;
        }
        let claim = self.claim_time_us.load(Ordering::Relaxed);
        let need = 4 * slots as u128 * claim as u128 / job as u128;
        configured.min(usize::try_from(need).unwrap_or(usize::MAX))
    }

    /// A prefetched job waited too long for a slot: count jobs as long
    /// enough (ten times that wait) that nothing is held until the jobs
    /// seen finishing say otherwise.
    pub fn record_long_wait(&self) {
        let long = u64::try_from((PREFETCH_MAX_WAIT * 10).as_micros()).unwrap_or(u64::MAX);
        self.job_time_us.fetch_max(long, Ordering::Relaxed);
    }
}

/// `avg += (sample - avg) / 8`, in µs. Concurrent updates may lose one
/// sample; the average stays sound.
/// The first sample is taken as it is (0 means none yet; a sample of 0 µs
/// counts as 1).
fn fold(avg: &AtomicU64, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    let old = avg.load(Ordering::Relaxed);
    let new = if old == 0 { us } else { old - old / 8 + us / 8 };
    avg.store(new.max(1), Ordering::Relaxed);
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
    use super::{Prefetch, claim_room};
    use std::time::Duration;

    fn settled(job: Duration, claim: Duration) -> Prefetch {
        let p = Prefetch::default();
        for _ in 0..200 {
            p.record_job_time(job);
            p.record_claim_time(claim);
        }
        p
    }

    #[test]
    fn short_jobs_get_the_configured_allowance() {
        let p = settled(Duration::from_millis(1), Duration::from_millis(5));
        assert_eq!(p.allowance(100, 100), 100);
    }

    #[test]
    fn longer_jobs_get_what_starts_during_four_claims_and_hour_long_ones_none() {
        let p = settled(Duration::from_millis(100), Duration::from_millis(5));
        // 500 slots / 100 ms = 5,000 starts/s; four 5 ms claims: about 100.
        let n = p.allowance(500, 500);
        assert!((90..=100).contains(&n), "{n}");
        assert_eq!(p.allowance(10, 500), 10, "never above the configured cap");
        let hour = settled(Duration::from_secs(3600), Duration::from_millis(5));
        assert_eq!(hour.allowance(500, 500), 0);
        // Unmeasured (a fresh daemon): assumed long, so nothing is held.
        assert_eq!(Prefetch::default().allowance(500, 500), 0);
        // A prefetched job waited too long: nothing is held after that.
        p.record_long_wait();
        assert_eq!(p.allowance(500, 500), 0);
    }

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
