//! Queue gauges (depth and oldest age per queue and job type) and the
//! NOTIFY queue's usage, published by the elected maintenance leader only.

use super::super::limits;
use super::super::state::Shared;
use crate::db::queries;
use crate::error::Result;

/// The queue gauges count every runnable row, which grows with the backlog
/// (about 350 ms of server time at a million queued jobs). The count runs
/// again only after this many times its own last duration, so that it never
/// takes more than about 2 % of one server backend, however deep the queue.
const STATS_COST_FACTOR: u32 = 50;

/// How long to wait before counting again after a count that took `took`.
fn queue_stats_pause(took: std::time::Duration) -> std::time::Duration {
    took.saturating_mul(STATS_COST_FACTOR)
}

/// Publishes the queue gauges unless the last count asked for a pause;
/// `next` is when counting is allowed again.
pub(super) async fn publish_queue_gauges_when_due(
    client: &deadpool_postgres::Client,
    shared: &Shared,
    next: &mut tokio::time::Instant,
) -> Result<()> {
    let start = tokio::time::Instant::now();
    if start < *next {
        return Ok(());
    }
    let mut result = publish_queue_gauges(client, shared).await;
    if result.is_ok() {
        result = publish_limit_gauges(client).await;
    }
    *next = tokio::time::Instant::now() + queue_stats_pause(start.elapsed());
    result
}

/// A queue gauge's labels: (queue, job_type).
type QueueLabels = (String, String);

/// Label pairs seen by a previous gauge update, so that an emptied queue
/// reads 0.
static SEEN_QUEUES: std::sync::Mutex<Vec<QueueLabels>> = std::sync::Mutex::new(Vec::new());

fn set_queue_gauges((queue, job_type): &QueueLabels, depth: f64, oldest: f64) {
    let labels = [("queue", queue.clone()), ("job_type", job_type.clone())];
    metrics::gauge!("opsrunner_queue_depth", &labels).set(depth);
    metrics::gauge!("opsrunner_queue_oldest_age_seconds", &labels).set(oldest);
}

async fn publish_queue_gauges(client: &deadpool_postgres::Client, shared: &Shared) -> Result<()> {
    let rows = queries::queue_stats(client).await?;
    // Unconfigured queues and unhandled types (names chosen by whoever
    // inserts) add up as "other".
    let configured = shared.cfg().queues.clone();
    let types = shared.live.registry().sorted_job_types();
    let mut by_label: Vec<(QueueLabels, f64, f64)> = Vec::new();
    for r in rows {
        let label = (
            crate::metrics::queue_label(&configured, &r.queue),
            crate::metrics::job_type_label(&types, &r.job_type),
        );
        match by_label.iter_mut().find(|(l, _, _)| *l == label) {
            Some(e) => {
                e.1 += r.depth as f64;
                e.2 = e.2.max(r.oldest_age_secs);
            }
            None => by_label.push((label, r.depth as f64, r.oldest_age_secs)),
        }
    }
    let mut now_seen = Vec::new();
    for (label, depth, oldest) in by_label {
        set_queue_gauges(&label, depth, oldest);
        now_seen.push(label);
    }
    if let Ok(mut seen) = SEEN_QUEUES.lock() {
        // Known queues read 0 for every handled type when empty rather than
        // vanish: alerts need a series.
        for q in std::iter::once("default".to_string()).chain(configured) {
            for t in &types {
                let known = (q.clone(), t.clone());
                if !seen.contains(&known) {
                    seen.push(known);
                }
            }
        }
        for gone in seen.iter().filter(|l| !now_seen.contains(l)) {
            set_queue_gauges(gone, 0.0, 0.0);
        }
        *seen = now_seen;
    }
    Ok(())
}

/// Limited types seen by the last held-back gauge update.
static SEEN_LIMITED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Per limited type and rule, the runnable jobs that rule holds back now
/// (`opsrunner_limit_held_jobs`); 0 for the other rules, and for types whose
/// limit was cleared.
async fn publish_limit_gauges(client: &deadpool_postgres::Client) -> Result<()> {
    let rows = queries::limit_held(client).await?;
    let mut names = Vec::new();
    for h in &rows {
        let held = limits::held_back(h);
        for kind in limits::LimitKind::ALL {
            let n = held.filter(|(k, _)| *k == kind).map_or(0, |(_, n)| n);
            metrics::gauge!("opsrunner_limit_held_jobs", "job_type" => h.job_type.clone(), "limit" => kind.label())
                .set(n as f64);
        }
        names.push(h.job_type.clone());
    }
    if let Ok(mut seen) = SEEN_LIMITED.lock() {
        for gone in seen.iter().filter(|n| !names.contains(n)) {
            zero_limit_gauges(gone);
        }
        *seen = names;
    }
    Ok(())
}

fn zero_limit_gauges(job_type: &str) {
    for kind in limits::LimitKind::ALL {
        metrics::gauge!("opsrunner_limit_held_jobs", "job_type" => job_type.to_string(), "limit" => kind.label())
            .set(0.0);
    }
}

/// Schedules seen by the last schedule gauge update.
static SEEN_SCHEDULES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Per schedule, the seconds since its last enqueued job, and how many
/// enabled schedules are behind their slot (next slot more than the grace
/// in the past: no daemon is scheduling, or one is stuck).
pub(super) async fn publish_schedule_gauges(client: &deadpool_postgres::Client) -> Result<()> {
    let c: &tokio_postgres::Client = client;
    let now = crate::schedules::db_time(c).await?;
    let rows = queries::schedule_list(c, None).await?;
    let grace = chrono::Duration::from_std(crate::schedules::GRACE).unwrap_or_default();
    let behind = rows
        .iter()
        .filter(|s| s.enabled && s.next_slot.is_some_and(|n| n < now - grace))
        .count();
    metrics::gauge!("opsrunner_schedules_behind").set(behind as f64);
    let mut names = Vec::new();
    for s in &rows {
        if let Some(t) = s.last_enqueued_at {
            let secs = (now - t).num_milliseconds() as f64 / 1e3;
            metrics::gauge!("opsrunner_schedule_last_enqueue_age_seconds", "schedule" => s.name.clone())
                .set(secs.max(0.0));
            names.push(s.name.clone());
        }
    }
    if let Ok(mut seen) = SEEN_SCHEDULES.lock() {
        for gone in seen.iter().filter(|n| !names.contains(n)) {
            metrics::gauge!("opsrunner_schedule_last_enqueue_age_seconds", "schedule" => gone.clone())
                .set(0.0);
        }
        *seen = names;
    }
    Ok(())
}

/// Sets every leader-only gauge to 0: called when this daemon stops
/// leading, so that a `sum()` over daemons counts the new leader's alone.
pub(super) fn zero_leader_gauges() {
    if let Ok(seen) = SEEN_QUEUES.lock() {
        for l in seen.iter() {
            set_queue_gauges(l, 0.0, 0.0);
        }
    }
    metrics::gauge!("opsrunner_notification_queue_usage_ratio").set(0.0);
    metrics::gauge!("opsrunner_oldest_snapshot_age_seconds").set(0.0);
    metrics::gauge!("opsrunner_replication_slot_xmin_age_transactions").set(0.0);
    metrics::gauge!("opsrunner_schedules_behind").set(0.0);
    if let Ok(seen) = SEEN_LIMITED.lock() {
        for t in seen.iter() {
            zero_limit_gauges(t);
        }
    }
    if let Ok(seen) = SEEN_SCHEDULES.lock() {
        for s in seen.iter() {
            metrics::gauge!("opsrunner_schedule_last_enqueue_age_seconds", "schedule" => s.clone())
                .set(0.0);
        }
    }
}

/// Cheap (a look at shared memory), so every tick: a full notification queue
/// stops every NOTIFY in the cluster.
pub(super) async fn publish_notification_queue_usage(
    client: &deadpool_postgres::Client,
) -> Result<()> {
    let usage = queries::notification_usage(&***client).await?;
    metrics::gauge!("opsrunner_notification_queue_usage_ratio").set(usage);
    Ok(())
}

/// When the snapshot warning was last logged, so that a snapshot held for
/// an hour logs once a minute, not once a tick.
static SNAPSHOT_WARNED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// How often the held-snapshot warning repeats while it lasts.
const SNAPSHOT_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Exports the age of the oldest snapshot held elsewhere (sessions and
/// replication slots) and warns past `worker.snapshot_warn_after`: every
/// claim slows while it lives (docs/runbook.md, "Claims get slower").
pub(super) async fn publish_oldest_snapshot(
    client: &deadpool_postgres::Client,
    shared: &Shared,
) -> Result<()> {
    let s = queries::oldest_snapshot(&***client).await?;
    metrics::gauge!("opsrunner_oldest_snapshot_age_seconds").set(s.session_age_secs);
    metrics::gauge!("opsrunner_replication_slot_xmin_age_transactions").set(s.slot_xmin_age as f64);
    let limit = shared.cfg().snapshot_warn_after;
    if s.session_age_secs > limit.as_secs_f64()
        && let Ok(mut last) = SNAPSHOT_WARNED.lock()
        && last.is_none_or(|t| t.elapsed() >= SNAPSHOT_WARN_EVERY)
    {
        *last = Some(std::time::Instant::now());
        tracing::warn!(
            age_seconds = s.session_age_secs.round(),
            application = s.oldest_application.as_deref().unwrap_or("?"),
            "a snapshot held open elsewhere in the database keeps dead rows alive and slows \
             every claim; end that transaction (see docs/runbook.md)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slow_queue_count_pauses_the_next_one_in_proportion() {
        // A cheap count (small queue) runs again at the next tick.
        assert!(queue_stats_pause(Duration::from_millis(2)) < Duration::from_secs(5) / 10);
        // At a million queued rows the count took about 350 ms: the gauges
        // then refresh about every 17.5 s instead of every 5 s tick.
        assert_eq!(
            queue_stats_pause(Duration::from_millis(350)),
            Duration::from_millis(17_500)
        );
    }
}
