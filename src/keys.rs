//! Scoped API keys for the HTTP shim (`opsrunner keys create|list|revoke`).
//!
//! A key is `opsk_` and 43 characters of base64url (256 random bits). Only its
//! SHA-256 is stored, so a database dump gives no usable key; the key itself
//! is shown once, at creation. Lookups compare hashes, and the master key
//! `OPS_API_KEY` is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::audit::AuditEntry;
use crate::db::queries;
use crate::error::{Error, Result};

/// Every scope a key may carry.
pub const SCOPES: &[&str] = &[
    "jobs:read",
    "jobs:write",
    "jobs:cancel",
    "jobs:retry",
    "flags:write",
    "admin",
];
const KEY_PREFIX: &str = "opsk_";
/// Characters of a key kept for display (`opsk_` plus 6).
const SHOWN_PREFIX: usize = 11;
/// The master key's variable (or `OPS_API_KEY_FILE`).
pub const MASTER_KEY_VAR: &str = "OPS_API_KEY";

/// The SHA-256 of a key: what is stored and compared.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time equality of two key hashes.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// A new random key.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Parses a comma-separated scope list; refuses unknown scopes.
pub fn parse_scopes(list: &str) -> Result<Vec<String>> {
    let mut scopes: Vec<String> = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !SCOPES.contains(&s) {
            return Err(Error::Invalid(format!(
                "unknown scope {s:?}; known scopes: {}",
                SCOPES.join(", ")
            )));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    if scopes.is_empty() {
        return Err(Error::Invalid("at least one scope is needed".into()));
    }
    Ok(scopes)
}

/// A key as `keys list` shows it (never the key or its hash).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: Uuid,
    /// A label for operators.
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// The tenant it acts for.
    pub tenant: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: Option<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Creates a key and returns its id and the key (the only time it exists
/// outside the caller's hands). Audited.
pub async fn create(
    client: &impl GenericClient,
    name: &str,
    scopes: &[String],
    tenant: &str,
    expires_at: Option<DateTime<Utc>>,
    created_by: &str,
) -> Result<(Uuid, String)> {
    let key = generate();
    let id = queries::key_create(
        client,
        &queries::KeyCreateParams {
            name,
            hash: hash(&key).as_slice(),
            prefix: &key[..SHOWN_PREFIX],
            scopes,
            tenant,
            expires_at,
            created_by,
        },
    )
    .await?;
    let target = id.to_string();
    let detail = serde_json::json!({ "name": name, "scopes": scopes, "expires_at": expires_at });
    let entry = AuditEntry {
        actor: created_by,
        action: "key.create",
        target: Some(&target),
        tenant: Some(tenant),
        detail: &detail,
    };
    crate::audit::write(client, &entry).await?;
    Ok((id, key))
}

/// Every key, oldest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<KeyInfo>> {
    let rows = queries::key_list(client).await?;
    rows.iter()
        .map(|r| {
            Ok(KeyInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                prefix: r.try_get("key_prefix")?,
                scopes: r.try_get("scopes")?,
                tenant: r.try_get("tenant_id")?,
                created_at: r.try_get("created_at")?,
                created_by: r.try_get("created_by")?,
                expires_at: r.try_get("expires_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
}

/// Revokes a key at once (the shim looks keys up per request). False when
/// no such unrevoked key exists. Audited.
pub async fn revoke(client: &impl GenericClient, id: Uuid, by: &str) -> Result<bool> {
    let Some(tenant) = queries::key_revoke(client, id).await? else {
        return Ok(false);
    };
    let target = id.to_string();
    let entry = AuditEntry {
        actor: by,
        action: "key.revoke",
        target: Some(&target),
        tenant: Some(&tenant),
        detail: &serde_json::json!({}),
    };
    crate::audit::write(client, &entry).await?;
    Ok(true)
}

/// A stored key, as found by its hash.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The key's id.
    pub id: Uuid,
    /// Its label.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// The tenant it acts for.
    pub tenant: String,
    /// It was revoked.
    pub revoked: bool,
    /// It has expired.
    pub expired: bool,
}

/// Finds a presented key by its hash; `None` for an unknown key.
pub async fn lookup(client: &impl GenericClient, key: &str) -> Result<Option<StoredKey>> {
    // Keys of another shape cannot exist: skip the query.
    if !key.starts_with(KEY_PREFIX) || key.len() > 128 {
        return Ok(None);
    }
    let row = queries::key_lookup(client, hash(key).as_slice()).await?;
    row.map(|r| {
        Ok(StoredKey {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            scopes: r.try_get("scopes")?,
            tenant: r.try_get("tenant_id")?,
            revoked: r.try_get("revoked")?,
            expired: r.try_get("expired")?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_well_formed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
    }

    #[test]
    fn scopes_are_checked() {
        assert_eq!(
            parse_scopes("jobs:read, jobs:write,jobs:read").unwrap(),
            vec!["jobs:read", "jobs:write"]
        );
        assert!(parse_scopes("jobs:admin").is_err());
        assert!(parse_scopes("").is_err());
    }

    #[test]
    fn hash_comparison() {
        assert!(hashes_equal(&hash("a"), &hash("a")));
        assert!(!hashes_equal(&hash("a"), &hash("b")));
    }
}
