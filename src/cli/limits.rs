//! `opsrunner limits set|list|clear`: per-type concurrency limits
//! (`ops_type_limits`), audited, reloaded by every daemon within a second.

use std::io::Write;

use anyhow::bail;

use super::{Ctx, LimitsCommand};
use crate::audit::operator_identity;
use crate::db::queries;

/// `opsrunner limits …`.
pub async fn run(command: LimitsCommand, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ctx.connect(true).await?;
    let by = operator_identity();
    match command {
        LimitsCommand::Set {
            job_type,
            max_running,
        } => {
            if !crate::jobs::valid_name(&job_type) {
                bail!("job type {job_type:?} must match [a-z][a-z0-9_.-]{{0,63}}");
            }
            if !(1..=100_000).contains(&max_running) {
                bail!("--max-running must be from 1 to 100000");
            }
            queries::limit_set(&client, &job_type, max_running, &by).await?;
            writeln!(
                out,
                "{job_type}: at most {max_running} running at once, on every daemon"
            )?;
        }
        LimitsCommand::List { json } => {
            let all = queries::limit_list(&client).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<24} {:>12} {:>8}  CHANGED",
                "JOB TYPE", "MAX RUNNING", "RUNNING"
            )?;
            for l in all {
                writeln!(
                    out,
                    "{:<24} {:>12} {:>8}  {} by {}",
                    l.job_type,
                    l.max_running,
                    l.running,
                    l.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    l.updated_by
                )?;
            }
        }
        LimitsCommand::Clear { job_type } => {
            if !queries::limit_clear(&client, &job_type, &by).await? {
                bail!("{job_type} has no limit");
            }
            writeln!(out, "{job_type}: no limit")?;
        }
    }
    Ok(())
}
