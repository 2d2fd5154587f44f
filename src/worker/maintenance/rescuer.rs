//! The rescuer and the cancel sweep: one elected tick.

use std::sync::atomic::Ordering;

use super::super::state::Shared;
use super::{gauges, lead};
use crate::db::{self, Conn, queries};
use crate::error::Result;

/// Arbitrary constant: "opsrresc".
const RESCUER_LOCK: i64 = 0x6f70_7372_7265_7363;
/// The longest lease any daemon may take (`worker.lease` is validated
/// against it): a lease further away than this was not set by a daemon.
pub(crate) const MAX_LEASE: std::time::Duration = crate::config::MAX_LEASE;

/// Rows handled per statement, so that no tick holds many locks.
const BATCH: i64 = 1000;

/// What one tick did.
pub(super) struct Tick {
    pub requeued: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// `None` when another daemon holds the lock this tick.
pub(super) async fn tick(
    shared: &Shared,
    next_stats: &mut tokio::time::Instant,
) -> Result<Option<Tick>> {
    // Every call under the deadline; on any failure the connection is
    // dropped unreleased, so closed (a stalled one never goes back).
    let d = shared.call_timeout;
    let mut client = db::bounded(d, db::checkout(&shared.pool)).await?;
    let Some((rescued, cancelled)) = db::bounded(d, rescue_and_sweep(&mut client)).await? else {
        client.release();
        return Ok(None);
    };
    let n = rescued.requeued + rescued.failed;
    shared.stats.rescued.fetch_add(n, Ordering::Relaxed);
    metrics::counter!("opsrunner_jobs_rescued_total").increment(n);
    // The leader publishes queue gauges, on the connection it already holds;
    // followers do not scan at all.
    db::bounded(d, gauges::publish_notification_queue_usage(&client)).await?;
    db::bounded(d, gauges::publish_oldest_snapshot(&client, shared)).await?;
    // The count grows with the backlog (350 ms at a million queued rows):
    // it gets four deadlines, and pauses itself in proportion (gauges.rs).
    db::bounded(
        d * 4,
        gauges::publish_queue_gauges_when_due(&client, shared, next_stats),
    )
    .await?;
    client.release();
    Ok(Some(Tick {
        requeued: rescued.requeued,
        failed: rescued.failed,
        cancelled,
    }))
}

/// The elected part, in one transaction: `None` when another daemon leads.
async fn rescue_and_sweep(c: &mut Conn) -> Result<Option<(queries::Rescued, u64)>> {
    let tx = c.transaction().await?;
    if !lead(&tx, RESCUER_LOCK).await? {
        return Ok(None);
    }
    let rescued = queries::rescue(&tx, BATCH, MAX_LEASE.as_secs_f64()).await?;
    let cancelled = queries::cancel_queued(&tx, BATCH).await?;
    tx.commit().await?;
    Ok(Some((rescued, cancelled)))
}
