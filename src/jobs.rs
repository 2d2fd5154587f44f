//! Job rows: enqueueing ([`NewJob`], [`insert`], [`insert_many`]), the bounds
//! applied to what the worker writes, and the operator queries behind
//! `opsrunner enqueue` and `opsrunner jobs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::queries;
use crate::error::{Error, Result};

/// Largest result stored, serialized compactly.
pub const MAX_RESULT_BYTES: usize = 10 * 1024;
/// Longest error stored, in characters.
pub const MAX_ERROR_CHARS: usize = 500;
/// Largest payload accepted, measured as [`payload_size`] measures it: the
/// payload as Postgres renders it (`payload::text`), which is what the
/// database checks for applications and the shim.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The tenant of jobs enqueued without one (by the CLI, or by SQL as a role
/// the operator trusts): the shim's master key answers for it unless
/// `api.tenant` names another. Also the column's default in the database.
pub const DEFAULT_TENANT: &str = "default";

/// The size of `payload` as Postgres renders jsonb to text, the measure of
/// the 1 MiB limit: compact JSON plus the one space Postgres writes after each
/// `:` and `,`. A compact payload of exactly 1 MiB with any separator in it is
/// over (Postgres would store more). Numbers are counted as `serde_json`
/// writes them; Postgres writes exponents out in full (`1e300` is 301
/// digits), so for such payloads the database's check, which has the last
/// word, may refuse what this counts as under.
pub fn payload_size(payload: &Value) -> usize {
    fn sep(n: usize) -> usize {
        2 * n.saturating_sub(1)
    }
    match payload {
        Value::Null => 4,
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => escaped_len(s),
        Value::Array(a) => 2 + sep(a.len()) + a.iter().map(payload_size).sum::<usize>(),
        Value::Object(o) => {
            2 + sep(o.len())
                + o.iter()
                    .map(|(k, v)| escaped_len(k) + 2 + payload_size(v))
                    .sum::<usize>()
        }
    }
}

/// Bytes of `s` as a JSON string literal (quotes and escapes included); the
/// escapes Postgres writes are the ones serde_json writes.
fn escaped_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// `[a-z][a-z0-9_.-]{0,63}`: job types, queues and flag names (also CHECKs).
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

/// The result to store: the value itself when it serializes to at most
/// [`MAX_RESULT_BYTES`], otherwise the truncation marker.
pub fn bound_result(v: Value) -> Value {
    match serde_json::to_vec(&v) {
        Ok(bytes) if bytes.len() <= MAX_RESULT_BYTES => v,
        _ => serde_json::json!({ "error": "Result too large", "truncated": true }),
    }
}

/// The error to store: NUL-free (Postgres text cannot hold it) and at most
/// [`MAX_ERROR_CHARS`] characters, keeping the head, where messages say what
/// went wrong.
pub fn bound_error(msg: &str) -> String {
    let clean: String = msg.chars().filter(|c| *c != '\0').collect();
    if clean.chars().count() <= MAX_ERROR_CHARS {
        return clean;
    }
    let mut out: String = clean.chars().take(MAX_ERROR_CHARS - 1).collect();
    out.push('…');
    out
}

/// The global switch: while this flag is on, no daemon claims anything.
pub const PAUSE_FLAG: &str = "pause-all";

/// A job's state (`ops_job_status` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for `run_at` and a worker.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error, out of attempts or permanently.
    Failed,
    /// Cancelled on request.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The name the schema uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a job in this state is done for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Invalid(format!("status must be one of {}", STATUSES.join(", "))))
    }
}

/// The status names, for messages and the API schema (derived from
/// [`JobStatus::ALL`]).
pub const STATUSES: [&str; 5] = {
    let mut names = [""; 5];
    let mut i = 0;
    while i < JobStatus::ALL.len() {
        names[i] = JobStatus::ALL[i].as_str();
        i += 1;
    }
    names
};

/// A job to enqueue. Start from [`NewJob::new`] or `NewJob::from_args` (a
/// typed payload, see [`crate::handlers::JobArgs`]) and
/// set what differs from the defaults with the builder methods; [`insert`]
/// validates it against the same bounds as the table's CHECKs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewJob {
    /// The handler that runs it (and the feature flag that gates it).
    pub job_type: String,
    /// Defaults to `default`.
    pub queue: String,
    /// Lower runs first, -100..=100; defaults to 0.
    pub priority: i16,
    /// Handed to the handler; at most 1 MiB serialized.
    pub payload: Value,
    /// 1..=100; defaults to 3.
    pub max_attempts: i32,
    /// Run no earlier than this; `None` means now (the database's clock).
    pub run_at: Option<DateTime<Utc>>,
    /// Per-attempt time limit (up to a day); `None` means the worker's default.
    pub timeout: Option<Duration>,
    /// The tenant the job belongs to; `None` for the default tenant
    /// ([`DEFAULT_TENANT`]).
    pub tenant: Option<String>,
    /// Repeating an insert with the same key (per tenant) creates no second job.
    pub idempotency_key: Option<String>,
    /// Required for action job types: a token from `opsrunner token sign`.
    pub policy_token: Option<String>,
    /// Validate the payload only; the handler never runs.
    pub dry_run: bool,
}

impl NewJob {
    /// A job of `job_type` with `payload` and every default.
    pub fn new(job_type: &str, payload: Value) -> Self {
        Self {
            job_type: job_type.into(),
            queue: "default".into(),
            priority: 0,
            payload,
            max_attempts: 3,
            run_at: None,
            timeout: None,
            tenant: None,
            idempotency_key: None,
            policy_token: None,
            dry_run: false,
        }
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority (lower runs first).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the number of attempts.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the per-attempt time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the policy token of an action job.
    pub fn policy_token(mut self, token: &str) -> Self {
        self.policy_token = Some(token.into());
        self
    }

    /// Makes it a dry run (validated, never executed).
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The same bounds the table's CHECKs enforce, with friendlier messages
    /// (the shim answers them as 422).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.into()));
        if !valid_name(&self.job_type) {
            return bad("job_type must match [a-z][a-z0-9_.-]{0,63}");
        }
        if !valid_name(&self.queue) {
            return bad("queue must match [a-z][a-z0-9_.-]{0,63}");
        }
        if !(-100..=100).contains(&self.priority) {
            return bad("priority must be between -100 and 100");
        }
        if !(1..=100).contains(&self.max_attempts) {
            return bad("max_attempts must be between 1 and 100");
        }
        let size = payload_size(&self.payload);
        if size > MAX_PAYLOAD_BYTES {
            return Err(Error::Invalid(format!(
                "payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} (1 MiB)"
            )));
        }
        if let Some(t) = self.timeout
            && (t.is_zero() || t > MAX_TIMEOUT)
        {
            return bad("timeout must be greater than 0 and at most 1 day");
        }
        if self
            .tenant
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.chars().count() > 200)
        {
            return bad("tenant must be 1-200 characters");
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > 200 || !k.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad("idempotency key must be 1-200 printable ASCII characters");
        }
        Ok(())
    }

    fn params(&self) -> queries::InsertJobParams<'_> {
        queries::InsertJobParams {
            id: Uuid::now_v7(),
            job_type: &self.job_type,
            queue: &self.queue,
            priority: self.priority,
            payload: &self.payload,
            max_attempts: self.max_attempts,
            run_at: self.run_at,
            timeout_secs: self.timeout.map(|d| d.as_secs_f64()),
            tenant: self.tenant.as_deref(),
            idempotency_key: self.idempotency_key.as_deref(),
            policy_token: self.policy_token.as_deref(),
            dry_run: self.dry_run,
        }
    }
}

/// Longest per-attempt timeout a job may ask for (also a CHECK).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// What [`insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inserted {
    /// The job's id: the new row's, or, for a repeated idempotency key, the
    /// first request's.
    pub id: Uuid,
    /// Its status now (`queued` for a new row).
    pub status: String,
    /// False when the idempotency key replayed an earlier job.
    pub created: bool,
}

/// Enqueues `job`. Pass a [`tokio_postgres::Transaction`] to enqueue
/// atomically with your own writes: the job becomes visible to workers at
/// commit, the insert trigger's NOTIFY is delivered at commit, and a rollback
/// leaves no job.
///
/// With an idempotency key its tenant already used, no row is created: the
/// first job comes back with `created: false`, or [`Error::Conflict`] when
/// that job was for another type, queue or payload.
pub async fn insert(client: &impl GenericClient, job: &NewJob) -> Result<Inserted> {
    job.validate()?;
    let row = queries::insert_job(client, &job.params())
        .await
        .map_err(token_reuse)?;
    created_or_replayed(client, job, row).await
}

/// Enqueues `job` for its tenant through the database's `ops_api_enqueue()`,
/// the shim's only way to write a job: its role has no INSERT on `ops_jobs`,
/// and the function writes nothing but a new queued job of that tenant (a
/// tenant is required). Otherwise as [`insert`].
pub async fn insert_for_tenant(client: &impl GenericClient, job: &NewJob) -> Result<Inserted> {
    job.validate()?;
    if job.tenant.is_none() {
        return Err(Error::Invalid("a tenant is required".into()));
    }
    let row = queries::api_enqueue(client, &job.params())
        .await
        .map_err(token_reuse)?;
    created_or_replayed(client, job, row).await
}

/// The database's refusal of a second row with one policy token (the trigger
/// of migration 0009 names the uses table's key) as [`Error::TokenReused`].
fn token_reuse(e: Error) -> Error {
    match &e {
        Error::Db(db)
            if db.as_db_error().and_then(|d| d.constraint())
                == Some("ops_policy_token_uses_pkey") =>
        {
            Error::TokenReused
        }
        _ => e,
    }
}

/// The created row, or (no row: its idempotency key was used) the first job.
async fn created_or_replayed(
    client: &impl GenericClient,
    job: &NewJob,
    row: Option<queries::InsertedRow>,
) -> Result<Inserted> {
    if let Some(row) = row {
        return Ok(Inserted {
            id: row.id,
            status: row.status,
            created: true,
        });
    }
    let key = job.idempotency_key.as_deref().unwrap_or_default();
    let tenant = job.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let earlier =
        queries::find_idempotent(client, tenant, key, &job.job_type, &job.queue, &job.payload)
            .await?
            // Deleted between the conflict and the read: a retry inserts anew.
            .ok_or_else(|| Error::Conflict("Idempotency-Key conflict; retry".into()))?;
    if !earlier.same_request {
        return Err(Error::Conflict(
            "Idempotency-Key was already used for a different request".into(),
        ));
    }
    Ok(Inserted {
        id: earlier.id,
        status: earlier.status,
        created: false,
    })
}

/// Enqueues many jobs in one statement (one NOTIFY), each validated first.
/// Jobs whose idempotency key their tenant already used are skipped; the ids
/// of the rows created come back. Like [`insert`], it joins the caller's
/// transaction when given one.
pub async fn insert_many(client: &impl GenericClient, jobs: &[NewJob]) -> Result<Vec<Uuid>> {
    for j in jobs {
        j.validate()?;
    }
    let params: Vec<_> = jobs.iter().map(NewJob::params).collect();
    queries::insert_jobs(client, &params).await
}

/// A request to cancel one job ([`cancel`]).
#[derive(Debug, Clone)]
pub struct CancelRequest<'a> {
    /// The job.
    pub id: Uuid,
    /// Recorded with the job and in the audit log.
    pub reason: Option<&'a str>,
    /// Who asks, for the audit log.
    pub actor: &'a str,
    /// Only a job of this tenant, through the database's `ops_api_cancel()`
    /// (the shim's way: its role may not update jobs); `None` for operators
    /// (any tenant).
    pub tenant: Option<&'a str>,
    /// Where the request came from: `cli`, `api`, …
    pub via: &'a str,
}

/// Requests cancellation: a queued job is cancelled at once, a running one is
/// stopped by its worker. Returns the status afterwards, or `None` when there
/// is no such unfinished job (of `tenant`, when given). Audited as
/// `job.cancel`.
pub async fn cancel(
    client: &impl GenericClient,
    req: &CancelRequest<'_>,
) -> Result<Option<String>> {
    let reason = req.reason.map(bound_error);
    let actor: String = req.actor.chars().take(200).collect();
    if let Some(tenant) = req.tenant {
        return queries::api_cancel(client, tenant, req.id, reason.as_deref(), &actor).await;
    }
    queries::cancel_job(
        client,
        &queries::CancelJobParams {
            id: req.id,
            reason: reason.as_deref(),
            actor: &actor,
            via: req.via,
        },
    )
    .await
}

/// Re-queues a failed or cancelled job with its attempts reset. False when
/// there is no such job in either state. Audited as `job.retry`.
pub async fn retry(
    client: &impl GenericClient,
    id: Uuid,
    reason: Option<&str>,
    actor: &str,
) -> Result<bool> {
    let reason = reason.map(bound_error);
    let actor: String = actor.chars().take(200).collect();
    queries::retry_job(client, id, reason.as_deref(), &actor).await
}

/// A job as `jobs list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// The job's id.
    pub id: Uuid,
    /// Its type.
    pub job_type: String,
    /// Its queue.
    pub queue: String,
    /// Its status.
    pub status: String,
    /// Attempts started.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One transition of a job (`ops_job_events`).
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    /// The status before (`None` for the insert).
    pub from_status: Option<String>,
    /// The status after.
    pub to_status: String,
    /// The attempt it happened in.
    pub attempt: i32,
    /// The worker (lease owner) or operator involved.
    pub worker: Option<String>,
    /// Why: an error, a cancel reason, a rescue.
    pub detail: Option<String>,
    /// When (database clock).
    pub at: DateTime<Utc>,
}

/// A job as `jobs show` shows it: the row and its transitions.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    /// What `jobs list` shows.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// Lower runs first.
    pub priority: i16,
    /// The payload.
    pub payload: Value,
    /// The result (at most 10 KB).
    pub result: Option<Value>,
    /// The last error (at most 500 characters).
    pub error: Option<String>,
    /// Runs no earlier than this.
    pub run_at: DateTime<Utc>,
    /// Cancellation was asked for.
    pub cancel_requested: bool,
    /// The worker holding it, while running.
    pub lease_owner: Option<String>,
    /// When the last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Its transitions, oldest first.
    pub events: Vec<JobEvent>,
}

fn summary(row: &tokio_postgres::Row) -> Result<JobSummary> {
    Ok(JobSummary {
        id: row.try_get("id")?,
        job_type: row.try_get("job_type")?,
        queue: row.try_get("queue")?,
        status: row.try_get("status")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Newest first. `limit` is clamped to 1..=200.
pub async fn list(
    client: &impl GenericClient,
    status: Option<&str>,
    job_type: Option<&str>,
    limit: i64,
    schedule: Option<&str>,
) -> Result<Vec<JobSummary>> {
    if let Some(s) = status {
        s.parse::<JobStatus>()?;
    }
    let rows = queries::list_jobs(client, status, job_type, limit.clamp(1, 200), schedule).await?;
    rows.iter().map(summary).collect()
}

/// One job with its transition trail; `None` when there is no such job.
pub async fn show(client: &impl GenericClient, id: Uuid) -> Result<Option<JobDetail>> {
    let Some(row) = queries::show_job(client, id).await? else {
        return Ok(None);
    };
    let events = queries::job_events(client, id)
        .await?
        .iter()
        .map(|r| {
            Ok(JobEvent {
                from_status: r.try_get("from_status")?,
                to_status: r.try_get("to_status")?,
                attempt: r.try_get("attempt")?,
                worker: r.try_get("worker")?,
                detail: r.try_get("detail")?,
                at: r.try_get("at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(JobDetail {
        summary: summary(&row)?,
        priority: row.try_get("priority")?,
        payload: row.try_get("payload")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
        run_at: row.try_get("run_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
        lease_owner: row.try_get("lease_owner")?,
        started_at: row.try_get("started_at")?,
        updated_at: row.try_get("updated_at")?,
        events,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_round_trip_through_their_names() {
        assert_eq!(
            STATUSES,
            ["queued", "running", "succeeded", "failed", "cancelled"]
        );
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("noop"));
        assert!(valid_name("a.b-c_9"));
        for bad in ["", "Noop", "9x", "a b", "a;drop", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn result_over_10_kb_becomes_the_marker() {
        let small = json!({"x": "y".repeat(100)});
        assert_eq!(bound_result(small.clone()), small);
        let big = json!({"x": "y".repeat(MAX_RESULT_BYTES)});
        assert_eq!(
            bound_result(big),
            json!({"error": "Result too large", "truncated": true})
        );
    }

    #[test]
    fn error_is_bounded_to_500_chars_on_a_char_boundary() {
        let e = bound_error(&"é".repeat(2000));
        assert_eq!(e.chars().count(), MAX_ERROR_CHARS);
        assert_eq!(bound_error("a\0b"), "ab");
        assert_eq!(bound_error("short"), "short");
    }
}
