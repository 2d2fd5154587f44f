//! `opsrunner migrate`, `check` and `prune`: the schema and its upkeep.

use std::io::Write;

use super::Ctx;
use crate::db::migrate;

/// `opsrunner migrate`: applies the missing migrations.
pub async fn migrate(
    ctx: &Ctx,
    wait: Option<std::time::Duration>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = connect_waiting(ctx, wait).await?;
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

/// Connects; with `wait`, retries a database that is not reachable yet (a
/// refused or timed-out connection, a server still starting) with backoff
/// until `wait` has passed. Other failures (a wrong password, a missing
/// database) fail at once: waiting would not mend them.
async fn connect_waiting(
    ctx: &Ctx,
    wait: Option<std::time::Duration>,
) -> anyhow::Result<tokio_postgres::Client> {
    let Some(wait) = wait else {
        return ctx.connect(false).await;
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = crate::worker::Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    loop {
        let config = ctx.config()?;
        match crate::db::connect(
            &config.database_url,
            &config.settings.db,
            crate::db::CLI_APPLICATION_NAME,
        )
        .await
        {
            Ok(c) => return Ok(c),
            Err(e) if crate::db::is_transient(&e) && tokio::time::Instant::now() < deadline => {
                let delay = backoff.next_delay();
                tracing::info!(error = %e, retry_in = ?delay, "database not reachable yet; waiting (--wait)");
                tokio::time::sleep(delay.min(deadline - tokio::time::Instant::now())).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the database did not accept a connection within --wait {}",
                    humantime::format_duration(wait)
                )));
            }
        }
    }
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
