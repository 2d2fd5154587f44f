//! `opsrunner worker` and `opsrunner serve`: the two long-running commands.

use std::sync::Arc;

use super::Ctx;
use super::ctx::{reload_on_sighup, shutdown_on_signals};
use crate::worker::Worker;

/// `opsrunner worker`: runs the daemon until SIGTERM.
pub async fn worker(ctx: &Ctx) -> anyhow::Result<()> {
    forbid_inspection();
    let config = ctx.config()?;
    let shutdown = shutdown_on_signals()?;
    let worker = Worker::new(&config, config.settings.registry()?)?;
    reload_on_sighup(worker.reloader(), ctx.path.clone())?;
    crate::metrics::start(&config.settings, worker.ready_check(), shutdown.clone()).await?;
    let mut ready = worker.ready();
    tokio::spawn(async move {
        if ready.wait_for(|r| *r).await.is_ok() {
            tracing::info!("worker ready");
        }
    });
    worker.run(shutdown).await?;
    Ok(())
}

/// `opsrunner serve`: runs the HTTP shim until SIGTERM.
pub async fn serve(ctx: &Ctx) -> anyhow::Result<()> {
    forbid_inspection();
    let config = ctx.config()?;
    let env = crate::config::AppEnv::from_env()?;
    let master = crate::api::master_key_from_env(env)?;
    if master.is_none() {
        tracing::warn!(
            "APP_ENV is development and OPS_API_KEY is unset: only scoped keys from `opsrunner keys create` authenticate"
        );
    }
    let state = crate::api::ApiState::new(
        &config,
        master,
        config.settings.api_registry()?,
        config.policy()?,
    )?;
    let shutdown = shutdown_on_signals()?;
    // The shim's metrics listen apart from a worker's on the same VM.
    let mut metrics_settings = config.settings.clone();
    metrics_settings.metrics.listen = config.settings.api.metrics_listen.clone();
    crate::metrics::start(&metrics_settings, Arc::new(|| None), shutdown.clone()).await?;
    crate::api::serve(state, shutdown).await?;
    Ok(())
}

/// Marks the daemon non-dumpable: its `/proc/<pid>` files (environ, mem,
/// maps) become readable by root only and other processes of its user may
/// not ptrace it, so a job's child process cannot read the secrets it holds
/// in memory. Core dumps are off with it. (Secret variables are also blanked
/// in the environment block once read: `secret_env::take`.)
fn forbid_inspection() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes no pointers and cannot fail
    // with these arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!("could not mark the process non-dumpable");
    }
}
