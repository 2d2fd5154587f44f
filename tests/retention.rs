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
