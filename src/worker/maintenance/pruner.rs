//! Retention: finished jobs (with their events) and audit rows older than
//! their retention are deleted in batches, one short transaction each, by
//! the daemon that holds the pruner lock; `opsrunner prune` runs the same
//! batches until nothing old is left.

use super::super::state::Shared;
use super::lead;
use crate::config::RetentionConfig;
use crate::db::{self, Conn, queries};
use crate::error::Result;
use tokio_util::sync::CancellationToken;

/// Arbitrary constant: "opsrprun".
const PRUNER_LOCK: i64 = 0x6f70_7372_7072_756e;

/// Prunes in batches while this daemon holds the pruner lock, one short
/// transaction per batch.
pub(super) async fn prune_elected(shared: &Shared, stop: &CancellationToken) -> Result<()> {
    let mut total = PruneCounts::default();
    loop {
        let d = shared.call_timeout;
        let mut conn = db::bounded(d, db::checkout(&shared.pool)).await?;
        let Some(c) = db::bounded(d, elected_batch(&mut conn, &shared.retention)).await? else {
            conn.release();
            return Ok(());
        };
        conn.release();
        total.add(&c);
        let more = c.jobs_deleted.max(c.audit_deleted) >= i64::from(shared.retention.batch);
        if !more || stop.is_cancelled() {
            break;
        }
    }
    // A pass that led and finished: what the "last successful prune" gauge
    // and its alert watch (max() across daemons: only the leader sets it).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!("opsrunner_last_prune_timestamp_seconds").set(now);
    if total.jobs_deleted + total.audit_deleted > 0 {
        tracing::info!(
            jobs = total.jobs_deleted,
            events = total.events_deleted,
            audit = total.audit_deleted,
            "retention pruning"
        );
    }
    Ok(())
}

/// One batch in its own transaction, if this daemon holds the pruner lock.
async fn elected_batch(c: &mut Conn, retention: &RetentionConfig) -> Result<Option<PruneCounts>> {
    let tx = c.transaction().await?;
    if !lead(&tx, PRUNER_LOCK).await? {
        return Ok(None);
    }
    let counts = prune_batch(&*tx, retention).await?;
    tx.commit().await?;
    Ok(Some(counts))
}

/// What a prune deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PruneCounts {
    /// Finished jobs.
    pub jobs_deleted: i64,
    /// Their transition events.
    pub events_deleted: i64,
    /// Audit rows.
    pub audit_deleted: i64,
}

impl PruneCounts {
    fn add(&mut self, o: &PruneCounts) {
        self.jobs_deleted += o.jobs_deleted;
        self.events_deleted += o.events_deleted;
        self.audit_deleted += o.audit_deleted;
    }
}

/// One retention batch (see `sql/queries/prune.sql`).
pub async fn prune_batch(
    client: &impl tokio_postgres::GenericClient,
    retention: &RetentionConfig,
) -> Result<PruneCounts> {
    let params = queries::PruneParams {
        succeeded_secs: retention.succeeded_after().as_secs_f64(),
        failed_secs: retention.failed.as_secs_f64(),
        cancelled_secs: retention.cancelled.as_secs_f64(),
        audit_secs: retention.audit.as_secs_f64(),
        batch: retention.batch,
    };
    let row = queries::prune(client, &params).await?;
    Ok(PruneCounts {
        jobs_deleted: row.jobs,
        events_deleted: row.events,
        audit_deleted: row.audit,
    })
}

/// Prunes until nothing old is left (for `opsrunner prune`).
pub async fn prune_all(
    client: &impl tokio_postgres::GenericClient,
    retention: &RetentionConfig,
) -> Result<PruneCounts> {
    let mut total = PruneCounts::default();
    loop {
        let c = prune_batch(client, retention).await?;
        total.add(&c);
        if c.jobs_deleted.max(c.audit_deleted) < i64::from(retention.batch) {
            return Ok(total);
        }
    }
}
