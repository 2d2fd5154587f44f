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
    let left: Vec<String> = column(
        &owner,
        "SELECT status::text FROM ops_jobs ORDER BY status::text",
    )
    .await;
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

const MASTER: &str = "roles-test-master-key-0123456789abcdef0123";
const SECRET: &str = "roles-test-policy-secret-0123456789abcdef";

/// One request to the shim: status and JSON body.
async fn http(
    method: reqwest::Method,
    url: &str,
    key: &str,
    body: Option<serde_json::Value>,
    idempotency_key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = http_client().request(method, url).header("X-Ops-Key", key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("the shim answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn sqlstate(r: Result<u64, tokio_postgres::Error>) -> Option<String> {
    r.err().and_then(|e| e.code().map(|c| c.code().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_as_its_role_enqueues_reads_and_cancels_and_writes_no_job_state() {
    let db = roles_db().await;
    let owner = db.client().await;
    let operator = db.login("opsrunner_worker").await;
    let api_url = db.login("opsrunner_api").await;
    let key = create_key(
        &operator,
        "acme",
        "acme",
        "jobs:read,jobs:write,jobs:cancel",
    )
    .await;
    // A job enqueued by SQL without a tenant is the default tenant's.
    let by_sql: uuid::Uuid = session(&operator)
        .await
        .query_one(
            "INSERT INTO ops_jobs (job_type) VALUES ('noop') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let api = ApiProcess::start(&api_url, &[("OPS_API_KEY", MASTER)], &[]).await;
    let job_url = |id: &str| api.url(&format!("/api/ops/jobs/{id}"));
    let (code, body) = http(
        reqwest::Method::GET,
        &job_url(&by_sql.to_string()),
        MASTER,
        None,
        None,
    )
    .await;
    assert_eq!(code, 200, "the master key sees SQL-enqueued jobs: {body}");
    let (code, _) = http(
        reqwest::Method::GET,
        &job_url(&by_sql.to_string()),
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(code, 404, "another tenant's key does not");

    // Enqueue, read, cancel through the shim, as the shim's role.
    let (code, body) = http(
        reqwest::Method::POST,
        &api.url("/api/ops/jobs"),
        &key,
        Some(serde_json::json!({"job_type": "noop", "run_at": "2100-01-01T00:00:00Z"})),
        None,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let id = body["job_id"].as_str().unwrap().to_string();
    let (code, body) = http(reqwest::Method::GET, &job_url(&id), &key, None, None).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("queued")),
        "{body}"
    );
    let (code, body) = http(
        reqwest::Method::POST,
        &format!("{}/cancel", job_url(&id)),
        &key,
        Some(serde_json::json!({"reason": "not needed"})),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let uid: uuid::Uuid = id.parse().unwrap();
    assert_eq!(status(&owner, uid).await, "cancelled");
    assert_eq!(
        transitions(&owner, uid).await,
        ["cancelled"],
        "the event is written by the trigger, as the owner"
    );

    // What the shim's role may not do by itself.
    let shim_db = session(&api_url).await;
    shim_db
        .batch_execute("SET app.tenant_id = 'acme'")
        .await
        .unwrap();
    for forbidden in [
        "UPDATE ops_jobs SET status = 'succeeded'",
        "UPDATE ops_jobs SET cancel_requested = true",
        "INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('noop', 'acme')",
        "INSERT INTO ops_job_events (job_id, to_status, attempt) SELECT id, 'succeeded', 1 FROM ops_jobs",
        "SELECT policy_token FROM ops_jobs",
        "UPDATE ops_audit_log SET actor = 'someone else'",
        "DELETE FROM ops_audit_log",
        "DELETE FROM ops_jobs",
    ] {
        assert_eq!(
            sqlstate(shim_db.execute(forbidden, &[]).await).as_deref(),
            Some("42501"),
            "the shim's role: {forbidden}"
        );
    }
    // Neither the worker nor an application may call the shim's functions,
    // or change the audit log.
    let app = session(&bound_app(&db, "acme").await).await;
    let worker = session(&operator).await;
    for (who, c) in [("app", &app), ("worker", &worker)] {
        for forbidden in [
            "SELECT * FROM ops_api_enqueue('victim', 'noop', 'default', 0::int2, '{}', 3, NULL, NULL, NULL, NULL, false)",
            "SELECT ops_api_cancel('victim', gen_random_uuid(), NULL, 'x')",
            "UPDATE ops_audit_log SET actor = 'someone else'",
            "DELETE FROM ops_audit_log",
        ] {
            assert_eq!(
                sqlstate(c.execute(forbidden, &[]).await).as_deref(),
                Some("42501"),
                "{who}: {forbidden}"
            );
        }
    }
    assert!(
        count(
            &owner,
            "SELECT count(*) FROM ops_audit_log WHERE actor = 'someone else'"
        )
        .await
            == 0
    );
}

/// `opsrunner token sign` for `restart-service` and `tenant`.
async fn sign_token(tenant: &str) -> String {
    let out = opsrunner_cli(
        "postgres://unused@127.0.0.1/x",
        &[
            "token",
            "sign",
            "--action",
            "restart-service",
            "--actor",
            "alice",
            "--tenant",
            tenant,
        ],
        &[("OPS_POLICY_SECRET", SECRET)],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_token_enqueues_and_runs_one_job_only() {
    let db = roles_db().await;
    let owner = db.client().await;
    enable(&owner, &["restart-service"]).await;
    let operator = db.login("opsrunner_worker").await;
    let dir = temp_dir("roles-policy");
    let cfg = dir.config(
        "[api]\njob_types = [\"restart-service\"]\n\n[[policy.actions]]\njob_type = \"restart-service\"\n",
    );
    let api = ApiProcess::start(
        &db.login("opsrunner_api").await,
        &[("OPS_API_KEY", MASTER), ("OPS_POLICY_SECRET", SECRET)],
        &["--config", cfg.to_str().unwrap()],
    )
    .await;
    let token = sign_token("default").await;
    let post = |idem: Option<&'static str>| {
        let body = serde_json::json!({"job_type": "restart-service", "payload": {"unit": "nginx"},
                                      "policy_token": token});
        let url = api.url("/api/ops/jobs");
        async move { http(reqwest::Method::POST, &url, MASTER, Some(body), idem).await }
    };
    let (code, body) = post(Some("k1")).await;
    assert_eq!(code, 201, "{body}");
    let first: uuid::Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    // The same request repeated with its Idempotency-Key is a replay, not a use.
    let (code, body) = post(Some("k1")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["job_id"].as_str(), Some(first.to_string().as_str()));
    // Any other request with the token is refused, and audited.
    for idem in [None, Some("k2")] {
        let (code, body) = post(idem).await;
        assert_eq!(code, 403, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("already used"),
            "{body}"
        );
    }
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM ops_audit_log WHERE action = 'policy.refused' AND detail->>'reason' = 'reused'"
        )
        .await,
        2
    );
    // A copy of the row by SQL is refused, whoever makes it.
    let worker = session(&operator).await;
    let copy = worker
        .execute(
            "INSERT INTO ops_jobs (job_type, policy_token) SELECT job_type, policy_token FROM ops_jobs WHERE id = $1",
            &[&first],
        )
        .await;
    assert_eq!(sqlstate(copy).as_deref(), Some("23505"));
    // An application's token, by plain SQL: once.
    let app = session(&bound_app(&db, "acme").await).await;
    let app_token = sign_token("acme").await;
    let insert = "INSERT INTO ops_jobs (job_type, payload, policy_token) VALUES ('restart-service', '{\"unit\": \"nginx\"}', $1) RETURNING id";
    let by_app: uuid::Uuid = app.query_one(insert, &[&app_token]).await.unwrap().get(0);
    let again = app.query_one(insert, &[&app_token]).await.map(|_| 0);
    assert_eq!(sqlstate(again).as_deref(), Some("23505"));
    // A token written into another row afterwards (the operators' role may)
    // passes its signature check; the worker refuses it all the same.
    let moved: uuid::Uuid = worker
        .query_one(
            "INSERT INTO ops_jobs (job_type, payload) VALUES ('restart-service', '{\"unit\": \"nginx\"}') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    worker
        .execute(
            "UPDATE ops_jobs SET policy_token = (SELECT policy_token FROM ops_jobs WHERE id = $1) WHERE id = $2",
            &[&first, &moved],
        )
        .await
        .unwrap();

    let ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut registry = Registry::with_builtins();
    let log = ran.clone();
    registry.register("restart-service", move |job: opsrunner::JobContext| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(job.id);
            Ok(serde_json::json!({"restarted": true}))
        }
    });
    let mut settings = fast_settings();
    settings.policy.actions = vec![opsrunner::policy::ActionConfig {
        job_type: "restart-service".into(),
        scope: "ops:execute".into(),
    }];
    let mut config = opsrunner::config::Config::with_url(
        settings,
        opsrunner::config::DbUrl::parse(&operator, "DATABASE_URL").unwrap(),
    )
    .unwrap();
    config.policy_secret = Some(opsrunner::policy::Secret::new(SECRET.as_bytes().to_vec()));
    let w = start_worker(&config, registry).await;
    wait_status(&owner, first, "succeeded", Duration::from_secs(20)).await;
    wait_status(&owner, by_app, "succeeded", Duration::from_secs(20)).await;
    wait_status(&owner, moved, "failed", Duration::from_secs(20)).await;
    w.shutdown().await;
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    let mut expected = vec![first, by_app];
    expected.sort();
    assert_eq!(ran, expected, "each token ran its own job, once");
    let err: String = owner
        .query_one("SELECT error FROM ops_jobs WHERE id = $1", &[&moved])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        err,
        "policy token refused: policy token was already used by another job"
    );
}
