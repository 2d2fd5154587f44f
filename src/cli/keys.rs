//! `opsrunner keys create|list|revoke`.

use std::io::Write;

use anyhow::{Context as _, bail};
use chrono::Utc;

use super::{Ctx, KeysCommand};
use crate::audit::operator_identity;
use crate::keys::KeyInfo;

/// `opsrunner keys …`.
pub async fn run(command: KeysCommand, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ctx.connect(true).await?;
    let by = operator_identity();
    match command {
        KeysCommand::Create {
            name,
            scopes,
            tenant,
            expires_in,
        } => {
            let scopes = crate::keys::parse_scopes(&scopes)?;
            let expires_at = expires_in
                .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
                .transpose()
                .context("--expires-in is too long")?;
            let (id, key) =
                crate::keys::create(&client, &name, &scopes, &tenant, expires_at, &by).await?;
            // The note goes to stderr, so that stdout is the key alone.
            eprintln!(
                "key {id} created for tenant {tenant} with scopes {}; it is shown once, store it now:",
                scopes.join(",")
            );
            writeln!(out, "{key}")?;
        }
        KeysCommand::List { json } => {
            let keys = crate::keys::list(&client).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&keys)?)?;
            } else {
                print_keys(&keys, out)?;
            }
        }
        KeysCommand::Revoke { id } => {
            if !crate::keys::revoke(&client, id, &by).await? {
                bail!("no active key {id}");
            }
            writeln!(out, "{id}: revoked")?;
        }
    }
    Ok(())
}

/// The `keys list` table: prefixes only, never a key.
fn print_keys(keys: &[KeyInfo], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<20} {:<12} {:<16} {:<34} state",
        "id", "name", "prefix", "tenant", "scopes"
    )?;
    let now = Utc::now();
    for k in keys {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        writeln!(
            out,
            "{:<36}  {:<20} {:<12} {:<16} {:<34} {state}",
            k.id,
            k.name,
            k.prefix,
            k.tenant,
            k.scopes.join(",")
        )?;
    }
    Ok(())
}
