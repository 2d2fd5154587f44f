//! Feature flags, the operator side: one flag per job type, named like it.
//! An absent flag is OFF, so a new handler runs nowhere until an operator
//! turns it on. Workers learn of a change through NOTIFY and, as a backstop,
//! a periodic reload (the worker's flag cache).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::db::queries;
use crate::error::{Error, Result};
pub use crate::jobs::PAUSE_FLAG;

/// A flag as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Flag {
    /// The job type it gates (or [`PAUSE_FLAG`]).
    pub name: String,
    /// On or off.
    pub enabled: bool,
    /// Why it was last changed.
    pub reason: Option<String>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed it last.
    pub updated_by: Option<String>,
}

/// Every flag, by name.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Flag>> {
    queries::list_flags(client)
        .await?
        .iter()
        .map(|r| {
            Ok(Flag {
                name: r.try_get("name")?,
                enabled: r.try_get("enabled")?,
                reason: r.try_get("reason")?,
                updated_at: r.try_get("updated_at")?,
                updated_by: r.try_get("updated_by")?,
            })
        })
        .collect()
}

/// A change to one flag ([`set`]).
#[derive(Debug, Clone)]
pub struct FlagChange<'a> {
    /// The flag (a job type, or [`PAUSE_FLAG`]).
    pub name: &'a str,
    /// The new state.
    pub enabled: bool,
    /// Why, for the audit log.
    pub reason: Option<&'a str>,
    /// Who, for the audit log.
    pub by: &'a str,
    /// When disabling: also ask running jobs of this type to cancel.
    pub cancel_running: bool,
}

/// Sets a flag and records who and why in `ops_audit_log`. With
/// `cancel_running` (only meaningful when disabling), running jobs of that
/// type are asked to cancel; returns how many were.
pub async fn set(client: &impl GenericClient, change: &FlagChange<'_>) -> Result<i64> {
    if !crate::jobs::valid_name(change.name) {
        return Err(Error::Invalid(
            "flag name must match [a-z][a-z0-9_.-]{0,63}".into(),
        ));
    }
    let reason = change.reason.map(crate::jobs::bound_error);
    let by: String = change.by.chars().take(200).collect();
    queries::set_flag(
        client,
        &queries::SetFlagParams {
            name: change.name,
            enabled: change.enabled,
            reason: reason.as_deref(),
            by: &by,
            cancel_running: change.cancel_running,
        },
    )
    .await
}
