//! Cancellation, runtime kill switches, the audit log and dry runs.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use opsrunner::{JobContext, Registry};
use serde_json::json;
use uuid::Uuid;

async fn job_row(c: &tokio_postgres::Client, id: Uuid) -> (String, Option<String>) {
    let r = c
        .query_one(
            "SELECT status::text, error FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_job_cancels_it_before_it_runs_and_audits_it() {
    let db = migrated_db().await;
    let c = db.client().await;
    let id = insert_job(&c, "sleep", json!({"ms": 1})).await;
    let after = opsrunner::jobs::cancel(
        &c,
        &opsrunner::jobs::CancelRequest {
            id,
            reason: Some("not needed"),
            actor: "alice@ops",
            tenant: None,
            via: "cli",
        },
    )
    .await
    .unwrap();
    assert_eq!(after.as_deref(), Some("cancelled"));
    let (status, error) = job_row(&c, id).await;
    assert_eq!(status, "cancelled");
    assert_eq!(error.as_deref(), Some("cancelled before start: not needed"));
    // Finished jobs cannot be cancelled again.
    assert_eq!(
        opsrunner::jobs::cancel(
            &c,
            &opsrunner::jobs::CancelRequest {
                id,
                reason: None,
                actor: "alice@ops",
                tenant: None,
                via: "cli"
            }
        )
        .await
        .unwrap(),
        None
    );
    let audit = c
        .query_one(
            "SELECT actor, action, detail->>'reason' FROM ops_audit_log WHERE target = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            audit.get::<_, String>(0),
            audit.get::<_, String>(1),
            audit.get::<_, String>(2)
        ),
        ("alice@ops".into(), "job.cancel".into(), "not needed".into())
    );
    // And a worker never runs it.
    enable(&c, &["sleep"]).await;
    let w = start_worker(&db.config(|_| {}), Registry::with_builtins()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(job_row(&c, id).await.0, "cancelled");
    assert_eq!(w.stats.claimed.load(Ordering::Relaxed), 0);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled_through_notify_well_before_the_next_heartbeat() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    // Heartbeat every 30 s: a quick stop can only come from the NOTIFY.
    let cfg = db.config(|s| {
        s.worker.lease = Duration::from_secs(60);
        s.worker.heartbeat_interval = Duration::from_secs(20);
    });
    let w = start_worker(&cfg, Registry::with_builtins()).await;
    let id = insert_job(&c, "sleep", json!({"ms": 60000})).await;
    wait_status(&c, id, "running", Duration::from_secs(5)).await;
    // Plain SQL, as an app would do it.
    c.execute(
        "UPDATE ops_jobs SET cancel_requested = true, cancel_requested_at = now(), cancel_reason = 'operator said so' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    wait_status(&c, id, "cancelled", Duration::from_secs(5)).await;
    let (_, error) = job_row(&c, id).await;
    assert_eq!(
        error.as_deref(),
        Some("cancelled on request: operator said so")
    );
    assert_eq!(w.stats.cancelled.load(Ordering::Relaxed), 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_ignores_cancellation_is_abandoned_after_the_grace_and_its_slot_freed() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["stubborn", "noop"]).await;
    let mut r = Registry::with_builtins();
    r.register("stubborn", |_job: JobContext| async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await; // never looks at the token
        }
    });
    let w = start_worker(&db.config(|s| s.worker.concurrency = 1), r).await;
    let id = insert_job(&c, "stubborn", json!({})).await;
    wait_status(&c, id, "running", Duration::from_secs(5)).await;
    let next = insert_job(&c, "noop", json!({})).await;
    opsrunner::jobs::cancel(
        &c,
        &opsrunner::jobs::CancelRequest {
            id,
            reason: None,
            actor: "tests",
            tenant: None,
            via: "cli",
        },
    )
    .await
    .unwrap();
    wait_status(&c, id, "cancelled", Duration::from_secs(10)).await;
    // The only slot is free again.
    wait_status(&c, next, "succeeded", Duration::from_secs(10)).await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_flag_stops_claims_on_two_daemons_within_a_second() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    // Periodic reload far away: only the flag NOTIFY can be this quick.
    let cfg = db.config(|s| s.worker.flags_reload_interval = Duration::from_secs(60));
    let a = start_worker(&cfg, Registry::with_builtins()).await;
    let b = start_worker(&cfg, Registry::with_builtins()).await;
    let warm = insert_job(&c, "noop", json!({})).await;
    wait_status(&c, warm, "succeeded", Duration::from_secs(5)).await;

    opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: "noop",
            enabled: false,
            reason: Some("incident 42"),
            by: "tests",
            cancel_running: false,
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(insert_job(&c, "noop", json!({})).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // NOTIFYs and three polls
    let queued: i64 = c
        .query_one("SELECT count(*) FROM ops_jobs WHERE id = ANY($1) AND status = 'queued' AND attempt = 0", &[&ids])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 10, "a daemon kept claiming a disabled type");
    let audit: (String, String) = c
        .query_one(
            "SELECT action, detail->>'reason' FROM ops_audit_log WHERE target = 'noop' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(audit, ("flag.disable".into(), "incident 42".into()));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_with_cancel_running_cancels_running_jobs_of_that_type() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let w = start_worker(&db.config(|_| {}), Registry::with_builtins()).await;
    let id = insert_job(&c, "sleep", json!({"ms": 60000})).await;
    wait_status(&c, id, "running", Duration::from_secs(5)).await;
    let n = opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: "sleep",
            enabled: false,
            reason: Some("bad rollout"),
            by: "tests",
            cancel_running: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    wait_status(&c, id, "cancelled", Duration::from_secs(5)).await;
    let (_, error) = job_row(&c, id).await;
    assert_eq!(
        error.as_deref(),
        Some("cancelled on request: flag sleep disabled: bad rollout")
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_pause_switch_stops_all_claiming_until_resumed() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop", "sleep"]).await;
    opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: opsrunner::flags::PAUSE_FLAG,
            enabled: true,
            reason: Some("maintenance"),
            by: "tests",
            cancel_running: false,
        },
    )
    .await
    .unwrap();
    let w = start_worker(&db.config(|_| {}), Registry::with_builtins()).await;
    let a = insert_job(&c, "noop", json!({})).await;
    let b = insert_job(&c, "sleep", json!({"ms": 1})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        (status(&c, a).await, status(&c, b).await),
        ("queued".into(), "queued".into())
    );
    opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: opsrunner::flags::PAUSE_FLAG,
            enabled: false,
            reason: None,
            by: "tests",
            cancel_running: false,
        },
    )
    .await
    .unwrap();
    for id in [a, b] {
        wait_status(&c, id, "succeeded", Duration::from_secs(5)).await;
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_refuses_update_delete_and_truncate() {
    let db = migrated_db().await;
    let c = db.client().await;
    opsrunner::flags::set(
        &c,
        &opsrunner::flags::FlagChange {
            name: "noop",
            enabled: true,
            reason: Some("x"),
            by: "tests",
            cancel_running: false,
        },
    )
    .await
    .unwrap();
    for sql in [
        "UPDATE ops_audit_log SET actor = 'mallory'",
        "DELETE FROM ops_audit_log",
        "TRUNCATE ops_audit_log",
    ] {
        let err = c.batch_execute(sql).await.expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM ops_audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_job_is_validated_and_recorded_but_never_executed() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep", "effect"]).await;
    let runs = Arc::new(AtomicU32::new(0));
    let mut r = Registry::with_builtins();
    let counter = runs.clone();
    r.register("effect", move |_job: JobContext| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(json!({}))
        }
    });
    let w = start_worker(&db.config(|_| {}), r).await;
    let insert = |t: &'static str, p: serde_json::Value| {
        let c = &c;
        async move { JobRow::new(t).payload(p).dry_run(true).insert(c).await }
    };
    let effect = insert("effect", json!({})).await;
    let good = insert("sleep", json!({"ms": 60000})).await;
    let bad = insert("sleep", json!({"ms": "never"})).await;
    let mut finals = HashMap::new();
    for id in [effect, good, bad] {
        let s = wait_for(Duration::from_secs(5), "the dry run to finish", || async {
            let s = status(&c, id).await;
            (s != "queued" && s != "running").then_some(s)
        })
        .await;
        finals.insert(id, s);
    }
    assert_eq!(finals[&effect], "succeeded");
    assert_eq!(
        finals[&good], "succeeded",
        "a 60 s sleep finished at once: nothing ran"
    );
    assert_eq!(finals[&bad], "failed");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the side effect ran");
    let result: serde_json::Value = c
        .query_one("SELECT result FROM ops_jobs WHERE id = $1", &[&good])
        .await
        .unwrap()
        .get(0);
    assert_eq!(result, json!({"dry_run": true, "valid": true}));
    let detail: Option<String> = trail(&c, good)
        .await
        .into_iter()
        .find(|e| e.to_status == "succeeded")
        .and_then(|e| e.detail);
    assert_eq!(
        detail.as_deref(),
        Some("dry run: validated, nothing executed")
    );
    w.shutdown().await;
}
