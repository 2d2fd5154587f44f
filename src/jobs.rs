//! Job rows: the bounds applied to what the worker writes, and the operator
//! queries behind `opsrunner enqueue` and `opsrunner jobs`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Largest result stored, serialized compactly.
pub const MAX_RESULT_BYTES: usize = 10 * 1024;
/// Longest error stored, in characters.
pub const MAX_ERROR_CHARS: usize = 500;
/// Largest payload accepted (also a CHECK on the table).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

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

pub struct NewJob {
    pub job_type: String,
    pub queue: String,
    pub priority: i16,
    pub payload: Value,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub timeout: Option<std::time::Duration>,
}

impl NewJob {
    pub fn new(job_type: &str, payload: Value) -> Self {
        Self {
            job_type: job_type.into(),
            queue: "default".into(),
            priority: 0,
            payload,
            max_attempts: 3,
            run_at: None,
            timeout: None,
        }
    }

    /// The same bounds the table's CHECKs enforce, with friendlier messages.
    pub fn validate(&self) -> Result<()> {
        if !valid_name(&self.job_type) {
            return Err(Error::Invalid(
                "job type must match [a-z][a-z0-9_.-]{0,63}".into(),
            ));
        }
        if !valid_name(&self.queue) {
            return Err(Error::Invalid(
                "queue must match [a-z][a-z0-9_.-]{0,63}".into(),
            ));
        }
        if !(-100..=100).contains(&self.priority) {
            return Err(Error::Invalid(
                "priority must be between -100 and 100".into(),
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(Error::Invalid(
                "max_attempts must be between 1 and 100".into(),
            ));
        }
        let size = serde_json::to_vec(&self.payload)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_PAYLOAD_BYTES {
            return Err(Error::Invalid(format!(
                "payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}"
            )));
        }
        if let Some(t) = self.timeout
            && (t.is_zero() || t > std::time::Duration::from_secs(86_400))
        {
            return Err(Error::Invalid(
                "timeout must be between 1 ms and 1 day".into(),
            ));
        }
        Ok(())
    }
}

pub async fn enqueue(client: &impl GenericClient, job: &NewJob) -> Result<Uuid> {
    job.validate()?;
    let timeout = job.timeout.map(|d| d.as_secs_f64());
    let row = client
        .query_one(
            include_str!("../sql/queries/enqueue.sql"),
            &[
                &job.job_type,
                &job.queue,
                &job.priority,
                &job.payload,
                &job.max_attempts,
                &job.run_at,
                &timeout,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Requests cancellation: a queued job is cancelled at once, a running one is
/// stopped by its worker. Returns the status afterwards, or `None` when there
/// is no such unfinished job (of `tenant`, when given). Audited as
/// `job.cancel`, with `via` saying where the request came from.
pub async fn cancel(
    client: &impl GenericClient,
    id: Uuid,
    reason: Option<&str>,
    actor: &str,
    tenant: Option<&str>,
    via: &str,
) -> Result<Option<String>> {
    let reason = reason.map(bound_error);
    let actor: String = actor.chars().take(200).collect();
    let row = client
        .query_opt(
            include_str!("../sql/queries/cancel_job.sql"),
            &[&id, &reason, &actor, &tenant, &via],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
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
    let row = client
        .query_opt(
            include_str!("../sql/queries/retry_job.sql"),
            &[&id, &reason, &actor],
        )
        .await?;
    Ok(row.is_some())
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: Uuid,
    pub job_type: String,
    pub queue: String,
    pub status: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub from_status: Option<String>,
    pub to_status: String,
    pub attempt: i32,
    pub worker: Option<String>,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub priority: i16,
    pub payload: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub run_at: DateTime<Utc>,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub events: Vec<JobEvent>,
}

const SUMMARY_COLUMNS: &str =
    "id, job_type, queue, status::text, attempt, max_attempts, created_at, finished_at";

fn summary(row: &tokio_postgres::Row) -> JobSummary {
    JobSummary {
        id: row.get(0),
        job_type: row.get(1),
        queue: row.get(2),
        status: row.get(3),
        attempt: row.get(4),
        max_attempts: row.get(5),
        created_at: row.get(6),
        finished_at: row.get(7),
    }
}

pub const STATUSES: &[&str] = &["queued", "running", "succeeded", "failed", "cancelled"];

/// Newest first. `limit` is clamped to 1..=200.
pub async fn list(
    client: &impl GenericClient,
    status: Option<&str>,
    job_type: Option<&str>,
    limit: i64,
) -> Result<Vec<JobSummary>> {
    if let Some(s) = status
        && !STATUSES.contains(&s)
    {
        return Err(Error::Invalid(format!(
            "status must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = limit.clamp(1, 200);
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM ops_jobs
         WHERE ($1::text IS NULL OR status = $1::text::ops_job_status)
           AND ($2::text IS NULL OR job_type = $2)
         ORDER BY created_at DESC LIMIT $3"
    );
    let rows = client.query(&sql, &[&status, &job_type, &limit]).await?;
    Ok(rows.iter().map(summary).collect())
}

pub async fn show(client: &impl GenericClient, id: Uuid) -> Result<Option<JobDetail>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS}, priority, payload, result, error, run_at, cancel_requested,
                lease_owner, started_at, updated_at
         FROM ops_jobs WHERE id = $1"
    );
    let Some(row) = client.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    let events = client
        .query(
            "SELECT from_status::text, to_status::text, attempt, worker, detail, at
             FROM ops_job_events WHERE job_id = $1 ORDER BY id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| JobEvent {
            from_status: r.get(0),
            to_status: r.get(1),
            attempt: r.get(2),
            worker: r.get(3),
            detail: r.get(4),
            at: r.get(5),
        })
        .collect();
    Ok(Some(JobDetail {
        summary: summary(&row),
        priority: row.get(8),
        payload: row.get(9),
        result: row.get(10),
        error: row.get(11),
        run_at: row.get(12),
        cancel_requested: row.get(13),
        lease_owner: row.get(14),
        started_at: row.get(15),
        updated_at: row.get(16),
        events,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
