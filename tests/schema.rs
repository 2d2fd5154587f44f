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
