//! The claimer: fetches as many runnable jobs as there are free slots, in one
//! short committed statement (`FOR UPDATE SKIP LOCKED`), and hands each to an
//! executor task. It wakes on NOTIFY, on a freed slot after a full fetch, and
//! on the poll interval as the backstop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
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
            let free = self.slots.available_permits();
            self.shared.mark_loop();
            if free == 0 {
                // Bounded, so that a daemon busy with long jobs still shows a
                // turning loop to the watchdog.
                tokio::select! {
                    _ = stop_claiming.cancelled() => return,
                    _ = self.shared.slot_freed.notified() => { wake = Wake::Slot; continue; }
                    _ = tokio::time::sleep(self.shared.cfg().poll_interval) => continue,
                }
            }
            let types = self.shared.enabled_job_types();
            if !types.is_empty() {
                match self.claim(free, &types).await {
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
                            self.launch(job).await;
                        }
                        if n == free {
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
                _ = tokio::time::sleep(self.shared.cfg().poll_interval) => wake = Wake::Poll,
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

    async fn launch(&self, job: ClaimedJob) {
        // The claim asked for at most the free slots and only this task takes
        // permits, so this does not wait; if it ever did, waiting is correct.
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let Some(handler) = self.shared.registry().get(&job.job_type) else {
            // Only registered types are claimed, so this is a bug; end the job
            // with an error rather than leave the row running.
            tracing::error!(job_type = %job.job_type, "claimed a job type with no handler");
            let outcome =
                executor::Outcome::Failed("no handler registered for this job type".into());
            let _ = self
                .completions
                .send(Completion {
                    id: job.id,
                    attempt: job.attempt,
                    outcome,
                    job_type: job.job_type.clone(),
                    queue: job.queue.clone(),
                    duration: Duration::ZERO,
                })
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
        let span = tracing::info_span!("job", job_id = %job.id, job_type = %job.job_type, attempt = job.attempt);
        self.tracker.spawn(tracing::Instrument::instrument(
            async move {
                tracing::debug!("started");
                let completion =
                    executor::execute(shared.clone(), job, handler, token, reason).await;
                tracing::debug!(outcome = ?completion.outcome, "finished");
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
