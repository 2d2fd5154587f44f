//! `opsrunner dev`: everything on one machine in one command. With
//! `DATABASE_URL` unset it starts a throwaway PostgreSQL, migrates, turns on
//! the demo flags, runs a worker and the shim, enqueues a demo job and
//! prints its transitions.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::config::{Config, DbUrl, Settings};
use crate::flags::FlagChange;
use crate::jobs::NewJob;
use crate::testing::TempCluster;
use crate::worker::Worker;

/// What `opsrunner dev` does besides the defaults.
pub struct DevOptions {
    /// Stop after the demo job finished (used by tests and CI).
    pub exit_after_demo: bool,
}

/// The `opsrunner dev` command.
pub async fn run_cli(exit_after_demo: bool, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let settings = ctx.settings()?.clone();
    let shutdown = super::ctx::shutdown_on_signals()?;
    run(settings, DevOptions { exit_after_demo }, shutdown, out).await
}

/// Runs the dev setup until `shutdown` (or the demo's end, with
/// `exit_after_demo`), writing what it does to `out`.
pub async fn run(
    settings: Settings,
    opts: DevOptions,
    shutdown: CancellationToken,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (_cluster, url) = start_cluster_or_use_url(out).await?;
    let config = Config::with_url(settings, url.clone())?;
    let mut client = crate::db::connect(&url, &config.settings.db, "opsrunner-dev").await?;
    let applied = crate::db::migrate::migrate(&mut client).await?;
    writeln!(
        out,
        "migrations applied: {applied:?} (schema version {})",
        crate::db::migrate::latest_version()
    )?;
    enable_demo_flags(&client, out).await?;
    let worker_stop = shutdown.child_token();
    let worker_task = start_worker(&config, &shutdown, &worker_stop, out).await?;
    let shim = start_shim(&config, &client, shutdown.child_token(), out).await;
    let id = enqueue_demo(shim.as_ref(), &client, out).await?;
    let final_status = follow_demo(&client, id, out).await?;
    if !opts.exit_after_demo {
        print_next_steps(shim.as_ref(), out)?;
        shutdown.cancelled().await;
    }
    worker_stop.cancel();
    if let Some(s) = &shim {
        let _ = crate::keys::revoke(&client, s.key_id, DEV_ACTOR).await;
        if let Some(dir) = s.key_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    worker_task.await.context("worker task failed")??;
    if final_status != "succeeded" {
        bail!("the demo job ended {final_status}, not succeeded");
    }
    Ok(())
}

/// `DATABASE_URL`, or a throwaway cluster (removed when the returned value
/// is dropped) when it is unset.
async fn start_cluster_or_use_url(
    out: &mut impl Write,
) -> anyhow::Result<(Option<TempCluster>, DbUrl)> {
    if let Some(url) = crate::config::env::database_url()? {
        writeln!(out, "using DATABASE_URL ({})", url.describe())?;
        return Ok((None, url));
    }
    writeln!(
        out,
        "DATABASE_URL is unset: starting a throwaway PostgreSQL cluster…"
    )?;
    let cluster = tokio::task::spawn_blocking(TempCluster::start)
        .await
        .context("starting the throwaway cluster")??;
    let url = DbUrl::parse(&cluster.url("postgres"), "DATABASE_URL")?;
    writeln!(
        out,
        "throwaway PostgreSQL on 127.0.0.1:{} (removed on exit)",
        cluster.port()
    )?;
    writeln!(out, "  export DATABASE_URL={}", cluster.url("postgres"))?;
    Ok((Some(cluster), url))
}

async fn enable_demo_flags(
    client: &tokio_postgres::Client,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let by = crate::audit::operator_identity();
    for name in ["noop", "sleep"] {
        let change = FlagChange {
            name,
            enabled: true,
            reason: Some("enabled by opsrunner dev"),
            by: &by,
            cancel_running: false,
        };
        crate::flags::set(client, &change).await?;
    }
    writeln!(out, "flags enabled: noop, sleep")?;
    Ok(())
}

/// Starts the worker (and its metrics endpoint) and waits until it is ready.
async fn start_worker(
    config: &Config,
    shutdown: &CancellationToken,
    worker_stop: &CancellationToken,
    out: &mut impl Write,
) -> anyhow::Result<JoinHandle<crate::Result<()>>> {
    let worker = Worker::new(config, config.settings.registry()?)?;
    if crate::metrics::start(&config.settings, worker.ready_check(), shutdown.clone())
        .await?
        .is_some()
    {
        writeln!(
            out,
            "metrics on http://{}/metrics",
            config.settings.metrics.listen
        )?;
    }
    let mut ready = worker.ready();
    let worker_task = tokio::spawn(worker.run(worker_stop.clone()));
    let wait_ready = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r)).await;
    if !matches!(wait_ready, Ok(Ok(_))) {
        worker_stop.cancel();
        return match worker_task.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Err(anyhow!("the worker did not become ready within 30 s")),
        };
    }
    writeln!(out, "worker ready")?;
    Ok(worker_task)
}

/// Enqueues the demo job through the shim, or with SQL when the shim is not
/// up.
async fn enqueue_demo(
    shim: Option<&DevShim>,
    client: &tokio_postgres::Client,
    out: &mut impl Write,
) -> anyhow::Result<uuid::Uuid> {
    let demo = NewJob::new("sleep", json!({"ms": 300}));
    let id = match shim {
        Some(s) => match s.enqueue_demo().await {
            Ok(id) => {
                writeln!(
                    out,
                    "enqueued demo job {id} (sleep 300 ms) through the HTTP shim"
                )?;
                id
            }
            Err(e) => {
                writeln!(
                    out,
                    "the shim did not take the demo job ({e}); enqueuing with SQL"
                )?;
                crate::jobs::insert(client, &demo).await?.id
            }
        },
        None => {
            let id = crate::jobs::insert(client, &demo).await?.id;
            writeln!(out, "enqueued demo job {id} (sleep 300 ms)")?;
            id
        }
    };
    writeln!(out, "  status: queued")?;
    Ok(id)
}

/// Prints the demo job's transitions until it ends (at most 30 s); returns
/// its final status.
async fn follow_demo(
    client: &tokio_postgres::Client,
    id: uuid::Uuid,
    out: &mut impl Write,
) -> anyhow::Result<String> {
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut final_status = String::from("queued");
    while tokio::time::Instant::now() < deadline {
        let Some(detail) = crate::jobs::show(client, id).await? else {
            break;
        };
        for ev in detail.events.iter().skip(seen) {
            writeln!(out, "  status: {}", ev.to_status)?;
        }
        seen = detail.events.len();
        final_status = detail.summary.status.clone();
        if matches!(final_status.as_str(), "succeeded" | "failed" | "cancelled") {
            writeln!(
                out,
                "demo job finished: {final_status}, result {}",
                detail.result.map(|r| r.to_string()).unwrap_or_default()
            )?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(final_status)
}

fn print_next_steps(shim: Option<&DevShim>, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "opsrunner dev is running. Enqueue with plain SQL, e.g.:"
    )?;
    writeln!(
        out,
        "  psql \"$DATABASE_URL\" -c \"INSERT INTO ops_jobs (job_type, payload) VALUES ('sleep', '{{\\\"ms\\\": 1000}}')\""
    )?;
    if let Some(s) = shim {
        let file = s.key_file.display();
        writeln!(out, "or through the HTTP shim (the dev key is in {file}):")?;
        writeln!(
            out,
            "  curl -s -H \"X-Ops-Key: $(cat {file})\" -H 'content-type: application/json' \\"
        )?;
        writeln!(
            out,
            "       -d '{{\"job_type\": \"sleep\", \"payload\": {{\"ms\": 1000}}}}' {}/api/ops/jobs",
            s.base
        )?;
        writeln!(
            out,
            "or in the console: {}/ui (sign in with the dev key)",
            s.base
        )?;
    }
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()
}

/// The shim as `opsrunner dev` runs it: in this process, on `api.listen`,
/// with a fresh all-scopes key for tenant `default` written to a 0600 file
/// (never printed).
struct DevShim {
    base: String,
    key: String,
    /// Revoked when dev stops, so that a shared database keeps no dev keys.
    key_id: uuid::Uuid,
    key_file: std::path::PathBuf,
}

/// Who `opsrunner dev` acts as in the audit log.
const DEV_ACTOR: &str = "opsrunner dev";

async fn start_shim(
    config: &Config,
    client: &tokio_postgres::Client,
    stop: CancellationToken,
    out: &mut impl Write,
) -> Option<DevShim> {
    let started = async {
        let scopes: Vec<String> = crate::keys::SCOPES.iter().map(|s| s.to_string()).collect();
        let tenant = config.settings.api.tenant.clone();
        let (key_id, key) =
            crate::keys::create(client, "opsrunner-dev", &scopes, &tenant, None, DEV_ACTOR).await?;
        // A random name, and removed even after a kill -9: the file holds a
        // working key.
        let dir =
            std::env::temp_dir().join(format!("opsrunner-dev-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        crate::testing::remove_on_exit(&dir)?;
        let key_file = dir.join("api-key");
        write_private(&key_file, &key)?;
        let state =
            crate::api::ApiState::new(config, None, config.settings.registry()?, config.policy()?)?;
        let listener = tokio::net::TcpListener::bind(&config.settings.api.listen).await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = crate::api::serve_on(listener, std::sync::Arc::new(state), stop).await {
                tracing::error!(error = %e, "the dev shim stopped");
            }
        });
        Ok::<_, crate::Error>(DevShim {
            base,
            key,
            key_id,
            key_file,
        })
    };
    let shim = started.await;
    let _ = match &shim {
        Ok(s) => writeln!(
            out,
            "HTTP shim on {} (key file {})",
            s.base,
            s.key_file.display()
        ),
        Err(e) => writeln!(out, "HTTP shim not started: {e}"),
    };
    shim.ok()
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
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
    async fn enqueue_demo(&self) -> anyhow::Result<uuid::Uuid> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("http client")?;
        let resp = http
            .post(format!("{}/api/ops/jobs", self.base))
            .header("X-Ops-Key", &self.key)
            .header("content-type", "application/json")
            .body(json!({"job_type": "sleep", "payload": {"ms": 300}}).to_string())
            .send()
            .await
            .context("request failed")?;
        let status = resp.status();
        let text = resp.text().await.context("response")?;
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        body.get("job_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("HTTP {status}: {body}"))
    }
}
