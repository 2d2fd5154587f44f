//! Feature flags: one per job type, named like it. An absent flag is OFF, so a
//! new handler runs nowhere until an operator turns it on. Workers learn of a
//! change through NOTIFY and, as a backstop, a periodic reload.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::worker::Shared;

/// The global switch: while this flag is on, no daemon claims anything.
pub const PAUSE_FLAG: &str = "pause-all";

#[derive(Debug, Default)]
pub struct FlagSet {
    enabled: RwLock<HashSet<String>>,
}

impl FlagSet {
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

pub(crate) async fn reload(shared: &Shared) -> Result<bool> {
    let client = shared.pool.get().await?;
    let stmt = client
        .prepare_cached(include_str!("../sql/queries/enabled_flags.sql"))
        .await?;
    let names: HashSet<String> = client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    shared.mark_db_ok();
    for t in shared.registry().job_types().chain([PAUSE_FLAG]) {
        metrics::gauge!("opsrunner_feature_flag_enabled", "flag" => t.to_string())
            .set(if names.contains(t) { 1.0 } else { 0.0 });
    }
    Ok(shared.flags.replace(names))
}

pub(crate) async fn run_reloader(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.flags_changed.notified() => {}
            _ = tokio::time::sleep(shared.cfg().flags_reload_interval) => {}
        }
        match reload(&shared).await {
            Ok(true) => {
                tracing::info!(enabled = ?shared.enabled_job_types(), "feature flags changed");
                // A newly enabled type may have jobs waiting.
                shared.wake.notify_one();
            }
            Ok(false) => {}
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, "cannot reload feature flags; keeping the last known set");
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Flag {
    pub name: String,
    pub enabled: bool,
    pub reason: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

pub async fn list(client: &impl GenericClient) -> Result<Vec<Flag>> {
    let rows = client
        .query("SELECT name, enabled, reason, updated_at, updated_by FROM ops_feature_flags ORDER BY name", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| Flag {
            name: r.get(0),
            enabled: r.get(1),
            reason: r.get(2),
            updated_at: r.get(3),
            updated_by: r.get(4),
        })
        .collect())
}

/// Sets a flag and records who and why in `ops_audit_log`. With
/// `cancel_running` (only meaningful when disabling), running jobs of that
/// type are asked to cancel; returns how many were.
pub async fn set(
    client: &impl GenericClient,
    name: &str,
    enabled: bool,
    reason: Option<&str>,
    updated_by: &str,
    cancel_running: bool,
) -> Result<i64> {
    if !crate::jobs::valid_name(name) {
        return Err(Error::Invalid(
            "flag name must match [a-z][a-z0-9_.-]{0,63}".into(),
        ));
    }
    let reason = reason.map(crate::jobs::bound_error);
    let by: String = updated_by.chars().take(200).collect();
    let row = client
        .query_one(
            include_str!("../sql/queries/set_flag.sql"),
            &[&name, &enabled, &reason, &by, &cancel_running],
        )
        .await?;
    Ok(row.get(0))
}

/// Who is changing a flag from this machine: `user@host`.
pub fn operator_identity() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", crate::worker::hostname())
}
