//! [`Ctx`]: what every subcommand may need, loaded only when it asks: the
//! config file path, the settings (parsed and validated on first use, so
//! that `openapi` and `token sign` need no valid config file), connections,
//! and the signal handlers of the long-running commands.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Settings};
use crate::worker::Reloader;

/// The lazily loaded command context.
pub struct Ctx {
    /// `--config` or `OPSRUNNER_CONFIG`.
    pub path: Option<PathBuf>,
    settings: OnceLock<Settings>,
}

impl Ctx {
    /// A context for the config file at `path` (none: defaults and env).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            settings: OnceLock::new(),
        }
    }

    /// The settings, loaded and validated once; logging starts with them.
    pub fn settings(&self) -> anyhow::Result<&Settings> {
        if let Some(s) = self.settings.get() {
            return Ok(s);
        }
        let s = Settings::load(self.path.as_deref())?;
        super::logging::init(s.log.format, s.log.level.as_deref());
        Ok(self.settings.get_or_init(|| s))
    }

    /// Settings plus a required `DATABASE_URL`.
    pub fn config(&self) -> anyhow::Result<Config> {
        let settings = self.settings()?.clone();
        let url = crate::config::env::require_database_url()?;
        Ok(Config::with_url(settings, url)?)
    }

    /// One CLI connection, after checking the schema version when
    /// `check_schema`.
    pub async fn connect(&self, check_schema: bool) -> anyhow::Result<tokio_postgres::Client> {
        let config = self.config()?;
        let client = crate::db::connect(
            &config.database_url,
            &config.settings.db,
            crate::db::CLI_APPLICATION_NAME,
        )
        .await?;
        if check_schema {
            crate::db::migrate::check_schema(&client).await?;
        }
        Ok(client)
    }
}

/// Cancels the returned token on the first SIGTERM or SIGINT; a second one
/// exits at once (leases recover whatever was running).
pub(crate) fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("signal received: stopping gracefully (send again to exit at once)");
                t.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}

/// SIGHUP: re-read the config file and apply it without dropping running
/// jobs. A file that does not load is reported and the old config kept.
pub(crate) fn reload_on_sighup(reloader: Reloader, path: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let result = Settings::load(path.as_deref()).and_then(|s| {
                let registry = s.registry()?;
                reloader.apply(&s, registry)
            });
            match result {
                Ok(restart) if restart.is_empty() => {}
                Ok(restart) => {
                    tracing::warn!(settings = ?restart, "these changes need a restart and were not applied")
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration")
                }
            }
        }
    });
    Ok(())
}
