//! `X-Ops-Key` authentication and scope checks.
//!
//! The presented key is hashed once; the master key (`OPS_API_KEY`) is
//! compared hash-to-hash in constant time, scoped keys are found by their
//! hash. Every failure answers 401 (or 403 for a missing scope), is logged at
//! WARN and audited, always without the presented value.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode};
use uuid::Uuid;

use super::{ApiError, ApiState};

pub const HEADER: &str = "x-ops-key";

/// Who a request acts as.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` for the master key.
    pub key_id: Option<Uuid>,
    /// For the audit log: `key:<name>` or `master`.
    pub actor: String,
    pub tenant: String,
    pub scopes: Vec<String>,
}

impl Principal {
    fn rate_key(&self) -> String {
        self.key_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| "master".into())
    }
}

/// Authenticates the request and checks `scope`, then the per-key rate limit.
pub(crate) async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    ip: IpAddr,
    route: &'static str,
    scope: &'static str,
) -> Result<Principal, ApiError> {
    let presented = headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(presented) = presented else {
        return Err(fail(state, "missing", None, ip, route).await);
    };
    let principal = if let Some(master) = &state.master
        && crate::keys::hashes_equal(&crate::keys::hash(presented), &master.0)
    {
        Principal {
            key_id: None,
            actor: "master".into(),
            tenant: state.cfg.tenant.clone(),
            scopes: crate::keys::SCOPES.iter().map(|s| s.to_string()).collect(),
        }
    } else {
        let client = state.pool.get().await?;
        match crate::keys::lookup(&**client, presented).await? {
            None => return Err(fail(state, "unknown", None, ip, route).await),
            Some(k) if k.revoked => {
                return Err(fail(state, "revoked", Some(&k.tenant), ip, route).await);
            }
            Some(k) if k.expired => {
                return Err(fail(state, "expired", Some(&k.tenant), ip, route).await);
            }
            Some(k) => Principal {
                key_id: Some(k.id),
                actor: format!("key:{}", k.name),
                tenant: k.tenant,
                scopes: k.scopes,
            },
        }
    };
    if !principal.scopes.iter().any(|s| s == scope) {
        audit_failure(
            state,
            "scope",
            &principal.actor,
            Some(&principal.tenant),
            ip,
            route,
        )
        .await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("This key lacks the {scope} scope"),
        ));
    }
    if let Err(wait) = state.limits.check_key(&principal.rate_key()) {
        metrics::counter!("opsrunner_api_rate_limited_total", "limit" => "key").increment(1);
        return Err(ApiError::too_many(wait));
    }
    Ok(principal)
}

async fn fail(
    state: &ApiState,
    reason: &'static str,
    tenant: Option<&str>,
    ip: IpAddr,
    route: &'static str,
) -> ApiError {
    audit_failure(state, reason, "anonymous", tenant, ip, route).await;
    ApiError::unauthorized()
}

async fn audit_failure(
    state: &ApiState,
    reason: &'static str,
    actor: &str,
    tenant: Option<&str>,
    ip: IpAddr,
    route: &'static str,
) {
    metrics::counter!("opsrunner_api_auth_failures_total", "reason" => reason).increment(1);
    tracing::warn!(reason, %ip, route, actor, "authentication failed");
    let detail = serde_json::json!({ "reason": reason, "ip": ip.to_string(), "route": route });
    let write = async {
        let client = state.pool.get().await.map_err(crate::Error::from)?;
        crate::audit::record(&**client, actor, "auth.failure", None, tenant, &detail).await
    };
    if let Err(e) = write.await {
        tracing::warn!(error = %e, "could not audit an authentication failure");
    }
}
