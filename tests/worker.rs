//! Worker behaviour against a real PostgreSQL, with in-process workers.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opsrunner::{HandlerError, JobContext, Registry};
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_inserted_by_plain_sql_is_picked_up_through_notify_before_the_poll_interval() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    let cfg = db.config(|s| s.worker.poll_interval = Duration::from_secs(10));
    let w = start_worker(&cfg, Registry::with_builtins()).await;
    // Let the start-up fetch pass so only a NOTIFY can wake the claimer.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let id = insert_job(&c, "noop", json!({})).await;
    wait_status(&c, id, "succeeded", Duration::from_secs(5)).await;
    // The poll interval is 10 s: only the NOTIFY path can be this quick.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        w.stats.poll_claims.load(Ordering::Relaxed),
        0,
        "claimed by a poll, not a notify"
    );
    assert!(w.stats.notify_claims.load(Ordering::Relaxed) >= 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_insert_of_10000_rows_sends_one_notification() {
    let db = migrated_db().await;
    let url = db.url.clone();
    let (listener, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut s = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = s.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.channel().to_string());
            }
        }
    });
    listener.batch_execute("LISTEN ops_jobs").await.unwrap();
    let c = db.client().await;
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload) SELECT 'noop', jsonb_build_object('i', g) FROM generate_series(1, 10000) g",
        &[],
    )
    .await
    .unwrap();
    // A round trip on the listening connection flushes any pending notification.
    listener.simple_query("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 1, "one notification per statement");
}

/// Counts executions per job id across all workers.
fn counting_registry(counts: Arc<Mutex<HashMap<Uuid, u32>>>) -> Registry {
    let mut r = Registry::new();
    r.register("count", move |job: JobContext| {
        let counts = counts.clone();
        async move {
            *counts.lock().unwrap().entry(job.id).or_default() += 1;
            Ok(json!({}))
        }
    });
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_over_four_concurrent_workers_each_run_exactly_once() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["count"]).await;
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let cfg = db.config(|s| s.worker.concurrency = 8);
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(start_worker(&cfg, counting_registry(counts.clone())).await);
    }
    // Inserted in several statements while the workers compete.
    for chunk in 0..10 {
        c.execute(
            "INSERT INTO ops_jobs (job_type, payload) SELECT 'count', jsonb_build_object('i', g) FROM generate_series(1, 100) g",
            &[],
        )
        .await
        .unwrap();
        if chunk % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for(
        Duration::from_secs(60),
        "all 1000 jobs to succeed",
        || async {
            let n = count(
                &c,
                "SELECT count(*) FROM ops_jobs WHERE status = 'succeeded'",
            )
            .await;
            (n == 1000).then_some(())
        },
    )
    .await;
    let mut per_worker = Vec::new();
    for w in workers {
        per_worker.push(w.stats.succeeded.load(Ordering::Relaxed));
        w.shutdown().await;
    }
    {
        let counts = counts.lock().unwrap();
        assert_eq!(counts.len(), 1000, "every job ran");
        assert!(counts.values().all(|&n| n == 1), "a job ran twice");
    }
    assert_eq!(
        per_worker.iter().sum::<u64>(),
        1000,
        "per worker: {per_worker:?}"
    );
    assert!(
        per_worker.iter().filter(|&&n| n > 0).count() >= 2,
        "work was shared: {per_worker:?}"
    );
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE attempt <> 1), (SELECT count(*) FROM ops_job_events) FROM ops_jobs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "no job needed a second attempt");
    // A second claim would have to follow a stored event (a retry, a rescue
    // or a hand-back), and the first attempt of each job is its only one.
    assert_eq!(row.get::<_, i64>(1), 0, "exactly one claim per job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_retries_with_backoff_then_ends_failed_with_a_bounded_error() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["flaky"]).await;
    let mut r = Registry::new();
    r.register("flaky", |job: JobContext| async move {
        Err::<serde_json::Value, _>(HandlerError::Retryable(format!(
            "attempt {} failed: {}",
            job.attempt,
            "x".repeat(5000)
        )))
    });
    let w = start_worker(&db.config(|_| {}), r).await;
    let id: Uuid = JobRow::new("flaky").max_attempts(3).insert(&c).await;
    wait_status(&c, id, "failed", Duration::from_secs(20)).await;
    let row = c
        .query_one(
            "SELECT attempt, error, finished_at IS NOT NULL FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    let error: String = row.get(1);
    assert!(
        error.chars().count() <= 500,
        "error is {} chars",
        error.chars().count()
    );
    assert!(error.starts_with("attempt 3 failed"), "{error}");
    assert!(row.get::<_, bool>(2));
    let transitions = transitions(&c, id).await;
    assert_eq!(
        transitions,
        [
            "running", "queued", "running", "queued", "running", "failed"
        ]
    );
    assert_eq!(w.stats.retried.load(Ordering::Relaxed), 2);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_fails_the_job_at_once_and_the_worker_keeps_running() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep", "noop", "boom"]).await;
    let mut r = Registry::with_builtins();
    r.register("boom", |_job: JobContext| async move {
        if true {
            panic!("handler bug");
        }
        Ok(json!({}))
    });
    let w = start_worker(&db.config(|_| {}), r).await;
    let bad = insert_job(&c, "sleep", json!({"ms": "soon"})).await;
    let panicking: Uuid = JobRow::new("boom").max_attempts(1).insert(&c).await;
    for id in [bad, panicking] {
        wait_status(&c, id, "failed", Duration::from_secs(10)).await;
    }
    let errs: Vec<(i32, String)> = c
        .query(
            "SELECT attempt, error FROM ops_jobs WHERE id = ANY($1) ORDER BY job_type DESC",
            &[&vec![bad, panicking]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(errs[0].0, 1, "a permanent error is not retried");
    assert!(
        errs[0].1.contains("sleep expects a payload"),
        "{}",
        errs[0].1
    );
    assert!(
        errs[1].1.contains("handler panicked: handler bug"),
        "{}",
        errs[1].1
    );
    // Still alive and working.
    let ok = insert_job(&c, "noop", json!({})).await;
    wait_status(&c, ok, "succeeded", Duration::from_secs(10)).await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_result_is_replaced_by_the_truncation_marker() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["big", "fits"]).await;
    let mut r = Registry::new();
    r.register("big", |_job: JobContext| async move {
        Ok(json!({ "blob": "x".repeat(20_000) }))
    });
    r.register("fits", |_job: JobContext| async move {
        Ok(json!({ "blob": "x".repeat(9_000) }))
    });
    let w = start_worker(&db.config(|_| {}), r).await;
    let big = insert_job(&c, "big", json!({})).await;
    let fits = insert_job(&c, "fits", json!({})).await;
    for id in [big, fits] {
        wait_status(&c, id, "succeeded", Duration::from_secs(10)).await;
    }
    let result = |id| {
        let c = &c;
        async move {
            c.query_one("SELECT result FROM ops_jobs WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, serde_json::Value>(0)
        }
    };
    assert_eq!(
        result(big).await,
        json!({"error": "Result too large", "truncated": true})
    );
    assert_eq!(result(fits).await["blob"].as_str().unwrap().len(), 9_000);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_flag_keeps_jobs_queued_and_enabling_it_runs_them_without_restart() {
    let db = migrated_db().await;
    let c = db.client().await;
    // No flag row at all: absent means off.
    let w = start_worker(&db.config(|_| {}), Registry::with_builtins()).await;
    let id = insert_job(&c, "noop", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // three poll intervals
    assert_eq!(status(&c, id).await, "queued");
    opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: "noop",
            enabled: false,
            reason: Some("explicitly off"),
            by: "tests",
            cancel_running: false,
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let row = c
        .query_one(
            "SELECT status::text, attempt FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("queued".into(), 0)
    );

    opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: "noop",
            enabled: true,
            reason: Some("go"),
            by: "tests",
            cancel_running: false,
        },
    )
    .await
    .unwrap();
    wait_status(&c, id, "succeeded", Duration::from_secs(5)).await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_still_picked_up_after_the_listen_connection_is_terminated() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    // A poll interval far beyond the test: pickups must come from NOTIFY or
    // the catch-up fetch after the reconnect.
    let w = start_worker(
        &db.config(|s| s.worker.poll_interval = Duration::from_secs(60)),
        Registry::with_builtins(),
    )
    .await;
    let listener_pid = || async {
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'opsrunner-listener'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get::<_, i32>(0))
    };
    let old = wait_for(Duration::from_secs(5), "the listener session", listener_pid).await;
    let killed: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&old])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    // Inserted while the listener is down: only the catch-up fetch finds it.
    let during = insert_job(&c, "noop", json!({})).await;
    let new = wait_for(
        Duration::from_secs(10),
        "a new listener session",
        || async { listener_pid().await.filter(|p| *p != old) },
    )
    .await;
    assert_ne!(new, old);
    wait_status(&c, during, "succeeded", Duration::from_secs(10)).await;
    // And NOTIFY works again on the new connection.
    let after = insert_job(&c, "noop", json!({})).await;
    wait_status(&c, after, "succeeded", Duration::from_secs(10)).await;
    assert!(w.stats.listener_reconnects.load(Ordering::Relaxed) >= 1);
    assert_eq!(w.stats.poll_claims.load(Ordering::Relaxed), 0);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_worker_cannot_complete_an_attempt_that_was_reclaimed() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["slow"]).await;
    // Worker A claims attempt 1 and gets stuck; the job is taken from it (as
    // the rescuer would after A lost the database longer than its lease) and
    // worker B claims attempt 2. A then finishes while B is still running:
    // A's write must not touch B's attempt.
    fn gated(gate: Arc<tokio::sync::Notify>, who: &'static str) -> Registry {
        let mut r = Registry::new();
        r.register("slow", move |_job: JobContext| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok(json!({ "by": who }))
            }
        });
        r
    }
    let (gate_a, gate_b) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let id = insert_job(&c, "slow", json!({})).await;
    let a = start_worker(
        &db.config(|s| {
            // One slot, held by the stuck attempt; a heartbeat too rare to
            // notice the theft, so the stale completion reaches the fence.
            s.worker.concurrency = 1;
            s.worker.lease = Duration::from_secs(120);
            s.worker.heartbeat_interval = Duration::from_secs(40);
        }),
        gated(gate_a.clone(), "a"),
    )
    .await;
    wait_status(&c, id, "running", Duration::from_secs(5)).await;
    c.execute(
        "UPDATE ops_jobs SET status = 'queued', lease_expires_at = NULL, run_at = now() WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let b = start_worker(&db.config(|_| {}), gated(gate_b.clone(), "b")).await;
    let b_owner = b.owner.clone();
    wait_for(Duration::from_secs(10), "B to claim attempt 2", || async {
        let r = c
            .query_one(
                "SELECT status::text, attempt, lease_owner FROM ops_jobs WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get::<_, String>(0) == "running"
            && r.get::<_, i32>(1) == 2
            && r.get::<_, String>(2) == b_owner)
            .then_some(())
    })
    .await;

    gate_a.notify_one(); // the zombie finishes attempt 1 now
    wait_for(
        Duration::from_secs(10),
        "A's completion to be refused",
        || async { (a.stats.stale_completions.load(Ordering::Relaxed) == 1).then_some(()) },
    )
    .await;
    let row = c
        .query_one(
            "SELECT status::text, attempt, result IS NULL FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "running",
        "B's attempt is untouched"
    );
    assert_eq!(row.get::<_, i32>(1), 2);
    assert!(row.get::<_, bool>(2));
    assert_eq!(a.stats.succeeded.load(Ordering::Relaxed), 0);

    gate_b.notify_one();
    wait_status(&c, id, "succeeded", Duration::from_secs(10)).await;
    let result: serde_json::Value = c
        .query_one("SELECT result FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(result, json!({"by": "b"}));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_with_cancel_requested_is_cancelled_without_running() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["count"]).await;
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let id: Uuid = JobRow::new("count").cancel_requested(true).insert(&c).await;
    let w = start_worker(&db.config(|_| {}), counting_registry(counts.clone())).await;
    wait_status(&c, id, "cancelled", Duration::from_secs(10)).await;
    assert!(counts.lock().unwrap().is_empty(), "the handler ran");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_renew_leases_with_hot_updates_that_add_no_index_entries() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let cfg = db.config(|s| s.worker.heartbeat_interval = Duration::from_millis(100));
    let w = start_worker(&cfg, Registry::with_builtins()).await;
    let id = insert_job(&c, "sleep", json!({"ms": 2000})).await;
    wait_status(&c, id, "succeeded", Duration::from_secs(10)).await;
    // The worker's backends report their table statistics when they exit.
    w.shutdown().await;
    let (updates, hot) = wait_for(Duration::from_secs(10), "table statistics", || async {
        let r = c
            .query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'ops_jobs'",
                &[],
            )
            .await
            .unwrap();
        let (u, h): (i64, i64) = (r.get(0), r.get(1));
        (u >= 10).then_some((u, h))
    })
    .await;
    // Updates: the claim and the completion (both change `status`, which is
    // indexed, so they cannot be HOT) and one renewal per heartbeat. Every
    // renewal must be HOT: it changes no indexed column.
    assert!(
        hot >= updates - 2,
        "{hot} of {updates} updates were HOT; heartbeats must not touch an index"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_pool_uses_generic_plans_without_jit_and_keeps_its_timeouts() {
    let db = migrated_db().await;
    let cfg = db.config(|_| {});
    // The pool `Worker::new` builds.
    let call_timeout = cfg.settings.db.call_timeout(cfg.settings.worker.lease);
    let pool =
        opsrunner::db::worker_pool(&cfg.database_url, &cfg.settings.db, call_timeout).unwrap();
    let c = pool.get().await.unwrap();
    let show = |name: &'static str| {
        let c = &c;
        async move {
            c.query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(show("plan_cache_mode").await, "force_generic_plan");
    assert_eq!(show("jit").await, "off");
    // The plan option is appended to, not instead of, the session timeouts.
    assert_ne!(show("statement_timeout").await, "0");
    // No longer than the client-side deadline: a statement the worker gave
    // up on must not run on in the server.
    assert_eq!(show("statement_timeout").await, "1s");
    assert_ne!(show("idle_in_transaction_session_timeout").await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_claim_brings_back_after_the_stop_began_go_back_queued_unstarted() {
    let db = migrated_db().await;
    let mut c = db.client().await;
    // The type's flag is off: the worker issues no claim at all yet.
    let id = insert_job(&c, "noop", json!({})).await;
    let w = start_worker(&db.config(|_| {}), Registry::with_builtins()).await;
    // Hold the claim inside its statement, so that it is still on its way
    // when the stop begins: its UPDATE waits for this transaction's lock on
    // ops_jobs. The flag goes on by plain SQL, from another session.
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE ops_jobs IN SHARE MODE")
        .await
        .unwrap();
    let other = db.client().await;
    other
        .batch_execute(
            "INSERT INTO ops_feature_flags (name, enabled) VALUES ('noop', true)
             ON CONFLICT (name) DO UPDATE SET enabled = true",
        )
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "a claim waiting on the lock",
        || async {
            let waiting = count(
                &other,
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '-- Claim up to%'",
            )
            .await;
            (waiting > 0).then_some(())
        },
    )
    .await;
    let stats = w.stats.clone();
    w.stop.cancel();
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), w.task)
        .await
        .expect("worker stops")
        .expect("worker task")
        .expect("worker run");
    assert_eq!(
        status_attempt_lease_cleared(&c, id).await,
        ("queued".to_string(), 0, true),
        "back in the queue, attempt refunded, lease cleared"
    );
    let trail = transitions(&c, id).await;
    // The claim did take it (so the test met the race), and it never ran.
    assert_eq!(
        (
            stats.claimed.load(Ordering::Relaxed),
            stats.requeued.load(Ordering::Relaxed)
        ),
        (1, 1),
        "claimed and handed back"
    );
    assert_eq!(trail, ["running", "queued"], "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_worker_cannot_decode_fails_alone_and_the_rest_of_its_batch_runs() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    // PostgreSQL stores both; serde_json refuses 200 levels of nesting
    // (its limit is 128) and a number past f64. Priority -100: they are
    // claimed first, in the same batch as the ordinary jobs.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    c.execute(
        "INSERT INTO ops_jobs (job_type, priority, payload, max_attempts)
         SELECT 'noop', -100, p::jsonb, 3 FROM unnest(ARRAY[$1, '{\"n\": 1e1000}']) AS p
         UNION ALL
         SELECT 'noop', 0, jsonb_build_object('i', g), 3 FROM generate_series(1, 20) g",
        &[&deep],
    )
    .await
    .unwrap();
    let w = start_worker(&db.config(|_| {}), Registry::with_builtins()).await;
    wait_all_finished(&c, Duration::from_secs(15), "the batch").await;
    let rows = c
        .query(
            "SELECT priority, status::text, attempt, error FROM ops_jobs ORDER BY priority",
            &[],
        )
        .await
        .unwrap();
    for r in &rows {
        let (priority, status, attempt, error): (i16, String, i32, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if priority == -100 {
            assert_eq!(status, "failed", "{error:?}");
            let error = error.unwrap_or_default();
            assert!(
                error.contains("cannot be decoded") && error.chars().count() <= 500,
                "{error}"
            );
            assert_eq!(attempt, 1, "a decode failure is not retried");
        } else {
            assert_eq!((status.as_str(), attempt), ("succeeded", 1), "{error:?}");
        }
    }
    assert_eq!(rows.len(), 22);
    w.shutdown().await;
}
