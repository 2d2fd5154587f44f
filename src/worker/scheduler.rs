//! The scheduler: every `worker.schedule_interval` (1 s), one pass of
//! [`crate::schedules::tick`] on a pooled connection, under the client-side
//! deadline. Whichever daemon takes the scheduler's advisory lock that
//! second does the work; exactly-once per slot comes from the tick's
//! transaction (locked rows, `next_slot` advanced with the inserts,
//! idempotency keys), not from who runs it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::db;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg().schedule_interval) => {}
        }
        let pass = db::bounded(shared.call_timeout, async {
            let mut c = db::checkout(&shared.pool).await?;
            let report = crate::schedules::tick(&mut c).await?;
            c.release();
            Ok(report)
        });
        match pass.await {
            Ok(Some(report)) => record(&report),
            Ok(None) => {}
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, "schedule pass failed; the due slots are handled at the next pass");
            }
        }
    }
}

/// Log lines and counters of one pass.
fn record(r: &crate::schedules::TickReport) {
    for (name, slot, job) in &r.enqueued {
        metrics::counter!("opsrunner_schedule_slots_total", "schedule" => name.clone(), "outcome" => "enqueued")
            .increment(1);
        tracing::info!(schedule = %name, slot = %slot.to_rfc3339(), job_id = %job, "schedule slot enqueued");
    }
    for (name, slot, why) in &r.skipped {
        metrics::counter!("opsrunner_schedule_slots_total", "schedule" => name.clone(), "outcome" => "skipped")
            .increment(1);
        tracing::info!(schedule = %name, slot = %slot.to_rfc3339(), reason = %why, "schedule slot skipped");
    }
    for (name, n) in &r.missed {
        metrics::counter!("opsrunner_schedule_slots_total", "schedule" => name.clone(), "outcome" => "missed")
            .increment(*n);
        tracing::warn!(schedule = %name, missed = n, "schedule slots missed while no daemon ran them (catch-up policy)");
    }
    for (name, why) in &r.broken {
        tracing::error!(schedule = %name, reason = %why, "schedule stopped: its definition no longer parses; fix it with `opsrunner schedules add --replace`");
    }
}
