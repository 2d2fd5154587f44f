//! What the table itself enforces on rows inserted by plain SQL.

mod common;

use common::*;

#[tokio::test]
async fn the_table_accepts_exactly_the_names_the_daemon_accepts() {
    let db = migrated_db().await;
    let c = db.client().await;
    let long_ok = format!("a{}", "b".repeat(63));
    let long_bad = format!("a{}", "b".repeat(64));
    for name in [
        "noop",
        "a",
        "backup-db",
        "x.y_z-9",
        long_ok.as_str(),
        long_bad.as_str(),
        "",
        "Noop",
        "9lives",
        "-x",
        "_x",
        ".x",
        "a b",
        "a/b",
        "é",
        "aé",
        "a\u{0}",
        "NOOP",
        "a;drop",
    ] {
        if name.contains('\0') {
            continue; // Postgres text cannot hold NUL at all
        }
        let db_ok: bool = c
            .query_one("SELECT ops_valid_name($1)", &[&name])
            .await
            .unwrap()
            .get(0);
        assert_eq!(db_ok, opsrunner::jobs::valid_name(name), "{name:?}");
        let insert = c
            .execute(
                "INSERT INTO ops_jobs (job_type, queue) VALUES ($1, $1)",
                &[&name],
            )
            .await;
        assert_eq!(insert.is_ok(), db_ok, "{name:?}: {insert:?}");
    }
}

#[tokio::test]
async fn the_table_refuses_a_payload_over_1_mib() {
    let db = migrated_db().await;
    let c = db.client().await;
    let big = serde_json::json!({ "blob": "x".repeat(1_100_000) });
    let e = c
        .execute(
            "INSERT INTO ops_jobs (job_type, payload) VALUES ('noop', $1)",
            &[&big],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.constraint()),
        Some(Some("ops_jobs_payload_check"))
    );
    let ok = serde_json::json!({ "blob": "x".repeat(1_000_000) });
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload) VALUES ('noop', $1)",
        &[&ok],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_upgrade_gives_jobs_without_a_tenant_to_the_default_tenant_untouched() {
    let db = fresh_db().await;
    let mut c = db.client().await;
    opsrunner::db::migrate::migrate_to(&mut c, 8).await.unwrap();
    // Rows as a v8 database holds them: enqueued by SQL without a tenant,
    // some finished, one with a tenant.
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, updated_at) VALUES ('noop', '2026-01-01T00:00:00Z');
         INSERT INTO ops_jobs (job_type, status, finished_at, updated_at)
             VALUES ('noop', 'succeeded', now(), '2026-01-01T00:00:00Z');
         INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('noop', 'acme');",
    )
    .await
    .unwrap();
    let applied = opsrunner::db::migrate::migrate(&mut c).await.unwrap();
    assert_eq!(
        applied,
        (9..=opsrunner::db::migrate::latest_version()).collect::<Vec<_>>()
    );
    let tenants: Vec<String> = c
        .query("SELECT tenant_id FROM ops_jobs ORDER BY tenant_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, ["acme", "default", "default"]);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM ops_jobs WHERE updated_at = '2026-01-01T00:00:00Z'"
        )
        .await,
        2,
        "the backfill is not an update anyone made"
    );
    assert_eq!(count(&c, "SELECT count(*) FROM ops_job_events").await, 0);
    // New rows without a tenant get the default one, and the column is required.
    let t: String = c
        .query_one(
            "INSERT INTO ops_jobs (job_type) VALUES ('noop') RETURNING tenant_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, opsrunner::jobs::DEFAULT_TENANT);
    assert!(
        c.execute(
            "INSERT INTO ops_jobs (job_type, tenant_id) VALUES ('noop', NULL)",
            &[]
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn the_payload_limit_is_the_size_postgres_stores_in_the_shim_and_the_database() {
    let db = migrated_db().await;
    let c = db.client().await;
    // Compact, this array is 1 byte under 1 MiB ("[0,0,...,0]" is 2n + 1
    // bytes); Postgres stores a space after each comma, so it is over, and
    // the library says so as the database does.
    let n = 524_287;
    let payload: serde_json::Value = serde_json::json!(vec![0; n]);
    assert_eq!(serde_json::to_vec(&payload).unwrap().len(), 1024 * 1024 - 1);
    let rendered: i32 = c
        .query_one("SELECT octet_length($1::jsonb::text)", &[&payload])
        .await
        .unwrap()
        .get(0);
    assert_eq!(opsrunner::jobs::payload_size(&payload), rendered as usize);
    let err = opsrunner::jobs::NewJob::new("noop", payload)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 MiB"), "{err}");
    // A nested payload measured exactly as Postgres renders it.
    let nested =
        serde_json::json!({"a": [1, 2.5, "x\n\u{1}\"é", null, true, false, {}], "b": {"c": []}});
    let rendered: i32 = c
        .query_one("SELECT octet_length($1::jsonb::text)", &[&nested])
        .await
        .unwrap()
        .get(0);
    assert_eq!(opsrunner::jobs::payload_size(&nested), rendered as usize);
}

/// Moves a job through one attempt by SQL as the worker would: claimed,
/// then `outcome` (`succeeded`, or `queued` for a retry).
async fn run_attempt(c: &tokio_postgres::Client, id: uuid::Uuid, outcome: &str) {
    c.execute(
        "UPDATE ops_jobs SET status = 'running', attempt = attempt + 1, lease_owner = 'w1',
                started_at = clock_timestamp(), updated_at = clock_timestamp() WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE ops_jobs SET status = $2::text::ops_job_status,
                error = CASE WHEN $2 = 'queued' THEN 'boom' END,
                finished_at = CASE WHEN $2 = 'succeeded' THEN clock_timestamp() END,
                updated_at = clock_timestamp() WHERE id = $1",
        &[&id, &outcome],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_upgrade_from_v6_keeps_every_jobs_trail_whole_before_and_after() {
    let db = fresh_db().await;
    let mut c = db.client().await;
    opsrunner::db::migrate::migrate_to(&mut c, 6).await.unwrap();
    // A job retried once and then succeeded under v6, which stored every step.
    let old = insert_job(&c, "noop", serde_json::json!({})).await;
    run_attempt(&c, old, "queued").await;
    run_attempt(&c, old, "succeeded").await;
    let half = insert_job(&c, "noop", serde_json::json!({})).await;
    run_attempt(&c, half, "queued").await;
    opsrunner::db::migrate::migrate(&mut c).await.unwrap();
    let whole = ["running", "queued", "running", "succeeded"];
    assert_eq!(
        transitions(&c, old).await,
        whole,
        "stored before the upgrade"
    );
    // Half of its trail before the upgrade, the rest after it.
    run_attempt(&c, half, "succeeded").await;
    assert_eq!(transitions(&c, half).await, whole, "across the upgrade");
    // After it, the happy steps are not stored, and the trail is the same.
    let new = insert_job(&c, "noop", serde_json::json!({})).await;
    run_attempt(&c, new, "queued").await;
    run_attempt(&c, new, "succeeded").await;
    assert_eq!(transitions(&c, new).await, whole, "after the upgrade");
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM ops_job_events WHERE job_id = '{new}'")
        )
        .await,
        1,
        "only the retry is stored"
    );
    let t = trail(&c, new).await;
    assert_eq!(t[1].detail.as_deref(), Some("boom"));
    assert!(t.windows(2).all(|w| w[0].at <= w[1].at), "{t:?}");
}
