//! The Prometheus endpoint of a real worker process.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_with_bounded_labels_and_health_endpoints_answer() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop", "sleep"]).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(insert_job(&c, "noop", json!({})).await);
    }
    let bad = insert_job(&c, "sleep", json!({"ms": "x"})).await;
    for id in &ids {
        wait_status(&c, *id, "succeeded", Duration::from_secs(10)).await;
    }
    wait_status(&c, bad, "failed", Duration::from_secs(10)).await;

    let body = wait_for(
        Duration::from_secs(10),
        "completions and queue gauges in /metrics",
        || async {
            let (status, body) = get(port, "/metrics").await;
            let done = sample(
                &body,
                "opsrunner_jobs_completed_total",
                &["job_type=\"noop\"", "outcome=\"succeeded\""],
            );
            (status == 200 && done == Some(3.0) && body.contains("opsrunner_queue_depth"))
                .then_some(body)
        },
    )
    .await;
    assert_eq!(
        sample(
            &body,
            "opsrunner_jobs_completed_total",
            &["job_type=\"sleep\"", "outcome=\"failed\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "opsrunner_jobs_claimed_total",
            &["job_type=\"noop\"", "queue=\"default\""]
        ),
        Some(3.0)
    );
    assert!(
        body.contains("opsrunner_job_duration_seconds_bucket{") && body.contains("le=\"0.005\""),
        "explicit buckets"
    );
    assert!(body.contains("opsrunner_job_queue_wait_seconds_bucket{"));
    assert_eq!(
        sample(&body, "opsrunner_feature_flag_enabled", &["flag=\"noop\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "opsrunner_feature_flag_enabled",
            &["flag=\"pause-all\""]
        ),
        Some(0.0)
    );
    assert!(sample(&body, "opsrunner_notification_queue_usage_ratio", &[]).is_some());
    assert_eq!(sample(&body, "opsrunner_jobs_running", &[]), Some(0.0));
    assert_eq!(
        sample(&body, "opsrunner_queue_depth", &["queue=\"default\""]),
        Some(0.0),
        "an empty queue reads 0"
    );
    // No job id (or any UUID) in any label.
    for id in ids.iter().chain([&bad]) {
        assert!(!body.contains(&id.to_string()));
    }
    assert!(!body.contains(&db.url) && !body.contains("postgres://"));

    assert_eq!(get(port, "/healthz").await.0, 200);
    let (status, text) = get(port, "/readyz").await;
    assert_eq!((status, text.as_str()), (200, "ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_held_open_elsewhere_is_exported_and_warned_about() {
    let db = migrated_db().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let w = WorkerProcess::start(
        &db,
        &[
            ("OPSRUNNER_METRICS__LISTEN", &listen),
            ("OPSRUNNER_WORKER__SNAPSHOT_WARN_AFTER", "1s"),
        ],
    )
    .await;
    // An idle REPEATABLE READ transaction, as a forgotten psql session leaves.
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ops_jobs;")
        .await
        .unwrap();
    w.wait_log("a snapshot held open elsewhere", Duration::from_secs(10))
        .await;
    let age = wait_for(
        Duration::from_secs(10),
        "the snapshot age gauge",
        || async {
            let (_, body) = get(port, "/metrics").await;
            sample(&body, "opsrunner_oldest_snapshot_age_seconds", &[]).filter(|v| *v >= 1.0)
        },
    )
    .await;
    assert!(age >= 1.0, "{age}");
    holder.batch_execute("COMMIT").await.unwrap();
    wait_for(
        Duration::from_secs(10),
        "the gauge to fall once it ends",
        || async {
            let (_, body) = get(port, "/metrics").await;
            sample(&body, "opsrunner_oldest_snapshot_age_seconds", &[]).filter(|v| *v < 1.0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_of_a_type_nobody_handles_are_logged_at_warn_and_counted() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop", "slep"]).await;
    for _ in 0..3 {
        insert_job(&c, "slep", json!({})).await;
    }
    insert_job(&c, "noop", json!({})).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let w = WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await;
    w.wait_log("no handler for", Duration::from_secs(10)).await;
    let line = w
        .log_text()
        .lines()
        .find(|l| l.contains("no handler for"))
        .unwrap()
        .to_string();
    assert!(line.contains("\"WARN\""), "{line}");
    assert!(line.contains("slep=3"), "{line}");
    assert!(!line.contains("noop"), "{line}");
    wait_for(Duration::from_secs(10), "the unhandled gauge", || async {
        let (_, body) = get(port, "/metrics").await;
        (sample(
            &body,
            "opsrunner_unhandled_queued_jobs",
            &["job_type=\"slep\""],
        ) == Some(3.0))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_nobody_configured_are_one_label_and_add_no_series() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            c.query_one(
                "INSERT INTO ops_jobs (job_type, queue) VALUES ('noop', $1) RETURNING id",
                &[&format!("invented-{i}")],
            )
            .await
            .unwrap()
            .get::<_, uuid::Uuid>(0),
        );
    }
    ids.push(insert_job(&c, "noop", json!({})).await);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await;
    for id in &ids {
        wait_status(&c, *id, "succeeded", Duration::from_secs(10)).await;
    }
    let body = wait_for(Duration::from_secs(10), "the completions", || async {
        let (_, body) = get(port, "/metrics").await;
        (sample(
            &body,
            "opsrunner_jobs_completed_total",
            &["queue=\"other\"", "outcome=\"succeeded\""],
        ) == Some(20.0))
        .then_some(body)
    })
    .await;
    assert!(!body.contains("invented-"), "{body}");
    assert_eq!(
        sample(
            &body,
            "opsrunner_jobs_completed_total",
            &["queue=\"default\"", "outcome=\"succeeded\""]
        ),
        Some(1.0)
    );
}
