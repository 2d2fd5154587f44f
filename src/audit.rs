//! The append-only audit log (`ops_audit_log`): who did what, and why. Rows
//! never carry a secret: keys, tokens and URLs are recorded as hashes or not
//! at all.

use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::db::queries;
use crate::error::Result;

/// One audit row ([`write()`]).
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Who: `user@host`, `key:<name>`, `master`, a worker's lease owner.
    pub actor: &'a str,
    /// What, dotted: `job.cancel`, `flag.set`, `auth.failure`, …
    pub action: &'a str,
    /// On what: a job or key id.
    pub target: Option<&'a str>,
    /// The tenant concerned, if any.
    pub tenant: Option<&'a str>,
    /// Details; never a secret.
    pub detail: &'a Value,
}

/// Appends one audit row.
pub async fn write(client: &impl GenericClient, e: &AuditEntry<'_>) -> Result<()> {
    queries::audit(client, e.actor, e.action, e.target, e.tenant, e.detail).await
}

/// Hex SHA-256, for recording that an input was seen without recording it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// This machine's name, for lease owners and operator identities.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Who is acting from this machine's CLI: `user@host`.
pub fn operator_identity() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", hostname())
}
