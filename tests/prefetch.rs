//! Prefetch: jobs claimed beyond the free slots wait in the worker; they go
//! back to the queue, attempt refunded, instead of being lost or run when
//! they should not be.

mod common;

use std::time::Duration;

use common::*;
use opsrunner::Registry;

/// Runs enough instant jobs that the worker sees its jobs as short (the
/// condition for prefetching), on a worker with one slot and `prefetch` 5.
async fn warmed_up_single_slot_worker(db: &TestDb) -> (tokio_postgres::Client, RunningWorker) {
    let c = db.client().await;
    enable(&c, &["noop", "sleep"]).await;
    let cfg = db.config(|s| {
        s.worker.concurrency = 1;
        s.worker.prefetch = Some(5);
    });
    let w = start_worker(&cfg, Registry::with_builtins()).await;
    c.execute(
        "INSERT INTO ops_jobs (job_type) SELECT 'noop' FROM generate_series(1, 30)",
        &[],
    )
    .await
    .unwrap();
    wait_all_finished(&c, Duration::from_secs(10), "warm-up noop jobs").await;
    (c, w)
}

/// Inserts `n` sleep jobs in one statement; returns their ids.
async fn insert_sleeps(c: &tokio_postgres::Client, n: i32, ms: i32) -> Vec<uuid::Uuid> {
    c.query(
        "INSERT INTO ops_jobs (job_type, payload)
         SELECT 'sleep', jsonb_build_object('ms', $2::int) FROM generate_series(1, $1::int)
         RETURNING id",
        &[&n, &ms],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// (status, attempt, how many) over the sleep jobs.
async fn sleep_jobs_by_status_and_attempt(c: &tokio_postgres::Client) -> Vec<(String, i32, i64)> {
    c.query(
        "SELECT status::text, attempt, count(*) FROM ops_jobs WHERE job_type = 'sleep'
         GROUP BY 1, 2 ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Waits up to 5 s until the count that `sql` returns is `n`.
async fn wait_count(c: &tokio_postgres::Client, sql: &str, n: i64, what: &str) {
    wait_for(Duration::from_secs(5), what, || async {
        (count(c, sql).await == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_jobs_still_waiting_at_a_graceful_stop_go_back_queued_with_the_attempt_refunded()
{
    let db = migrated_db().await;
    let (c, w) = warmed_up_single_slot_worker(&db).await;
    insert_sleeps(&c, 6, 1000).await;
    // One slot plus five prefetched: all six rows are claimed by one worker.
    wait_count(
        &c,
        "SELECT count(*) FROM ops_jobs WHERE job_type = 'sleep' AND status = 'running'",
        6,
        "six sleep jobs claimed",
    )
    .await;
    w.shutdown().await;

    // The one that had a slot finished during the drain; the others never
    // started and are back in the queue as if never claimed.
    let got = sleep_jobs_by_status_and_attempt(&c).await;
    assert_eq!(
        got,
        vec![("queued".into(), 0, 5), ("succeeded".into(), 1, 1)],
        "{got:?}"
    );
    let returned = count(
        &c,
        "SELECT count(*) FROM ops_job_events e JOIN ops_jobs j ON j.id = e.job_id
         WHERE j.job_type = 'sleep' AND e.to_status = 'queued'
           AND e.detail LIKE '%worker stopped before the job started%'",
    )
    .await;
    assert_eq!(returned, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_job_that_waits_too_long_goes_back_and_prefetching_pauses() {
    let db = migrated_db().await;
    let (c, w) = warmed_up_single_slot_worker(&db).await;
    // Longer than the 2 s a prefetched job may wait for the one slot.
    insert_sleeps(&c, 6, 4000).await;
    wait_count(
        &c,
        "SELECT count(*) FROM ops_jobs WHERE job_type = 'sleep' AND status = 'queued'",
        5,
        "five jobs handed back",
    )
    .await;
    // Handed back, attempt refunded, and not claimed back while the long job
    // holds the slot (the worker now counts its jobs as long).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = sleep_jobs_by_status_and_attempt(&c).await;
    assert_eq!(
        got,
        vec![("queued".into(), 0, 5), ("running".into(), 1, 1)],
        "{got:?}"
    );
    // Every claim is an attempt start: of an attempt that ended in a stored
    // event (a hand-back), or of the attempt running now.
    let claims = count(
        &c,
        "SELECT (SELECT count(*) FROM ops_job_events e JOIN ops_jobs j ON j.id = e.job_id
                 WHERE j.job_type = 'sleep' AND e.attempt_started_at IS NOT NULL)
              + (SELECT count(*) FROM ops_jobs WHERE job_type = 'sleep' AND status = 'running')",
    )
    .await;
    assert_eq!(claims, 6, "the returned jobs were claimed again");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_job_whose_type_is_disabled_before_it_starts_goes_back_unrun() {
    let db = migrated_db().await;
    let (c, w) = warmed_up_single_slot_worker(&db).await;
    // One statement, so one claim: the sleep job first (lower priority
    // number), then five noop jobs that wait for its slot.
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload, priority)
         VALUES ('sleep', '{\"ms\": 1200}', -1), ('noop', '{\"tag\": 1}', 0), ('noop', '{\"tag\": 2}', 0),
                ('noop', '{\"tag\": 3}', 0), ('noop', '{\"tag\": 4}', 0), ('noop', '{\"tag\": 5}', 0)",
        &[],
    )
    .await
    .unwrap();
    wait_count(
        &c,
        "SELECT count(*) FROM ops_jobs WHERE status = 'running'",
        6,
        "all six claimed",
    )
    .await;
    opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: "noop",
            enabled: false,
            reason: Some("stop noop"),
            by: "tests",
            cancel_running: false,
        },
    )
    .await
    .unwrap();
    wait_count(
        &c,
        "SELECT count(*) FROM ops_jobs WHERE payload ? 'tag' AND status = 'queued' AND attempt = 0",
        5,
        "five noop jobs handed back",
    )
    .await;
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM ops_jobs WHERE payload ? 'tag' AND finished_at IS NOT NULL"
        )
        .await,
        0,
        "a disabled job ran"
    );
    let why = count(
        &c,
        "SELECT count(*) FROM ops_job_events e JOIN ops_jobs j ON j.id = e.job_id
         WHERE j.payload ? 'tag' AND e.to_status = 'queued'
           AND e.detail LIKE '%job type was disabled before it started%'",
    )
    .await;
    assert_eq!(why, 5);
    w.shutdown().await;
}
