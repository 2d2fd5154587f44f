//! Faults the worker must survive without two workers running one job at
//! once: a worker paused past its lease that claims its own rescued job
//! again, and a network that stalls (sockets open, nothing forwarded).
//! Every execution is recorded in a ledger with its worker, attempt, start
//! and end, and the ledger is checked for overlaps.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opsrunner::{JobContext, Registry};
use serde_json::json;

/// One execution of a handler.
#[derive(Debug, Clone)]
struct Execution {
    worker: &'static str,
    attempt: i32,
    start: Instant,
    end: Instant,
    cancelled: bool,
}

type Ledger = Arc<Mutex<Vec<Execution>>>;

/// A registry whose `long` jobs sleep `ms` (stopping early when cancelled)
/// and record each execution as `worker`'s.
fn recording(worker: &'static str, ledger: &Ledger, ms: u64) -> Registry {
    let mut r = Registry::new();
    let ledger = ledger.clone();
    r.register("long", move |job: JobContext| {
        let ledger = ledger.clone();
        async move {
            let start = Instant::now();
            let cancelled = tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => false,
                _ = job.cancel.cancelled() => true,
            };
            ledger.lock().unwrap().push(Execution {
                worker,
                attempt: job.attempt,
                start,
                end: Instant::now(),
                cancelled,
            });
            if cancelled {
                return Err(opsrunner::HandlerError::Retryable("cancelled".into()));
            }
            Ok(json!({ "by": worker }))
        }
    });
    r
}

/// Pairs of executions of the job that overlapped in time (beyond `slack`).
fn overlaps(ledger: &Ledger, slack: Duration) -> Vec<(Execution, Execution)> {
    let l = ledger.lock().unwrap().clone();
    let mut out = Vec::new();
    for (i, a) in l.iter().enumerate() {
        for b in &l[i + 1..] {
            let (first, second) = if a.start <= b.start { (a, b) } else { (b, a) };
            if first.end > second.start + slack {
                out.push((first.clone(), second.clone()));
            }
        }
    }
    out
}

async fn running_attempt(c: &tokio_postgres::Client, id: uuid::Uuid, attempt: i32) {
    wait_for(Duration::from_secs(10), "the job to run", || async {
        let r = c
            .query_one(
                "SELECT status::text, attempt FROM ops_jobs WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get::<_, String>(0) == "running" && r.get::<_, i32>(1) == attempt).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_claims_its_own_rescued_job_again_cancels_the_old_attempt_and_keeps_the_new()
{
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["long"]).await;
    let ledger = Ledger::default();
    // 4 s: longer than the 3 s lease, so the new attempt lives only if its
    // heartbeats renew it.
    let w = start_worker(&db.config(|_| {}), recording("a", &ledger, 4_000)).await;
    let id = JobRow::new("long").max_attempts(5).insert(&c).await;
    running_attempt(&c, id, 1).await;
    // What the rescuer does to a lease that expired while this worker was
    // paused: back to the queue, owner cleared. The same worker claims it
    // again at its next poll, while attempt 1 still runs here.
    c.execute(
        "UPDATE ops_jobs SET status = 'queued', run_at = now(), lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    wait_status(&c, id, "succeeded", Duration::from_secs(20)).await;
    let attempt: i32 = c
        .query_one("SELECT attempt FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempt, 2,
        "the re-claimed attempt kept its lease and finished"
    );
    let l = ledger.lock().unwrap().clone();
    let first = l.iter().find(|e| e.attempt == 1).expect("attempt 1 ran");
    assert!(
        first.cancelled,
        "attempt 1 was cancelled when its job was claimed again: {l:?}"
    );
    assert!(
        overlaps(&ledger, Duration::from_millis(100)).is_empty(),
        "{l:?}"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_network_never_lets_two_workers_run_a_job_at_once() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["long"]).await;
    let proxy = StallProxy::start(server_addr(&db.url)).await;
    let ledger = Ledger::default();
    let behind_proxy = {
        let url = proxy.url_for(&db.url);
        let s = fast_settings();
        opsrunner::config::Config::with_url(
            s,
            opsrunner::config::DbUrl::parse(&url, "DATABASE_URL").unwrap(),
        )
        .unwrap()
    };
    let a = start_worker(&behind_proxy, recording("a", &ledger, 8_000)).await;
    let id = JobRow::new("long").max_attempts(5).insert(&c).await;
    running_attempt(&c, id, 1).await;
    // The other worker connects directly; it can run the job too.
    let b = start_worker(&db.config(|_| {}), recording("b", &ledger, 500)).await;
    let stalled_at = Instant::now();
    proxy.stall(true);
    wait_status(&c, id, "succeeded", Duration::from_secs(20)).await;
    // A handler still running here is recorded when it ends (8 s at most).
    wait_for(
        Duration::from_secs(10),
        "the stalled worker's execution to end",
        || async {
            ledger
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.worker == "a")
                .then_some(())
        },
    )
    .await;
    let l = ledger.lock().unwrap().clone();
    let by_a = l
        .iter()
        .find(|e| e.worker == "a")
        .expect("a ran the job first");
    let by_b = l
        .iter()
        .find(|e| e.worker == "b")
        .expect("b ran it after the rescue");
    assert!(
        by_a.cancelled,
        "the stalled worker stopped its handler itself: {l:?}"
    );
    assert!(
        by_a.end < by_b.start,
        "the stalled worker's execution ended {:?} after the other started: {l:?}",
        by_a.end.saturating_duration_since(by_b.start)
    );
    // Self-fencing stops it before its 3 s lease could expire.
    assert!(
        by_a.end.duration_since(stalled_at) < Duration::from_secs(3),
        "{l:?}"
    );
    assert!(
        (a.ready)().is_some(),
        "unhealthy while its database is unreachable"
    );
    proxy.stall(false);
    // Once the network is back, the stalled worker recovers on its own,
    // within seconds (it took 24 s when stalled calls had no deadline).
    let back = Instant::now();
    wait_for(
        Duration::from_secs(8),
        "the stalled worker to be ready again",
        || async { (a.ready)().is_none().then_some(()) },
    )
    .await;
    eprintln!(
        "ready again {:?} after the network returned",
        back.elapsed()
    );
    a.shutdown().await;
    b.shutdown().await;
}
