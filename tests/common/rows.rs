//! Job rows as an app writes them (plain SQL), and reading them back.

use serde_json::Value;
use uuid::Uuid;

/// A job row to insert with plain SQL, as an application would: only the
/// columns set here are named, the rest take the table's defaults.
/// `JobRow::new("sleep").payload(json!({"ms": 5})).max_attempts(1).timeout("2s").insert(&c)`.
#[derive(Debug, Clone)]
pub struct JobRow {
    job_type: String,
    payload: Option<Value>,
    max_attempts: Option<i32>,
    priority: Option<i16>,
    timeout: Option<String>,
    tenant: Option<String>,
    cancel_requested: Option<bool>,
    dry_run: Option<bool>,
    policy_token: Option<String>,
}

impl JobRow {
    /// A row of `job_type`, every other column defaulted.
    pub fn new(job_type: &str) -> Self {
        Self {
            job_type: job_type.into(),
            payload: None,
            max_attempts: None,
            priority: None,
            timeout: None,
            tenant: None,
            cancel_requested: None,
            dry_run: None,
            policy_token: None,
        }
    }

    /// Sets `payload`.
    pub fn payload(mut self, v: Value) -> Self {
        self.payload = Some(v);
        self
    }

    /// Sets `max_attempts`.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets `priority`.
    pub fn priority(mut self, p: i16) -> Self {
        self.priority = Some(p);
        self
    }

    /// Sets `timeout`, as an interval literal (`"2s"`, `"1 minute"`).
    pub fn timeout(mut self, interval: &str) -> Self {
        self.timeout = Some(interval.into());
        self
    }

    /// Sets `tenant_id`.
    pub fn tenant(mut self, t: &str) -> Self {
        self.tenant = Some(t.into());
        self
    }

    /// Sets `cancel_requested`.
    pub fn cancel_requested(mut self, b: bool) -> Self {
        self.cancel_requested = Some(b);
        self
    }

    /// Sets `dry_run`.
    pub fn dry_run(mut self, b: bool) -> Self {
        self.dry_run = Some(b);
        self
    }

    /// Sets `policy_token`.
    pub fn policy_token(mut self, t: &str) -> Self {
        self.policy_token = Some(t.into());
        self
    }

    /// INSERTs the row and returns its id.
    pub async fn insert(&self, c: &tokio_postgres::Client) -> Uuid {
        let mut cols = vec!["job_type".to_string()];
        let mut vals = vec!["$1".to_string()];
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
            vec![Box::new(self.job_type.clone())];
        let mut add =
            |col: &str, cast: &str, p: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
                params.push(p);
                cols.push(col.into());
                vals.push(format!("${}{cast}", params.len()));
            };
        if let Some(v) = &self.payload {
            add("payload", "", Box::new(v.clone()));
        }
        if let Some(n) = self.max_attempts {
            add("max_attempts", "", Box::new(n));
        }
        if let Some(p) = self.priority {
            add("priority", "", Box::new(p));
        }
        if let Some(t) = &self.timeout {
            add("timeout", "::text::interval", Box::new(t.clone()));
        }
        if let Some(t) = &self.tenant {
            add("tenant_id", "", Box::new(t.clone()));
        }
        if let Some(b) = self.cancel_requested {
            add("cancel_requested", "", Box::new(b));
        }
        if let Some(b) = self.dry_run {
            add("dry_run", "", Box::new(b));
        }
        if let Some(t) = &self.policy_token {
            add("policy_token", "", Box::new(t.clone()));
        }
        let sql = format!(
            "INSERT INTO ops_jobs ({}) VALUES ({}) RETURNING id",
            cols.join(", "),
            vals.join(", ")
        );
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref() as _).collect();
        c.query_one(&sql, &refs)
            .await
            .expect("insert job row")
            .get(0)
    }
}

/// Inserts a job of `job_type` with `payload` by plain SQL.
pub async fn insert_job(client: &tokio_postgres::Client, job_type: &str, payload: Value) -> Uuid {
    JobRow::new(job_type).payload(payload).insert(client).await
}

/// Turns these flags on, as an operator would.
pub async fn enable(client: &tokio_postgres::Client, flags: &[&str]) {
    for f in flags {
        let change = opsrunner::flags::FlagChange {
            name: f,
            enabled: true,
            reason: Some("test"),
            by: "tests",
            cancel_running: false,
        };
        opsrunner::flags::set(client, &change)
            .await
            .expect("enable flag");
    }
}

/// The single bigint that `sql` (a `SELECT count(*) …`) returns.
pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .expect("count query")
        .get(0)
}

/// The first column of every row `sql` returns, in order.
pub async fn column<T>(client: &tokio_postgres::Client, sql: &str) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, &[])
        .await
        .expect("column query")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A job's status.
pub async fn status(client: &tokio_postgres::Client, id: Uuid) -> String {
    client
        .query_one("SELECT status::text FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .expect("job row")
        .get(0)
}

/// The statuses a job moved to, in order: its whole trail as `jobs show`
/// rebuilds it from the row and its stored events.
pub async fn transitions(client: &tokio_postgres::Client, id: Uuid) -> Vec<String> {
    trail(client, id)
        .await
        .into_iter()
        .map(|e| e.to_status)
        .collect()
}

/// A job's trail as `jobs show` rebuilds it.
pub async fn trail(client: &tokio_postgres::Client, id: Uuid) -> Vec<opsrunner::jobs::JobEvent> {
    opsrunner::jobs::show(client, id)
        .await
        .unwrap()
        .expect("job row")
        .events
}

/// (status, attempt, lease cleared) of a job: what a hand-back must leave.
pub async fn status_attempt_lease_cleared(
    client: &tokio_postgres::Client,
    id: Uuid,
) -> (String, i32, bool) {
    let row = client
        .query_one(
            "SELECT status::text, attempt, lease_expires_at IS NULL FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}
