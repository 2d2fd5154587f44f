//! The claimer: fetches as many runnable jobs as there are free slots (plus
//! the prefetch allowance), in one short committed statement (`FOR UPDATE
//! SKIP LOCKED`), and hands each to an executor task. It wakes on NOTIFY, on
//! a freed slot after a full fetch, and on the poll interval as the backstop.
//!
//! Prefetch: while jobs are short, a claim also takes up to
//! `worker.prefetch` jobs beyond the free slots. Each waits in its task for a
//! slot, so a slot freed by a finished job starts the next one at once rather
//! than after a round trip. The claimer refills only when half of that
//! allowance is used up, which keeps claims large: a claim's cost hardly
//! depends on how many rows it takes (measured: 10-row claims and
//! completions cost 150 µs of CPU per job, 200-row ones 55 µs). Held jobs are
//! `running` rows with this worker's lease, renewed by the heartbeat like any
//! other. One that waits too long, whose type gets disabled, or that is still
//! waiting when the worker stops goes back to `queued` with its attempt
//! refunded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::executor::{self, ClaimedJob, Completion};
use crate::worker::Shared;

pub(crate) struct Producer {
    pub shared: Arc<Shared>,
    pub slots: Arc<Semaphore>,
    pub completions: mpsc::Sender<Completion>,
    pub tracker: TaskTracker,
    /// Parent of every job's token: cancelled when the drain time is over.
    pub jobs_root: CancellationToken,
    /// Claimed jobs waiting for a slot.
    pub prefetched: Arc<AtomicUsize>,
}

/// A prefetched job that waited this long for a slot goes back to the queue,
/// so that a misjudged burst of long jobs does not hold rows that another
/// worker could run.
pub(crate) const PREFETCH_MAX_WAIT: Duration = Duration::from_secs(2);

/// How many jobs to claim now, given the free slots, the jobs already
/// waiting for one and the prefetch allowance. While every slot is busy,
/// nothing is claimed until half of the allowance is used up: many small
/// claims cost far more than a few large ones.
pub(crate) fn claim_room(free: usize, waiting: usize, prefetch: usize) -> usize {
    if free == 0 && waiting * 2 > prefetch {
        return 0;
    }
    (free + prefetch).saturating_sub(waiting)
}

#[derive(Clone, Copy)]
enum Wake {
    Start,
    Notify,
    Poll,
    Slot,
}

impl Producer {
    /// Runs until `stop_claiming` is cancelled.
    pub async fn run(self, stop_claiming: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut wake = Wake::Start;
        loop {
            if stop_claiming.is_cancelled() {
                return;
            }
            let cfg = self.shared.cfg();
            let prefetch = if self.shared.jobs_are_short() {
                cfg.prefetch()
            } else {
                0
            };
            let room = claim_room(
                self.slots.available_permits(),
                self.prefetched.load(Ordering::Acquire),
                prefetch,
            );
            self.shared.mark_loop();
            if room == 0 {
                // Bounded, so that a daemon busy with long jobs still shows a
                // turning loop to the watchdog.
                tokio::select! {
                    _ = stop_claiming.cancelled() => return,
                    _ = self.shared.slot_freed.notified() => { wake = Wake::Slot; continue; }
                    _ = tokio::time::sleep(cfg.poll_interval) => continue,
                }
            }
            let types = self.shared.enabled_job_types();
            if !types.is_empty() {
                match self.claim(room, &types).await {
                    Ok(jobs) => {
                        self.shared.mark_db_ok();
                        backoff.reset();
                        let n = jobs.len();
                        let counter = match wake {
                            Wake::Notify => Some(&self.shared.stats.notify_claims),
                            Wake::Poll => Some(&self.shared.stats.poll_claims),
                            Wake::Start | Wake::Slot => None,
                        };
                        if let Some(c) = counter {
                            c.fetch_add(n as u64, Ordering::Relaxed);
                            let source = if matches!(wake, Wake::Notify) {
                                "notify"
                            } else {
                                "poll"
                            };
                            metrics::counter!("opsrunner_job_pickups_total", "source" => source)
                                .increment(n as u64);
                        }
                        for job in jobs {
                            self.launch(job, &stop_claiming).await;
                        }
                        if n == room {
                            // More may be waiting: fetch again as slots free up.
                            wake = Wake::Slot;
                            continue;
                        }
                    }
                    Err(e) => {
                        self.shared.db_error();
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in = ?delay, "claim failed");
                        tokio::select! {
                            _ = stop_claiming.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = stop_claiming.cancelled() => return,
                _ = self.shared.wake.notified() => wake = Wake::Notify,
                _ = tokio::time::sleep(cfg.poll_interval) => wake = Wake::Poll,
            }
        }
    }

    async fn claim(&self, n: usize, types: &[String]) -> Result<Vec<ClaimedJob>> {
        let shared = &self.shared;
        let client = shared.pool.get().await.map_err(Error::from)?;
        let stmt = client
            .prepare_cached(include_str!("../sql/queries/claim.sql"))
            .await?;
        let cfg = shared.cfg();
        let queues: Option<&Vec<String>> = (!cfg.queues.is_empty()).then_some(&cfg.queues);
        let limit = n as i64;
        let lease = cfg.lease.as_secs_f64();
        let rows = client
            .query(&stmt, &[&types, &queues, &limit, &shared.owner, &lease])
            .await?;
        shared
            .stats
            .claimed
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        // By name and fallible: a schema mismatch must be an error (the rows
        // then come back through lease expiry), never a panic in the claimer.
        rows.iter()
            .map(|r| {
                Ok(ClaimedJob {
                    id: r.try_get("id")?,
                    job_type: r.try_get("job_type")?,
                    queue: r.try_get("queue")?,
                    payload: r.try_get("payload")?,
                    attempt: r.try_get("attempt")?,
                    max_attempts: r.try_get("max_attempts")?,
                    timeout: r
                        .try_get::<_, Option<f64>>("timeout_secs")?
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .map(Duration::from_secs_f64),
                    cancel_requested: r.try_get("cancel_requested")?,
                    dry_run: r.try_get("dry_run")?,
                    tenant: r.try_get("tenant_id")?,
                    policy_token: r
                        .try_get::<_, Option<String>>("policy_token")?
                        .map(crate::policy::Token),
                    queue_wait: Duration::from_secs_f64(
                        r.try_get::<_, Option<f64>>("queue_wait_secs")?
                            .unwrap_or(0.0)
                            .max(0.0),
                    ),
                })
            })
            .collect()
    }

    async fn launch(&self, job: ClaimedJob, stop_claiming: &CancellationToken) {
        if stop_claiming.is_cancelled() {
            // The stop came while the claim was on its way: a stopping
            // daemon starts nothing new, so the job goes straight back.
            let outcome = executor::Outcome::Requeue(STOPPED_BEFORE_START.into());
            end_unstarted(&self.completions, &job, outcome).await;
            return;
        }
        let Some(handler) = self.shared.registry().get(&job.job_type) else {
            // Only registered types are claimed, so this is a bug; end the job
            // with an error rather than leave the row running.
            tracing::error!(job_type = %job.job_type, "claimed a job type with no handler");
            let why = "no handler registered for this job type";
            end_unstarted(
                &self.completions,
                &job,
                executor::Outcome::Failed(why.into()),
            )
            .await;
            return;
        };
        let labels = [
            ("job_type", job.job_type.clone()),
            ("queue", job.queue.clone()),
        ];
        metrics::counter!("opsrunner_jobs_claimed_total", &labels).increment(1);
        metrics::histogram!("opsrunner_job_queue_wait_seconds", &labels)
            .record(job.queue_wait.as_secs_f64());
        let (token, reason) = self.shared.track_running(job.id, &self.jobs_root);
        let shared = self.shared.clone();
        let completions = self.completions.clone();
        // A free slot is taken here, in claim order; otherwise the job is
        // prefetched and its task queues for a slot (the semaphore is fair).
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Slot::Taken(permit),
            Err(_) => {
                let n = self.prefetched.fetch_add(1, Ordering::AcqRel) + 1;
                metrics::gauge!("opsrunner_jobs_prefetched").set(n as f64);
                Slot::Wait(Prefetched {
                    slots: self.slots.clone(),
                    count: self.prefetched.clone(),
                    stop: stop_claiming.clone(),
                })
            }
        };
        let span = tracing::info_span!("job", job_id = %job.id, job_type = %job.job_type, attempt = job.attempt);
        self.tracker.spawn(tracing::Instrument::instrument(
            async move {
                let permit = match slot {
                    Slot::Taken(p) => Some(p),
                    Slot::Wait(w) => match w.wait_for_slot(&shared, &job, &token).await {
                        Ok(p) => p,
                        Err(why) => {
                            tracing::debug!(why, "prefetched job returned to the queue");
                            let outcome = executor::Outcome::Requeue(why.into());
                            end_unstarted(&completions, &job, outcome).await;
                            return;
                        }
                    },
                };
                tracing::debug!("started");
                let completion =
                    executor::execute(shared.clone(), job, handler, token, reason).await;
                tracing::debug!(outcome = ?completion.outcome, "finished");
                shared.record_job_time(completion.duration);
                // Only fails when the completer is gone, i.e. after a forced
                // stop: the lease expiry recovers the job then.
                let _ = completions.send(completion).await;
                drop(permit);
                shared.slot_freed.notify_one();
            },
            span,
        ));
    }
}

/// Why a job claimed by a daemon that began to stop went back unstarted.
const STOPPED_BEFORE_START: &str = "the worker stopped before the job started";

/// Ends a claimed job that will not run here with `outcome`, written by the
/// completer like any other.
async fn end_unstarted(
    completions: &mpsc::Sender<Completion>,
    job: &ClaimedJob,
    outcome: executor::Outcome,
) {
    // Only fails when the completer is gone (a forced stop): the lease expiry
    // recovers the job then.
    let _ = completions.send(Completion::unstarted(job, outcome)).await;
}

enum Slot {
    Taken(tokio::sync::OwnedSemaphorePermit),
    Wait(Prefetched),
}

/// What a prefetched job's task needs while it waits for a slot.
struct Prefetched {
    slots: Arc<Semaphore>,
    count: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Prefetched {
    /// A slot, or no slot when the job was cancelled meanwhile (the executor
    /// then ends it at once without running the handler), or the reason to
    /// hand the job back to the queue.
    async fn wait_for_slot(
        self,
        shared: &Shared,
        job: &ClaimedJob,
        token: &CancellationToken,
    ) -> std::result::Result<Option<tokio::sync::OwnedSemaphorePermit>, &'static str> {
        let waited = tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(STOPPED_BEFORE_START),
            _ = token.cancelled() => Ok(None),
            p = self.slots.acquire_owned() => p.map(Some).map_err(|_| "no slots"),
            _ = tokio::time::sleep(PREFETCH_MAX_WAIT) => {
                // The slots are held by jobs longer than the average said:
                // stop prefetching until short jobs are seen again, or the
                // returned jobs would be claimed back at once.
                shared.record_long_wait();
                Err("waited too long for a slot in this worker")
            }
        };
        let n = self.count.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("opsrunner_jobs_prefetched").set(n as f64);
        let permit = waited?;
        // The flag may have been turned off while the job waited; a disabled
        // type is not started, as if it had not been claimed.
        if permit.is_some() && !shared.job_type_enabled(&job.job_type) {
            // The slot goes to the next waiting job, or back to the claimer.
            drop(permit);
            shared.slot_freed.notify_one();
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
