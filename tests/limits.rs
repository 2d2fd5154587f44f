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
    let workers = daemons(&operator, 3).await;
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

    // Raised at runtime: every daemon has reloaded the new limit within a
    // second (its log says so), and the fleet uses it.
    cli_ok(
        &operator,
        &["limits", "set", "sleep", "--max-running", "12"],
    )
    .await;
    let changed = tokio::time::Instant::now();
    for (i, w) in workers.iter().enumerate() {
        let left = Duration::from_secs(1).saturating_sub(changed.elapsed());
        assert!(
            tokio::time::timeout(
                left,
                w.wait_log("max_running: Some(12)", Duration::from_secs(2))
            )
            .await
            .is_ok(),
            "daemon {i} did not reload the raised limit within a second; log:\n{}",
            w.log_text()
        );
    }
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

/// A rate raised at runtime is used at once by every daemon, even ones that
/// would otherwise sleep until their next poll (5 s here) before they try a
/// held-back type again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_rate_limit_is_used_within_a_second_by_daemons_that_poll_every_5_seconds() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    cli_ok(&operator, &["limits", "set", "noop", "--rate", "1/min"]).await;
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload) SELECT 'noop', '{}' FROM generate_series(1, 100)",
        &[],
    )
    .await
    .unwrap();
    let workers = daemons_with(&operator, 3, &[("OPSRUNNER_WORKER__POLL_INTERVAL", "5s")]).await;
    let started = "SELECT count(*) FROM ops_jobs WHERE started_at IS NOT NULL";
    wait_for(
        Duration::from_secs(10),
        "the minute's one start",
        || async { (count(&c, started).await == 1).then_some(()) },
    )
    .await;
    // Every daemon has tried and been held back by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&c, started).await, 1, "1/min starts one job a minute");
    cli_ok(&operator, &["limits", "set", "noop", "--rate", "1000/s"]).await;
    let raised = tokio::time::Instant::now();
    wait_for(Duration::from_secs(5), "the raised rate in use", || async {
        (count(&c, started).await == 100).then_some(())
    })
    .await;
    assert!(
        raised.elapsed() < Duration::from_secs(1),
        "the raised rate took {:?} to start the backlog",
        raised.elapsed()
    );
    drop(workers);
}

/// Starts `n` worker processes of 20 slots each, as the operator role.
async fn daemons(operator: &str, n: usize) -> Vec<WorkerProcess> {
    daemons_with(operator, n, &[]).await
}

/// [`daemons`] with more settings.
async fn daemons_with(operator: &str, n: usize, env: &[(&str, &str)]) -> Vec<WorkerProcess> {
    let mut all = vec![("OPSRUNNER_WORKER__CONCURRENCY", "20")];
    all.extend_from_slice(env);
    let mut workers = Vec::new();
    for _ in 0..n {
        workers.push(WorkerProcess::start_url(operator, &all).await);
    }
    workers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_20_per_second_starts_180_to_220_jobs_in_10_seconds_across_three_daemons() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    cli_ok(&operator, &["limits", "set", "noop", "--rate", "20/s"]).await;
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload) SELECT 'noop', '{}' FROM generate_series(1, 1000)",
        &[],
    )
    .await
    .unwrap();
    let workers = daemons(&operator, 3).await;
    let first: chrono::DateTime<chrono::Utc> =
        wait_for(Duration::from_secs(20), "a first start", || async {
            c.query_one("SELECT min(started_at) FROM ops_jobs", &[])
                .await
                .unwrap()
                .get::<_, Option<chrono::DateTime<chrono::Utc>>>(0)
        })
        .await;
    // Until 10 s after the first start, and a little more for the last
    // claims to commit.
    let waited = chrono::Utc::now() - first;
    let rest = (chrono::Duration::milliseconds(10_500) - waited)
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(rest).await;
    let started: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_jobs WHERE started_at < $1::timestamptz + interval '10 seconds'",
            &[&first],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (180..=220).contains(&started),
        "{started} started in the first 10 s at 20/s"
    );
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_backlog_delays_anothers_job_by_at_most_one_claim_and_a_per_tenant_limit_holds()
{
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let fair_index = || async {
        c.query_one(
            "SELECT to_regclass('ops_jobs_tenant_claim_idx') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    };
    assert!(
        !fair_index().await,
        "enqueues pay for the fair index only once a type claims fairly"
    );
    let out = cli_ok(&operator, &["limits", "set", "sleep", "--fair"]).await;
    assert!(out.contains("built ops_jobs_tenant_claim_idx"), "{out}");
    assert!(fair_index().await);
    let a = connect(&bound_app(&db, "tenant-a").await).await;
    let b = connect(&bound_app(&db, "tenant-b").await).await;
    // Tenant A: 1,000 one-second jobs, all of a better priority than B's.
    a.execute(
        "INSERT INTO ops_jobs (job_type, payload, priority) \
         SELECT 'sleep', '{\"ms\": 1000}', -50 FROM generate_series(1, 1000)",
        &[],
    )
    .await
    .unwrap();
    let workers = daemons(&operator, 3).await;
    let running = |tenant: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT count(*) FROM ops_jobs WHERE status = 'running' AND tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    wait_for(
        Duration::from_secs(20),
        "A's jobs in all 60 slots",
        || async { (running("tenant-a").await == 60).then_some(()) },
    )
    .await;
    // Tenant B's one job, while every slot is busy with A's.
    let id: uuid::Uuid = b
        .query_one(
            "INSERT INTO ops_jobs (job_type, payload) VALUES ('sleep', '{\"ms\": 10}') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    wait_status(&c, id, "succeeded", Duration::from_secs(10)).await;
    let row = c
        .query_one(
            "SELECT extract(epoch FROM started_at - created_at)::float8, \
                    (SELECT count(DISTINCT a.started_at) FROM ops_jobs a \
                     WHERE a.tenant_id = 'tenant-a' AND a.started_at > b.created_at \
                       AND a.started_at < b.started_at) \
             FROM ops_jobs b WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (wait, claims_before): (f64, i64) = (row.get(0), row.get(1));
    assert!(
        claims_before <= 1,
        "{claims_before} claims of A's jobs went before B's (waited {wait:.2} s)"
    );
    assert!(wait < 2.0, "B waited {wait:.2} s behind one-second jobs");

    // A per-tenant limit: A drops to 10 running as its jobs finish, B's
    // jobs start at once in the freed slots.
    cli_ok(
        &operator,
        &["limits", "set", "sleep", "--per-tenant-max-running", "10"],
    )
    .await;
    wait_for(Duration::from_secs(5), "A down to its limit", || async {
        (running("tenant-a").await <= 10).then_some(())
    })
    .await;
    b.execute(
        "INSERT INTO ops_jobs (job_type, payload) SELECT 'sleep', '{\"ms\": 3000}' FROM generate_series(1, 5)",
        &[],
    )
    .await
    .unwrap();
    let mut peak = 0;
    let mut b_started = 0;
    for _ in 0..40 {
        let n = running("tenant-a").await;
        assert!(n <= 10, "tenant A runs {n} with a per-tenant limit of 10");
        peak = peak.max(n);
        b_started = b_started.max(running("tenant-b").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peak, 10, "A's limit is reached");
    assert_eq!(b_started, 5, "B's jobs run beside A's");
    let listed = cli_ok(&operator, &["limits", "list"]).await;
    assert!(
        listed.contains("yes") && listed.contains(" 10 "),
        "{listed}"
    );
    drop(workers);
}
