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

    let shim = start_shim(&config, &client, shutdown.child_token()).await;
    let id = match &shim {
        Some(s) => match s.enqueue_demo().await {
            Ok(id) => {
                println!("enqueued demo job {id} (sleep 300 ms) through the HTTP shim");
                id
            }
            Err(e) => {
                println!("the shim did not take the demo job ({e}); enqueuing with SQL");
                crate::jobs::enqueue(&client, &NewJob::new("sleep", json!({"ms": 300}))).await?
            }
        },
        None => {
            let id =
                crate::jobs::enqueue(&client, &NewJob::new("sleep", json!({"ms": 300}))).await?;
            println!("enqueued demo job {id} (sleep 300 ms)");
            id
        }
    };
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
        if let Some(s) = &shim {
            println!(
                "or through the HTTP shim (the dev key is in {}):",
                s.key_file.display()
            );
            println!(
                "  curl -s -H \"X-Ops-Key: $(cat {})\" -H 'content-type: application/json' \\",
                s.key_file.display()
            );
            println!(
                "       -d '{{\"job_type\": \"sleep\", \"payload\": {{\"ms\": 1000}}}}' {}/api/ops/jobs",
                s.base
            );
        }
        println!("Press Ctrl-C to stop.");
        shutdown.cancelled().await;
    }
    worker_stop.cancel();
    if let Some(dir) = shim.as_ref().and_then(|s| s.key_file.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
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

/// The shim as `opsrunner dev` runs it: in this process, on `api.listen`,
/// with a fresh all-scopes key for tenant `default` written to a 0600 file
/// (never printed).
struct DevShim {
    base: String,
    key: String,
    key_file: std::path::PathBuf,
}

async fn start_shim(
    config: &Config,
    client: &tokio_postgres::Client,
    stop: CancellationToken,
) -> Option<DevShim> {
    let started = async {
        let scopes: Vec<String> = crate::keys::SCOPES.iter().map(|s| s.to_string()).collect();
        let tenant = config.settings.api.tenant.clone();
        let (_, key) = crate::keys::create(
            client,
            "opsrunner-dev",
            &scopes,
            &tenant,
            None,
            "opsrunner dev",
        )
        .await?;
        let dir = std::env::temp_dir().join(format!("opsrunner-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let key_file = dir.join("api-key");
        write_private(&key_file, &key)?;
        let state = crate::api::ApiState::new(
            config,
            None,
            Registry::from_settings(&config.settings)?,
            config.policy()?,
        )?;
        let listener = tokio::net::TcpListener::bind(&config.settings.api.listen).await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = crate::api::serve_on(listener, std::sync::Arc::new(state), stop).await {
                tracing::error!(error = %e, "the dev shim stopped");
            }
        });
        Ok::<_, Error>(DevShim {
            base,
            key,
            key_file,
        })
    };
    match started.await {
        Ok(s) => {
            println!(
                "HTTP shim on {} (key file {})",
                s.base,
                s.key_file.display()
            );
            Some(s)
        }
        Err(e) => {
            println!("HTTP shim not started: {e}");
            None
        }
    }
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

impl DevShim {
    async fn enqueue_demo(&self) -> Result<uuid::Uuid> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Invalid(format!("http client: {e}")))?;
        let resp = http
            .post(format!("{}/api/ops/jobs", self.base))
            .header("X-Ops-Key", &self.key)
            .header("content-type", "application/json")
            .body(json!({"job_type": "sleep", "payload": {"ms": 300}}).to_string())
            .send()
            .await
            .map_err(|e| Error::Invalid(format!("request failed: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::Invalid(format!("response: {e}")))?;
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        body.get("job_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Invalid(format!("HTTP {status}: {body}")))
    }
}
