//! The embedding API: typed handlers, the `NewJob` builder, and enqueueing in
//! a caller's transaction, against a real worker and a real PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use opsrunner::{JobArgs, NewJob, Registry};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize)]
struct Double {
    n: i64,
}

impl JobArgs for Double {
    const KIND: &'static str = "double";
    fn check(&self) -> Result<(), String> {
        if self.n < 0 {
            return Err("n must not be negative".into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_handler_gets_its_decoded_payload_and_one_that_does_not_decode_fails_at_once() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["double"]).await;
    let mut registry = Registry::new();
    registry.register_args(|d: Double, _ctx| async move { Ok(json!({ "n": d.n * 2 })) });
    let w = start_worker(&db.config(|_| {}), registry).await;
    let good = opsrunner::jobs::insert(&c, &NewJob::from_args(&Double { n: 21 }).unwrap())
        .await
        .unwrap();
    let wrong_type = insert_job(&c, "double", json!({"n": "many"})).await;
    let refused = insert_job(&c, "double", json!({"n": -1})).await;
    wait_status(&c, good.id, "succeeded", Duration::from_secs(10)).await;
    for id in [wrong_type, refused] {
        wait_status(&c, id, "failed", Duration::from_secs(10)).await;
    }
    let row = c
        .query_one("SELECT result FROM ops_jobs WHERE id = $1", &[&good.id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, serde_json::Value>(0), json!({"n": 42}));
    let rows = c
        .query(
            "SELECT attempt, error FROM ops_jobs WHERE id = ANY($1) ORDER BY error",
            &[&vec![wrong_type, refused]],
        )
        .await
        .unwrap();
    for r in &rows {
        assert_eq!(
            r.get::<_, i32>(0),
            1,
            "a payload that does not decode is not retried"
        );
    }
    let errors: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    assert!(
        errors.iter().any(|e| e.contains("n must not be negative")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("double expects a payload")),
        "{errors:?}"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_inserted_in_a_rolled_back_transaction_never_exists_and_a_committed_one_wakes_a_worker()
 {
    let db = migrated_db().await;
    let mut c = db.client().await;
    enable(&c, &["noop"]).await;
    c.batch_execute("CREATE TABLE app_orders (id int PRIMARY KEY)")
        .await
        .unwrap();
    // A poll interval far longer than the test: only the commit's NOTIFY
    // can wake the worker in time.
    let cfg = db.config(|s| s.worker.poll_interval = Duration::from_secs(60));
    let w = start_worker(&cfg, Registry::with_builtins()).await;

    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO app_orders VALUES (1)", &[])
        .await
        .unwrap();
    let rolled_back = opsrunner::jobs::insert(&tx, &NewJob::new("noop", json!({})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO app_orders VALUES (2)", &[])
        .await
        .unwrap();
    let job = NewJob::new("noop", json!({"order": 2}))
        .queue("default")
        .priority(5)
        .max_attempts(2)
        .timeout(Duration::from_secs(30))
        .idempotency_key("order-2");
    let committed = opsrunner::jobs::insert(&tx, &job).await.unwrap();
    assert!(committed.created);
    // Not visible to anyone before the commit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = db.client().await;
    assert_eq!(
        count(
            &other,
            &format!(
                "SELECT count(*) FROM ops_jobs WHERE id = '{}'",
                committed.id
            )
        )
        .await,
        0
    );
    tx.commit().await.unwrap();
    wait_status(&c, committed.id, "succeeded", Duration::from_secs(5)).await;
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM ops_jobs WHERE id = '{}'",
                rolled_back.id
            )
        )
        .await,
        0,
        "the rolled-back job must not exist"
    );
    assert_eq!(count(&c, "SELECT count(*) FROM app_orders").await, 1);
    // The same key again replays the first job.
    let again = opsrunner::jobs::insert(&c, &job).await.unwrap();
    assert_eq!((again.id, again.created), (committed.id, false));
    let other_payload = NewJob::new("noop", json!({"order": 3})).idempotency_key("order-2");
    let err = opsrunner::jobs::insert(&c, &other_payload)
        .await
        .unwrap_err();
    assert!(matches!(err, opsrunner::Error::Conflict(_)), "{err}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_many_enqueues_every_job_in_one_statement_and_skips_keys_already_used() {
    let db = migrated_db().await;
    let c = db.client().await;
    opsrunner::jobs::insert(&c, &NewJob::new("noop", json!({})).idempotency_key("k-0"))
        .await
        .unwrap();
    let mut jobs: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("noop", json!({ "i": i })).tenant("acme"))
        .collect();
    jobs.push(NewJob::new("noop", json!({})).idempotency_key("k-0"));
    jobs.push(
        NewJob::new("noop", json!({}))
            .idempotency_key("k-1")
            .dry_run(true),
    );
    let ids = opsrunner::jobs::insert_many(&c, &jobs).await.unwrap();
    assert_eq!(ids.len(), 51, "50 new jobs and k-1; k-0 was used already");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM ops_jobs WHERE tenant_id = 'acme' AND status = 'queued'"
        )
        .await,
        50
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM ops_jobs WHERE dry_run").await,
        1
    );
    // A job out of bounds refuses the whole batch before anything is sent.
    let bad = vec![
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({})).priority(500),
    ];
    assert!(opsrunner::jobs::insert_many(&c, &bad).await.is_err());
    assert_eq!(count(&c, "SELECT count(*) FROM ops_jobs").await, 52);
}
