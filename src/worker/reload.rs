//! [`Reloader`]: applies a reloaded configuration to a running worker
//! (SIGHUP). Running jobs are untouched: they keep the handler and timeout
//! they started with.

use std::sync::Arc;

use super::state::Shared;
use crate::config::Settings;
use crate::error::Result;
use crate::handlers::Registry;

/// A handle that swaps a running worker's settings and handlers.
#[derive(Clone)]
pub struct Reloader {
    pub(crate) shared: Arc<Shared>,
}

impl Reloader {
    /// Swaps in `settings.worker` and `registry`. `settings` come from
    /// [`Settings::load`], so they are valid already. Returns the settings
    /// that changed but only take effect after a restart (they were kept as
    /// they are).
    pub fn apply(&self, settings: &Settings, registry: Registry) -> Result<Vec<&'static str>> {
        crate::systemd::reloading();
        let restart = self.swap(settings, registry);
        crate::systemd::reloaded();
        Ok(restart)
    }

    fn swap(&self, settings: &Settings, registry: Registry) -> Vec<&'static str> {
        let old = self.shared.cfg();
        let mut new = settings.worker.clone();
        let mut needs_restart = Vec::new();
        if new.concurrency != old.concurrency {
            needs_restart.push("worker.concurrency");
            new.concurrency = old.concurrency;
        }
        if new.completion_batch != old.completion_batch {
            needs_restart.push("worker.completion_batch");
            new.completion_batch = old.completion_batch;
        }
        if serde_json::to_value(&settings.db).ok()
            != serde_json::to_value(&self.shared.db_config).ok()
        {
            needs_restart.push("db.*");
        }
        self.shared.live.replace(new, registry);
        if let Ok(mut s) = self.shared.config_schedules.write() {
            *s = std::sync::Arc::new(settings.schedule.clone());
        }
        self.shared.signals.schedules_changed.notify_one();
        self.shared.publish_static_metrics();
        // New job types or shorter intervals: look for work now.
        self.shared.signals.flags_changed.notify_one();
        self.shared.signals.wake.notify_one();
        tracing::info!(registered = ?self.shared.live.registry().sorted_job_types(), "configuration reloaded");
        needs_restart
    }
}
