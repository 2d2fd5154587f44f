//! `opsrunner migrate`, `check` and `prune`: the schema and its upkeep.

use std::io::Write;

use super::Ctx;
use crate::db::migrate;

/// `opsrunner migrate`: applies the missing migrations.
pub async fn migrate(ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = ctx.connect(false).await?;
    let applied = migrate::migrate(&mut client).await?;
    let v = migrate::latest_version();
    if applied.is_empty() {
        writeln!(out, "schema is up to date (version {v})")?;
    } else {
        writeln!(
            out,
            "applied migrations {applied:?}; schema is at version {v}"
        )?;
    }
    Ok(())
}

/// `opsrunner check`: config, connectivity and schema version.
pub async fn check(ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let config = ctx.config()?;
    ctx.connect(true).await?;
    writeln!(
        out,
        "ok: config valid, {} reachable, schema at version {}",
        config.database_url.describe(),
        migrate::latest_version()
    )?;
    writeln!(
        out,
        "job types known here: {}",
        config.settings.known_job_types().join(", ")
    )?;
    Ok(())
}

/// `opsrunner prune`: deletes what is past its retention, now.
pub async fn prune(ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ctx.connect(true).await?;
    let c = crate::worker::prune_all(&client, &ctx.settings()?.retention).await?;
    writeln!(
        out,
        "deleted {} finished jobs ({} events) and {} audit rows",
        c.jobs_deleted, c.events_deleted, c.audit_deleted
    )?;
    Ok(())
}
