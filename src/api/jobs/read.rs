//! `GET /api/ops/jobs` and `GET /api/ops/jobs/{id}`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use uuid::Uuid;

use super::{ErrorBody, JobList, JobView, LIST_DEFAULT, LIST_MAX, tenant_tx, view};
use crate::api::auth::{Authed, JobsRead};
use crate::api::{ApiError, SharedState};
use crate::db::queries;

/// List the tenant's jobs, newest first.
#[utoipa::path(
    get, path = "/api/ops/jobs", tag = "jobs",
    params(
        ("limit" = Option<i64>, Query, description = "Default 50, at most 200; below 1 or not a number means 50"),
        ("status" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"),
        ("job_type" = Option<String>, Query, description = "Only this job type"),
    ),
    responses(
        (status = 200, description = "Jobs", body = JobList),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing jobs:read scope", body = ErrorBody),
        (status = 422, description = "Unknown status", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn list(
    State(state): State<SharedState>,
    Query(q): Query<HashMap<String, String>>,
    Authed(who, _): Authed<JobsRead>,
) -> Result<Json<JobList>, ApiError> {
    let limit = list_limit(q.get("limit").map(String::as_str));
    let status = q
        .get("status")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    if let Some(s) = status {
        s.parse::<crate::jobs::JobStatus>()?;
    }
    let job_type = q
        .get("job_type")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let mut client = crate::db::checkout(&state.pool).await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    let rows = queries::api_list_jobs(&*tx, &who.tenant, status, job_type, limit).await?;
    tx.commit().await?;
    client.release();
    let jobs = rows
        .iter()
        .map(|r| view(r, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(JobList { jobs }))
}

/// `limit`: default 50, capped at 200, and 50 for anything below 1 or not a
/// number.
pub fn list_limit(raw: Option<&str>) -> i64 {
    match raw.and_then(|s| s.trim().parse::<i64>().ok()) {
        Some(n) if n >= 1 => n.min(LIST_MAX),
        _ => LIST_DEFAULT,
    }
}

/// One job with its payload and result.
#[utoipa::path(
    get, path = "/api/ops/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing jobs:read scope", body = ErrorBody),
        (status = 404, description = "No such job for this tenant", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn get_one(
    State(state): State<SharedState>,
    // Never rejected here (a path that is not UTF-8 would get axum's plain
    // text 400 before authentication): it names no job, so it is the 404.
    id: Result<Path<String>, PathRejection>,
    Authed(who, _): Authed<JobsRead>,
) -> Result<Json<JobView>, ApiError> {
    // A malformed id names no job: the same 404 as another tenant's job.
    let id = parse_id(id)?;
    let mut client = crate::db::checkout(&state.pool).await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    let row = queries::api_get_job(&*tx, id, &who.tenant).await?;
    tx.commit().await?;
    client.release();
    let row = row.ok_or_else(ApiError::not_found)?;
    Ok(Json(view(&row, true)?))
}

/// A job id from the path; anything that is not one (malformed, not UTF-8)
/// names no job: the same 404 as another tenant's job.
pub(super) fn parse_id(id: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    id.ok()
        .and_then(|Path(s)| Uuid::parse_str(&s).ok())
        .ok_or_else(ApiError::not_found)
}
