//! Per-type concurrency limits across real worker processes, as members of
//! the production roles: the limit is never exceeded (sampled every 50 ms
//! from the database) and is reached, and a change at runtime reaches
//! every daemon within about a second.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_running_limit_holds_across_three_daemons_and_changes_at_runtime() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    cli_ok(&operator, &["limits", "set", "sleep", "--max-running", "5"]).await;
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload) SELECT 'sleep', '{\"ms\": 300}' FROM generate_series(1, 200)",
        &[],
    )
    .await
    .unwrap();
    let slots = [("OPSRUNNER_WORKER__CONCURRENCY", "20")];
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(WorkerProcess::start_url(&operator, &slots).await);
    }
    // Sample the running count every 50 ms from another session.
    let peak = Arc::new(AtomicI64::new(0));
    let sample = |peak: Arc<AtomicI64>, url: String, for_: Duration| async move {
        let s = connect(&url).await;
        let end = tokio::time::Instant::now() + for_;
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < end {
            let n: i64 = s
                .query_one(
                    "SELECT count(*) FROM ops_jobs WHERE job_type = 'sleep' AND status = 'running'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            peak.fetch_max(n, Ordering::Relaxed);
            seen.push(n);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    };
    let seen = sample(peak.clone(), db.url.clone(), Duration::from_secs(3)).await;
    assert!(seen.iter().all(|n| *n <= 5), "over the limit: {seen:?}");
    assert_eq!(
        peak.load(Ordering::Relaxed),
        5,
        "the limit is reached: {seen:?}"
    );
    let listed = cli_ok(&operator, &["limits", "list"]).await;
    assert!(
        listed.contains("sleep") && listed.contains(" 5 "),
        "{listed}"
    );

    // Raised at runtime: every daemon uses the new limit within a second or so.
    cli_ok(
        &operator,
        &["limits", "set", "sleep", "--max-running", "12"],
    )
    .await;
    let changed = tokio::time::Instant::now();
    let raised = Arc::new(AtomicI64::new(0));
    let seen = sample(raised.clone(), db.url.clone(), Duration::from_secs(3)).await;
    assert!(
        seen.iter().all(|n| *n <= 12),
        "over the new limit: {seen:?}"
    );
    let first = seen
        .iter()
        .position(|n| *n > 5)
        .expect("the new limit is used");
    assert!(first as u64 * 50 < 1500, "took {} ms: {seen:?}", first * 50);
    assert_eq!(raised.load(Ordering::Relaxed), 12, "{seen:?}");
    let _ = changed;

    // Cleared: no limit, every slot may be used.
    cli_ok(&operator, &["limits", "clear", "sleep"]).await;
    let free = Arc::new(AtomicI64::new(0));
    sample(free.clone(), db.url.clone(), Duration::from_secs(2)).await;
    assert!(
        free.load(Ordering::Relaxed) > 12,
        "no limit after clear: {}",
        free.load(Ordering::Relaxed)
    );
    let audit: Vec<String> = c
        .query("SELECT action FROM ops_audit_log WHERE target = 'sleep' AND action LIKE 'limit.%' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, ["limit.set", "limit.set", "limit.clear"]);
    drop(workers);
}
