//! Which tenant an application's login role enqueues for: a binding only
//! operators change, read by the database itself (`ops_session_tenant()`)
//! when an application inserts, so that no session setting can move an
//! application into another tenant.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::db::queries;
use crate::error::{Error, Result};

/// One binding.
#[derive(Debug, Clone, Serialize)]
pub struct Binding {
    /// The login role.
    pub role: String,
    /// Its tenant.
    pub tenant: String,
    /// Who bound it.
    pub bound_by: Option<String>,
    /// When.
    pub bound_at: DateTime<Utc>,
}

fn check(role: &str, tenant: &str) -> Result<()> {
    if role.is_empty() || role.len() > 63 {
        return Err(Error::Invalid("a role name is 1-63 characters".into()));
    }
    if tenant.is_empty() || tenant.chars().count() > 200 {
        return Err(Error::Invalid("a tenant is 1-200 characters".into()));
    }
    Ok(())
}

/// Binds login role `role` to `tenant` (replacing an earlier binding).
/// Audited as `tenant.bind`.
pub async fn bind(c: &impl GenericClient, role: &str, tenant: &str, by: &str) -> Result<()> {
    check(role, tenant)?;
    if !queries::tenant_bind(c, role, tenant, by).await? {
        return Err(Error::Invalid(format!("there is no role {role}")));
    }
    Ok(())
}

/// Removes `role`'s binding: its inserts are refused until bound again.
/// False when it had none. Audited as `tenant.unbind`.
pub async fn unbind(c: &impl GenericClient, role: &str, by: &str) -> Result<bool> {
    queries::tenant_unbind(c, role, by).await
}

/// Every binding, by role.
pub async fn list(c: &impl GenericClient) -> Result<Vec<Binding>> {
    queries::tenant_list(c)
        .await?
        .iter()
        .map(|r| {
            Ok(Binding {
                role: r.try_get("role_name")?,
                tenant: r.try_get("tenant_id")?,
                bound_by: r.try_get("bound_by")?,
                bound_at: r.try_get("bound_at")?,
            })
        })
        .collect()
}
