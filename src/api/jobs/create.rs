//! `POST /api/ops/jobs`: authenticate (the extractor), parse, validate with
//! the same bounds as `NewJob`, check the policy token, then insert or replay
//! in the tenant's transaction and audit it.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::parse::{check_payload, describe_json_error, idempotency_key};
use super::{CreateJob, ErrorBody, JobAccepted, tenant_tx};
use crate::api::auth::{Authed, JobsWrite};
use crate::api::{ApiError, ApiState, Principal, SharedState};
use crate::audit::{self, AuditEntry};
use crate::jobs::{Inserted, NewJob};
use crate::policy::{Claims, Refusal};

/// Enqueue a job.
#[utoipa::path(
    post, path = "/api/ops/jobs", tag = "jobs",
    request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,200}$",
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
        (status = 500, description = "Internal error (logged; no detail is answered)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("ops_key" = []))
)]
pub async fn create(
    State(state): State<SharedState>,
    Authed(who, _): Authed<JobsWrite>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let idem = idempotency_key(&headers)?;
    let bytes = axum::body::to_bytes(body, state.cfg.max_body_bytes)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    let req: CreateJob = serde_json::from_slice(&bytes).map_err(|e| describe_json_error(&e))?;
    let job = new_job(&state, &req, &who, idem)?;
    let input_hash = audit::sha256_hex(
        json!([job.job_type, job.queue, job.payload])
            .to_string()
            .as_bytes(),
    );
    let claims = policy_gate(&state, &who, &job, &input_hash).await?;
    let token_actor = claims.as_ref().map(|c| c.actor.clone());
    let mut client = crate::db::checkout(&state.pool).await?;
    let tx = tenant_tx(&mut client, &who.tenant).await?;
    if job.dry_run {
        let detail = json!({ "job_type": job.job_type, "input_sha256": input_hash, "token_actor": token_actor });
        audit_as(&*tx, &who, "job.dry_run", None, &detail).await?;
        tx.commit().await?;
        client.release();
        let body = JobAccepted {
            job_id: None,
            status: "dry_run".into(),
            message: "Validated; nothing was enqueued".into(),
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let inserted = match crate::jobs::insert_for_tenant(&*tx, &job).await {
        Err(crate::Error::TokenReused) => {
            drop(tx);
            client.release();
            return Err(refuse(&state, &who, &job, &input_hash, Refusal::Reused).await);
        }
        other => other?,
    };
    audit_request(
        &*tx,
        &who,
        &job,
        &inserted,
        &input_hash,
        token_actor,
        claims.is_some(),
    )
    .await?;
    tx.commit().await?;
    client.release();
    let (code, message) = if inserted.created {
        (StatusCode::CREATED, "Job enqueued")
    } else {
        (
            StatusCode::OK,
            "Idempotent replay: the job created by the first request",
        )
    };
    let body = JobAccepted {
        job_id: Some(inserted.id),
        status: inserted.status,
        message: message.into(),
    };
    Ok((code, Json(body)).into_response())
}

/// The request as a [`NewJob`] of the caller's tenant, validated: a type this
/// shim accepts, `NewJob`'s bounds, the payload depth, and the handler's own
/// payload check.
fn new_job(
    state: &ApiState,
    req: &CreateJob,
    who: &Principal,
    idempotency_key: Option<String>,
) -> Result<NewJob, ApiError> {
    if !crate::jobs::valid_name(&req.job_type) {
        return Err(ApiError::unprocessable(
            "job_type must match [a-z][a-z0-9_.-]{0,63}",
        ));
    }
    if !state.accepts(&req.job_type) {
        return Err(ApiError::unprocessable("unknown job_type"));
    }
    // A token is kept in the row it came with: one for a type that takes
    // none would be stored for nothing (and could be copied out later).
    if req.policy_token.is_some() && !state.policy.is_action(&req.job_type) {
        return Err(ApiError::unprocessable(
            "policy_token is only accepted for action job types",
        ));
    }
    let timeout = req
        .timeout_seconds
        .map(|t| {
            // From 1 ms: anything shorter is no time limit a job can meet
            // (and 5e-324 s would round to a zero Duration).
            (t.is_finite() && (0.001..=86_400.0).contains(&t))
                .then(|| std::time::Duration::from_secs_f64(t))
                .ok_or_else(|| {
                    ApiError::unprocessable("timeout_seconds must be from 0.001 to 86400")
                })
        })
        .transpose()?;
    let job = NewJob {
        queue: req.queue.clone().unwrap_or_else(|| "default".into()),
        priority: req.priority.unwrap_or(0),
        max_attempts: req.max_attempts.unwrap_or(3),
        run_at: req.run_at,
        timeout,
        tenant: Some(who.tenant.clone()),
        idempotency_key,
        policy_token: req.policy_token.clone(),
        dry_run: req.dry_run,
        ..NewJob::new(&req.job_type, req.payload.clone())
    };
    job.validate()?;
    check_payload(&job.payload).map_err(ApiError::unprocessable)?;
    if let Some(h) = state.registry.get(&job.job_type)
        && let Err(e) = h.validate(&job.payload)
    {
        return Err(ApiError::unprocessable(crate::jobs::bound_error(&format!(
            "invalid payload: {e}"
        ))));
    }
    Ok(job)
}

/// Action job types: checks the policy token here (the worker checks again);
/// a refusal is counted, logged, audited and answered 403.
async fn policy_gate(
    state: &ApiState,
    who: &Principal,
    job: &NewJob,
    input_hash: &str,
) -> Result<Option<Claims>, ApiError> {
    // Token expiry by the database's clock, as the worker checks it: this
    // machine's clock may be off. Only action types have tokens to check.
    let now = if state.policy.is_action(&job.job_type) {
        let c = crate::db::checkout(&state.pool).await?;
        let now = crate::db::queries::db_now(c.client()).await?;
        c.release();
        now.floor() as i64
    } else {
        chrono::Utc::now().timestamp()
    };
    let token = job.policy_token.as_deref();
    match state
        .policy
        .check(&job.job_type, Some(&who.tenant), token, now)
    {
        Ok(claims) => Ok(claims),
        Err(refusal) => Err(refuse(state, who, job, input_hash, refusal).await),
    }
}

/// A refused policy token: counted, logged, audited, answered 403.
async fn refuse(
    state: &ApiState,
    who: &Principal,
    job: &NewJob,
    input_hash: &str,
    refusal: Refusal,
) -> ApiError {
    metrics::counter!("opsrunner_policy_token_refusals_total", "reason" => refusal.code(), "stage" => "api")
        .increment(1);
    tracing::warn!(reason = refusal.code(), job_type = %job.job_type, actor = %who.actor,
        "policy token refused");
    let detail =
        json!({ "job_type": job.job_type, "reason": refusal.code(), "input_sha256": input_hash });
    let audited = async {
        let client = crate::db::checkout(&state.pool).await?;
        audit_as(client.client(), who, "policy.refused", None, &detail).await?;
        client.release();
        Ok::<_, ApiError>(())
    };
    if let Err(e) = audited.await {
        // The refusal stands; the database's trouble is the answer's.
        return e;
    }
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("Policy token refused: {refusal}"),
    )
}

/// Audits a created or replayed job, and the policy token it used.
async fn audit_request(
    tx: &impl tokio_postgres::GenericClient,
    who: &Principal,
    job: &NewJob,
    inserted: &Inserted,
    input_hash: &str,
    token_actor: Option<String>,
    used_token: bool,
) -> Result<(), ApiError> {
    let id = inserted.id.to_string();
    let key_hash = job
        .idempotency_key
        .as_deref()
        .map(|k| audit::sha256_hex(k.as_bytes()));
    let detail = json!({ "job_type": job.job_type, "input_sha256": input_hash,
                         "idempotency_key_sha256": key_hash, "token_actor": token_actor });
    let action = if inserted.created {
        "job.request"
    } else {
        "job.replay"
    };
    audit_as(tx, who, action, Some(&id), &detail).await?;
    if used_token {
        let detail = json!({ "job_type": job.job_type, "token_actor": token_actor });
        audit_as(tx, who, "policy.used", Some(&id), &detail).await?;
    }
    Ok(())
}

async fn audit_as(
    client: &impl tokio_postgres::GenericClient,
    who: &Principal,
    action: &str,
    target: Option<&str>,
    detail: &serde_json::Value,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        actor: &who.actor,
        action,
        target,
        tenant: Some(&who.tenant),
        detail,
    };
    Ok(audit::write(client, &entry).await?)
}
