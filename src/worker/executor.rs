//! Runs one claimed job's handler under its timeout and cancellation token,
//! and turns whatever happens (success, error, panic, timeout, cancel,
//! shutdown) into an [`Outcome`] for the completer. It never fails itself.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::backoff;
use super::running::CancelReason;
use super::state::Shared;
use crate::config::WorkerConfig;
use crate::handlers::{Handler, HandlerError, HandlerResult, JobContext};
use crate::jobs::{bound_error, bound_result};

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
    /// Why the row's payload could not be decoded (bounded), if it could
    /// not: the job then fails alone, through the normal fenced completion.
    pub undecodable: Option<String>,
    /// When the claim that returned it started: its lease lasts at least
    /// `lease` from here.
    pub claimed: std::time::Instant,
    /// The database's clock at the claim, in Unix seconds.
    pub db_now: i64,
}

impl ClaimedJob {
    /// Decodes a row of `worker/claim.sql`. By name and fallible: a schema
    /// mismatch must be an error (the rows then come back through lease
    /// expiry), never a panic in the claimer.
    ///
    /// PostgreSQL stores JSON that serde cannot read (nesting deeper than its
    /// recursion limit of 128, numbers such as `1e1000`): such a payload is
    /// kept as `null` and the reason in `undecodable`, so that one row fails
    /// alone instead of its whole batch.
    pub(crate) fn from_row(
        r: &tokio_postgres::Row,
        claimed: std::time::Instant,
    ) -> crate::Result<Self> {
        let (payload, undecodable) = match r.try_get::<_, Value>("payload") {
            Ok(v) => (v, None),
            Err(e) => (
                Value::Null,
                Some(bound_error(&format!(
                    "the job's payload cannot be decoded: {e}"
                ))),
            ),
        };
        Ok(ClaimedJob {
            id: r.try_get("id")?,
            job_type: r.try_get("job_type")?,
            queue: r.try_get("queue")?,
            payload,
            undecodable,
            claimed,
            db_now: r.try_get::<_, f64>("db_now")?.floor() as i64,
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
    }
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

impl Outcome {
    /// The status `complete.sql` writes; `None` for [`Outcome::Abandon`].
    pub fn status(&self) -> Option<&'static str> {
        Some(match self {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Retry { .. } | Outcome::Requeue(_) => "queued",
            Outcome::Failed(_) => "failed",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::Abandon => return None,
        })
    }

    /// The `outcome` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Retry { .. } => "retried",
            Outcome::Failed(_) => "failed",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::Requeue(_) => "requeued",
            Outcome::Abandon => "abandoned",
        }
    }
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

/// Runs `job` to an outcome: refusals first (cancelled, stopping, policy,
/// dry run), then the handler under its timeout, then the classification.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    job: ClaimedJob,
    handler: Arc<dyn Handler>,
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
) -> Completion {
    let started = std::time::Instant::now();
    let mut completion = Completion::unstarted(&job, Outcome::Abandon);
    completion.outcome = match refuse_before_start(&shared, &job, &*handler, &token, &reason).await
    {
        Some(outcome) => outcome,
        None => {
            let cfg = shared.cfg();
            let timeout = job.timeout.unwrap_or(cfg.default_timeout);
            let (attempt, max_attempts) = (job.attempt, job.max_attempts);
            let clock = (shared.clock_offset(), cfg.clock_offset_limit);
            let result = run_handler(&cfg, job, handler, &token, &reason, timeout, clock).await;
            let retry_or_fail = |msg: String| {
                let error = bound_error(&msg);
                if attempt < max_attempts {
                    let delay = backoff::delay(attempt as u32, cfg.backoff_base, cfg.backoff_max);
                    Outcome::Retry { error, delay }
                } else {
                    Outcome::Failed(error)
                }
            };
            classify(result, &token, &reason, timeout, retry_or_fail)
        }
    };
    completion.duration = started.elapsed();
    completion
}

/// The outcome of a job whose handler must not start, or `None` to run it.
async fn refuse_before_start(
    shared: &Shared,
    job: &ClaimedJob,
    handler: &dyn Handler,
    token: &CancellationToken,
    reason: &OnceLock<CancelReason>,
) -> Option<Outcome> {
    if job.cancel_requested {
        return Some(Outcome::Cancelled("cancelled before start".into()));
    }
    // A prefetched job can be cancelled while it waits for a slot; its
    // handler must not start then.
    if token.is_cancelled() {
        return Some(match reason.get() {
            Some(CancelReason::Requested) => Outcome::Cancelled("cancelled before start".into()),
            Some(CancelReason::LeaseLost) => Outcome::Abandon,
            Some(CancelReason::Timeout) | None => {
                Outcome::Requeue("worker shut down before the job started".into())
            }
        });
    }
    // Rows can be inserted by plain SQL: an action job runs (or dry-runs)
    // only with a valid token, whatever the shim checked at enqueue.
    if shared.policy.is_action(&job.job_type) {
        match check_policy(shared, job).await {
            Ok(()) => {}
            Err(PolicyStop::Refused(refusal)) => {
                return Some(Outcome::Failed(format!("policy token refused: {refusal}")));
            }
            Err(PolicyStop::Unverified(e)) => {
                return Some(Outcome::Requeue(bound_error(&format!(
                    "could not check the policy token's use: {e}"
                ))));
            }
        }
    }
    if job.dry_run {
        // Validate only: no side effect. The transition trigger records it.
        return Some(match handler.validate(&job.payload) {
            Ok(()) => Outcome::Succeeded(serde_json::json!({ "dry_run": true, "valid": true })),
            Err(e) => Outcome::Failed(bound_error(&format!("dry run: invalid payload: {e}"))),
        });
    }
    None
}

/// What the handler's task ended with: `None` when it was abandoned after
/// ignoring its cancellation for `cancel_grace`.
type HandlerEnd = Option<Result<HandlerResult, tokio::task::JoinError>>;

/// Runs the handler in a task of its own, so that a panic is caught as a
/// JoinError and a handler that ignores its token can be abandoned.
async fn run_handler(
    cfg: &WorkerConfig,
    job: ClaimedJob,
    handler: Arc<dyn Handler>,
    token: &CancellationToken,
    reason: &OnceLock<CancelReason>,
    timeout: Duration,
    clock: (f64, Duration),
) -> HandlerEnd {
    let ctx = JobContext {
        db_clock_offset: clock.0,
        clock_offset_limit: clock.1,
        id: job.id,
        job_type: job.job_type,
        queue: job.queue,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        payload: job.payload,
        cancel: token.clone(),
    };
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
    match finished {
        Some(r) => Some(r),
        None => match tokio::time::timeout(cfg.cancel_grace, &mut task).await {
            Ok(r) => Some(r),
            Err(_) => {
                task.abort();
                tracing::warn!(grace = ?cfg.cancel_grace, "handler ignored cancellation; abandoned it");
                None
            }
        },
    }
}

/// Turns what the handler did into an outcome.
fn classify(
    result: HandlerEnd,
    token: &CancellationToken,
    reason: &OnceLock<CancelReason>,
    timeout: Duration,
    retry_or_fail: impl Fn(String) -> Outcome,
) -> Outcome {
    // Work that completed is recorded as done even if a cancel raced it.
    if let Some(Ok(Ok(value))) = result {
        return Outcome::Succeeded(bound_result(value));
    }
    if token.is_cancelled() {
        return match reason.get() {
            Some(CancelReason::Requested) => Outcome::Cancelled("cancelled on request".into()),
            Some(CancelReason::Timeout) => retry_or_fail(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
            Some(CancelReason::LeaseLost) => Outcome::Abandon,
            None => Outcome::Requeue("worker shut down before the job finished".into()),
        };
    }
    match result {
        Some(Ok(Ok(value))) => Outcome::Succeeded(bound_result(value)),
        Some(Ok(Err(HandlerError::Permanent(msg)))) => Outcome::Failed(bound_error(&msg)),
        Some(Ok(Err(e))) => retry_or_fail(e.to_string()),
        Some(Err(join_err)) => retry_or_fail(panic_message(join_err)),
        // Abandoned without the token being cancelled cannot happen: we only
        // wait for the grace period after a cancel.
        None => retry_or_fail("handler abandoned".into()),
    }
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

/// Why an action job does not start.
enum PolicyStop {
    /// The token is refused: the job fails.
    Refused(crate::policy::Refusal),
    /// Its use could not be looked up (the database did not answer): the job
    /// goes back to the queue untouched.
    Unverified(crate::error::Error),
}

/// Verifies an action job's token, and that this job is the one that used it
/// (a token is good for one job: a copy in another row names the first), and
/// audits the use or the refusal. An audit write that fails is logged, not
/// fatal: the verdict stands.
async fn check_policy(shared: &Shared, job: &ClaimedJob) -> Result<(), PolicyStop> {
    let token = job.policy_token.as_ref().map(|t| t.0.as_str());
    let mut verdict = shared.policy.check(
        &job.job_type,
        job.tenant.as_deref(),
        token,
        // The database's clock, not this machine's (see `db_now`).
        job.db_now,
    );
    if let (Ok(Some(_)), Some(token)) = (&verdict, token) {
        let used_by = crate::db::bounded(shared.call_timeout, async {
            let c = crate::db::checkout(&shared.pool).await?;
            let used_by = crate::db::queries::token_use(c.client(), token).await?;
            c.release();
            Ok(used_by)
        })
        .await
        .map_err(PolicyStop::Unverified)?;
        if used_by != Some(job.id) {
            verdict = Err(crate::policy::Refusal::Reused);
        }
    }
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
    let write = crate::db::bounded(shared.call_timeout, async {
        let c = crate::db::checkout(&shared.pool).await?;
        let target = job.id.to_string();
        let entry = crate::audit::AuditEntry {
            actor: &shared.owner,
            action,
            target: Some(&target),
            tenant: job.tenant.as_deref(),
            detail: &detail,
        };
        crate::audit::write(c.client(), &entry).await?;
        c.release();
        Ok(())
    });
    if let Err(e) = write.await {
        tracing::warn!(error = %e, job_id = %job.id, "could not audit a policy check");
    }
    verdict.map(|_| ()).map_err(PolicyStop::Refused)
}
