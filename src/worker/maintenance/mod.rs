//! Periodic maintenance, run by exactly one daemon at a time: each tick takes
//! a transaction-scoped advisory lock, so whoever gets it does the work and
//! the lock can never outlive a crashed leader.
//!
//! - the rescuer (`rescuer.rs`): expired leases go back to `queued` (or
//!   `failed` when out of attempts) within `rescue_interval` of expiring, and
//!   queued jobs with `cancel_requested` become `cancelled`;
//! - the queue gauges (`gauges.rs`), published by the holder of the
//!   `maintenance` lease in `ops_leaders` alone (`rescuer.rs` takes and
//!   renews it each tick; a daemon that loses it zeroes its gauges);
//! - retention (`pruner.rs`), every `retention.interval`, under a lock of its
//!   own;
//! - on every daemon, leader or not, once a minute: queued jobs of types it
//!   has no handler for (`unhandled.rs`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::db::queries;
use crate::error::Result;

mod gauges;
mod pruner;
mod rescuer;
mod unhandled;

pub use pruner::{PruneCounts, prune_all, prune_batch};

/// Runs the tick loop until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    // First prune one interval after start, not at every restart.
    let mut next_prune = tokio::time::Instant::now() + shared.retention.interval;
    let mut next_stats = tokio::time::Instant::now();
    let mut next_unhandled = tokio::time::Instant::now();
    let mut leadership = rescuer::Leadership { leads: false };
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if leadership.leads && let Err(e) = rescuer::resign(&shared).await {
                    tracing::debug!(error = %e, "could not resign the maintenance lease; it expires by itself");
                }
                return;
            }
            _ = tokio::time::sleep(shared.cfg().rescue_interval) => {}
        }
        match rescuer::tick(&shared, &mut next_stats, &mut leadership).await {
            Ok(None) => {}
            Ok(Some(t)) => {
                if t.requeued + t.failed > 0 {
                    tracing::warn!(
                        requeued = t.requeued,
                        failed = t.failed,
                        "rescued jobs whose lease expired"
                    );
                }
                if t.cancelled > 0 {
                    tracing::info!(cancelled = t.cancelled, "cancelled queued jobs on request");
                }
                if t.requeued > 0 {
                    shared.signals.wake.notify_one();
                }
            }
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, "maintenance tick failed");
            }
        }
        if tokio::time::Instant::now() >= next_unhandled {
            next_unhandled = tokio::time::Instant::now() + unhandled::EVERY;
            let checked = crate::db::bounded(shared.call_timeout, async {
                let c = crate::db::checkout(&shared.pool).await?;
                unhandled::check(c.client(), &shared).await?;
                c.release();
                Ok(())
            });
            if let Err(e) = checked.await {
                shared.db_error();
                tracing::warn!(error = %e, "counting queued jobs of unhandled types failed");
            }
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + shared.retention.interval;
            if let Err(e) = pruner::prune_elected(&shared, &stop).await {
                shared.db_error();
                tracing::warn!(error = %e, "retention pruning failed; will try next interval");
            }
        }
    }
}

/// Election for one transaction: true when this daemon got the lock `key`
/// (released at commit or rollback, so a crashed leader never keeps it).
async fn lead(tx: &deadpool_postgres::Transaction<'_>, key: i64) -> Result<bool> {
    queries::try_lead(&**tx, key).await
}
