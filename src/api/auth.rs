//! `X-Ops-Key` authentication and scope checks.
//!
//! The presented key is hashed once; the master key (`OPS_API_KEY`) is
//! compared hash-to-hash in constant time, scoped keys are found by their
//! hash. Every failure answers 401 (or 403 for a missing scope), is logged at
//! WARN and audited, always without the presented value.

use std::marker::PhantomData;
use std::net::IpAddr;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use uuid::Uuid;

use super::{ApiError, ApiState, SharedState};

/// The header that carries the key.
pub const HEADER: &str = "x-ops-key";

/// A scope a route needs, as a type: `Authed<JobsWrite>`.
pub trait Scope: Send + Sync + 'static {
    /// The scope's name as keys carry it.
    const NAME: &'static str;
}

/// `jobs:read`: list and get.
pub struct JobsRead;
/// `jobs:write`: create.
pub struct JobsWrite;
/// `jobs:cancel`: cancel.
pub struct JobsCancel;

impl Scope for JobsRead {
    const NAME: &'static str = "jobs:read";
}
impl Scope for JobsWrite {
    const NAME: &'static str = "jobs:write";
}
impl Scope for JobsCancel {
    const NAME: &'static str = "jobs:cancel";
}
/// Putting failed or cancelled jobs back in the queue.
pub struct JobsRetry;
impl Scope for JobsRetry {
    const NAME: &'static str = "jobs:retry";
}

/// An authenticated caller holding scope `S`, as an axum extractor: a
/// handler that takes `Authed(who): Authed<JobsWrite>` runs only for a valid
/// key with that scope, within its rate limit. The route (for the audit log)
/// comes from `MatchedPath`, the client address from `ConnectInfo`.
pub struct Authed<S: Scope>(pub Principal, pub PhantomData<S>);

impl<S: Scope> FromRequestParts<SharedState> for Authed<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "unmatched".into());
        let ip = super::client_ip(&parts.extensions);
        let who = authenticate(state, &parts.headers, ip, &route, Some(S::NAME)).await?;
        Ok(Authed(who, PhantomData))
    }
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` for the master key.
    pub key_id: Option<Uuid>,
    /// For the audit log: `key:<name>` or `master`.
    pub actor: String,
    /// The tenant whose jobs it sees and creates.
    pub tenant: String,
    /// What it may do.
    pub scopes: Vec<String>,
}

impl Principal {
    fn rate_key(&self) -> String {
        self.key_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| "master".into())
    }
}

/// Authenticates the request and checks `scope` (any valid key when `None`:
/// the answers for unknown routes and methods, which must not tell an
/// unauthenticated client which routes exist), then the per-key rate limit.
pub(crate) async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    ip: IpAddr,
    route: &str,
    scope: Option<&'static str>,
) -> Result<Principal, ApiError> {
    // Two keys in one request: which one counts would depend on the proxy in
    // front; refuse rather than pick.
    if headers.get_all(HEADER).iter().nth(1).is_some() {
        return Err(fail(state, "duplicate", None, ip, route).await);
    }
    let presented = headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(presented) = presented else {
        return Err(fail(state, "missing", None, ip, route).await);
    };
    authenticate_key(state, presented, ip, route, scope).await
}

/// Checks a presented key (the header's, or the console sign-in form's):
/// the master key or a live scoped key, with `scope` if given; failures
/// counted, logged and audited; the per-key rate limit applied.
pub(crate) async fn authenticate_key(
    state: &ApiState,
    presented: &str,
    ip: IpAddr,
    route: &str,
    scope: Option<&'static str>,
) -> Result<Principal, ApiError> {
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
        let client = crate::db::checkout(&state.pool).await?;
        let found = crate::keys::lookup(client.client(), presented).await?;
        client.release();
        match found {
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
    if let Some(scope) = scope
        && !principal.scopes.iter().any(|s| s == scope)
    {
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
    route: &str,
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
    route: &str,
) {
    metrics::counter!("opsrunner_api_auth_failures_total", "reason" => reason).increment(1);
    tracing::warn!(reason, %ip, route, actor, "authentication failed");
    let detail = serde_json::json!({ "reason": reason, "ip": ip.to_string(), "route": route });
    let write = async {
        let client = crate::db::checkout(&state.pool).await?;
        let entry = crate::audit::AuditEntry {
            actor,
            action: "auth.failure",
            target: None,
            tenant,
            detail: &detail,
        };
        crate::audit::write(client.client(), &entry).await?;
        client.release();
        Ok::<(), crate::Error>(())
    };
    if let Err(e) = write.await {
        tracing::warn!(error = %e, "could not audit an authentication failure");
    }
}
