//! The rescuer and the cancel sweep: one elected tick.

use std::sync::atomic::Ordering;

use super::super::state::Shared;
use super::{gauges, lead};
use crate::db::queries;
use crate::error::{Error, Result};

/// Arbitrary constant: "opsrresc".
const RESCUER_LOCK: i64 = 0x6f70_7372_7265_7363;
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
    let mut client = shared.pool.get().await.map_err(Error::from)?;
    let tx = client.transaction().await?;
    if !lead(&tx, RESCUER_LOCK).await? {
        return Ok(None);
    }
    let rescued = queries::rescue(&tx, BATCH).await?;
    let cancelled = queries::cancel_queued(&tx, BATCH).await?;
    tx.commit().await?;
    let n = rescued.requeued + rescued.failed;
    shared.stats.rescued.fetch_add(n, Ordering::Relaxed);
    metrics::counter!("opsrunner_jobs_rescued_total").increment(n);
    // The leader publishes queue gauges, on the connection it already holds;
    // followers do not scan at all.
    gauges::publish_notification_queue_usage(&client).await?;
    gauges::publish_queue_gauges_when_due(&client, shared, next_stats).await?;
    Ok(Some(Tick {
        requeued: rescued.requeued,
        failed: rescued.failed,
        cancelled,
    }))
}
