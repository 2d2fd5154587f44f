//! `opsrunner dev`: everything on one machine in one command. With
//! `DATABASE_URL` unset it starts a throwaway PostgreSQL, migrates, turns on
//! the demo flags, runs a worker, enqueues a demo job and prints its
//! transitions.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DbUrl, Settings};
use crate::error::{Error, Result};
use crate::handlers::Registry;
use crate::jobs::NewJob;
use crate::pgtemp::TempCluster;
use crate::worker::Worker;

pub struct DevOptions {
    /// Stop after the demo job finished (used by tests and CI).
    pub exit_after_demo: bool,
}

pub async fn run(settings: Settings, opts: DevOptions, shutdown: CancellationToken) -> Result<()> {
    let (_cluster, url) = match crate::config::database_url_from_env()? {
        Some(url) => {
            println!("using DATABASE_URL ({})", url.describe());
            (None, url)
        }
        None => {
            println!("DATABASE_URL is unset: starting a throwaway PostgreSQL cluster…");
            let cluster = tokio::task::spawn_blocking(TempCluster::start)
                .await
                .map_err(|e| Error::TempCluster(e.to_string()))??;
            let url = DbUrl::parse(&cluster.url("postgres"), "DATABASE_URL")?;
            println!(
                "throwaway PostgreSQL on 127.0.0.1:{} (removed on exit)",
                cluster.port()
            );
            println!("  export DATABASE_URL={}", cluster.url("postgres"));
            (Some(cluster), url)
        }
    };
    let config = Config::with_url(settings, url.clone())?;

    let mut client = crate::db::connect(&url, &config.settings.db, "opsrunner-dev").await?;
    let applied = crate::migrate::migrate(&mut client).await?;
    println!(
        "migrations applied: {applied:?} (schema version {})",
        crate::migrate::latest_version()
    );
    for flag in ["noop", "sleep"] {
        crate::flags::set(
            &client,
            flag,
            true,
            Some("enabled by opsrunner dev"),
            &crate::flags::operator_identity(),
            false,
        )
        .await?;
    }
    println!("flags enabled: noop, sleep");

    let worker = Worker::new(&config, Registry::from_settings(&config.settings)?)?;
    if crate::metrics::start(&config.settings, worker.ready_check(), shutdown.clone())
        .await?
        .is_some()
    {
        println!(
            "metrics on http://{}/metrics",
            config.settings.metrics.listen
        );
    }
    let mut ready = worker.ready();
    let worker_stop = shutdown.child_token();
    let worker_task = tokio::spawn(worker.run(worker_stop.clone()));
    let wait_ready = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r)).await;
    if !matches!(wait_ready, Ok(Ok(_))) {
        worker_stop.cancel();
        return match worker_task.await {
            Ok(Err(e)) => Err(e),
            _ => Err(Error::Invalid(
                "the worker did not become ready within 30 s".into(),
            )),
        };
    }
    println!("worker ready");

    let id = crate::jobs::enqueue(&client, &NewJob::new("sleep", json!({"ms": 300}))).await?;
    println!("enqueued demo job {id} (sleep 300 ms)");
    println!("  status: queued");
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut final_status = String::from("queued");
    while tokio::time::Instant::now() < deadline {
        let Some(detail) = crate::jobs::show(&client, id).await? else {
            break;
        };
        for ev in detail.events.iter().skip(seen) {
            println!("  status: {}", ev.to_status);
        }
        seen = detail.events.len();
        final_status = detail.summary.status.clone();
        if matches!(final_status.as_str(), "succeeded" | "failed" | "cancelled") {
            println!(
                "demo job finished: {final_status}, result {}",
                detail.result.map(|r| r.to_string()).unwrap_or_default()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    if !opts.exit_after_demo {
        println!();
        println!("opsrunner dev is running. Enqueue with plain SQL, e.g.:");
        println!(
            "  psql \"$DATABASE_URL\" -c \"INSERT INTO ops_jobs (job_type, payload) VALUES ('sleep', '{{\\\"ms\\\": 1000}}')\""
        );
        println!("Press Ctrl-C to stop.");
        shutdown.cancelled().await;
    }
    worker_stop.cancel();
    match worker_task.await {
        Ok(r) => r?,
        Err(e) => return Err(Error::Invalid(format!("worker task failed: {e}"))),
    }
    if final_status != "succeeded" {
        return Err(Error::Invalid(format!(
            "the demo job ended {final_status}, not succeeded"
        )));
    }
    Ok(())
}
