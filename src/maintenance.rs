//! Periodic maintenance, run by exactly one daemon at a time: each tick takes
//! a transaction-scoped advisory lock, so whoever gets it does the work and
//! the lock can never outlive a crashed leader.
//!
//! - the rescuer: expired leases go back to `queued` (or `failed` when out of
//!   attempts) within `rescue_interval` of expiring;
//! - the cancel sweep: queued jobs with `cancel_requested` become `cancelled`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::worker::Shared;

/// Arbitrary constant: "opsrresc".
const RESCUER_LOCK: i64 = 0x6f70_7372_7265_7363;
const BATCH: i64 = 1000;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg().rescue_interval) => {}
        }
        match tick(&shared).await {
            Ok(None) => {}
            Ok(Some((requeued, failed, cancelled))) => {
                if requeued + failed > 0 {
                    tracing::warn!(requeued, failed, "rescued jobs whose lease expired");
                }
                if cancelled > 0 {
                    tracing::info!(cancelled, "cancelled queued jobs on request");
                }
                if requeued > 0 {
                    shared.wake.notify_one();
                }
            }
            Err(e) => {
                shared.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "maintenance tick failed");
            }
        }
    }
}

/// `None` when another daemon holds the lock this tick.
async fn tick(shared: &Shared) -> Result<Option<(u64, u64, u64)>> {
    let mut client = shared.pool.get().await.map_err(Error::from)?;
    let tx = client.transaction().await?;
    let leader: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RESCUER_LOCK])
        .await?
        .get(0);
    if !leader {
        return Ok(None);
    }
    let rescue = tx
        .prepare_cached(include_str!("../sql/queries/rescue.sql"))
        .await?;
    let rows = tx.query(&rescue, &[&BATCH]).await?;
    let failed = rows
        .iter()
        .filter(|r| r.get::<_, &str>(1) == "failed")
        .count() as u64;
    let requeued = rows.len() as u64 - failed;
    let sweep = tx
        .prepare_cached(include_str!("../sql/queries/cancel_queued.sql"))
        .await?;
    let cancelled = tx.query(&sweep, &[&BATCH]).await?.len() as u64;
    tx.commit().await?;
    shared
        .stats
        .rescued
        .fetch_add(requeued + failed, Ordering::Relaxed);
    Ok(Some((requeued, failed, cancelled)))
}
