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
    // First prune one interval after start, not at every restart.
    let mut next_prune = tokio::time::Instant::now() + shared.retention.interval;
    let mut next_stats = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg().rescue_interval) => {}
        }
        match tick(&shared, &mut next_stats).await {
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
                shared.db_error();
                tracing::warn!(error = %e, "maintenance tick failed");
            }
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + shared.retention.interval;
            if let Err(e) = prune_elected(&shared, &stop).await {
                shared.db_error();
                tracing::warn!(error = %e, "retention pruning failed; will try next interval");
            }
        }
    }
}

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
async fn publish_queue_gauges_when_due(
    client: &deadpool_postgres::Client,
    shared: &Shared,
    next: &mut tokio::time::Instant,
) -> Result<()> {
    let start = tokio::time::Instant::now();
    if start < *next {
        return Ok(());
    }
    let result = publish_queue_gauges(client, shared).await;
    *next = tokio::time::Instant::now() + queue_stats_pause(start.elapsed());
    result
}

/// Queues seen by a previous gauge update, so that an emptied queue reads 0.
static SEEN_QUEUES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

async fn publish_queue_gauges(client: &deadpool_postgres::Client, shared: &Shared) -> Result<()> {
    let stmt = client
        .prepare_cached(include_str!("../sql/queries/queue_stats.sql"))
        .await?;
    let rows = client.query(&stmt, &[]).await?;
    let mut now_seen = Vec::new();
    for r in &rows {
        let queue: String = r.get(0);
        metrics::gauge!("opsrunner_queue_depth", "queue" => queue.clone())
            .set(r.get::<_, i64>(1) as f64);
        metrics::gauge!("opsrunner_queue_oldest_age_seconds", "queue" => queue.clone())
            .set(r.get::<_, f64>(2));
        now_seen.push(queue);
    }
    if let Ok(mut seen) = SEEN_QUEUES.lock() {
        // Known queues read 0 when empty rather than vanish: alerts need a series.
        for q in std::iter::once("default".to_string()).chain(shared.cfg().queues.iter().cloned()) {
            if !seen.contains(&q) {
                seen.push(q);
            }
        }
        for gone in seen.iter().filter(|q| !now_seen.contains(q)) {
            metrics::gauge!("opsrunner_queue_depth", "queue" => gone.clone()).set(0.0);
            metrics::gauge!("opsrunner_queue_oldest_age_seconds", "queue" => gone.clone()).set(0.0);
        }
        *seen = now_seen;
    }
    Ok(())
}

/// Cheap (a look at shared memory), so every tick: a full notification queue
/// stops every NOTIFY in the cluster.
async fn publish_notification_queue_usage(client: &deadpool_postgres::Client) -> Result<()> {
    let usage: f64 = client
        .query_one("SELECT pg_notification_queue_usage()", &[])
        .await?
        .get(0);
    metrics::gauge!("opsrunner_notification_queue_usage_ratio").set(usage);
    Ok(())
}

/// Arbitrary constant: "opsrprun".
const PRUNER_LOCK: i64 = 0x6f70_7372_7072_756e;

/// Prunes in batches while this daemon holds the pruner lock, one short
/// transaction per batch.
async fn prune_elected(shared: &Shared, stop: &CancellationToken) -> Result<()> {
    let mut total = PruneCounts::default();
    loop {
        let mut client = shared.pool.get().await.map_err(Error::from)?;
        let tx = client.transaction().await?;
        if !lead(&tx, PRUNER_LOCK).await? {
            return Ok(());
        }
        let c = prune_batch(&*tx, &shared.retention).await?;
        tx.commit().await?;
        total.add(&c);
        let more = c.jobs_deleted.max(c.audit_deleted) >= i64::from(shared.retention.batch);
        if !more || stop.is_cancelled() {
            break;
        }
    }
    if total.jobs_deleted + total.audit_deleted > 0 {
        tracing::info!(
            jobs = total.jobs_deleted,
            events = total.events_deleted,
            audit = total.audit_deleted,
            "retention pruning"
        );
    }
    Ok(())
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PruneCounts {
    pub jobs_deleted: i64,
    pub events_deleted: i64,
    pub audit_deleted: i64,
}

impl PruneCounts {
    fn add(&mut self, o: &PruneCounts) {
        self.jobs_deleted += o.jobs_deleted;
        self.events_deleted += o.events_deleted;
        self.audit_deleted += o.audit_deleted;
    }
}

/// One retention batch (see `sql/queries/prune.sql`).
pub async fn prune_batch(
    client: &impl tokio_postgres::GenericClient,
    retention: &crate::config::RetentionConfig,
) -> Result<PruneCounts> {
    let cutoff = |d: std::time::Duration| {
        chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    };
    let row = client
        .query_one(
            include_str!("../sql/queries/prune.sql"),
            &[
                &cutoff(retention.jobs),
                &cutoff(retention.audit),
                &retention.batch,
            ],
        )
        .await?;
    Ok(PruneCounts {
        jobs_deleted: row.get(0),
        events_deleted: row.get(1),
        audit_deleted: row.get(2),
    })
}

/// Prunes until nothing old is left (for `opsrunner prune`).
pub async fn prune_all(
    client: &impl tokio_postgres::GenericClient,
    retention: &crate::config::RetentionConfig,
) -> Result<PruneCounts> {
    let mut total = PruneCounts::default();
    loop {
        let c = prune_batch(client, retention).await?;
        total.add(&c);
        if c.jobs_deleted.max(c.audit_deleted) < i64::from(retention.batch) {
            return Ok(total);
        }
    }
}

/// Election for one transaction: true when this daemon got the lock `key`
/// (released at commit or rollback, so a crashed leader never keeps it).
async fn lead(tx: &deadpool_postgres::Transaction<'_>, key: i64) -> Result<bool> {
    Ok(tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])
        .await?
        .get(0))
}

/// `None` when another daemon holds the lock this tick.
async fn tick(
    shared: &Shared,
    next_stats: &mut tokio::time::Instant,
) -> Result<Option<(u64, u64, u64)>> {
    let mut client = shared.pool.get().await.map_err(Error::from)?;
    let tx = client.transaction().await?;
    if !lead(&tx, RESCUER_LOCK).await? {
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
    metrics::counter!("opsrunner_jobs_rescued_total").increment(requeued + failed);
    // The leader publishes queue gauges, on the connection it already holds;
    // followers do not scan at all.
    publish_notification_queue_usage(&client).await?;
    publish_queue_gauges_when_due(&client, shared, next_stats).await?;
    Ok(Some((requeued, failed, cancelled)))
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
