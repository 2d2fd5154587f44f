//! The claim's work is bounded by what it claims, not by the backlog: a
//! backlog of a disabled type ahead in the queue, and missing statistics
//! (a bulk load before any ANALYZE), must not make every claim walk or sort
//! the queued rows. Checked on the executed plan's row counts (EXPLAIN
//! ANALYZE of the daemon's own statement), not by timing.

mod common;

use common::*;
use serde_json::Value;

const CLAIM: &str = include_str!("../sql/queries/worker/claim.sql");

/// Every plan node's (type, relation or index, actual rows, rows removed).
fn nodes(plan: &Value, out: &mut Vec<(String, String, f64, f64)>) {
    let s = |k: &str| {
        plan.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let n = |k: &str| plan.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let target = Some(s("Index Name"))
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| s("Relation Name"));
    let removed = n("Rows Removed by Filter") + n("Rows Removed by Index Recheck");
    out.push((
        s("Node Type"),
        target,
        n("Actual Rows") * n("Actual Loops"),
        removed,
    ));
    for child in plan
        .get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        nodes(child, out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_only_the_rows_it_claims_despite_a_disabled_backlog_and_no_statistics() {
    let db = migrated_db().await;
    let mut c = db.client().await;
    // A backlog of a type this worker does not claim, due earlier than
    // everything else, then the claimable rows. No ANALYZE: the planner has
    // no statistics for any of it.
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, run_at)
           SELECT 'sleep', now() - interval '1 hour' FROM generate_series(1, 30000);
         INSERT INTO ops_jobs (job_type) SELECT 'noop' FROM generate_series(1, 30000);",
    )
    .await
    .unwrap();
    let analyzed = count(
        &c,
        "SELECT count(*) FROM pg_stats WHERE tablename = 'ops_jobs'",
    )
    .await;
    assert_eq!(analyzed, 0, "the test needs a table without statistics");

    let types = vec!["noop".to_string(), "exec".to_string()];
    let queues: Option<Vec<String>> = None;
    let limit: i64 = 50;
    let plan: Value = {
        let tx = c.transaction().await.unwrap();
        let row = tx
            .query_one(
                &format!("EXPLAIN (ANALYZE, FORMAT JSON) {CLAIM}"),
                &[&types, &queues, &limit, &"test-owner", &30.0f64],
            )
            .await
            .unwrap();
        let plan: Value = row.get(0);
        tx.rollback().await.unwrap();
        plan
    };
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    let summary = format!("{all:#?}");

    // Nothing scans the table or sorts the backlog: every row the plan reads
    // from ops_jobs or its indexes is one of the (at most) `limit` rows per
    // enabled type, or the primary-key lookup of a claimed row.
    for (node, target, rows, removed) in &all {
        assert!(
            node != "Seq Scan" && !(node == "Bitmap Index Scan" && target != "ops_jobs_pkey"),
            "{node} on {target} in the claim:\n{summary}"
        );
        if target.starts_with("ops_jobs") {
            assert!(
                *rows <= (limit * 2) as f64 && *removed == 0.0,
                "{node} on {target} read {rows} rows and removed {removed}:\n{summary}"
            );
        }
    }
    assert!(
        all.iter()
            .any(|(_, target, ..)| target == "ops_jobs_claim_idx"),
        "the claim does not use ops_jobs_claim_idx:\n{summary}"
    );
    // And it did claim: `limit` rows, all of the enabled type.
    let claimed = all
        .iter()
        .find(|(node, ..)| node == "ModifyTable")
        .map(|(.., rows, _)| *rows);
    assert_eq!(claimed, Some(limit as f64), "{summary}");
}

const LIST_JOBS: &str = include_str!("../sql/queries/shared/list_jobs.sql");
const API_LIST_JOBS: &str = include_str!("../sql/queries/api/list_jobs.sql");
const JOBS_PAGE: &str = include_str!("../sql/queries/ui/jobs_page.sql");
const BULK_COUNT: &str = include_str!("../sql/queries/shared/bulk_count.sql");

/// Schema v17 leaves running rows out of the (status, created_at) and
/// (job_type, created_at) indexes. Every listing must still be served by an
/// index for each status and type filter (a statement that does not name
/// `status <> 'running'` cannot use the partial indexes and reads the whole
/// table), and a listing by type alone must still show its running jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_by_status_or_type_read_an_index_and_still_show_running_jobs() {
    let db = migrated_db().await;
    let c = db.client().await;
    // 20,000 finished and 9,800 queued rows, then the 200 newest running:
    // the newest rows of type noop are running ones.
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, status, attempt, finished_at, created_at)
           SELECT CASE WHEN i % 2 = 0 THEN 'noop' ELSE 'sleep' END, 'succeeded', 1, now(),
                  now() - interval '1 hour' + i * interval '1 ms'
           FROM generate_series(1, 20000) i;
         INSERT INTO ops_jobs (job_type, created_at)
           SELECT CASE WHEN i % 2 = 0 THEN 'noop' ELSE 'sleep' END,
                  now() - interval '30 minutes' + i * interval '1 ms'
           FROM generate_series(1, 9800) i;
         INSERT INTO ops_jobs (job_type, status, attempt, lease_owner, lease_expires_at, started_at, created_at)
           SELECT 'noop', 'running', 1, 'w', now() + interval '1 hour', now(),
                  now() - interval '1 minute' + i * interval '1 ms'
           FROM generate_series(1, 200) i;
         ANALYZE ops_jobs;",
    )
    .await
    .unwrap();

    type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
    let (none, limit, tenant): (Option<&str>, i64, &str) = (None, 50, "default");
    let (no_id, no_time): (Option<uuid::Uuid>, Option<chrono::DateTime<chrono::Utc>>) =
        (None, None);
    let statuses = [
        None,
        Some("queued"),
        Some("running"),
        Some("succeeded"),
        Some("failed"),
    ];
    // (what, statement, parameters, whether its reads are bounded by the
    // page: the console pages by id and skips rows of other statuses, a
    // count reads every matching row; those two must only use an index).
    let mut cases: Vec<(String, &str, Params, bool)> = Vec::new();
    for status in &statuses {
        for job_type in [&None, &Some("noop")] {
            let what = format!("status {status:?}, type {job_type:?}");
            // With both filters the planner reads one index and filters by
            // the other column (there is no index on both). With neither,
            // the newest page of each status (a sort of the whole table
            // before).
            let page = job_type.is_none();
            cases.push((
                format!("jobs list, {what}"),
                LIST_JOBS,
                vec![status, job_type, &limit, &none],
                page,
            ));
            cases.push((
                format!("api list, {what}"),
                API_LIST_JOBS,
                vec![&tenant, status, job_type, &limit],
                page,
            ));
            cases.push((
                format!("console page, {what}"),
                JOBS_PAGE,
                vec![
                    &tenant, status, job_type, &none, &no_id, &limit, &no_time, &none, &none,
                ],
                false,
            ));
        }
    }
    let (retry, cancel) = (true, false);
    for (status, action) in [
        ("failed", &retry),
        ("cancelled", &retry),
        ("queued", &cancel),
        ("running", &cancel),
    ] {
        let s: &(dyn tokio_postgres::types::ToSql + Sync) = match status {
            "failed" => &"failed",
            "cancelled" => &"cancelled",
            "queued" => &"queued",
            _ => &"running",
        };
        cases.push((
            format!("bulk count, {status}"),
            BULK_COUNT,
            vec![&none, s, &none, &none, &no_time, action],
            false,
        ));
    }

    for (what, sql, params, bounded) in &cases {
        let row = c
            .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), params)
            .await
            .unwrap();
        let plan: Value = row.get(0);
        let mut all = Vec::new();
        nodes(&plan[0]["Plan"], &mut all);
        for (node, target, rows, removed) in &all {
            // At most the page (50) from a listing index, plus every running
            // row (200) from the running index.
            let scans_table = node == "Seq Scan" && target == "ops_jobs";
            let reads_past_page = *bounded && *rows + *removed > 300.0;
            assert!(
                !scans_table && !reads_past_page,
                "{what}: {node} on {target} read {rows} rows and removed {removed}:\n{all:#?}"
            );
        }
    }

    // A listing by type shows the newest jobs of that type, running or not,
    // and one without filters the newest of all: a page past the running
    // and queued rows reaches the finished ones.
    let wide: i64 = 10_100;
    for (job_type, filter, limit) in [
        (Some("noop"), "WHERE job_type = 'noop'", &limit),
        (None, "", &wide),
    ] {
        let ids = |rows: Vec<tokio_postgres::Row>| -> Vec<uuid::Uuid> {
            rows.iter().map(|r| r.get("id")).collect()
        };
        let newest: Vec<uuid::Uuid> = column(
            &c,
            &format!("SELECT id FROM ops_jobs {filter} ORDER BY created_at DESC LIMIT {limit}"),
        )
        .await;
        let listed = c
            .query(LIST_JOBS, &[&none, &job_type, limit, &none])
            .await
            .unwrap();
        assert_eq!(ids(listed), newest, "jobs list, type {job_type:?}");
        let api = c
            .query(API_LIST_JOBS, &[&tenant, &none, &job_type, limit])
            .await
            .unwrap();
        assert_eq!(ids(api), newest, "api list, type {job_type:?}");
    }
    let running = c
        .query(LIST_JOBS, &[&Some("running"), &none, &limit, &none])
        .await
        .unwrap();
    assert_eq!(running.len(), 50);
    assert!(
        running
            .iter()
            .all(|r| r.get::<_, String>("status") == "running")
    );
}
