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

async fn session(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("log in");
    tokio::spawn(conn);
    c
}

fn role_of(url: &str) -> String {
    url::Url::parse(url).unwrap().username().to_string()
}

/// An application login bound to `tenant` by an operator's CLI (as the
/// worker role).
async fn bound_app(db: &RolesDb, tenant: &str) -> String {
    let app = db.login("opsrunner_app").await;
    let operator = db.login("opsrunner_worker").await;
    let out = opsrunner_cli(&operator, &["tenants", "bind", &role_of(&app), tenant], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_role_inserts_only_new_queued_jobs_of_its_own_tenant() {
    let db = roles_db().await;
    let owner = db.client().await;
    let app = session(&bound_app(&db, "acme").await).await;
    // The README's plain INSERT works as the app role.
    let id: uuid::Uuid = app
        .query_one(
            "INSERT INTO ops_jobs (job_type, payload, priority) VALUES ('sleep', '{\"ms\": 250}', -50) RETURNING id",
            &[],
        )
        .await
        .expect("a plain INSERT as the app role")
        .get(0);
    let row = owner
        .query_one(
            "SELECT tenant_id, status::text, attempt, priority FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (tenant, status, attempt, priority): (String, String, i32, i16) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (tenant.as_str(), status.as_str(), attempt),
        ("acme", "queued", 0)
    );
    assert_eq!(
        priority, 0,
        "negative priorities are the operators': clamped into 0..100"
    );
    // Forged states, leases, results, attempts and tenants are refused.
    for forged in [
        "INSERT INTO ops_jobs (job_type, status, result) VALUES ('noop', 'succeeded', '{\"ok\": true}')",
        "INSERT INTO ops_jobs (job_type, lease_owner, lease_expires_at) VALUES ('noop', 'x', now() + interval '100 years')",
        "INSERT INTO ops_jobs (job_type, attempt) VALUES ('noop', 1000)",
        "INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('noop', 'victim')",
    ] {
        let err = app.execute(forged, &[]).await.expect_err(forged);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{forged}: {err}"
        );
    }
    // A compressible payload over 1 MiB uncompressed is refused.
    let err = app
        .execute(
            "INSERT INTO ops_jobs (job_type, payload) SELECT 'noop', jsonb_build_object('x', repeat('a', 30000000))",
            &[],
        )
        .await
        .expect_err("30 MB payload");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(err.code().map(|c| c.code()), Some("23514"), "{err}");
    assert!(msg.contains("1 MiB"), "{msg}");
    assert_eq!(count(&owner, "SELECT count(*) FROM ops_jobs").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_reads_and_cancels_only_its_own_tenant_whatever_it_sets() {
    let db = roles_db().await;
    let owner = db.client().await;
    owner
        .batch_execute(
            "INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('noop', 'victim');
             INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('noop', 'acme');",
        )
        .await
        .unwrap();
    let app = session(&bound_app(&db, "acme").await).await;
    // Setting the shim's tenant variable gains nothing.
    app.batch_execute("SET app.tenant_id = 'victim'")
        .await
        .unwrap();
    let seen: Vec<String> = app
        .query("SELECT tenant_id FROM ops_jobs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, ["acme"]);
    let cancelled = app
        .execute(
            "UPDATE ops_jobs SET cancel_requested = true, cancel_requested_at = now()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cancelled, 1, "only its own job");
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM ops_jobs WHERE tenant_id = 'victim' AND cancel_requested"
        )
        .await,
        0
    );
    // No status writes, no policy tokens.
    assert!(
        app.execute("UPDATE ops_jobs SET status = 'succeeded'", &[])
            .await
            .is_err()
    );
    assert!(
        app.query("SELECT policy_token FROM ops_jobs", &[])
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_app_role_is_refused_with_the_command_that_binds_it() {
    let db = roles_db().await;
    let url = db.login("opsrunner_app").await;
    let app = session(&url).await;
    let err = app
        .execute("INSERT INTO ops_jobs (job_type) VALUES ('noop')", &[])
        .await
        .expect_err("unbound");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("opsrunner tenants bind"), "{msg}");
    // Bound, then unbound again: refused again.
    let operator = db.login("opsrunner_worker").await;
    let role = role_of(&url);
    for args in [
        &["tenants", "bind", &role, "acme"][..],
        &["tenants", "unbind", &role][..],
    ] {
        let out = opsrunner_cli(&operator, args, &[]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        app.execute("INSERT INTO ops_jobs (job_type) VALUES ('noop')", &[])
            .await
            .is_err()
    );
    let out = opsrunner_cli(&operator, &["tenants", "bind", "no_such_role", "acme"], &[]).await;
    assert!(!out.status.success());
}
