//! Bulk retry and bulk cancel by filter: the one implementation behind
//! `opsrunner jobs retry|cancel --status …`, the shim's
//! `POST /api/ops/jobs/bulk/{retry,cancel}` and the console's buttons.
//!
//! [`count`] says how many jobs match (the confirmation, and `--dry-run`);
//! [`apply`] changes them in batches of [`BATCH`] through
//! `ops_bulk_batch()` (migration 0014), each batch its own short statement,
//! so a million matching rows never sit in one transaction, and writes one
//! audit row with the filter and the counts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::db::queries::{self, BulkParams};
use crate::error::{Error, Result};
use crate::jobs::JobStatus;

/// Rows per batch: 1,000 row locks at most per statement, a few
/// milliseconds each.
pub const BATCH: i32 = 1000;

/// What to do to the matching jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// Failed or cancelled jobs back to the queue as new.
    Retry,
    /// Queued jobs cancelled, running ones asked to stop.
    Cancel,
}

impl BulkAction {
    fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Cancel => "cancel",
        }
    }
}

/// Which jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkFilter {
    /// The state they are in: failed or cancelled (retry), queued or
    /// running (cancel).
    pub status: JobStatus,
    /// Only this type.
    pub job_type: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only jobs finished (retry) or created (cancel) this recently.
    #[serde(with = "humantime_serde")]
    pub since: Option<Duration>,
}

impl BulkFilter {
    /// Checks that `action` applies to the filter's status.
    pub fn check(&self, action: BulkAction) -> Result<()> {
        let ok = match action {
            BulkAction::Retry => matches!(self.status, JobStatus::Failed | JobStatus::Cancelled),
            BulkAction::Cancel => matches!(self.status, JobStatus::Queued | JobStatus::Running),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(match action {
                BulkAction::Retry => "retry applies to failed or cancelled jobs".into(),
                BulkAction::Cancel => "cancel applies to queued or running jobs".into(),
            }))
        }
    }

    async fn params<'a>(
        &'a self,
        client: &impl GenericClient,
        action: BulkAction,
        tenant: Option<&'a str>,
    ) -> Result<BulkParams<'a>> {
        self.check(action)?;
        let since: Option<DateTime<Utc>> = match self.since {
            None => None,
            Some(d) => Some(
                crate::schedules::db_time(client).await?
                    - chrono::Duration::from_std(d)
                        .map_err(|_| Error::Invalid("since is too long".into()))?,
            ),
        };
        Ok(BulkParams {
            action: action.as_str(),
            tenant,
            status: self.status.as_str(),
            job_type: self.job_type.as_deref(),
            queue: self.queue.as_deref(),
            since,
        })
    }
}

/// What a bulk operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkOutcome {
    /// Jobs that matched when it started.
    pub matched: i64,
    /// Jobs changed (fewer than matched when some were locked, or changed
    /// by someone else meanwhile).
    pub changed: u64,
}

/// How many jobs of `tenant` (None: every tenant) match. The shim runs it
/// in its tenant transaction (row-level security).
pub async fn count(
    client: &impl GenericClient,
    action: BulkAction,
    filter: &BulkFilter,
    tenant: Option<&str>,
) -> Result<i64> {
    let p = filter.params(client, action, tenant).await?;
    queries::bulk_count(client, &p).await
}

/// Who asks, for the audit row.
pub struct Requester<'a> {
    /// `user@host`, `key:<name>`, `master`.
    pub actor: &'a str,
    /// `cli`, `api` or `ui`.
    pub via: &'a str,
    /// Recorded with each cancelled job and in the audit row.
    pub reason: Option<&'a str>,
}

/// Changes the matching jobs of `tenant` (None: every tenant, operators
/// only) in batches, outside any transaction of the caller's, then audits
/// the filter and the counts (`job.bulk_retry`, `job.bulk_cancel`).
/// `matched` is the caller's count (shown before confirming).
pub async fn apply(
    client: &impl GenericClient,
    action: BulkAction,
    filter: &BulkFilter,
    tenant: Option<&str>,
    matched: i64,
    who: &Requester<'_>,
) -> Result<BulkOutcome> {
    let p = filter.params(client, action, tenant).await?;
    let mut changed = 0u64;
    let mut after = None;
    loop {
        let ids = queries::bulk_batch(client, &p, after, BATCH, who.reason).await?;
        changed += ids.len() as u64;
        if ids.len() < BATCH as usize {
            break;
        }
        after = ids.into_iter().max();
    }
    crate::audit::write(
        client,
        &crate::audit::AuditEntry {
            actor: who.actor,
            action: match action {
                BulkAction::Retry => "job.bulk_retry",
                BulkAction::Cancel => "job.bulk_cancel",
            },
            target: None,
            tenant,
            detail: &serde_json::json!({
                "filter": filter, "matched": matched, "changed": changed,
                "via": who.via, "reason": who.reason,
            }),
        },
    )
    .await?;
    Ok(BulkOutcome { matched, changed })
}
