//! Real `opsrunner worker` processes: killed, signalled, replaced.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_mid_job_has_its_job_rescued_and_completed_by_another() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let mut a = WorkerProcess::start(&db, &[]).await;
    let id = insert_job(&c, "sleep", json!({"ms": 1500})).await;
    let owner_a: String = wait_for(Duration::from_secs(10), "A to claim the job", || async {
        c.query_opt(
            "SELECT lease_owner FROM ops_jobs WHERE id = $1 AND status = 'running'",
            &[&id],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
    })
    .await;
    assert!(
        owner_a.contains(&format!(":{}:", a.pid())),
        "{owner_a} should name pid {}",
        a.pid()
    );
    a.signal(libc::SIGKILL);
    let _ = a.child.wait().await;

    let b = WorkerProcess::start(&db, &[]).await;
    wait_status(&c, id, "succeeded", Duration::from_secs(20)).await;
    let row = c
        .query_one(
            "SELECT attempt, lease_owner FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2, "the killed attempt counts");
    let owner_b: String = row.get(1);
    assert!(owner_b.contains(&format!(":{}:", b.pid())), "{owner_b}");
    let trail: Vec<(String, Option<String>)> = trail(&c, id)
        .await
        .into_iter()
        .map(|e| (e.to_status, e.detail))
        .collect();
    let statuses: Vec<&str> = trail.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["running", "queued", "running", "succeeded"]);
    assert!(
        trail[1]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("lease expired"),
        "{trail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_jobs_and_exits_zero() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let mut w = WorkerProcess::start(&db, &[("OPSRUNNER_WORKER__SHUTDOWN_TIMEOUT", "20s")]).await;
    let id = insert_job(&c, "sleep", json!({"ms": 1500})).await;
    wait_status(&c, id, "running", Duration::from_secs(10)).await;
    w.signal(libc::SIGTERM);
    // The signal is handled asynchronously: a job inserted in the same
    // millisecond may still meet a claim already under way. Once the worker
    // says it stopped claiming, nothing inserted may be claimed by it.
    w.wait_log("claiming stopped", Duration::from_secs(10))
        .await;
    let late = insert_job(&c, "sleep", json!({"ms": 10})).await;
    let code = tokio::time::timeout(Duration::from_secs(30), w.child.wait())
        .await
        .expect("worker exits")
        .expect("wait");
    assert_eq!(code.code(), Some(0), "log:\n{}", w.log_text());
    assert_eq!(
        status(&c, id).await,
        "succeeded",
        "the running job finished"
    );
    assert_eq!(
        status(&c, late).await,
        "queued",
        "nothing claimed after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_returns_jobs_longer_than_the_drain_timeout_to_the_queue_without_burning_an_attempt()
 {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let mut w = WorkerProcess::start(&db, &[("OPSRUNNER_WORKER__SHUTDOWN_TIMEOUT", "500ms")]).await;
    let id = insert_job(&c, "sleep", json!({"ms": 60000})).await;
    wait_status(&c, id, "running", Duration::from_secs(10)).await;
    w.signal(libc::SIGTERM);
    let code = tokio::time::timeout(Duration::from_secs(20), w.child.wait())
        .await
        .expect("worker exits")
        .expect("wait");
    assert_eq!(code.code(), Some(0), "log:\n{}", w.log_text());
    assert_eq!(
        status_attempt_lease_cleared(&c, id).await,
        ("queued".to_string(), 0, true),
        "back in the queue, attempt refunded, lease cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_without_dropping_running_jobs() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep", "first", "second"]).await;
    let dir = temp_dir("hup");
    let path = dir.join("opsrunner.toml");
    let exec = |name: &str, n: u32| {
        format!(
            "[[exec]]\njob_type = \"{name}\"\ncommand = [\"/bin/sh\", \"-c\", \"echo '{{\\\"n\\\": {n}}}'\"]\n"
        )
    };
    std::fs::write(&path, exec("first", 1)).unwrap();
    let path_str = path.to_str().unwrap().to_string();
    let w = WorkerProcess::start(&db, &[("OPSRUNNER_CONFIG", &path_str)]).await;

    let long = insert_job(&c, "sleep", json!({"ms": 2500})).await;
    wait_status(&c, long, "running", Duration::from_secs(10)).await;
    // Not known yet: stays queued.
    let second = insert_job(&c, "second", json!({})).await;
    std::fs::write(
        &path,
        format!("{}\n{}", exec("first", 1), exec("second", 2)),
    )
    .unwrap();
    w.signal(libc::SIGHUP);
    wait_status(&c, second, "succeeded", Duration::from_secs(10)).await;
    let result: serde_json::Value = c
        .query_one("SELECT result FROM ops_jobs WHERE id = $1", &[&second])
        .await
        .unwrap()
        .get(0);
    assert_eq!(result, json!({"n": 2}));

    // A broken file is refused and the daemon carries on with the old config.
    std::fs::write(&path, "[worker]\nconcurrency = \"lots\"\n").unwrap();
    w.signal(libc::SIGHUP);
    let first = insert_job(&c, "first", json!({})).await;
    wait_status(&c, first, "succeeded", Duration::from_secs(10)).await;
    wait_status(&c, long, "succeeded", Duration::from_secs(10)).await;
    let attempt: i32 = c
        .query_one("SELECT attempt FROM ops_jobs WHERE id = $1", &[&long])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempt, 1, "the running job was not interrupted");
    wait_for(
        Duration::from_secs(5),
        "the failed reload to be logged",
        || async { w.log_text().contains("reload failed").then_some(()) },
    )
    .await;
}
