//! The job routes: create (with idempotency, dry runs and policy tokens),
//! list, get and cancel, all bound to the caller's tenant: each query filters
//! by tenant and runs in a transaction with `SET LOCAL app.tenant_id`, so
//! row-level security enforces the same boundary in the database.
//!
//! This file holds the wire types; `parse.rs` the request parsing and bounds,
//! `create.rs`, `read.rs` and `cancel.rs` the routes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiError;

mod bulk;
mod cancel;
mod create;
mod parse;
mod read;

pub use bulk::*;
pub use cancel::*;
pub use create::*;
pub use parse::{MAX_PAYLOAD_DEPTH, check_payload, depth, parse_create};
pub use read::*;

/// Default page size of `GET /api/ops/jobs`.
pub const LIST_DEFAULT: i64 = 50;
/// Largest page size of `GET /api/ops/jobs`.
pub const LIST_MAX: i64 = 200;

/// A job to enqueue. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// A job type with a handler (and, to run, its feature flag on).
    #[schema(example = "noop", pattern = "^[a-z][a-z0-9_.-]{0,63}$")]
    pub job_type: String,
    /// Handed to the handler: any JSON value (an object for the built-in
    /// handlers), at most 1 MiB as Postgres stores it and 10 levels deep,
    /// with no NUL character. Defaults to `{}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Value)]
    pub payload: Value,
    /// Defaults to `default`.
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,63}$")]
    pub queue: Option<String>,
    /// Lower runs first; defaults to 0.
    #[schema(minimum = -100, maximum = 100)]
    #[serde(default, deserialize_with = "parse::integral")]
    pub priority: Option<i16>,
    /// Defaults to 3.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "parse::integral")]
    pub max_attempts: Option<i32>,
    /// Run no earlier than this (RFC 3339).
    pub run_at: Option<DateTime<Utc>>,
    /// Per-attempt time limit in seconds, from 1 ms to one day; defaults to
    /// the worker's.
    #[schema(minimum = 0.001, maximum = 86400)]
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
    /// `queued`, `running`, … or `dry_run`.
    pub status: String,
    /// What happened, for people.
    pub message: String,
}

/// A job as the shim shows it (never its policy token).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The job's id.
    pub id: Uuid,
    /// Its type.
    pub job_type: String,
    /// Its queue.
    pub queue: String,
    /// queued, running, succeeded, failed or cancelled.
    pub status: String,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Validated only, never executed.
    pub dry_run: bool,
    /// Cancellation was asked for.
    pub cancel_requested: bool,
    /// Runs no earlier than this.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// At most 500 characters.
    pub error: Option<String>,
    /// Any JSON value; only on GET /api/ops/jobs/{id}.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub payload: Option<Value>,
    /// Any JSON value of at most 10 KB; only on GET /api/ops/jobs/{id}.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub result: Option<Value>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<JobView>,
}

/// Every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong; never a secret or a stack trace.
    pub error: String,
}

/// The optional body of a cancel request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJob {
    /// Recorded with the job and in the audit log (at most 500 characters).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// The `status` filter of `GET /api/ops/jobs`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Waiting to run (now or at `run_at`).
    Queued,
    /// Claimed by a worker.
    Running,
    /// Finished without error.
    Succeeded,
    /// Out of attempts, refused or timed out.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
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
        payload: if detail { lenient(r, "payload") } else { None },
        result: if detail { lenient(r, "result") } else { None },
    })
}

/// A JSON column, or a marker when PostgreSQL holds JSON that serde cannot
/// read (nesting past its recursion limit, `1e1000`): the job is still shown,
/// and such a row is bad data, not an unavailable database.
fn lenient(r: &tokio_postgres::Row, column: &str) -> Option<Value> {
    r.try_get::<_, Option<Value>>(column).unwrap_or_else(|_| {
        Some(serde_json::json!({ "error": "Stored JSON cannot be decoded", "undecodable": true }))
    })
}

/// Opens a transaction bound to `tenant` for row-level security.
pub(crate) async fn tenant_tx<'a>(
    client: &'a mut crate::db::Conn,
    tenant: &str,
) -> Result<deadpool_postgres::Transaction<'a>, ApiError> {
    let tx = client.transaction().await?;
    crate::db::queries::set_tenant(&*tx, tenant).await?;
    Ok(tx)
}
