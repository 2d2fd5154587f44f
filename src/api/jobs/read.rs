//! `GET /api/ops/jobs` and `GET /api/ops/jobs/{id}`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use uuid::Uuid;

use super::{ErrorBody, JobList, JobView, LIST_DEFAULT, LIST_MAX, StatusFilter, tenant_tx, view};
use crate::api::auth::{Authed, JobsRead};
use crate::api::{ApiError, SharedState};
use crate::db::queries;

/// List the tenant's jobs, newest first.
#[utoipa::path(
    get, path = "/api/ops/jobs", tag = "jobs",
    params(
        ("limit" = Option<i32>, Query, minimum = 1, maximum = 200,
         description = "Page size: 1 to 200, default 50"),
        ("status" = Option<StatusFilter>, Query, description = "Only jobs in this state"),
        ("job_type" = Option<String>, Query, pattern = "^[a-z][a-z0-9_.-]{0,63}$",
         description = "Only this job type"),
    ),
    responses(
        (status = 200, description = "Jobs", body = JobList),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing jobs:read scope", body = ErrorBody),
        (status = 422, description = "A limit, status or job_type outside its bounds", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 500, description = "Internal error (logged; no detail is answered)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn list(
    State(state): State<SharedState>,
    // Never rejected here (a query string that is not UTF-8 would get axum's
    // plain-text 400 before authentication): refused after it, as JSON.
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    Authed(who, _): Authed<JobsRead>,
) -> Result<Json<JobList>, ApiError> {
    let Ok(Query(q)) = q else {
        return Err(ApiError::unprocessable(
            "the query string is not valid UTF-8 form data",
        ));
    };
    let limit = list_limit(q.get("limit").map(String::as_str)).map_err(ApiError::unprocessable)?;
    let status = q.get("status").map(String::as_str);
    if let Some(s) = status {
        s.parse::<crate::jobs::JobStatus>()?;
    }
    let job_type = q.get("job_type").map(String::as_str);
    if job_type.is_some_and(|t| !crate::jobs::valid_name(t)) {
        return Err(ApiError::unprocessable(
            "job_type must match [a-z][a-z0-9_.-]{0,63}",
        ));
    }
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

/// `limit`: 50 when absent, otherwise an integer from 1 to 200. Anything
/// else is refused with the bounds rather than silently replaced, so the
/// answer matches docs/openapi.json (a client asking for 500 learns it gets
/// at most 200).
pub fn list_limit(raw: Option<&str>) -> Result<i64, String> {
    let Some(raw) = raw else {
        return Ok(LIST_DEFAULT);
    };
    match raw.parse::<i64>() {
        Ok(n) if (1..=LIST_MAX).contains(&n) => Ok(n),
        _ => Err(format!("limit must be an integer from 1 to {LIST_MAX}")),
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
        (status = 404, description = "No such job for this tenant, or not a job id", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 500, description = "Internal error (logged; no detail is answered)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
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
