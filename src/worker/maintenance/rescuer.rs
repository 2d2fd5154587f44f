//! The rescuer and the cancel sweep: one elected tick.

use std::sync::atomic::Ordering;

use super::super::outcome_log::Logged;
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

/// The lease (`ops_leaders.name`) of the daemon that exports the
/// cluster-wide gauges.
pub(super) const GAUGES_LEASE: &str = "maintenance";

/// Whether this daemon led the gauges at its last tick.
pub(super) struct Leadership {
    pub leads: bool,
}

/// `None` when another daemon held the rescue lock this tick.
pub(super) async fn tick(
    shared: &Shared,
    next_stats: &mut tokio::time::Instant,
    leadership: &mut Leadership,
) -> Result<Option<Tick>> {
    // Every call under the deadline; on any failure the connection is
    // dropped unreleased, so closed (a stalled one never goes back).
    let d = shared.call_timeout;
    let mut client = db::bounded(d, db::checkout(&shared.pool)).await?;
    let swept = db::bounded(d, rescue_and_sweep(&mut client)).await?;
    if let Some((rescued, _)) = &swept {
        let n = rescued.requeued + rescued.failed;
        shared.stats.rescued.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("opsrunner_jobs_rescued_total").increment(n);
        for j in &rescued.jobs {
            if shared.outcome_log.allow(Logged::Rescued) {
                tracing::warn!(
                    job_id = %j.id, job_type = %j.job_type, queue = %j.queue, attempt = j.attempt,
                    status = %j.status, error = j.error.as_deref().unwrap_or_default(),
                    "job rescued: its worker stopped renewing the lease"
                );
            }
        }
    }
    shared.outcome_log.flush_if_due();
    // Three ticks of lease: one late tick (a slow database) keeps it, a
    // daemon gone for three ticks hands it over.
    let ttl = (shared.cfg().rescue_interval * 3).as_secs_f64();
    let leads = db::bounded(
        d,
        queries::lead_lease(&*client, GAUGES_LEASE, &shared.owner, ttl),
    )
    .await?;
    if leads {
        // The leader publishes the gauges, on the connection it already
        // holds; followers do not scan at all.
        db::bounded(d, gauges::publish_notification_queue_usage(&client)).await?;
        db::bounded(d, gauges::publish_oldest_snapshot(&client, shared)).await?;
        db::bounded(d, gauges::publish_schedule_gauges(&client)).await?;
        // The count grows with the backlog (350 ms at a million queued
        // rows): four deadlines, and it pauses itself in proportion.
        db::bounded(
            d * 4,
            gauges::publish_queue_gauges_when_due(&client, shared, next_stats),
        )
        .await?;
    }
    client.release();
    if leads != leadership.leads {
        if leads {
            tracing::info!(owner = %shared.owner, "this daemon now leads maintenance and exports the queue gauges");
        } else {
            tracing::info!("another daemon leads maintenance now; the queue gauges read 0 here");
            gauges::zero_leader_gauges();
        }
        leadership.leads = leads;
        metrics::gauge!("opsrunner_maintenance_leader").set(if leads { 1.0 } else { 0.0 });
    }
    Ok(swept.map(|(rescued, cancelled)| Tick {
        requeued: rescued.requeued,
        failed: rescued.failed,
        cancelled,
    }))
}

/// Gives the lease up at shutdown, so that another daemon takes over at its
/// next tick rather than after the lease expires.
pub(super) async fn resign(shared: &Shared) -> Result<()> {
    let d = shared.call_timeout;
    let client = db::bounded(d, db::checkout(&shared.pool)).await?;
    db::bounded(
        d,
        queries::resign_lease(client.client(), GAUGES_LEASE, &shared.owner),
    )
    .await?;
    client.release();
    Ok(())
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
