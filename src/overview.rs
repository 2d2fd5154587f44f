//! What `opsrunner top` and `opsrunner stats` show: per job type and queue
//! the jobs queued, scheduled for later, running, and finished in the last
//! minute, the oldest runnable job's age, and the daemons that hold leases.
//! Read from the database only, with plain reads that take no lock a worker
//! needs (`sql/queries/shared/overview_*.sql`).

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::db::queries::{self, DaemonOverview, QueueOverview};
use crate::error::Result;

/// One look at the queue.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Per job type and queue, sorted by type then queue.
    pub queues: Vec<QueueOverview>,
    /// Daemons holding job leases or the maintenance lease.
    pub daemons: Vec<DaemonOverview>,
    /// How long the two reads took, in milliseconds.
    pub took_ms: f64,
}

/// Reads the overview (two statements, no transaction needed: each is a
/// consistent snapshot of its own).
pub async fn take(client: &tokio_postgres::Client) -> Result<Overview> {
    let start = Instant::now();
    let queues = queries::overview_queues(client, None, 60.0).await?;
    let daemons = queries::overview_daemons(client).await?;
    Ok(Overview {
        queues,
        daemons,
        took_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// How long `top` waits before the next read: `every`, or ten times what
/// the last read took when that is longer, so that watching a million-job
/// backlog costs at most a tenth of one database backend.
pub fn next_refresh(every: Duration, took: Duration) -> Duration {
    every.max(took.saturating_mul(10))
}

fn age(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 60.0 => format!("{s:.1}s"),
        Some(s) if s < 3600.0 => format!("{:.0}m{:02.0}s", (s / 60.0).floor(), s % 60.0),
        Some(s) => format!("{:.0}h{:02.0}m", (s / 3600.0).floor(), (s % 3600.0) / 60.0),
    }
}

/// The overview as a plain-text table (also what `top --once` prints).
pub fn render(o: &Overview, lease: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<16} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9}  {:>8}",
        "JOB TYPE",
        "QUEUE",
        "QUEUED",
        "LATER",
        "RUNNING",
        "OK/MIN",
        "FAIL/MIN",
        "CANC/MIN",
        "OLDEST"
    );
    if o.queues.is_empty() {
        let _ = writeln!(
            out,
            "(no unfinished jobs, and none finished in the last minute)"
        );
    }
    let mut total = [0i64; 6];
    for q in &o.queues {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9}  {:>8}",
            q.job_type,
            q.queue,
            q.queued,
            q.scheduled,
            q.running,
            q.succeeded_last_minute,
            q.failed_last_minute,
            q.cancelled_last_minute,
            age(q.oldest_queued_age_seconds)
        );
        for (t, v) in total.iter_mut().zip([
            q.queued,
            q.scheduled,
            q.running,
            q.succeeded_last_minute,
            q.failed_last_minute,
            q.cancelled_last_minute,
        ]) {
            *t += v;
        }
    }
    if o.queues.len() > 1 {
        let [a, b, c, d, e, f] = total;
        let _ = writeln!(
            out,
            "{:<24} {:<16} {a:>9} {b:>9} {c:>8} {d:>9} {e:>8} {f:>9}",
            "total", ""
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<48} {:>8} {:>16}  ROLE",
        "DAEMON (lease owner)", "RUNNING", "LAST HEARTBEAT"
    );
    if o.daemons.is_empty() {
        let _ = writeln!(out, "(no daemon holds a lease)");
    }
    for d in &o.daemons {
        // A heartbeat sets the lease to `lease` ahead, so the last one was
        // `lease - remaining` ago (with this configuration's worker.lease).
        let beat = d
            .lease_expires_in_seconds
            .map(|left| age(Some((lease.as_secs_f64() - left).max(0.0))) + " ago")
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<48} {:>8} {:>16}  {}",
            d.owner,
            d.running,
            beat,
            if d.leads_maintenance {
                "maintenance leader"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "\nread in {:.1} ms", o.took_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_read_slows_the_refresh_in_proportion() {
        let s = Duration::from_secs(1);
        assert_eq!(next_refresh(s, Duration::from_millis(5)), s);
        assert_eq!(
            next_refresh(s, Duration::from_millis(350)),
            Duration::from_millis(3500)
        );
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(None), "-");
        assert_eq!(age(Some(4.26)), "4.3s");
        assert_eq!(age(Some(125.0)), "2m05s");
        assert_eq!(age(Some(7260.0)), "2h01m");
    }
}
