//! The worker's view of the feature flags: reloaded on NOTIFY (`ops_flags`),
//! after a LISTEN reconnect, and every `flags_reload_interval` as the
//! backstop for a lost notification. A reload that fails keeps the last
//! known set.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::db::{self, queries};
use crate::error::Result;
use crate::jobs::PAUSE_FLAG;

/// The names of the flags that are on.
#[derive(Debug, Default)]
pub(crate) struct FlagSet {
    enabled: RwLock<HashSet<String>>,
}

impl FlagSet {
    /// Whether flag `name` is on.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled
            .read()
            .map(|s| s.contains(name))
            .unwrap_or(false)
    }

    /// Replaces the set; true when it changed.
    fn replace(&self, new: HashSet<String>) -> bool {
        match self.enabled.write() {
            Ok(mut cur) if *cur != new => {
                *cur = new;
                true
            }
            _ => false,
        }
    }
}

/// Reads the flags once; true when the set changed.
pub(crate) async fn reload(shared: &Shared) -> Result<bool> {
    let d = shared.call_timeout;
    let client = db::bounded(d, db::checkout(&shared.pool)).await?;
    let names: HashSet<String> = db::bounded(d, queries::enabled_flags(&*client))
        .await?
        .into_iter()
        .collect();
    let limits: super::state::Limits = db::bounded(d, queries::type_limits(&*client))
        .await?
        .into_iter()
        .collect();
    client.release();
    if let Ok(mut l) = shared.live.limits.write()
        && **l != limits
    {
        tracing::info!(?limits, "per-type limits reloaded");
        *l = Arc::new(limits);
        // A claimer held back by the old limit may be asleep until its
        // retry (up to the poll interval for a slow rate): a raised or
        // cleared limit is used now.
        shared.signals.wake.notify_one();
    }
    shared.mark_db_ok();
    for t in shared.live.registry().job_types().chain([PAUSE_FLAG]) {
        metrics::gauge!("opsrunner_feature_flag_enabled", "flag" => t.to_string())
            .set(if names.contains(t) { 1.0 } else { 0.0 });
    }
    Ok(shared.live.flags.replace(names))
}

/// Reloads on every `flags_changed` signal and every interval until `stop`.
pub(crate) async fn run_reloader(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.signals.flags_changed.notified() => {}
            _ = tokio::time::sleep(shared.cfg().flags_reload_interval) => {}
        }
        match reload(&shared).await {
            Ok(true) => {
                tracing::info!(enabled = ?shared.live.enabled_job_types(), "feature flags changed");
                // A newly enabled type may have jobs waiting.
                shared.signals.wake.notify_one();
            }
            Ok(false) => {}
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, "cannot reload feature flags; keeping the last known set");
            }
        }
    }
}
