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
    // The config file's schedules: at start, after each SIGHUP, and again
    // after a failed attempt (the database may have been away).
    let mut apply_config = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg().schedule_interval) => {}
            _ = shared.signals.schedules_changed.notified() => apply_config = true,
        }
        if apply_config {
            apply_config = !apply(&shared).await;
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

/// Applies the config file's `[[schedule]]` entries; true when done.
async fn apply(shared: &Shared) -> bool {
    let specs = shared
        .config_schedules
        .read()
        .map(|s| s.clone())
        .unwrap_or_default();
    let applied = db::bounded(shared.call_timeout, async {
        let mut c = db::checkout(&shared.pool).await?;
        let r = crate::schedules::apply_config(&mut c, &specs, &shared.owner).await?;
        c.release();
        Ok(r)
    });
    match applied.await {
        Ok(r) => {
            for name in &r.conflicts {
                tracing::warn!(schedule = %name, "a [[schedule]] entry has the name of a schedule made with the CLI; the CLI's is kept (remove it, or rename the entry)");
            }
            if !(r.saved.is_empty() && r.removed.is_empty()) {
                tracing::info!(saved = ?r.saved, removed = ?r.removed, "config file schedules applied");
            }
            true
        }
        Err(e) => {
            shared.db_error();
            tracing::warn!(error = %e, "applying the config file's schedules failed; retrying");
            false
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
