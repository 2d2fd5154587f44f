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
