//! What the production roles of `sql/roles/roles.sql` may do, proven logged
//! in as password-authenticated members of them, never as a superuser.

mod common;

use std::time::Duration;

use common::*;
use opsrunner::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_logins_are_password_authenticated_and_not_superusers() {
    let db = roles_db().await;
    let url = db.login("opsrunner_worker").await;
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("the worker's login with its password");
    tokio::spawn(conn);
    let row = c
        .query_one(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    let mut wrong = url::Url::parse(&url).unwrap();
    wrong.set_password(Some("not-the-password")).unwrap();
    assert!(
        tokio_postgres::connect(wrong.as_str(), tokio_postgres::NoTls)
            .await
            .is_err(),
        "a wrong password is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsrunner_prune_as_the_worker_role_deletes_old_rows_and_keeps_failures_longer() {
    let db = roles_db().await;
    let owner = db.client().await;
    owner
        .batch_execute(
            "INSERT INTO ops_jobs (job_type, status, finished_at) VALUES
               ('noop', 'succeeded', now() - interval '100 days'),
               ('noop', 'failed', now() - interval '100 days'),
               ('noop', 'cancelled', now() - interval '200 days'),
               ('noop', 'succeeded', now() - interval '10 days');
             INSERT INTO ops_audit_log (actor, action, at) VALUES
               ('a', 'flag.enable', now() - interval '400 days'),
               ('a', 'flag.enable', now() - interval '3 days');",
        )
        .await
        .unwrap();
    let worker = db.login("opsrunner_worker").await;
    let out = opsrunner_cli(&worker, &["prune"], &[]).await;
    assert!(
        out.status.success(),
        "prune as the worker role: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Succeeded past 90 days and cancelled past 180 days go; a failed job
    // of 100 days stays (failures are kept 180 days); the old audit row goes.
    let left: Vec<String> = owner
        .query(
            "SELECT status::text FROM ops_jobs ORDER BY status::text",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["failed", "succeeded"]);
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM ops_audit_log WHERE actor = 'a'"
        )
        .await,
        1
    );
    // The worker role itself still cannot delete audit rows.
    let (c, conn) = tokio_postgres::connect(&worker, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert!(c.execute("DELETE FROM ops_audit_log", &[]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rescuer_returns_running_rows_with_no_lease_or_a_forged_one() {
    let db = roles_db().await;
    let owner = db.client().await;
    enable(&owner, &["noop"]).await;
    // Rows no daemon wrote: running, with no lease or a lease 100 years out.
    owner
        .batch_execute(
            "INSERT INTO ops_jobs (job_type, status, attempt, lease_owner, lease_expires_at) VALUES
               ('noop', 'running', 1, 'forged', NULL),
               ('noop', 'running', 1, 'forged', now() + interval '100 years')",
        )
        .await
        .unwrap();
    let worker = db.login("opsrunner_worker").await;
    let cfg = opsrunner::config::Config::with_url(
        fast_settings(),
        opsrunner::config::DbUrl::parse(&worker, "DATABASE_URL").unwrap(),
    )
    .unwrap();
    let w = start_worker(&cfg, Registry::with_builtins()).await;
    wait_all_finished(&owner, Duration::from_secs(15), "the forged running rows").await;
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM ops_jobs WHERE status = 'succeeded'"
        )
        .await,
        2
    );
    w.shutdown().await;
}
