//! Leases. One statement per `heartbeat_interval` renews the leases of all of
//! this worker's running attempts and reports which were asked to cancel.
//! An attempt whose lease we no longer hold (rescued, or claimed again as a
//! newer attempt) is cancelled locally: its completion would be fenced out.
//!
//! Self-fencing (`fence`) is a local deadline, apart from the heartbeat
//! call: an attempt whose lease was last known renewed more than
//! `lease - heartbeat_interval - call_timeout` ago is cancelled, whatever the
//! heartbeat call is doing (stalled on a network that acknowledges but never
//! answers, say), so that its handler is stopped before the lease can expire
//! and the rescuer hand the job to another worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::running::{Attempt, CancelReason};
use super::state::Shared;
use crate::db::{self, queries};
use crate::error::Result;

/// How often the fencing deadline is checked: its precision. The check
/// takes the running map's lock once (microseconds for thousands of jobs).
const FENCE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Renews leases until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg().heartbeat_interval) => {}
            _ = shared.signals.cancel_check.notified() => {}
        }
        if let Err(e) = measure_clock(&shared).await {
            tracing::debug!(error = %e, "cannot measure the clock offset this tick");
        }
        let jobs = shared.running.live();
        if jobs.is_empty() {
            continue;
        }
        let started = Instant::now();
        match beat(&shared, &jobs).await {
            Ok(rows) => {
                shared.mark_db_ok();
                let mine: HashSet<Attempt> = rows.iter().map(|r| (r.id, r.attempt)).collect();
                let renewed: Vec<Attempt> = mine.iter().copied().collect();
                shared.running.renewed(&renewed, started);
                for r in rows.iter().filter(|r| r.cancel_requested) {
                    shared
                        .running
                        .cancel((r.id, r.attempt), CancelReason::Requested);
                }
                for lost in jobs.iter().filter(|j| !mine.contains(j)) {
                    shared.running.cancel(*lost, CancelReason::LeaseLost);
                }
            }
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, jobs = jobs.len(), "heartbeat failed");
            }
        }
    }
}

/// Measures the database's clock against ours (the midpoint of the call),
/// exports the offset and warns once when it passes
/// `worker.clock_offset_limit`. Run at start-up and on every heartbeat tick.
pub(crate) async fn measure_clock(shared: &Shared) -> Result<f64> {
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let d = shared.call_timeout;
    let c = db::bounded(d, db::checkout(&shared.pool)).await?;
    let before = SystemTime::now();
    let db_time = db::bounded(d, queries::db_clock(c.client())).await?;
    let after = SystemTime::now();
    c.release();
    let offset = db_time - (unix(before) + unix(after)) / 2.0;
    shared
        .health
        .clock_offset_us
        .store((offset * 1e6) as i64, Ordering::Relaxed);
    metrics::gauge!("opsrunner_db_clock_offset_seconds").set(offset);
    let limit = shared.cfg().clock_offset_limit;
    let off = offset.abs() > limit.as_secs_f64();
    if off != shared.health.clock_off.swap(off, Ordering::Relaxed) {
        if off {
            tracing::warn!(offset_seconds = offset, limit = ?limit,
                "this machine's clock is off the database's by more than worker.clock_offset_limit: \
                 leases, schedules and token expiry use the database's clock, but webhook \
                 signatures are refused until the clocks agree (check NTP)");
        } else {
            tracing::info!(
                offset_seconds = offset,
                "clock offset to the database is back within the limit"
            );
        }
    }
    Ok(offset)
}

async fn beat(shared: &Shared, jobs: &[Attempt]) -> Result<Vec<queries::HeartbeatRow>> {
    let lease = shared.cfg().lease.as_secs_f64();
    db::bounded(shared.call_timeout, async {
        let c = db::checkout(&shared.pool).await?;
        let rows = queries::heartbeat(&*c, jobs, &shared.owner, lease).await?;
        c.release();
        Ok(rows)
    })
    .await
}

/// Self-fencing until `stop` (see the module docs).
pub(crate) async fn fence(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(FENCE_CHECK_EVERY) => {}
        }
        let after = shared.cfg().fence_after(shared.call_timeout);
        let n = shared.running.fence(Instant::now(), after);
        if n > 0 {
            metrics::counter!("opsrunner_jobs_fenced_total").increment(n as u64);
            tracing::error!(jobs = n, after = ?after,
                "no lease renewal within the fencing deadline: stopping these jobs before their \
                 leases can expire, so that no other worker runs them at the same time");
        }
    }
}
