//! Runs one claimed job's handler under its timeout and cancellation token,
//! and turns whatever happens (success, error, panic, timeout, cancel,
//! shutdown) into an [`Outcome`] for the completer. It never fails itself.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff;
use crate::handlers::{Handler, HandlerError, JobContext};
use crate::jobs::{bound_error, bound_result};
use crate::worker::Shared;

/// A row returned by the claim query.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedJob {
    pub id: Uuid,
    pub job_type: String,
    pub queue: String,
    pub payload: Value,
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout: Option<Duration>,
    pub cancel_requested: bool,
    pub dry_run: bool,
    pub tenant: Option<String>,
    pub policy_token: Option<crate::policy::Token>,
    /// From `run_at` to the claim.
    pub queue_wait: Duration,
}

/// Why a job's token was cancelled. A token cancelled with no reason set was
/// cancelled through its parent: the daemon is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelReason {
    Requested,
    Timeout,
    LeaseLost,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Succeeded(Value),
    /// Back to `queued` after `delay`, with the error kept.
    Retry {
        error: String,
        delay: Duration,
    },
    Failed(String),
    Cancelled(String),
    /// Back to `queued` now, attempt refunded (graceful stop).
    Requeue(String),
    /// Our lease is gone; another worker owns the row. Write nothing.
    Abandon,
}

#[derive(Debug)]
pub(crate) struct Completion {
    pub id: Uuid,
    pub attempt: i32,
    pub outcome: Outcome,
    /// For metrics labels and the duration histogram.
    pub job_type: String,
    pub queue: String,
    pub duration: Duration,
}

impl Completion {
    /// The outcome of a claimed job whose handler never ran.
    pub(crate) fn unstarted(job: &ClaimedJob, outcome: Outcome) -> Self {
        Self {
            id: job.id,
            attempt: job.attempt,
            outcome,
            job_type: job.job_type.clone(),
            queue: job.queue.clone(),
            duration: Duration::ZERO,
        }
    }
}

pub(crate) async fn execute(
    shared: Arc<Shared>,
    job: ClaimedJob,
    handler: Arc<dyn Handler>,
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
) -> Completion {
    let cfg = shared.cfg();
    let (id, attempt) = (job.id, job.attempt);
    let started = std::time::Instant::now();
    let (job_type, queue) = (job.job_type.clone(), job.queue.clone());
    let done = |outcome| Completion {
        id,
        attempt,
        outcome,
        job_type: job_type.clone(),
        queue: queue.clone(),
        duration: started.elapsed(),
    };
    if job.cancel_requested {
        return done(Outcome::Cancelled("cancelled before start".into()));
    }
    // A prefetched job can be cancelled while it waits for a slot; its
    // handler must not start then.
    if token.is_cancelled() {
        return done(match reason.get() {
            Some(CancelReason::Requested) => Outcome::Cancelled("cancelled before start".into()),
            Some(CancelReason::LeaseLost) => Outcome::Abandon,
            Some(CancelReason::Timeout) | None => {
                Outcome::Requeue("worker shut down before the job started".into())
            }
        });
    }
    // Rows can be inserted by plain SQL: an action job runs (or dry-runs)
    // only with a valid token, whatever the shim checked at enqueue.
    if shared.policy.is_action(&job.job_type)
        && let Err(refusal) = check_policy(&shared, &job).await
    {
        return done(Outcome::Failed(format!("policy token refused: {refusal}")));
    }
    if job.dry_run {
        // Validate only: no side effect. The transition trigger records it.
        let outcome = match handler.validate(&job.payload) {
            Ok(()) => Outcome::Succeeded(serde_json::json!({ "dry_run": true, "valid": true })),
            Err(e) => Outcome::Failed(bound_error(&format!("dry run: invalid payload: {e}"))),
        };
        return done(outcome);
    }
    let timeout = job.timeout.unwrap_or(cfg.default_timeout);
    let ctx = JobContext {
        id,
        job_type: job.job_type.clone(),
        queue: job.queue.clone(),
        attempt,
        max_attempts: job.max_attempts,
        payload: job.payload,
        cancel: token.clone(),
    };
    // A task of its own, so that a panic is caught as a JoinError and a
    // handler that ignores its token can be abandoned.
    let mut task = tokio::spawn(handler.run(ctx));
    let finished = tokio::select! {
        r = &mut task => Some(r),
        _ = tokio::time::sleep(timeout) => {
            let _ = reason.set(CancelReason::Timeout);
            token.cancel();
            None
        }
        _ = token.cancelled() => None,
    };
    let result = match finished {
        Some(r) => Some(r),
        None => match tokio::time::timeout(cfg.cancel_grace, &mut task).await {
            Ok(r) => Some(r),
            Err(_) => {
                task.abort();
                tracing::warn!(grace = ?cfg.cancel_grace, "handler ignored cancellation; abandoned it");
                None
            }
        },
    };

    let retry_or_fail = |msg: String| {
        let error = bound_error(&msg);
        if attempt < job.max_attempts {
            let delay = backoff::delay(attempt as u32, cfg.backoff_base, cfg.backoff_max);
            Outcome::Retry { error, delay }
        } else {
            Outcome::Failed(error)
        }
    };

    // Work that completed is recorded as done even if a cancel raced it.
    if let Some(Ok(Ok(value))) = result {
        return done(Outcome::Succeeded(bound_result(value)));
    }
    if token.is_cancelled() {
        let outcome = match reason.get() {
            Some(CancelReason::Requested) => Outcome::Cancelled("cancelled on request".into()),
            Some(CancelReason::Timeout) => retry_or_fail(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
            Some(CancelReason::LeaseLost) => Outcome::Abandon,
            None => Outcome::Requeue("worker shut down before the job finished".into()),
        };
        return done(outcome);
    }
    let outcome = match result {
        Some(Ok(Ok(_))) => unreachable!("handled above"),
        Some(Ok(Err(HandlerError::Permanent(msg)))) => Outcome::Failed(bound_error(&msg)),
        Some(Ok(Err(HandlerError::Retryable(msg)))) => retry_or_fail(msg),
        Some(Err(join_err)) => retry_or_fail(panic_message(join_err)),
        // Abandoned without the token being cancelled cannot happen: we only
        // wait for the grace period after a cancel.
        None => retry_or_fail("handler abandoned".into()),
    };
    done(outcome)
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "handler task was aborted".into();
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    format!("handler panicked: {msg}")
}

/// Verifies an action job's token and audits the use or the refusal. An
/// audit write that fails is logged, not fatal: the verdict stands.
async fn check_policy(shared: &Shared, job: &ClaimedJob) -> Result<(), crate::policy::Refusal> {
    let verdict = shared.policy.check(
        &job.job_type,
        job.tenant.as_deref(),
        job.policy_token.as_ref().map(|t| t.0.as_str()),
        chrono::Utc::now().timestamp(),
    );
    let (action, detail) = match &verdict {
        Ok(claims) => (
            "policy.used",
            serde_json::json!({ "job_type": job.job_type, "stage": "worker", "attempt": job.attempt,
                                "token_actor": claims.as_ref().map(|c| c.actor.clone()) }),
        ),
        Err(r) => {
            metrics::counter!("opsrunner_policy_token_refusals_total", "reason" => r.code(), "stage" => "worker")
                .increment(1);
            tracing::warn!(job_id = %job.id, job_type = %job.job_type, reason = r.code(),
                "policy token refused; failing the job");
            (
                "policy.refused",
                serde_json::json!({ "job_type": job.job_type, "stage": "worker", "reason": r.code() }),
            )
        }
    };
    let write = async {
        let client = shared.pool.get().await.map_err(crate::Error::from)?;
        crate::audit::record(
            &**client,
            &shared.owner,
            action,
            Some(&job.id.to_string()),
            job.tenant.as_deref(),
            &detail,
        )
        .await
    };
    if let Err(e) = write.await {
        tracing::warn!(error = %e, job_id = %job.id, "could not audit a policy check");
    }
    verdict.map(|_| ())
}
