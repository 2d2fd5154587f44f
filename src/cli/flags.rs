//! `opsrunner flags list|enable|disable|pause|resume`.

use std::io::Write;

use super::{Ctx, FlagsCommand};
use crate::audit::operator_identity;
use crate::flags::{FlagChange, PAUSE_FLAG};

/// `opsrunner flags …`.
pub async fn run(command: FlagsCommand, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ctx.connect(false).await?;
    let by = operator_identity();
    let set = |name: &str, enabled: bool, reason: Option<String>, cancel_running: bool| {
        let client = &client;
        let by = by.clone();
        let name = name.to_string();
        async move {
            let change = FlagChange {
                name: &name,
                enabled,
                reason: reason.as_deref(),
                by: &by,
                cancel_running,
            };
            crate::flags::set(client, &change).await
        }
    };
    match command {
        FlagsCommand::List => {
            for f in crate::flags::list(&client).await? {
                writeln!(
                    out,
                    "{:<24} {:<8} {}  {}  {}",
                    f.name,
                    if f.enabled { "on" } else { "off" },
                    f.updated_at.format("%Y-%m-%d %H:%M:%S"),
                    f.updated_by.unwrap_or_default(),
                    f.reason.unwrap_or_default()
                )?;
            }
        }
        FlagsCommand::Enable {
            name,
            reason,
            force,
        } => {
            known_type_or_force(ctx, &name, force)?;
            set(&name, true, reason, false).await?;
            writeln!(out, "{name}: on")?;
        }
        FlagsCommand::Disable {
            name,
            reason,
            cancel_running,
        } => {
            let n = set(&name, false, reason, cancel_running).await?;
            if cancel_running {
                writeln!(
                    out,
                    "{name}: off; cancellation requested for {n} running job(s)"
                )?;
            } else {
                writeln!(
                    out,
                    "{name}: off (queued jobs of this type wait; running ones finish)"
                )?;
            }
        }
        FlagsCommand::Pause { reason } => {
            set(PAUSE_FLAG, true, reason, false).await?;
            writeln!(
                out,
                "paused: no daemon claims new jobs (running jobs finish); `opsrunner flags resume` undoes it"
            )?;
        }
        FlagsCommand::Resume { reason } => {
            set(PAUSE_FLAG, false, reason, false).await?;
            writeln!(out, "resumed")?;
        }
    }
    Ok(())
}

/// A job type no built-in, `[[exec]]`, `[[http]]` or `api.job_types` entry
/// knows waits for ever in silence (a typo: `slep`): refused unless `--force`.
pub(super) fn known_type_or_force(ctx: &Ctx, job_type: &str, force: bool) -> anyhow::Result<()> {
    let known = ctx.settings()?.known_job_types();
    if force || known.iter().any(|t| t == job_type) {
        return Ok(());
    }
    anyhow::bail!(
        "no handler knows the job type {job_type:?} (known here: {}); its jobs would wait for \
         ever. Check the name, or pass --force for a type another program serves",
        known.join(", ")
    )
}
