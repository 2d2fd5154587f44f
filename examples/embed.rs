//! Embed the worker in your own program with a typed handler.
//!
//! ```sh
//! DATABASE_URL=postgres://… cargo run --example embed
//! psql "$DATABASE_URL" -c "INSERT INTO ops_feature_flags (name, enabled) VALUES ('greet', true)
//!                          ON CONFLICT (name) DO UPDATE SET enabled = true"
//! psql "$DATABASE_URL" -c "INSERT INTO ops_jobs (job_type, payload) VALUES ('greet', '{\"name\": \"ops\"}')"
//! ```
//!
//! The database must be migrated (`opsrunner migrate`). SIGTERM or Ctrl-C
//! stops it gracefully: claiming stops, running jobs get
//! `worker.shutdown_timeout` to finish.

use opsrunner::config::Config;
use opsrunner::{JobArgs, JobContext, Registry, ResultExt, Worker};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The payload of a `greet` job: decoded once, before the handler runs.
#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl JobArgs for Greet {
    const KIND: &'static str = "greet";

    fn check(&self) -> Result<(), String> {
        // A payload this check refuses fails the job at once, without retries.
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        Ok(())
    }
}

async fn greet(job: Greet, ctx: JobContext) -> opsrunner::handlers::HandlerResult {
    // A failure worth retrying says so; one that is not says that instead.
    let greeting = tokio::task::spawn_blocking(move || format!("hello, {}", job.name))
        .await
        .retryable()?;
    Ok(serde_json::json!({ "greeting": greeting, "attempt": ctx.attempt }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load(None)?;
    let mut registry = Registry::with_builtins();
    registry.register_args(greet);
    let worker = Worker::new(&config, registry)?;

    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        on_signal.cancel();
    });
    worker.run(stop).await?;
    Ok(())
}
