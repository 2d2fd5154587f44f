//! The HTTP shim (`opsrunner serve`) as a real process against real
//! PostgreSQL: authentication, scopes, limits, idempotency, tenant isolation
//! with row-level security, policy tokens, and secrecy of every response and
//! log line.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const MASTER: &str = "test-master-key-0123456789abcdef0123456789";
const DEV: (&str, &str) = ("APP_ENV", "development");
const WITH_MASTER: (&str, &str) = ("OPS_API_KEY", MASTER);

async fn shim(db: &TestDb) -> ApiProcess {
    ApiProcess::start(&db.url, &[WITH_MASTER], &[]).await
}

struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    text: String,
}

async fn call(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Reply {
    let c = http_client();
    let mut req = match method {
        "GET" => c.get(url),
        "POST" => c.post(url),
        other => c.request(
            reqwest::Method::from_bytes(other.as_bytes()).expect("a method token"),
            url,
        ),
    };
    if let Some(k) = key {
        req = req.header("X-Ops-Key", k);
    }
    for (h, v) in headers {
        req = req.header(*h, *v);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        retry_after,
        body,
        text,
    }
}

async fn post_job(api: &ApiProcess, key: &str, body: Value) -> Reply {
    call(
        "POST",
        &api.url("/api/ops/jobs"),
        Some(key),
        Some(body.to_string()),
        &[],
    )
    .await
}

#[tokio::test]
async fn missing_or_wrong_key_is_401_with_the_fixed_body_and_is_audited_without_the_value() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    let routes = [
        (
            "POST",
            "/api/ops/jobs",
            Some(json!({"job_type": "noop"}).to_string()),
        ),
        ("GET", "/api/ops/jobs", None),
        (
            "GET",
            "/api/ops/jobs/8c5e1f9e-0000-4000-8000-000000000000",
            None,
        ),
        (
            "POST",
            "/api/ops/jobs/8c5e1f9e-0000-4000-8000-000000000000/cancel",
            None,
        ),
    ];
    let wrong = "opsk_wrong-key-that-must-never-be-echoed-000000000";
    for (method, path, body) in routes {
        for key in [None, Some(wrong), Some("")] {
            let r = call(method, &api.url(path), key, body.clone(), &[]).await;
            assert_eq!(r.status, 401, "{method} {path} with {key:?}: {}", r.text);
            assert_eq!(r.body, json!({"error": "Invalid or missing X-Ops-Key"}));
        }
    }
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT detail::text FROM ops_audit_log WHERE action = 'auth.failure'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 12, "every failure is audited");
    for r in &rows {
        let d: String = r.get(0);
        assert!(
            !d.contains("wrong-key"),
            "audit holds the presented key: {d}"
        );
    }
    let log = api.log_text();
    assert!(log.contains("authentication failed"), "WARN line missing");
    assert!(!log.contains("wrong-key"), "log holds the presented key");
    // Nothing was inserted.
    let n: i64 = c
        .query_one("SELECT count(*) FROM ops_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn scoped_keys_get_403_without_the_scope_and_401_once_revoked() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    let reader = create_key(&db.url, "reader", "default", "jobs:read").await;
    let r = post_job(&api, &reader, json!({"job_type": "noop"})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"error": "This key lacks the jobs:write scope"})
    );
    let r = call("GET", &api.url("/api/ops/jobs"), Some(&reader), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The list shows a prefix, never the key; revoking takes effect at once.
    let out = opsrunner_cli(&db.url, &["keys", "list", "--json"], &[]).await;
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&reader));
    assert!(reader.starts_with(listed[0]["prefix"].as_str().unwrap()));
    let out = opsrunner_cli(&db.url, &["keys", "revoke", &id], &[]).await;
    assert!(out.status.success());
    let r = call("GET", &api.url("/api/ops/jobs"), Some(&reader), None, &[]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn list_limit_defaults_to_50_and_refuses_values_outside_1_to_200() {
    let db = migrated_db().await;
    let c = db.client().await;
    c.execute(
        "INSERT INTO ops_jobs (job_type, tenant_id) SELECT 'noop', 'default' FROM generate_series(1, 250)",
        &[],
    )
    .await
    .unwrap();
    let api = shim(&db).await;
    for (query, want) in [("", 50), ("?limit=10", 10), ("?limit=200", 200)] {
        let r = call(
            "GET",
            &api.url(&format!("/api/ops/jobs{query}")),
            Some(MASTER),
            None,
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        assert_eq!(r.body["jobs"].as_array().unwrap().len(), want, "{query}");
    }
    // Outside the documented bounds: a 422 that says so, never a silent
    // replacement and never a 500.
    for query in [
        "?limit=500",
        "?limit=0",
        "?limit=-3",
        "?limit=abc",
        "?limit=9223372036854775808",
        "?status=bogus",
        "?status=",
        "?job_type=NOT_A_TYPE",
        "?job_type=%00",
        "?status=%FF",
    ] {
        let r = call(
            "GET",
            &api.url(&format!("/api/ops/jobs{query}")),
            Some(MASTER),
            None,
            &[],
        )
        .await;
        assert_eq!(r.status, 422, "{query}: {}", r.text);
        assert!(r.body["error"].is_string(), "{query}: {}", r.text);
    }
    let r = call("GET", &api.url("/api/ops/jobs?limit=500"), None, None, &[]).await;
    assert_eq!(r.status, 401, "bounds are checked after authentication");
}

#[tokio::test]
async fn happy_path_queued_running_succeeded_through_the_shim_with_a_running_worker() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let api = shim(&db).await;
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "sleep", "payload": {"ms": 300}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let obj = r.body.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["job_id", "message", "status"],
        "create answers only these"
    );
    assert_eq!(r.body["status"], "queued");
    let id = r.body["job_id"].as_str().unwrap().to_string();

    // The shim runs nothing: without a worker the job stays queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = call(
        "GET",
        &api.url(&format!("/api/ops/jobs/{id}")),
        Some(MASTER),
        None,
        &[],
    )
    .await;
    assert_eq!(r.body["status"], "queued");
    assert!(r.body.get("policy_token").is_none());

    let worker = start_worker(&db.config(|_| {}), opsrunner::Registry::with_builtins()).await;
    let mut seen: Vec<String> = vec!["queued".into()];
    let url = api.url(&format!("/api/ops/jobs/{id}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = call("GET", &url, Some(MASTER), None, &[]).await;
        let s = r.body["status"].as_str().unwrap_or_default().to_string();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == "succeeded" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not succeeded: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        ["queued", "running", "succeeded"],
        "observed through GET"
    );
    let uuid: uuid::Uuid = id.parse().unwrap();
    let events = transitions(&c, uuid).await;
    assert_eq!(events, ["running", "succeeded"]);
    let audited: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_audit_log WHERE action = 'job.request' AND target = $1
               AND detail ? 'input_sha256'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn cancel_records_intent_and_cancels_a_queued_job() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    // The noop flag is off: the job waits.
    let r = post_job(&api, MASTER, json!({"job_type": "noop"})).await;
    let id = r.body["job_id"].as_str().unwrap().to_string();
    let url = api.url(&format!("/api/ops/jobs/{id}/cancel"));
    let r = call(
        "POST",
        &url,
        Some(MASTER),
        Some(json!({"reason": "not needed"}).to_string()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"job_id": id, "status": "cancelled", "message": "Cancellation intent recorded"})
    );
    let r = call("POST", &url, Some(MASTER), None, &[]).await;
    assert_eq!(r.status, 409, "a finished job: {}", r.text);
    let r = call(
        "POST",
        &api.url("/api/ops/jobs/not-a-uuid/cancel"),
        Some(MASTER),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn cancel_takes_a_null_body_and_refuses_a_reason_over_500_characters() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    let mut ids = Vec::new();
    for body in [
        json!({"job_type": "noop", "priority": 24.0}),
        json!({"job_type": "noop"}),
    ] {
        let r = post_job(&api, MASTER, body).await;
        assert_eq!(r.status, 201, "an integral 24.0 is an integer: {}", r.text);
        ids.push(r.body["job_id"].as_str().unwrap().to_string());
    }
    let url = |id: &str| api.url(&format!("/api/ops/jobs/{id}/cancel"));
    let long = json!({"reason": "x".repeat(501)}).to_string();
    let r = call("POST", &url(&ids[0]), Some(MASTER), Some(long), &[]).await;
    assert_eq!(r.status, 422, "{}", r.text);
    for (id, body) in ids.iter().zip(["null", r#"{"reason": null}"#]) {
        let r = call("POST", &url(id), Some(MASTER), Some(body.into()), &[]).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn idempotency_key_replays_the_first_job_even_under_concurrent_repeats() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    let body = json!({"job_type": "noop", "payload": {"n": 1}}).to_string();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let url = api.url("/api/ops/jobs");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            call(
                "POST",
                &url,
                Some(MASTER),
                Some(body),
                &[("Idempotency-Key", "deploy-42")],
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            r.status == 201 || r.status == 200,
            "{}: {}",
            r.status,
            r.text
        );
        if r.status == 201 {
            created += 1;
        }
        ids.insert(r.body["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(created, 1, "exactly one request created the job");
    assert_eq!(ids.len(), 1, "every repeat got the first job");
    let c = db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM ops_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // The same key for a different request is a conflict, not a replay.
    let r = call(
        "POST",
        &api.url("/api/ops/jobs"),
        Some(MASTER),
        Some(json!({"job_type": "noop", "payload": {"n": 2}}).to_string()),
        &[("Idempotency-Key", "deploy-42")],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let db = migrated_db().await;
    let api = ApiProcess::start(
        &db.url,
        &[
            WITH_MASTER,
            ("OPSRUNNER_API__RATE_PER_KEY", "1"),
            ("OPSRUNNER_API__BURST_PER_KEY", "3"),
        ],
        &[],
    )
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let r = call("GET", &api.url("/api/ops/jobs"), Some(MASTER), None, &[]).await;
        if r.status == 429 {
            retry_after = r.retry_after.clone();
            assert_eq!(r.body, json!({"error": "Rate limit exceeded"}));
        }
        statuses.push(r.status);
    }
    // The burst passes; past it, refusals (a slow machine may refill one
    // token between requests, so not necessarily every one).
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");

    // Per IP, before authentication: floods of bad keys are slowed too.
    let api = ApiProcess::start(
        &db.url,
        &[
            WITH_MASTER,
            ("OPSRUNNER_API__RATE_PER_IP", "1"),
            ("OPSRUNNER_API__BURST_PER_IP", "2"),
        ],
        &[],
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            call("GET", &api.url("/api/ops/jobs"), Some("opsk_x"), None, &[])
                .await
                .status,
        );
    }
    assert_eq!(&statuses[..2], [401, 401], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn oversized_deep_and_unknown_field_payloads_are_refused_with_the_reason() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    // 1.5 MiB payload inside the 2 MiB body limit: 422, naming the limit.
    let big = "x".repeat(1_500_000);
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "noop", "payload": {"blob": big}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", &r.text[..r.text.len().min(200)]);
    assert!(
        r.body["error"].as_str().unwrap().contains("1 MiB"),
        "{}",
        r.text
    );
    // Over the body limit: 413.
    let huge = "x".repeat(3_000_000);
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "noop", "payload": {"blob": huge}}),
    )
    .await;
    assert_eq!(r.status, 413);
    // 11 levels deep: 422; 10 levels: accepted.
    let mut deep = json!(1);
    for _ in 0..11 {
        deep = json!({ "a": deep });
    }
    let r = post_job(&api, MASTER, json!({"job_type": "noop", "payload": deep})).await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["error"].as_str().unwrap().contains("10 levels"),
        "{}",
        r.text
    );
    let mut ok = json!(1);
    for _ in 0..10 {
        ok = json!({ "a": ok });
    }
    let r = post_job(&api, MASTER, json!({"job_type": "noop", "payload": ok})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Very deep (past the parser's own limit) is still a clean 422.
    let r = post_job(
        &api,
        MASTER,
        serde_json::from_str(&format!(
            r#"{{"job_type":"noop","payload":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ))
        .unwrap_or(json!({"job_type": "noop", "payload": {}})),
    )
    .await;
    assert!(r.status == 422 || r.status == 201, "{}", r.status);
    let r = call(
        "POST",
        &api.url("/api/ops/jobs"),
        Some(MASTER),
        Some(format!(
            r#"{{"job_type":"noop","payload":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        )),
        &[],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // Unknown fields, unknown types, invalid payloads and non-JSON.
    let r = post_job(&api, MASTER, json!({"job_type": "noop", "sudo": true})).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (422, Some("unknown field `sudo`"))
    );
    let r = post_job(&api, MASTER, json!({"job_type": "no-such-type"})).await;
    assert_eq!(r.status, 422);
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "sleep", "payload": {"ms": "soon"}}),
    )
    .await;
    assert_eq!(r.status, 422, "sleep validates its payload: {}", r.text);
    let r = call(
        "POST",
        &api.url("/api/ops/jobs"),
        Some(MASTER),
        Some("{not json".into()),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"].is_string());
}

#[tokio::test]
async fn dry_run_validates_and_audits_without_a_row() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "sleep", "payload": {"ms": 5}, "dry_run": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "dry_run");
    assert!(r.body["job_id"].is_null());
    let c = db.client().await;
    let jobs: i64 = c
        .query_one("SELECT count(*) FROM ops_jobs", &[])
        .await
        .unwrap()
        .get(0);
    let audits: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_audit_log WHERE action = 'job.dry_run'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((jobs, audits), (0, 1));
}

#[tokio::test]
async fn app_env_decides_whether_ops_api_key_is_required() {
    let db = migrated_db().await;
    for env in [
        vec![],
        vec![("APP_ENV", "prod")],
        vec![("APP_ENV", "production")],
    ] {
        let out = opsrunner_cli(&db.url, &["serve"], &env).await;
        assert!(!out.status.success(), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("OPS_API_KEY"), "{env:?}: {err}");
    }
    let out = opsrunner_cli(&db.url, &["serve"], &[("OPS_API_KEY", "short")]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OPS_API_KEY") && !err.contains("short"),
        "{err}"
    );
    let out = opsrunner_cli(&db.url, &["serve"], &[("APP_ENV", "staging")]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("APP_ENV"));
    // Development: optional; only scoped keys authenticate then.
    let api = ApiProcess::start(&db.url, &[DEV], &[]).await;
    let r = call("GET", &api.url("/api/ops/jobs"), Some(MASTER), None, &[]).await;
    assert_eq!(r.status, 401);
    let key = create_key(&db.url, "dev", "default", "jobs:read").await;
    let r = call("GET", &api.url("/api/ops/jobs"), Some(&key), None, &[]).await;
    assert_eq!(r.status, 200);
    let r = call("GET", &api.url("/healthz"), None, None, &[]).await;
    assert_eq!(r.status, 200);
    let r = call("GET", &api.url("/readyz"), None, None, &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn tenant_a_key_gets_404_for_tenant_b_jobs_and_rls_hides_them_in_the_database() {
    // The shim logs in as a password-authenticated member of its production
    // role: the tenant boundary proven here is the database's.
    let db = roles_db().await;
    let api_url = db.login("opsrunner_api").await;
    let api = ApiProcess::start(&api_url, &[WITH_MASTER], &[]).await;
    let a = create_key(&db.url, "a", "tenant-a", "jobs:read,jobs:write,jobs:cancel").await;
    let b = create_key(&db.url, "b", "tenant-b", "jobs:read,jobs:write,jobs:cancel").await;
    let ra = post_job(&api, &a, json!({"job_type": "noop"})).await;
    assert_eq!(ra.status, 201, "{}", ra.text);
    let rb = post_job(&api, &b, json!({"job_type": "noop"})).await;
    let (id_a, id_b) = (
        ra.body["job_id"].as_str().unwrap().to_string(),
        rb.body["job_id"].as_str().unwrap().to_string(),
    );
    // Own jobs: visible. The other tenant's: 404 on get and cancel, absent
    // from the list.
    let get = |key: String, id: String| {
        let url = api.url(&format!("/api/ops/jobs/{id}"));
        async move { call("GET", &url, Some(&key), None, &[]).await.status }
    };
    assert_eq!(get(a.clone(), id_a.clone()).await, 200);
    assert_eq!(get(a.clone(), id_b.clone()).await, 404);
    assert_eq!(get(b.clone(), id_a.clone()).await, 404);
    let cancel = call(
        "POST",
        &api.url(&format!("/api/ops/jobs/{id_b}/cancel")),
        Some(&a),
        None,
        &[],
    )
    .await;
    assert_eq!(cancel.status, 404);
    let list = call("GET", &api.url("/api/ops/jobs"), Some(&a), None, &[]).await;
    let ids: Vec<&str> = list.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id_a.as_str()]);
    let c = db.client().await;
    let status_b: String = c
        .query_one(
            "SELECT status::text FROM ops_jobs WHERE id = $1::text::uuid",
            &[&id_b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status_b, "queued", "tenant A's cancel did not touch it");

    // The database itself enforces it: the shim's role sees no rows without
    // a tenant, only its tenant's rows with one, and cannot write a job
    // directly at all (it enqueues and cancels through two functions).
    let api_client = connect(&api_url).await;
    let n: i64 = api_client
        .query_one("SELECT count(*) FROM ops_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no app.tenant_id, no rows");
    api_client
        .batch_execute("SET app.tenant_id = 'tenant-a'")
        .await
        .unwrap();
    let n: i64 = api_client
        .query_one("SELECT count(*) FROM ops_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let err = api_client
        .execute(
            "INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('noop', 'tenant-b')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(db_msg(&err).contains("permission denied"), "{err:?}");
    let err = api_client
        .execute("UPDATE ops_jobs SET payload = '{}'", &[])
        .await
        .unwrap_err();
    assert!(db_msg(&err).contains("permission denied"), "{err:?}");
}

const SECRET: &str = "policy-secret-for-tests-0123456789abcdef";

fn policy_config(dir: &TempDir) -> std::path::PathBuf {
    dir.config(
        r#"
[api]
job_types = ["restart-service"]

[[policy.actions]]
job_type = "restart-service"
scope = "ops:execute"

[[http]]
job_type = "notify-deploy"
url = "https://hooks.internal.example/secret-path-abc"
secret_env = "HOOK_SECRET"
"#,
    )
}

async fn sign(args: &[&str]) -> String {
    let mut all = vec!["token", "sign"];
    all.extend_from_slice(args);
    let out = opsrunner_cli(
        "postgres://unused@127.0.0.1/x",
        &all,
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

#[tokio::test]
async fn policy_tokens_are_checked_by_the_shim_and_again_by_the_worker() {
    let db = migrated_db().await;
    let dir = temp_dir("api");
    let cfg = policy_config(&dir);
    let env = [
        WITH_MASTER,
        ("OPS_POLICY_SECRET", SECRET),
        ("HOOK_SECRET", "hook-secret-0123456789abcdef0123456789"),
    ];
    let api = ApiProcess::start(&db.url, &env, &["--config", cfg.to_str().unwrap()]).await;
    let good = sign(&[
        "--action",
        "restart-service",
        "--actor",
        "alice",
        "--tenant",
        "default",
    ])
    .await;
    let wrong_action = sign(&[
        "--action",
        "rotate-keys",
        "--actor",
        "alice",
        "--tenant",
        "default",
    ])
    .await;
    let wrong_scope = sign(&[
        "--action",
        "restart-service",
        "--actor",
        "alice",
        "--tenant",
        "default",
        "--scopes",
        "ops:read",
    ])
    .await;
    let wrong_tenant = sign(&[
        "--action",
        "restart-service",
        "--actor",
        "alice",
        "--tenant",
        "other",
    ])
    .await;
    let expired = {
        let secret = opsrunner::policy::Secret::new(SECRET.as_bytes().to_vec());
        let now = chrono::Utc::now().timestamp();
        let claims = opsrunner::policy::Claims::new(
            Some("default".into()),
            "alice",
            "restart-service",
            vec!["ops:execute".into()],
            now - 65,
            60,
        );
        opsrunner::policy::sign(&secret, &claims).unwrap()
    };
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();

    for (what, token) in [
        ("missing", None),
        ("expired", Some(&expired)),
        ("wrong action", Some(&wrong_action)),
        ("wrong scope", Some(&wrong_scope)),
        ("wrong tenant", Some(&wrong_tenant)),
        ("tampered", Some(&tampered)),
    ] {
        let mut body = json!({"job_type": "restart-service", "payload": {"unit": "nginx"}});
        if let Some(t) = token {
            body["policy_token"] = json!(t);
        }
        let r = post_job(&api, MASTER, body).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text);
        assert!(!r.text.contains("opt1."), "{what}: response echoes a token");
    }
    let c = db.client().await;
    let refused: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_audit_log WHERE action = 'policy.refused'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refused, 6, "every refusal is audited");
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "restart-service", "payload": {"unit": "nginx"}, "policy_token": good}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let via_shim: uuid::Uuid = r.body["job_id"].as_str().unwrap().parse().unwrap();
    // A token sent with a type that takes none is refused, not stored.
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "noop", "payload": {}, "policy_token": good}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("only accepted for action job types"),
        "{}",
        r.text
    );

    // Rows inserted by SQL bypass the shim: the worker checks again.
    let forged: uuid::Uuid = c
        .query_one(
            "INSERT INTO ops_jobs (job_type, tenant_id, policy_token) VALUES ('restart-service', 'default', $1) RETURNING id",
            &[&tampered],
        )
        .await
        .unwrap()
        .get(0);
    let tokenless: uuid::Uuid = c
        .query_one(
            "INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('restart-service', 'default') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    enable(&c, &["restart-service"]).await;
    let ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut registry = opsrunner::Registry::with_builtins();
    let log = ran.clone();
    registry.register("restart-service", move |job: opsrunner::JobContext| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(job.id);
            Ok(json!({"restarted": true}))
        }
    });
    let mut config = db.config(|s| {
        s.policy.actions = vec![opsrunner::policy::ActionConfig {
            job_type: "restart-service".into(),
            scope: "ops:execute".into(),
        }];
    });
    config.policy_secret = Some(opsrunner::policy::Secret::new(SECRET.as_bytes().to_vec()));
    let worker = start_worker(&config, registry).await;
    wait_status(&c, via_shim, "succeeded", Duration::from_secs(20)).await;
    wait_status(&c, forged, "failed", Duration::from_secs(20)).await;
    wait_status(&c, tokenless, "failed", Duration::from_secs(20)).await;
    worker.shutdown().await;
    assert_eq!(
        *ran.lock().unwrap(),
        vec![via_shim],
        "only the valid token ran"
    );
    let err: String = c
        .query_one("SELECT error FROM ops_jobs WHERE id = $1", &[&forged])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        err,
        "policy token refused: policy token signature is invalid"
    );
    let worker_audits: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_audit_log WHERE action IN ('policy.refused', 'policy.used')
               AND detail->>'stage' = 'worker'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(worker_audits, 3);
    assert!(!api.log_text().contains("opt1."), "a token reached the log");
}

#[tokio::test]
async fn no_key_token_url_or_password_appears_in_any_response_or_log_line() {
    let db = migrated_db().await;
    // A password the server ignores (trust auth) but that is in the URL.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("hunter2-db-password")).unwrap();
    let db_url = url.to_string();
    let dir = temp_dir("api");
    let cfg = policy_config(&dir);
    let hook_secret = "hook-secret-0123456789abcdef0123456789";
    let env = [
        WITH_MASTER,
        ("OPS_POLICY_SECRET", SECRET),
        ("HOOK_SECRET", hook_secret),
    ];
    let api = ApiProcess::start(&db_url, &env, &["--config", cfg.to_str().unwrap()]).await;
    let scoped = create_key(
        &db.url,
        "svc",
        "default",
        "jobs:read,jobs:write,jobs:cancel",
    )
    .await;
    let token = sign(&[
        "--action",
        "restart-service",
        "--actor",
        "bob",
        "--tenant",
        "default",
    ])
    .await;

    let mut bodies = Vec::new();
    let near_miss = format!("{}x", &scoped[..scoped.len() - 1]);
    for key in [
        Some(MASTER),
        Some(scoped.as_str()),
        Some(near_miss.as_str()),
        None,
    ] {
        let created = post_job_any(
            &api,
            key,
            json!({"job_type": "restart-service", "policy_token": token}),
        )
        .await;
        let id = created.body["job_id"]
            .as_str()
            .unwrap_or("00000000-0000-4000-8000-000000000000")
            .to_string();
        bodies.push(created.text);
        for (m, p, b) in [
            (
                "POST",
                "/api/ops/jobs".to_string(),
                Some(
                    json!({"job_type": "restart-service", "policy_token": token, "dry_run": true})
                        .to_string(),
                ),
            ),
            (
                "POST",
                "/api/ops/jobs".to_string(),
                Some(
                    json!({"job_type": "restart-service", "policy_token": format!("{token}x")})
                        .to_string(),
                ),
            ),
            (
                "POST",
                "/api/ops/jobs".to_string(),
                Some(json!({"job_type": 5, "policy_token": token}).to_string()),
            ),
            (
                "POST",
                "/api/ops/jobs".to_string(),
                Some(json!({"job_type": "notify-deploy", "payload": {}, "x": token}).to_string()),
            ),
            ("GET", "/api/ops/jobs".to_string(), None),
            ("GET", format!("/api/ops/jobs/{id}"), None),
            ("POST", format!("/api/ops/jobs/{id}/cancel"), None),
            ("GET", "/healthz".to_string(), None),
            ("GET", "/readyz".to_string(), None),
            ("GET", "/nope".to_string(), None),
        ] {
            bodies.push(call(m, &api.url(&p), key, b, &[]).await.text);
        }
    }
    let log = api.log_text();
    assert!(!log.is_empty());
    for secret in [
        MASTER,
        scoped.as_str(),
        &scoped[12..],
        near_miss.as_str(),
        token.as_str(),
        "hunter2-db-password",
        SECRET,
        hook_secret,
        "hooks.internal.example",
    ] {
        for b in &bodies {
            assert!(!b.contains(secret), "a response holds {secret:?}: {b}");
        }
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
    // Responses never hold a stack trace or a database message either.
    for b in &bodies {
        assert!(!b.contains("panicked") && !b.contains("ERROR:"), "{b}");
    }
}

async fn post_job_any(api: &ApiProcess, key: Option<&str>, body: Value) -> Reply {
    call(
        "POST",
        &api.url("/api/ops/jobs"),
        key,
        Some(body.to_string()),
        &[],
    )
    .await
}

fn db_msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test]
async fn shim_metrics_count_requests_by_route_template_and_auth_failures_by_reason() {
    let db = migrated_db().await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let api = ApiProcess::start(
        &db.url,
        &[WITH_MASTER, ("OPSRUNNER_API__METRICS_LISTEN", &metrics)],
        &[],
    )
    .await;
    let id = "5b1d2c3e-0000-4000-8000-00000000abcd";
    call(
        "GET",
        &api.url(&format!("/api/ops/jobs/{id}")),
        Some(MASTER),
        None,
        &[],
    )
    .await;
    call("GET", &api.url("/api/ops/jobs"), None, None, &[]).await;
    // Invented methods are one label, OTHER: they add no series.
    for i in 0..60 {
        let r = call(
            &format!("FROB{i}"),
            &api.url("/api/ops/jobs"),
            Some(MASTER),
            None,
            &[],
        )
        .await;
        assert_eq!(r.status, 405);
    }
    let text = http_client()
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"opsrunner_http_requests_total{route="/api/ops/jobs/{id}",method="GET",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"opsrunner_api_auth_failures_total{reason="missing"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("opsrunner_http_request_duration_seconds_bucket"),
        "explicit buckets"
    );
    assert!(!text.contains(id), "a job id reached a label");
    assert!(!text.contains("FROB"), "an invented method reached a label");
    let series = text
        .lines()
        .filter(|l| l.starts_with("opsrunner_http_requests_total{"))
        .count();
    assert!(series <= 4, "{series} request series:\n{text}");
    assert!(text.contains(r#"method="OTHER""#), "{text}");
}

#[tokio::test]
async fn a_row_the_shim_cannot_decode_is_shown_with_a_marker_not_as_database_unavailable() {
    let db = migrated_db().await;
    let c = db.client().await;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let id: uuid::Uuid = c
        .query_one(
            "INSERT INTO ops_jobs (job_type, tenant_id, payload) VALUES ('noop', 'default', $1::text::jsonb) RETURNING id",
            &[&deep],
        )
        .await
        .unwrap()
        .get(0);
    let api = shim(&db).await;
    let r = call(
        "GET",
        &api.url(&format!("/api/ops/jobs/{id}")),
        Some(MASTER),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["payload"]["undecodable"], true, "{}", r.text);
    let r = call("GET", &api.url("/api/ops/jobs"), Some(MASTER), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Whether the server closed `s` within `limit` (EOF or reset, no bytes).
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn silent_connections_cannot_take_the_shim_off_the_air_and_are_closed_after_the_timeout() {
    let db = migrated_db().await;
    let api = ApiProcess::start(
        &db.url,
        &[
            WITH_MASTER,
            ("OPSRUNNER_API__MAX_CONNECTIONS_PER_IP", "5"),
            ("OPSRUNNER_API__MAX_CONNECTIONS", "20"),
            ("OPSRUNNER_API__HEADER_READ_TIMEOUT", "1s"),
        ],
        &[],
    )
    .await;
    let addr = api.base.trim_start_matches("http://").to_string();
    // More silent sockets from one address than it may hold.
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Another client still gets an answer.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let r = other
        .get(api.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz from another address answers");
    assert_eq!(r.status().as_u16(), 200);
    // The sockets over the cap were closed at once, the rest after the
    // header-read timeout (1 s), none left open.
    let mut early = 0;
    for s in idle.iter_mut() {
        if closed_within(s, Duration::from_millis(300)).await {
            early += 1;
        }
    }
    assert!(early >= 7, "{early} of 12 closed at accept");
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(4)).await,
            "idle connection {i} still open"
        );
    }
    // Once they are gone, a request from the first address works again.
    let r = call("GET", &api.url("/healthz"), None, None, &[]).await;
    assert_eq!(r.status, 200);
    let refused = api.log_text();
    assert!(refused.contains("connection limit reached"), "{refused}");
}

#[tokio::test]
async fn the_shim_starts_without_webhook_secrets_it_never_uses_but_still_checks_the_entries() {
    let db = migrated_db().await;
    let dir = temp_dir("api-http");
    let cfg = dir.config(
        "[[http]]\njob_type = \"notify-deploy\"\nurl = \"https://hooks.example.com/x\"\nsecret_env = \"HOOK_SECRET_NOT_SET_HERE\"\n",
    );
    let api = ApiProcess::start(
        &db.url,
        &[WITH_MASTER],
        &["--config", cfg.to_str().unwrap()],
    )
    .await;
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "notify-deploy", "payload": {"v": 1}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A broken entry is still refused at start-up, naming it.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[http]]\njob_type = \"notify-deploy\"\nurl = \"ftp://hooks.example.com/x\"\nsecret_env = \"HOOK_SECRET_NOT_SET_HERE\"\n",
    )
    .unwrap();
    let log = ApiProcess::try_start(
        &db.url,
        &[WITH_MASTER],
        &["--config", bad.to_str().unwrap()],
    )
    .await
    .err()
    .expect("a broken [[http]] entry stops the shim");
    assert!(log.contains("http[0].url"), "{log}");
}

#[tokio::test]
async fn answers_before_authentication_are_fixed_json_and_bad_input_is_never_a_500() {
    let db = migrated_db().await;
    let api = shim(&db).await;
    let fixed_401 = json!({"error": "Invalid or missing X-Ops-Key"});
    // Under /api/ops, an unknown route or a wrong method answers an
    // unauthenticated client exactly as a real route does: no enumeration.
    for (method, path) in [
        ("GET", "/api/ops/nope"),
        ("GET", "/api/ops/jobs/x/y/z"),
        ("DELETE", "/api/ops/jobs"),
        ("PUT", "/api/ops/jobs/5b1d2c3e-0000-4000-8000-00000000abcd"),
    ] {
        let r = call(method, &api.url(path), None, None, &[]).await;
        assert_eq!((r.status, &r.body), (401, &fixed_401), "{method} {path}");
    }
    // With a key: JSON 404 and 405.
    let r = call("GET", &api.url("/api/ops/nope"), Some(MASTER), None, &[]).await;
    assert_eq!((r.status, &r.body), (404, &json!({"error": "Not found"})));
    let r = call("DELETE", &api.url("/api/ops/jobs"), Some(MASTER), None, &[]).await;
    assert_eq!(
        (r.status, &r.body),
        (405, &json!({"error": "Method not allowed"}))
    );
    // Outside /api/ops: JSON too.
    let r = call("PUT", &api.url("/healthz"), None, None, &[]).await;
    assert_eq!(
        (r.status, &r.body),
        (405, &json!({"error": "Method not allowed"}))
    );
    let r = call("GET", &api.url("/nope"), None, None, &[]).await;
    assert_eq!((r.status, &r.body), (404, &json!({"error": "Not found"})));
    // A path that is not UTF-8 names no job: 401 without a key, JSON 404
    // with one (it was axum's plain-text 400, before authentication).
    for path in ["/api/ops/jobs/%FF%FE", "/api/ops/jobs/%FF/cancel"] {
        let method = if path.ends_with("cancel") {
            "POST"
        } else {
            "GET"
        };
        let r = call(method, &api.url(path), None, None, &[]).await;
        assert_eq!((r.status, &r.body), (401, &fixed_401), "{path}");
        let r = call(method, &api.url(path), Some(MASTER), None, &[]).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        assert!(r.body.get("error").is_some(), "{path}: {}", r.text);
    }
    // Two keys in one request: refused, not first-wins.
    let r = call(
        "GET",
        &api.url("/api/ops/jobs"),
        Some(MASTER),
        None,
        &[("X-Ops-Key", MASTER)],
    )
    .await;
    assert_eq!(
        (r.status, &r.body),
        (401, &fixed_401),
        "duplicate key header"
    );
    // A NUL in a payload or a filter is the request's fault: 4xx with a reason.
    let r = post_job(
        &api,
        MASTER,
        json!({"job_type": "noop", "payload": {"s": "a\u{0}b"}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("NUL"), "{}", r.text);
    for q in ["job_type=%00", "status=%00", "job_type=no%00op"] {
        let r = call(
            "GET",
            &api.url(&format!("/api/ops/jobs?{q}")),
            Some(MASTER),
            None,
            &[],
        )
        .await;
        assert!(
            (400..500).contains(&r.status),
            "{q}: {} {}",
            r.status,
            r.text
        );
        assert!(r.body.get("error").is_some(), "{q}: {}", r.text);
    }
}

/// The bulk routes act on the caller's tenant only, in batches (2,500 rows
/// cross two batch boundaries), need their scope, count with dry_run, and
/// refuse a status the action does not apply to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retry_and_cancel_act_on_the_tenants_matching_jobs_in_batches() {
    // The shim as its production role: the tenant boundary is the database's too.
    let db = roles_db().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, tenant_id, status, attempt, finished_at) \
         SELECT 'noop', 'tenant-a', 'failed', 3, now() FROM generate_series(1, 2500); \
         INSERT INTO ops_jobs (job_type, tenant_id, status, attempt, finished_at) \
         SELECT 'noop', 'tenant-b', 'failed', 3, now() FROM generate_series(1, 5); \
         INSERT INTO ops_jobs (job_type, tenant_id) SELECT 'sleep', 'tenant-a' FROM generate_series(1, 4);",
    )
    .await
    .unwrap();
    let api_role = db.login("opsrunner_api").await;
    let api = ApiProcess::start(&api_role, &[WITH_MASTER], &[]).await;
    let retrier = create_key(&db.url, "retrier", "tenant-a", "jobs:retry,jobs:cancel").await;
    let reader = create_key(&db.url, "reader", "tenant-a", "jobs:read").await;
    let post = |key: &str, path: &str, body: Value| {
        let url = api.url(path);
        let key = key.to_string();
        async move { call("POST", &url, Some(&key), Some(body.to_string()), &[]).await }
    };
    let r = post(&reader, "/api/ops/bulk/retry", json!({"status": "failed"})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = post(
        &retrier,
        "/api/ops/bulk/retry",
        json!({"status": "failed", "dry_run": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"matched": 2500, "changed": 0, "dry_run": true})
    );
    let r = post(&retrier, "/api/ops/bulk/retry", json!({"status": "queued"})).await;
    assert_eq!(r.status, 422, "retry of queued jobs: {}", r.text);
    let r = post(
        &retrier,
        "/api/ops/bulk/retry",
        json!({"status": "failed", "job_type": "noop"}),
    )
    .await;
    assert_eq!(
        r.body,
        json!({"matched": 2500, "changed": 2500, "dry_run": false}),
        "{}",
        r.text
    );
    let left: i64 = c
        .query_one("SELECT count(*) FROM ops_jobs WHERE status = 'failed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 5, "tenant-b's jobs stay failed");
    let r = post(
        &retrier,
        "/api/ops/bulk/cancel",
        json!({"status": "queued", "job_type": "sleep", "reason": "incident 7"}),
    )
    .await;
    assert_eq!(r.body["changed"], 4, "{}", r.text);
    let audit: Vec<(String, Value)> = c
        .query(
            "SELECT action, detail FROM ops_audit_log WHERE action LIKE 'job.bulk_%' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        audit.len(),
        2,
        "one audit row per bulk request, not per job: {audit:?}"
    );
    assert_eq!(audit[1].1["reason"], "incident 7");
}
