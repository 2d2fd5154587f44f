//! The job routes: create (with idempotency, dry runs and policy tokens),
//! list, get and cancel, all bound to the caller's tenant: each query filters
//! by tenant and runs in a transaction with `SET LOCAL app.tenant_id`, so
//! row-level security enforces the same boundary in the database.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::authenticate;
use super::{ApiError, ApiState, SharedState};
use crate::jobs::{MAX_PAYLOAD_BYTES, STATUSES, valid_name};

/// Deepest payload nesting accepted (`{}` and `[]` count one level each).
pub const MAX_PAYLOAD_DEPTH: usize = 10;
pub const LIST_DEFAULT: i64 = 50;
pub const LIST_MAX: i64 = 200;
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A job to enqueue. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// A job type with a handler (and, to run, its feature flag on).
    #[schema(example = "noop")]
    pub job_type: String,
    /// Handed to the handler. At most 1 MiB serialized and 10 levels deep.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Defaults to `default`.
    pub queue: Option<String>,
    /// Lower runs first, -100..=100; defaults to 0.
    pub priority: Option<i16>,
    /// 1..=100; defaults to 3.
    pub max_attempts: Option<i32>,
    /// Run no earlier than this (RFC 3339).
    pub run_at: Option<DateTime<Utc>>,
    /// Per-attempt time limit in seconds (up to one day); defaults to the
    /// worker's.
    pub timeout_seconds: Option<f64>,
    /// Validate, check the policy token and audit, but create no job.
    #[serde(default)]
    pub dry_run: bool,
    /// Required for action job types: a token from `opsrunner token sign`.
    pub policy_token: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The answer to create and cancel: only these three fields, ever.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobAccepted {
    /// `null` for a dry run.
    pub job_id: Option<Uuid>,
    pub status: String,
    pub message: String,
}

/// A job as the shim shows it (never its policy token).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub job_type: String,
    pub queue: String,
    /// queued, running, succeeded, failed or cancelled.
    pub status: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub dry_run: bool,
    pub cancel_requested: bool,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// At most 500 characters.
    pub error: Option<String>,
    /// Only on GET /api/ops/jobs/{id}.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// At most 10 KB; only on GET /api/ops/jobs/{id}.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

fn view(r: &tokio_postgres::Row, detail: bool) -> Result<JobView, tokio_postgres::Error> {
    Ok(JobView {
        id: r.try_get("id")?,
        job_type: r.try_get("job_type")?,
        queue: r.try_get("queue")?,
        status: r.try_get("status")?,
        priority: r.try_get("priority")?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        dry_run: r.try_get("dry_run")?,
        cancel_requested: r.try_get("cancel_requested")?,
        run_at: r.try_get("run_at")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        error: r.try_get("error")?,
        payload: if detail { r.try_get("payload")? } else { None },
        result: if detail { r.try_get("result")? } else { None },
    })
}

/// Nesting depth: a scalar is 0, `{}` or `[]` is 1.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A parse error, described without echoing the request's values back.
fn describe_json_error(e: &serde_json::Error) -> ApiError {
    let msg = e.to_string();
    if msg.contains("recursion limit") {
        return ApiError::unprocessable(format!(
            "payload is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
        ));
    }
    match e.classify() {
        serde_json::error::Category::Data => {
            if let Some(rest) = msg.strip_prefix("unknown field `")
                && let Some(name) = rest.split('`').next()
            {
                let name: String = name.chars().take(64).collect();
                return ApiError::unprocessable(format!("unknown field `{name}`"));
            }
            if let Some(rest) = msg.strip_prefix("missing field `")
                && let Some(name) = rest.split('`').next()
            {
                return ApiError::unprocessable(format!("missing field `{name}`"));
            }
            ApiError::unprocessable(format!(
                "a field has the wrong type or value (line {}, column {})",
                e.line(),
                e.column()
            ))
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "Request body is not valid JSON"),
    }
}

/// Parses a create request as the shim does: unknown fields refused, errors
/// described without echoing the body. (Also the payload fuzz target's entry.)
pub fn parse_create(bytes: &[u8]) -> Result<CreateJob, String> {
    serde_json::from_slice(bytes).map_err(|e| describe_json_error(&e).message)
}

/// The payload bounds: at most 1 MiB serialized, at most 10 levels deep.
pub fn check_payload(payload: &Value) -> Result<(), String> {
    let size = serde_json::to_vec(payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} (1 MiB)"
        ));
    }
    if depth(payload) > MAX_PAYLOAD_DEPTH {
        return Err(format!(
            "payload is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
        ));
    }
    Ok(())
}

fn validate(state: &ApiState, req: &CreateJob) -> Result<(), ApiError> {
    if !valid_name(&req.job_type) {
        return Err(ApiError::unprocessable(
            "job_type must match [a-z][a-z0-9_.-]{0,63}",
        ));
    }
    if !state.accepts(&req.job_type) {
        return Err(ApiError::unprocessable("unknown job_type"));
    }
    if let Some(q) = &req.queue
        && !valid_name(q)
    {
        return Err(ApiError::unprocessable(
            "queue must match [a-z][a-z0-9_.-]{0,63}",
        ));
    }
    if let Some(p) = req.priority
        && !(-100..=100).contains(&p)
    {
        return Err(ApiError::unprocessable(
            "priority must be between -100 and 100",
        ));
    }
    if let Some(m) = req.max_attempts
        && !(1..=100).contains(&m)
    {
        return Err(ApiError::unprocessable(
            "max_attempts must be between 1 and 100",
        ));
    }
    if let Some(t) = req.timeout_seconds
        && !(t.is_finite() && t > 0.0 && t <= 86_400.0)
    {
        return Err(ApiError::unprocessable(
            "timeout_seconds must be greater than 0 and at most 86400",
        ));
    }
    check_payload(&req.payload).map_err(ApiError::unprocessable)?;
    if let Some(h) = state.registry.get(&req.job_type)
        && let Err(e) = h.validate(&req.payload)
    {
        return Err(ApiError::unprocessable(crate::jobs::bound_error(&format!(
            "invalid payload: {e}"
        ))));
    }
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::unprocessable("Idempotency-Key must be 1-200 printable ASCII characters")
        })?;
    Ok(Some(s.to_string()))
}

/// Opens a transaction bound to `tenant` for row-level security.
async fn tenant_tx<'a>(
    client: &'a mut deadpool_postgres::Object,
    tenant: &str,
) -> Result<deadpool_postgres::Transaction<'a>, ApiError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT set_config('app.tenant_id', $1, true)", &[&tenant])
        .await?;
    Ok(tx)
}

/// Enqueue a job.
#[utoipa::path(
    post, path = "/api/ops/jobs", tag = "jobs",
    request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header,
            description = "Repeat a POST safely: the first job is returned and no second one is created")),
    responses(
        (status = 201, description = "Job created", body = JobAccepted),
        (status = 200, description = "Idempotent replay, or a dry run", body = JobAccepted),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing scope, or policy token refused", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused for a different request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid job", body = ErrorBody),
        (status = 429, description = "Rate limited (see Retry-After)", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn create(
    State(state): State<SharedState>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let ip = super::client_ip(&request);
    let (parts, body) = request.into_parts();
    let who = authenticate(&state, &parts.headers, ip, "/api/ops/jobs", "jobs:write").await?;
    let idem = idempotency_key(&parts.headers)?;
    let bytes = axum::body::to_bytes(body, state.cfg.max_body_bytes)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    let req: CreateJob = serde_json::from_slice(&bytes).map_err(|e| describe_json_error(&e))?;
    validate(&state, &req)?;
    let queue = req.queue.clone().unwrap_or_else(|| "default".into());
    let input_hash = crate::audit::sha256_hex(
        serde_json::json!([req.job_type, queue, req.payload])
            .to_string()
            .as_bytes(),
    );

    // Action job types: check the policy token here; the worker checks again.
    let now = Utc::now().timestamp();
    let claims = match state.policy.check(
        &req.job_type,
        Some(&who.tenant),
        req.policy_token.as_deref(),
        now,
    ) {
        Ok(c) => c,
        Err(refusal) => {
            metrics::counter!("opsrunner_policy_token_refusals_total", "reason" => refusal.code(), "stage" => "api")
                .increment(1);
            tracing::warn!(reason = refusal.code(), job_type = %req.job_type, actor = %who.actor,
                "policy token refused");
            let client = state.pool.get().await?;
            crate::audit::record(
                &**client,
                &who.actor,
                "policy.refused",
                None,
                Some(&who.tenant),
                &serde_json::json!({ "job_type": req.job_type, "reason": refusal.code(), "input_sha256": input_hash }),
            )
            .await?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("Policy token refused: {refusal}"),
            ));
        }
    };
    let token_actor = claims.as_ref().map(|c| c.actor.clone());

    let mut client = state.pool.get().await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    if req.dry_run {
        crate::audit::record(
            &*tx,
            &who.actor,
            "job.dry_run",
            None,
            Some(&who.tenant),
            &serde_json::json!({ "job_type": req.job_type, "input_sha256": input_hash,
                                 "token_actor": token_actor }),
        )
        .await?;
        tx.commit().await?;
        return Ok((
            StatusCode::OK,
            Json(JobAccepted {
                job_id: None,
                status: "dry_run".into(),
                message: "Validated; nothing was enqueued".into(),
            }),
        )
            .into_response());
    }
    let inserted = tx
        .query_opt(
            include_str!("../../sql/queries/api_insert_job.sql"),
            &[
                &req.job_type,
                &queue,
                &req.priority.unwrap_or(0),
                &req.payload,
                &req.max_attempts.unwrap_or(3),
                &req.run_at,
                &req.timeout_seconds,
                &who.tenant,
                &idem,
                &req.policy_token,
            ],
        )
        .await?;
    let (id, status, created) = match inserted {
        Some(row) => (
            row.try_get::<_, Uuid>(0)?,
            row.try_get::<_, String>(1)?,
            true,
        ),
        None => {
            // The conflict means an earlier request holds this key.
            let key = idem.as_deref().unwrap_or_default();
            let row = tx
                .query_opt(
                    include_str!("../../sql/queries/api_find_idempotent.sql"),
                    &[&who.tenant, &key, &req.job_type, &queue, &req.payload],
                )
                .await?
                .ok_or_else(|| {
                    ApiError::new(StatusCode::CONFLICT, "Idempotency-Key conflict; retry")
                })?;
            if !row.try_get::<_, bool>("same_request")? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Idempotency-Key was already used for a different request",
                ));
            }
            (row.try_get("id")?, row.try_get("status")?, false)
        }
    };
    crate::audit::record(
        &*tx,
        &who.actor,
        if created { "job.request" } else { "job.replay" },
        Some(&id.to_string()),
        Some(&who.tenant),
        &serde_json::json!({ "job_type": req.job_type, "input_sha256": input_hash,
                             "idempotency_key_sha256": idem.as_deref().map(|k| crate::audit::sha256_hex(k.as_bytes())),
                             "token_actor": token_actor }),
    )
    .await?;
    if claims.is_some() {
        crate::audit::record(
            &*tx,
            &who.actor,
            "policy.used",
            Some(&id.to_string()),
            Some(&who.tenant),
            &serde_json::json!({ "job_type": req.job_type, "token_actor": token_actor }),
        )
        .await?;
    }
    tx.commit().await?;
    let (code, message) = if created {
        (StatusCode::CREATED, "Job enqueued")
    } else {
        (
            StatusCode::OK,
            "Idempotent replay: the job created by the first request",
        )
    };
    Ok((
        code,
        Json(JobAccepted {
            job_id: Some(id),
            status,
            message: message.into(),
        }),
    )
        .into_response())
}

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
    request: Request<Body>,
) -> Result<Json<JobList>, ApiError> {
    let ip = super::client_ip(&request);
    let who = authenticate(&state, request.headers(), ip, "/api/ops/jobs", "jobs:read").await?;
    let limit = list_limit(q.get("limit").map(String::as_str));
    let status = q
        .get("status")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    if let Some(s) = status
        && !STATUSES.contains(&s)
    {
        return Err(ApiError::unprocessable(format!(
            "status must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let job_type = q
        .get("job_type")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let mut client = state.pool.get().await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    let rows = tx
        .query(
            include_str!("../../sql/queries/api_list_jobs.sql"),
            &[&who.tenant, &status, &job_type, &limit],
        )
        .await?;
    tx.commit().await?;
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
    Path(id): Path<String>,
    request: Request<Body>,
) -> Result<Json<JobView>, ApiError> {
    let ip = super::client_ip(&request);
    let who = authenticate(
        &state,
        request.headers(),
        ip,
        "/api/ops/jobs/{id}",
        "jobs:read",
    )
    .await?;
    // A malformed id names no job: the same 404 as another tenant's job.
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found())?;
    let mut client = state.pool.get().await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    let row = tx
        .query_opt(
            include_str!("../../sql/queries/api_get_job.sql"),
            &[&id, &who.tenant],
        )
        .await?;
    tx.commit().await?;
    let row = row.ok_or_else(ApiError::not_found)?;
    Ok(Json(view(&row, true)?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJob {
    /// Recorded with the job and in the audit log (at most 500 characters).
    pub reason: Option<String>,
}

/// Request cancellation. A queued job is cancelled at once; a running one is
/// stopped by its worker if its handler can stop (otherwise this is intent).
#[utoipa::path(
    post, path = "/api/ops/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    request_body(content = Option<CancelJob>, description = "Optional reason"),
    responses(
        (status = 200, description = "Cancellation intent recorded", body = JobAccepted),
        (status = 401, description = "Invalid or missing X-Ops-Key", body = ErrorBody),
        (status = 403, description = "Missing jobs:cancel scope", body = ErrorBody),
        (status = 404, description = "No such job for this tenant", body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn cancel(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Result<Json<JobAccepted>, ApiError> {
    let ip = super::client_ip(&request);
    let (parts, body) = request.into_parts();
    let who = authenticate(
        &state,
        &parts.headers,
        ip,
        "/api/ops/jobs/{id}/cancel",
        "jobs:cancel",
    )
    .await?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found())?;
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    let req: CancelJob = if bytes.iter().all(u8::is_ascii_whitespace) {
        CancelJob::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| describe_json_error(&e))?
    };
    let mut client = state.pool.get().await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    let cancelled = crate::jobs::cancel(
        &*tx,
        id,
        req.reason.as_deref(),
        &who.actor,
        Some(&who.tenant),
        "api",
    )
    .await?;
    let status = match cancelled {
        Some(s) => s,
        None => {
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM ops_jobs WHERE id = $1 AND tenant_id = $2",
                    &[&id, &who.tenant],
                )
                .await?;
            tx.commit().await?;
            return Err(match exists {
                Some(_) => ApiError::new(StatusCode::CONFLICT, "Job already finished"),
                None => ApiError::not_found(),
            });
        }
    };
    tx.commit().await?;
    Ok(Json(JobAccepted {
        job_id: Some(id),
        status,
        message: "Cancellation intent recorded".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_limit_defaults_and_caps() {
        assert_eq!(list_limit(None), 50);
        assert_eq!(list_limit(Some("0")), 50);
        assert_eq!(list_limit(Some("-5")), 50);
        assert_eq!(list_limit(Some("abc")), 50);
        assert_eq!(list_limit(Some("1")), 1);
        assert_eq!(list_limit(Some("200")), 200);
        assert_eq!(list_limit(Some("100000")), 200);
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&serde_json::json!(1)), 0);
        assert_eq!(depth(&serde_json::json!({})), 1);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    }

    #[test]
    fn json_errors_do_not_echo_values() {
        let e = serde_json::from_str::<CreateJob>(r#"{"job_type": 5, "x": "opt1.secret"}"#)
            .unwrap_err();
        let msg = describe_json_error(&e).message;
        assert!(!msg.contains("secret"), "{msg}");
        let e =
            serde_json::from_str::<CreateJob>(r#"{"job_type": "noop", "bogus": 1}"#).unwrap_err();
        assert_eq!(describe_json_error(&e).message, "unknown field `bogus`");
    }
}
