//! The append-only audit log (`ops_audit_log`): who did what, and why. Rows
//! never carry a secret: keys, tokens and URLs are recorded as hashes or not
//! at all.

use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::error::Result;

/// One audit row.
pub async fn record(
    client: &impl GenericClient,
    actor: &str,
    action: &str,
    target: Option<&str>,
    tenant: Option<&str>,
    detail: &Value,
) -> Result<()> {
    client
        .execute(
            include_str!("../sql/queries/audit.sql"),
            &[&actor, &action, &target, &tenant, detail],
        )
        .await?;
    Ok(())
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
