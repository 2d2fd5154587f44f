//! Writes outcomes in batches (one UPDATE ... FROM unnest per batch), retried
//! with backoff until written. If the daemon must stop while the database is
//! unreachable, the unwritten jobs keep their lease, which expires, and the
//! rescuer puts them back in the queue: nothing is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::backoff::Backoff;
use super::executor::{Completion, Outcome};
use super::outcome_log::Logged;
use super::state::Shared;
use crate::db::{self, is_transient, queries};
use crate::error::Result;
use crate::jobs::bound_error;

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Completion>,
    give_up: CancellationToken,
) {
    let max = shared.cfg().completion_batch;
    let mut batch = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        write_until_done(&shared, &mut batch, &give_up).await;
        batch.clear();
    }
}

async fn write_until_done(shared: &Shared, batch: &mut [Completion], give_up: &CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        match write(shared, batch).await {
            Ok(()) => return,
            Err(e) if is_transient(&e) => {
                shared.db_error();
                if give_up.is_cancelled() {
                    tracing::error!(
                        jobs = batch.len(), error = %e,
                        "stopping with unwritten completions; their leases will expire and the rescuer will requeue them"
                    );
                    return;
                }
                tracing::warn!(jobs = batch.len(), error = %e, "cannot write completions; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = give_up.cancelled() => {}
                }
            }
            Err(e) => {
                // The data itself was refused (say a result the table's CHECK
                // rejects). Write one by one so that one bad row cannot block
                // the others, and store a bounded error for the bad one.
                tracing::warn!(error = %e, "a completion batch was refused; writing one by one");
                for c in batch.iter_mut() {
                    write_single(shared, c, give_up).await;
                }
                return;
            }
        }
    }
}

async fn write_single(shared: &Shared, c: &mut Completion, give_up: &CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut replaced = false;
    loop {
        match write(shared, std::slice::from_mut(c)).await {
            Ok(()) => return,
            Err(e) if is_transient(&e) && !give_up.is_cancelled() => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) if !is_transient(&e) && !replaced => {
                replaced = true;
                c.outcome = Outcome::Failed(bound_error(&format!(
                    "the job's outcome could not be stored: {e}"
                )));
            }
            Err(e) => {
                tracing::error!(job_id = %c.id, error = %e, "giving up on a completion; the lease expiry will recover the job");
                return;
            }
        }
    }
}

/// Writes one batch: builds the columns, runs `worker/complete.sql` (and,
/// with delete-on-success, `worker/delete_succeeded.sql` for the
/// successes), then counts what was written and what was fenced out.
///
/// A batch that needs both runs them in one transaction, so that a retry
/// after a failure finds neither written (a row one of them had committed
/// would be fenced out of the retry and counted stale).
async fn write(shared: &Shared, batch: &[Completion]) -> Result<()> {
    let deleting = shared.retention.deletes_on_success();
    let deleted = |c: &Completion| deleting && matches!(c.outcome, Outcome::Succeeded(_));
    let cols = columns(batch.iter().filter(|c| !deleted(c)));
    let (gone_ids, gone_attempts): (Vec<Uuid>, Vec<i32>) = batch
        .iter()
        .filter(|c| deleted(c))
        .map(|c| (c.id, c.attempt))
        .unzip();
    let owner = shared.owner.as_str();
    let d = shared.call_timeout;
    if gone_ids.is_empty() && cols.ids.is_empty() {
        record_outcomes(shared, &HashSet::new(), batch);
        return Ok(());
    }
    let mut c = db::bounded(d, db::checkout(&shared.pool)).await?;
    let written: Vec<Uuid> = db::bounded(d, async {
        if gone_ids.is_empty() {
            return queries::complete(&*c, &cols, owner).await;
        }
        if cols.ids.is_empty() {
            return queries::delete_succeeded(&*c, &gone_ids, &gone_attempts, owner).await;
        }
        let tx = c.transaction().await?;
        let mut both = queries::delete_succeeded(&tx, &gone_ids, &gone_attempts, owner).await?;
        both.extend(queries::complete(&tx, &cols, owner).await?);
        tx.commit().await?;
        Ok(both)
    })
    .await?;
    c.release();
    let written: HashSet<Uuid> = written.into_iter().collect();
    record_outcomes(shared, &written, batch);
    Ok(())
}

/// The seven `unnest` arrays of a batch; abandoned outcomes write nothing.
fn columns<'a>(batch: impl Iterator<Item = &'a Completion>) -> queries::CompleteColumns {
    let mut cols = queries::CompleteColumns::default();
    for c in batch {
        let Some(status) = c.outcome.status() else {
            continue;
        };
        let (result, error, delay, refund) = match &c.outcome {
            Outcome::Succeeded(v) => (Some(v.clone()), None, None, false),
            Outcome::Retry { error, delay } => {
                (None, Some(error.clone()), Some(delay.as_secs_f64()), false)
            }
            Outcome::Failed(e) | Outcome::Cancelled(e) => (None, Some(e.clone()), None, false),
            Outcome::Requeue(e) => (None, Some(e.clone()), Some(0.0), true),
            Outcome::Abandon => continue,
        };
        cols.ids.push(c.id);
        cols.attempts.push(c.attempt);
        cols.statuses.push(status);
        cols.results.push(result);
        cols.errors.push(error);
        cols.delays.push(delay);
        cols.refunds.push(refund);
    }
    cols
}

/// The log line of a written outcome: failures at WARN, retries and
/// cancellations at INFO, successes and graceful requeues at DEBUG; within
/// the rate limit of [`super::outcome_log`].
fn log_outcome(shared: &Shared, c: &Completion) {
    let (what, error) = match &c.outcome {
        Outcome::Failed(e) => (Logged::Failed, e),
        Outcome::Retry { error, .. } => (Logged::Retried, error),
        Outcome::Cancelled(e) => (Logged::Cancelled, e),
        Outcome::Succeeded(_) | Outcome::Requeue(_) | Outcome::Abandon => {
            tracing::debug!(job_id = %c.id, job_type = %c.job_type, outcome = c.outcome.label(), "job finished");
            return;
        }
    };
    if !shared.outcome_log.allow(what) {
        return;
    }
    let error = bound_error(error);
    let duration_ms = c.duration.as_millis() as u64;
    match &c.outcome {
        Outcome::Retry { delay, .. } => tracing::info!(
            job_id = %c.id, job_type = %c.job_type, queue = %c.queue, attempt = c.attempt,
            duration_ms, retry_in_ms = delay.as_millis() as u64, error = %error,
            "job attempt failed; it will be retried"
        ),
        Outcome::Cancelled(_) => tracing::info!(
            job_id = %c.id, job_type = %c.job_type, queue = %c.queue, attempt = c.attempt,
            duration_ms, error = %error,
            "job cancelled"
        ),
        _ => tracing::warn!(
            job_id = %c.id, job_type = %c.job_type, queue = %c.queue, attempt = c.attempt,
            duration_ms, error = %error,
            "job failed"
        ),
    }
}

/// Stats, metrics and the fencing log for a written batch, then forgets its
/// jobs.
fn record_outcomes(shared: &Shared, written: &HashSet<Uuid>, batch: &[Completion]) {
    // Once per batch, not per job: the queues decide the `queue` label.
    let cfg = shared.cfg();
    let mut abandoned = 0;
    for c in batch {
        let kind = match &c.outcome {
            Outcome::Abandon => {
                abandoned += 1;
                continue;
            }
            Outcome::Succeeded(_) => &shared.stats.succeeded,
            Outcome::Retry { .. } => &shared.stats.retried,
            Outcome::Failed(_) => &shared.stats.failed,
            Outcome::Cancelled(_) => &shared.stats.cancelled,
            Outcome::Requeue(_) => &shared.stats.requeued,
        };
        if written.contains(&c.id) {
            kind.fetch_add(1, Ordering::Relaxed);
            log_outcome(shared, c);
            let outcome = c.outcome.label();
            let labels = [
                ("job_type", c.job_type.clone()),
                ("queue", crate::metrics::queue_label(&cfg.queues, &c.queue)),
                ("outcome", outcome.to_string()),
            ];
            metrics::counter!("opsrunner_jobs_completed_total", &labels).increment(1);
            metrics::histogram!("opsrunner_job_duration_seconds", "job_type" => c.job_type.clone(), "outcome" => outcome)
                .record(c.duration.as_secs_f64());
        } else {
            // Fenced: our lease expired and the row moved on without us.
            shared
                .stats
                .stale_completions
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("opsrunner_stale_completions_total").increment(1);
            if shared.outcome_log.allow(Logged::Refused) {
                tracing::warn!(
                    job_id = %c.id,
                    job_type = %c.job_type,
                    queue = %c.queue,
                    attempt = c.attempt,
                    duration_ms = c.duration.as_millis() as u64,
                    "job outcome refused: this worker no longer holds the job's lease \
                     (the rescuer or another worker has it)"
                );
            }
        }
    }
    shared.outcome_log.flush_if_due();
    shared
        .running
        .forget(batch.iter().map(|c| (c.id, c.attempt)));
    if abandoned > 0 {
        tracing::warn!(
            jobs = abandoned,
            "dropped outcomes of jobs whose lease was lost"
        );
    }
}
