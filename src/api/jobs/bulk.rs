//! `POST /api/ops/bulk/retry` and `POST /api/ops/bulk/cancel`: every job of
//! the caller's tenant matching a filter, through [`crate::bulk`] (batched,
//! audited once), or only counted with `dry_run`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::parse::describe_json_error;
use super::{ErrorBody, tenant_tx};
use crate::api::auth::{Authed, JobsCancel, JobsRetry};
use crate::api::{ApiError, Principal, SharedState};
use crate::bulk::{BulkAction, BulkFilter, Requester};

/// The states a bulk retry applies to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetryStatus {
    /// Out of attempts, refused or timed out.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// The states a bulk cancel applies to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CancelStatus {
    /// Waiting to run.
    Queued,
    /// Running (its worker is asked to stop it).
    Running,
}

/// Which of the tenant's failed or cancelled jobs to put back in the queue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    /// The state they are in.
    pub status: RetryStatus,
    /// Only this job type.
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,63}$")]
    pub job_type: Option<String>,
    /// Only this queue.
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,63}$")]
    pub queue: Option<String>,
    /// Only jobs finished this many seconds ago or less.
    #[schema(minimum = 1, maximum = 31_536_000)]
    #[serde(default, deserialize_with = "super::parse::integral")]
    pub since_seconds: Option<u32>,
    /// Only count them.
    #[serde(default)]
    pub dry_run: bool,
    /// For the audit log (at most 500 characters).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// Which of the tenant's queued or running jobs to cancel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCancel {
    /// The state they are in.
    pub status: CancelStatus,
    /// Only this job type.
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,63}$")]
    pub job_type: Option<String>,
    /// Only this queue.
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,63}$")]
    pub queue: Option<String>,
    /// Only jobs created this many seconds ago or less.
    #[schema(minimum = 1, maximum = 31_536_000)]
    #[serde(default, deserialize_with = "super::parse::integral")]
    pub since_seconds: Option<u32>,
    /// Only count them.
    #[serde(default)]
    pub dry_run: bool,
    /// Recorded with each cancelled job and in the audit log (at most 500
    /// characters).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// What a bulk request matched and changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkDone {
    /// Jobs that matched.
    pub matched: i64,
    /// Jobs changed (0 for a dry run; fewer than matched when some changed
    /// meanwhile).
    pub changed: u64,
    /// Nothing was changed.
    pub dry_run: bool,
}

struct Parsed {
    filter: BulkFilter,
    dry_run: bool,
    reason: Option<String>,
}

fn check_names(
    job_type: &Option<String>,
    queue: &Option<String>,
    reason: &Option<String>,
    since: Option<u32>,
) -> Result<(), ApiError> {
    if since.is_some_and(|s| !(1..=31_536_000).contains(&s)) {
        return Err(ApiError::unprocessable(
            "since_seconds must be from 1 to 31536000 (a year)",
        ));
    }
    for (what, v) in [("job_type", job_type), ("queue", queue)] {
        if v.as_deref().is_some_and(|n| !crate::jobs::valid_name(n)) {
            return Err(ApiError::unprocessable(format!(
                "{what} must match [a-z][a-z0-9_.-]{{0,63}}"
            )));
        }
    }
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::unprocessable(
            "reason is longer than 500 characters",
        ));
    }
    Ok(())
}

/// The request's fields, checked, as the filter [`crate::bulk`] takes.
fn parsed(
    status: crate::jobs::JobStatus,
    job_type: Option<String>,
    queue: Option<String>,
    since_seconds: Option<u32>,
    dry_run: bool,
    reason: Option<String>,
) -> Result<Parsed, ApiError> {
    check_names(&job_type, &queue, &reason, since_seconds)?;
    let filter = BulkFilter {
        status,
        job_type,
        queue,
        since: since_seconds.map(|s| std::time::Duration::from_secs(s.into())),
    };
    Ok(Parsed {
        filter,
        dry_run,
        reason,
    })
}

async fn body_json<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    serde_json::from_slice(&bytes).map_err(|e| describe_json_error(&e))
}

async fn run(
    state: &SharedState,
    who: &Principal,
    action: BulkAction,
    p: Parsed,
) -> Result<Json<BulkDone>, ApiError> {
    let mut client = crate::db::checkout(&state.pool).await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    let matched = crate::bulk::count(&*tx, action, &p.filter, Some(&who.tenant)).await?;
    tx.commit().await?;
    if p.dry_run {
        client.release();
        return Ok(Json(BulkDone {
            matched,
            changed: 0,
            dry_run: true,
        }));
    }
    let requester = Requester {
        actor: &who.actor,
        via: "api",
        reason: p.reason.as_deref(),
    };
    let done = crate::bulk::apply(
        client.client(),
        action,
        &p.filter,
        Some(&who.tenant),
        matched,
        &requester,
    )
    .await?;
    client.release();
    Ok(Json(BulkDone {
        matched: done.matched,
        changed: done.changed,
        dry_run: false,
    }))
}

/// Put the tenant's matching failed or cancelled jobs back in the queue,
/// in batches (audited once, with the filter and the counts).
#[utoipa::path(
    post, path = "/api/ops/bulk/retry", tag = "jobs",
    request_body = BulkRetry,
    responses(
        (status = 200, description = "Matched and changed (or only counted)", body = BulkDone),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing jobs:retry scope", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 422, description = "A field outside its bounds", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 500, description = "Internal error (logged; no detail is answered)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn bulk_retry(
    State(state): State<SharedState>,
    Authed(who, _): Authed<JobsRetry>,
    body: Body,
) -> Result<Json<BulkDone>, ApiError> {
    let r: BulkRetry = body_json(body).await?;
    let status = match r.status {
        RetryStatus::Failed => crate::jobs::JobStatus::Failed,
        RetryStatus::Cancelled => crate::jobs::JobStatus::Cancelled,
    };
    let p = parsed(
        status,
        r.job_type,
        r.queue,
        r.since_seconds,
        r.dry_run,
        r.reason,
    )?;
    run(&state, &who, BulkAction::Retry, p).await
}

/// Cancel the tenant's matching queued jobs and ask its matching running
/// jobs to stop, in batches (audited once, with the filter and the counts).
#[utoipa::path(
    post, path = "/api/ops/bulk/cancel", tag = "jobs",
    request_body = BulkCancel,
    responses(
        (status = 200, description = "Matched and changed (or only counted)", body = BulkDone),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing jobs:cancel scope", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 422, description = "A field outside its bounds", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 500, description = "Internal error (logged; no detail is answered)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn bulk_cancel(
    State(state): State<SharedState>,
    Authed(who, _): Authed<JobsCancel>,
    body: Body,
) -> Result<Json<BulkDone>, ApiError> {
    let r: BulkCancel = body_json(body).await?;
    let status = match r.status {
        CancelStatus::Queued => crate::jobs::JobStatus::Queued,
        CancelStatus::Running => crate::jobs::JobStatus::Running,
    };
    let p = parsed(
        status,
        r.job_type,
        r.queue,
        r.since_seconds,
        r.dry_run,
        r.reason,
    )?;
    run(&state, &who, BulkAction::Cancel, p).await
}
