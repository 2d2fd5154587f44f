//! `POST /api/ops/jobs/{id}/cancel`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::parse::describe_json_error;
use super::{CancelJob, ErrorBody, JobAccepted, tenant_tx};
use crate::api::auth::{Authed, JobsCancel};
use crate::api::{ApiError, SharedState};
use crate::db::queries;
use crate::jobs::CancelRequest;

/// Request cancellation. A queued job is cancelled at once; a running one is
/// stopped by its worker if its handler can stop (otherwise this is intent).
#[utoipa::path(
    post, path = "/api/ops/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    request_body(content = Option<CancelJob>,
                 description = "Optional: an object with a reason, `null`, or no body at all"),
    responses(
        (status = 200, description = "Cancellation intent recorded", body = JobAccepted),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing jobs:cancel scope", body = ErrorBody),
        (status = 404, description = "No such job for this tenant", body = ErrorBody),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 422, description = "Unknown field, or a reason that is not a string of at most 500 characters", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 500, description = "Internal error (logged; no detail is answered)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn cancel(
    State(state): State<SharedState>,
    // Never rejected here (a path that is not UTF-8 would get axum's plain
    // text 400 before authentication): it names no job, so it is the 404.
    id: Result<Path<String>, PathRejection>,
    Authed(who, _): Authed<JobsCancel>,
    body: Body,
) -> Result<Json<JobAccepted>, ApiError> {
    let id = super::read::parse_id(id)?;
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    // No body, and a JSON `null`, both mean "no reason".
    let req: CancelJob = if bytes.iter().all(u8::is_ascii_whitespace) {
        CancelJob::default()
    } else {
        serde_json::from_slice::<Option<CancelJob>>(&bytes)
            .map_err(|e| describe_json_error(&e))?
            .unwrap_or_default()
    };
    if req.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::unprocessable(
            "reason is longer than 500 characters",
        ));
    }
    let mut client = crate::db::checkout(&state.pool).await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    let request = CancelRequest {
        id,
        reason: req.reason.as_deref(),
        actor: &who.actor,
        tenant: Some(&who.tenant),
        via: "api",
    };
    let cancelled = crate::jobs::cancel(&*tx, &request).await?;
    let status = match cancelled {
        Some(s) => s,
        None => {
            let exists = queries::job_exists(&*tx, id, &who.tenant).await?;
            tx.commit().await?;
            client.release();
            return Err(match exists.then_some(()) {
                Some(()) => ApiError::new(StatusCode::CONFLICT, "Job already finished"),
                None => ApiError::not_found(),
            });
        }
    };
    tx.commit().await?;
    client.release();
    Ok(Json(JobAccepted {
        job_id: Some(id),
        status,
        message: "Cancellation intent recorded".into(),
    }))
}
