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

use super::backoff::Backoff;
use super::executor::{self, ClaimedJob, Completion};
use super::prefetch::{Prefetched, STOPPED_BEFORE_START, Slot, claim_room};
use super::state::Shared;
use crate::db::{self, queries};
use crate::error::Result;

/// The claimer's dependencies.
pub(crate) struct Claimer {
    /// Config, flags, pool, running map, prefetch state.
    pub shared: Arc<Shared>,
    /// One permit per execution slot (`worker.concurrency`).
    pub slots: Arc<Semaphore>,
    /// Where outcomes go (the completer).
    pub completions: mpsc::Sender<Completion>,
    /// Every job task, so that the drain can wait for them.
    pub tracker: TaskTracker,
    /// Parent of every job's token: cancelled when the drain time is over.
    pub jobs_root: CancellationToken,
    /// Claimed jobs waiting for a slot (shared with `Prefetch::waiting`).
    pub prefetched: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
enum Wake {
    Start,
    Notify,
    Poll,
    Slot,
}

impl Claimer {
    /// Runs until `stop_claiming` is cancelled.
    pub async fn run(self, stop_claiming: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut wake = Wake::Start;
        // Set when a limit held jobs back: try again then, not after the
        // poll interval.
        let mut limit_retry: Option<Duration> = None;
        loop {
            if stop_claiming.is_cancelled() {
                return;
            }
            let cfg = self.shared.cfg();
            let prefetch = self
                .shared
                .prefetch
                .allowance(cfg.prefetch(), cfg.concurrency);
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
                    _ = self.shared.signals.slot_freed.notified() => { wake = Wake::Slot; continue; }
                    _ = tokio::time::sleep(cfg.poll_interval) => continue,
                }
            }
            let types = self.shared.live.enabled_job_types();
            if !types.is_empty() {
                match self.claim(room, &types).await {
                    Ok((jobs, retry)) => {
                        limit_retry = retry;
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
                            // A LISTEN reconnect means the database is back:
                            // retry now rather than after up to 10 s.
                            _ = self.shared.signals.wake.notified() => {}
                        }
                        continue;
                    }
                }
            }
            let wait = limit_retry.map_or(cfg.poll_interval, |r| r.min(cfg.poll_interval));
            tokio::select! {
                _ = stop_claiming.cancelled() => return,
                _ = self.shared.signals.wake.notified() => wake = Wake::Notify,
                _ = tokio::time::sleep(wait) => wake = Wake::Poll,
            }
        }
    }

    /// The unlimited types in one statement, then each limited type in its
    /// own short transaction (its limit row locked, so daemons take turns;
    /// see `limits`), while slots remain. Also when a held-back type
    /// should be tried again.
    async fn claim_with_limits(
        &self,
        params: &queries::ClaimParams<'_>,
        limits: &super::state::Limits,
    ) -> Result<(Vec<tokio_postgres::Row>, Option<Duration>)> {
        let shared = &self.shared;
        let (limited, free): (Vec<String>, Vec<String>) = params
            .job_types
            .iter()
            .cloned()
            .partition(|t| limits.contains_key(t));
        db::bounded(shared.call_timeout, async {
            let mut c = db::checkout(&shared.pool).await?;
            let mut rows = Vec::new();
            let mut retry: Option<Duration> = None;
            if !free.is_empty() {
                let p = queries::ClaimParams { job_types: &free, ..*params };
                rows = queries::claim(&*c, &p).await?;
            }
            for t in &limited {
                let room = params.limit - rows.len() as i64;
                if room <= 0 {
                    break;
                }
                let p = queries::ClaimParams { limit: room, ..*params };
                let got = super::limits::claim(&mut c, t, &p).await?;
                if let Some(kind) = got.bound {
                    metrics::counter!("opsrunner_limit_reached_total", "job_type" => t.clone(), "limit" => kind.label())
                        .increment(1);
                }
                if let Some(after) = got.retry_after {
                    retry = Some(retry.map_or(after, |r| r.min(after)));
                }
                rows.extend(got.rows);
            }
            c.release();
            Ok((rows, retry))
        })
        .await
    }

    /// The claimed jobs, and when to try again if a limit held some back.
    async fn claim(
        &self,
        n: usize,
        types: &[String],
    ) -> Result<(Vec<ClaimedJob>, Option<Duration>)> {
        let shared = &self.shared;
        let cfg = shared.cfg();
        let queues = (!cfg.queues.is_empty()).then_some(cfg.queues.as_slice());
        let params = queries::ClaimParams {
            job_types: types,
            queues,
            limit: n as i64,
            owner: &shared.owner,
            lease_secs: cfg.lease.as_secs_f64(),
        };
        let claimed = std::time::Instant::now();
        let limits = shared.live.limits();
        let (rows, retry) = if limits.is_empty() {
            // The common case: one statement for every enabled type.
            db::bounded(shared.call_timeout, async {
                let c = db::checkout(&shared.pool).await?;
                let rows = queries::claim(&*c, &params).await?;
                c.release();
                Ok((rows, None))
            })
            .await?
        } else {
            self.claim_with_limits(&params, &limits).await?
        };
        shared.prefetch.record_claim_time(claimed.elapsed());
        shared
            .stats
            .claimed
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        // Each row on its own: one that cannot be decoded must not take the
        // others of its batch down with it.
        let jobs = rows
            .iter()
            .filter_map(|r| match ClaimedJob::from_row(r, claimed) {
                Ok(job) => Some(job),
                Err(e) => {
                    // Without its id and attempt it cannot be completed; its
                    // lease expires and the rescuer ends it after its attempts.
                    let id = r.try_get::<_, uuid::Uuid>("id").ok();
                    tracing::error!(job_id = ?id, error = %e, "a claimed row cannot be decoded; leaving it to lease expiry");
                    None
                }
            })
            .collect();
        Ok((jobs, retry))
    }

    async fn launch(&self, job: ClaimedJob, stop_claiming: &CancellationToken) {
        if stop_claiming.is_cancelled() {
            // The stop came while the claim was on its way: a stopping
            // daemon starts nothing new, so the job goes straight back.
            let outcome = executor::Outcome::Requeue(STOPPED_BEFORE_START.into());
            end_unstarted(&self.completions, &job, outcome).await;
            return;
        }
        if let Some(why) = &job.undecodable {
            tracing::warn!(job_id = %job.id, job_type = %job.job_type, "failing a job whose payload cannot be decoded");
            let outcome = executor::Outcome::Failed(why.clone());
            end_unstarted(&self.completions, &job, outcome).await;
            return;
        }
        let Some(handler) = self.shared.live.registry().get(&job.job_type) else {
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
            (
                "queue",
                crate::metrics::queue_label(&self.shared.cfg().queues, &job.queue),
            ),
        ];
        metrics::counter!("opsrunner_jobs_claimed_total", &labels).increment(1);
        metrics::histogram!("opsrunner_job_queue_wait_seconds", &labels)
            .record(job.queue_wait.as_secs_f64());
        let (token, reason) =
            self.shared
                .running
                .track((job.id, job.attempt), job.claimed, &self.jobs_root);
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
                shared.prefetch.record_job_time(completion.duration);
                // Only fails when the completer is gone, i.e. after a forced
                // stop: the lease expiry recovers the job then.
                let _ = completions.send(completion).await;
                drop(permit);
                shared.signals.slot_freed.notify_one();
            },
            span,
        ));
    }
}

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
