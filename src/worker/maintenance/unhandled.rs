//! Queued jobs nobody here can run: a type no handler is registered for
//! (`opsrunner enqueue slep`, a plain INSERT with a typo) would otherwise wait
//! forever in silence. Every daemon checks its own registry, leader or not:
//! in a fleet where daemons register different types, each reports what it
//! cannot run (docs/operations.md says so).

use super::super::state::Shared;
use crate::db::queries;
use crate::error::Result;

/// How often the check runs and the WARN line repeats while such jobs wait.
pub(super) const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Types named in the gauge and the log line; the rest are summed as
/// `other`. Types are chosen by whoever inserts, so the label set must not
/// grow with them (11 series at most).
const NAMED_TYPES: i64 = 10;

/// Types exported last time, so that a type whose jobs are gone reads 0.
static EXPORTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Counts, exports `opsrunner_unhandled_queued_jobs{job_type}`, and warns
/// when there are any. Returns the total.
pub(super) async fn check(client: &tokio_postgres::Client, shared: &Shared) -> Result<i64> {
    let handled = shared.live.registry().sorted_job_types();
    // One more than named: whether there is an "other" at all.
    let mut rows = queries::unhandled_types(client, &handled, NAMED_TYPES + 1).await?;
    let other: i64 = if rows.len() as i64 > NAMED_TYPES {
        // Beyond the named ones, count them all (rare: many distinct typos).
        let named: Vec<String> = handled
            .iter()
            .cloned()
            .chain(rows.iter().take(NAMED_TYPES as usize).map(|r| r.0.clone()))
            .collect();
        rows.truncate(NAMED_TYPES as usize);
        queries::unhandled_types(client, &named, i64::MAX)
            .await?
            .iter()
            .map(|r| r.1)
            .sum()
    } else {
        0
    };
    let mut now: Vec<String> = Vec::new();
    for (t, n) in &rows {
        metrics::gauge!("opsrunner_unhandled_queued_jobs", "job_type" => t.clone()).set(*n as f64);
        now.push(t.clone());
    }
    metrics::gauge!("opsrunner_unhandled_queued_jobs", "job_type" => "other").set(other as f64);
    if let Ok(mut before) = EXPORTED.lock() {
        for gone in before.iter().filter(|t| !now.contains(t)) {
            metrics::gauge!("opsrunner_unhandled_queued_jobs", "job_type" => gone.clone()).set(0.0);
        }
        *before = now;
    }
    let total = rows.iter().map(|r| r.1).sum::<i64>() + other;
    if total > 0 {
        let by_type = rows
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .chain((other > 0).then(|| format!("other={other}")))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::warn!(
            queued = total,
            by_type = %by_type,
            "queued jobs of types this worker has no handler for will wait until one is \
             configured; check the type's spelling, or delete or cancel them"
        );
    }
    Ok(total)
}
