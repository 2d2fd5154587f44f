//! Retention: old finished jobs, their events and old audit rows go, in
//! batches; nothing queued or running is ever pruned.

mod common;

use std::time::Duration;

use common::*;
use opsrunner::Registry;
use opsrunner::config::RetentionConfig;

async fn seed(c: &tokio_postgres::Client) {
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, status, finished_at, created_at)
         SELECT 'noop', s::ops_job_status, now() - interval '100 days', now() - interval '101 days'
         FROM unnest(ARRAY['succeeded', 'failed', 'cancelled', 'succeeded', 'failed']) s;
         INSERT INTO ops_jobs (job_type, status, finished_at) VALUES ('noop', 'succeeded', now() - interval '10 days');
         INSERT INTO ops_jobs (job_type, status, created_at, run_at) VALUES ('noop', 'queued', now() - interval '200 days', now() - interval '200 days');
         INSERT INTO ops_jobs (job_type, status, created_at, attempt, lease_owner, lease_expires_at)
             VALUES ('noop', 'running', now() - interval '200 days', 1, 'x', now() + interval '1 hour');
         INSERT INTO ops_job_events (job_id, to_status, attempt, at)
             SELECT id, status, 1, finished_at FROM ops_jobs WHERE finished_at IS NOT NULL;
         INSERT INTO ops_audit_log (actor, action, at) VALUES
             ('a', 'flag.enable', now() - interval '400 days'),
             ('a', 'flag.enable', now() - interval '380 days'),
             ('a', 'flag.enable', now() - interval '3 days');",
    )
    .await
    .unwrap();
}

async fn counts(c: &tokio_postgres::Client) -> (i64, i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM ops_jobs),
                    (SELECT count(*) FROM ops_jobs WHERE status IN ('queued', 'running')),
                    (SELECT count(*) FROM ops_job_events),
                    (SELECT count(*) FROM ops_audit_log)",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_old_finished_jobs_events_and_audit_rows_in_batches_and_never_unfinished_jobs()
 {
    let db = migrated_db().await;
    let c = db.client().await;
    seed(&c).await;
    assert_eq!(counts(&c).await, (8, 2, 6, 3));
    // The same cutoff for every final status (by default failed and
    // cancelled jobs are kept twice as long; that default is tested in
    // tests/roles.rs).
    let retention = RetentionConfig {
        batch: 2,
        failed: Duration::from_secs(90 * 86_400),
        cancelled: Duration::from_secs(90 * 86_400),
        ..RetentionConfig::default()
    };
    let pruned = opsrunner::worker::prune_all(&c, &retention).await.unwrap();
    assert_eq!(
        (
            pruned.jobs_deleted,
            pruned.events_deleted,
            pruned.audit_deleted
        ),
        (5, 5, 2)
    );
    // Left: the recent finished job and its event, the old queued and running
    // jobs, the recent audit row.
    assert_eq!(counts(&c).await, (3, 2, 1, 1));
    // Outside the pruner the audit log is still append-only.
    let err = c
        .batch_execute("DELETE FROM ops_audit_log")
        .await
        .expect_err("refused");
    assert!(format!("{err:?}").contains("append-only"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elected_daemon_prunes_on_its_own() {
    let db = migrated_db().await;
    let c = db.client().await;
    seed(&c).await;
    let cfg = db.config(|s| {
        s.retention.interval = Duration::from_millis(300);
        // One cutoff for every final status, as in the test above.
        s.retention.failed = s.retention.jobs;
        s.retention.cancelled = s.retention.jobs;
    });
    let a = start_worker(&cfg, Registry::with_builtins()).await;
    let b = start_worker(&cfg, Registry::with_builtins()).await;
    wait_for(Duration::from_secs(10), "the daemons to prune", || async {
        (counts(&c).await == (3, 2, 1, 1)).then_some(())
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// `retention.succeeded = "0s"` (the same setting as `retention.jobs`):
/// the worker, logged in as a member of `opsrunner_worker`, deletes each
/// succeeded job with its event rows in the statement that ends it, and
/// keeps failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_success_removes_succeeded_jobs_with_their_events_and_keeps_failures_as_the_worker_role()
 {
    let db = roles_db().await;
    let c = db.client().await;
    enable(&c, &["noop", "sleep"]).await;
    // 300 jobs that succeed, one of them with the event row a rescue would
    // have left, and one that fails (a payload the handler refuses).
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type) SELECT 'noop' FROM generate_series(1, 299);
         WITH j AS (INSERT INTO ops_jobs (job_type, attempt) VALUES ('noop', 1) RETURNING id)
         INSERT INTO ops_job_events (job_id, from_status, to_status, attempt, detail)
           SELECT id, 'running', 'queued', 1, 'lease expired; rescued' FROM j;
         INSERT INTO ops_jobs (job_type, payload, max_attempts) VALUES ('sleep', '{\"ms\": \"x\"}', 1);",
    )
    .await
    .unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM ops_job_events").await, 1);
    let worker_url = db.login("opsrunner_worker").await;
    let w =
        WorkerProcess::start_url(&worker_url, &[("OPSRUNNER_RETENTION__SUCCEEDED", "0s")]).await;
    wait_all_finished(&c, Duration::from_secs(20), "the jobs").await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM ops_jobs WHERE job_type = 'noop'").await,
        0,
        "succeeded jobs are deleted"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM ops_job_events e JOIN ops_jobs j ON j.id = e.job_id WHERE j.job_type = 'noop'").await
            + count(&c, "SELECT count(*) FROM ops_job_events e WHERE NOT EXISTS (SELECT 1 FROM ops_jobs j WHERE j.id = e.job_id)").await,
        0,
        "no event row outlives its job"
    );
    let failed = c
        .query_one(
            "SELECT status::text, coalesce(error, '') FROM ops_jobs WHERE job_type = 'sleep'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(failed.get::<_, String>(0), "failed");
    assert!(!failed.get::<_, String>(1).is_empty());
    let log = w.log_text();
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
    assert!(!log.contains("cannot write completions"), "{log}");
}
