//! `opsrunner token sign`: needs `OPS_POLICY_SECRET`, not a config file.

use std::io::Write;

use anyhow::bail;
use chrono::Utc;

use super::{Ctx, TokenCommand};
use crate::policy::{self, MAX_TTL_SECS, MIN_SECRET_LEN, SECRET_VAR};

/// `opsrunner token …`.
pub fn run(command: TokenCommand, _ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    super::logging::init_default();
    let TokenCommand::Sign {
        action,
        actor,
        tenant,
        scopes,
        ttl,
    } = command;
    let secret = crate::config::env::policy_secret()?
        .ok_or_else(|| anyhow::anyhow!("{SECRET_VAR} (or {SECRET_VAR}_FILE) is not set"))?;
    if secret.len() < MIN_SECRET_LEN {
        bail!("{SECRET_VAR} must be at least {MIN_SECRET_LEN} bytes long");
    }
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        bail!("--ttl must be between 1s and 7 days");
    }
    let scopes = scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let claims = policy::Claims::new(tenant, actor, action, scopes, Utc::now().timestamp(), ttl);
    writeln!(out, "{}", policy::sign(&secret, &claims)?)?;
    Ok(())
}
