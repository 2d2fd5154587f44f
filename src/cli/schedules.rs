//! `opsrunner schedules add|list|show|enable|disable|remove|run-now`.
//! Every change is audited; schedules declared in the daemons' config file
//! (`source = config`) are refused here.

use std::io::Write;

use anyhow::{Context, bail};

use super::{Ctx, SchedulesCommand};
use crate::audit::{AuditEntry, operator_identity};
use crate::db::queries;
use crate::schedules::{self, ScheduleSpec};

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

async fn audit(
    client: &impl tokio_postgres::GenericClient,
    by: &str,
    action: &str,
    name: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    crate::audit::write(
        client,
        &AuditEntry {
            actor: by,
            action,
            target: Some(name),
            tenant: None,
            detail: &detail,
        },
    )
    .await?;
    Ok(())
}

fn config_owned(name: &str) -> String {
    format!(
        "schedule {name:?} is declared in the daemons' config file ([[schedule]]): change it there and reload (SIGHUP)"
    )
}

/// Refuses to edit a schedule the config file owns, naming the file's role.
async fn refuse_config_owned(client: &tokio_postgres::Client, name: &str) -> anyhow::Result<()> {
    match queries::schedule_list(client, Some(name)).await?.first() {
        None => bail!("no schedule is named {name:?} (see `opsrunner schedules list`)"),
        Some(s) if s.source == "config" => bail!("{}", config_owned(name)),
        Some(_) => Ok(()),
    }
}

/// `opsrunner schedules …`.
pub async fn run(command: SchedulesCommand, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = ctx.connect(true).await?;
    let by = operator_identity();
    match command {
        SchedulesCommand::Add {
            name,
            cron,
            job_type,
            payload,
            time_zone,
            queue,
            priority,
            max_attempts,
            timeout,
            catch_up,
            replace,
        } => {
            let payload: serde_json::Value =
                serde_json::from_str(&payload).context("--payload is not valid JSON")?;
            let spec = ScheduleSpec {
                name: name.clone(),
                cron,
                time_zone,
                job_type,
                payload,
                queue,
                priority,
                max_attempts,
                timeout,
                catch_up,
            };
            let config = ctx.config()?;
            let (cron, catch_up) = spec
                .validate(
                    &config.settings.registry()?,
                    &config.settings.known_job_types(),
                )
                .map_err(|why| anyhow::anyhow!("schedule refused: {why}"))?;
            if queries::schedule_list(&client, Some(&name))
                .await?
                .first()
                .is_some_and(|s| s.source == "config")
            {
                bail!("{}", config_owned(&name));
            }
            let tx = client.transaction().await?;
            if !spec.save(&tx, catch_up, &cron, "cli", replace, &by).await? {
                bail!("a schedule named {name:?} exists; pass --replace to redefine it");
            }
            let action = if replace {
                "schedule.replace"
            } else {
                "schedule.add"
            };
            audit(&tx, &by, action, &name, serde_json::to_value(&spec)?).await?;
            tx.commit().await?;
            let s = queries::schedule_list(&client, Some(&name)).await?;
            writeln!(
                out,
                "schedule {name} saved; next slot {}",
                fmt_time(s.first().and_then(|s| s.next_slot))
            )?;
        }
        SchedulesCommand::List { json } => {
            let all = queries::schedule_list(&client, None).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<20} {:<18} {:<16} {:<16} {:<8} {:<24} {:<24} SOURCE",
                "NAME", "CRON", "ZONE", "TYPE", "ENABLED", "NEXT", "LAST"
            )?;
            for s in all {
                writeln!(
                    out,
                    "{:<20} {:<18} {:<16} {:<16} {:<8} {:<24} {:<24} {}",
                    s.name,
                    s.cron,
                    s.time_zone,
                    s.job_type,
                    if s.enabled { "yes" } else { "no" },
                    fmt_time(s.next_slot),
                    fmt_time(s.last_slot),
                    s.source
                )?;
            }
        }
        SchedulesCommand::Show { name, json } => {
            let Some(s) = queries::schedule_list(&client, Some(&name))
                .await?
                .into_iter()
                .next()
            else {
                bail!("no schedule is named {name:?} (see `opsrunner schedules list`)");
            };
            let slots = queries::schedule_slots(&client, &name, 20).await?;
            if json {
                let v = serde_json::json!({ "schedule": s, "recent_slots": slots });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                return Ok(());
            }
            writeln!(out, "name:        {}", s.name)?;
            writeln!(out, "cron:        {} ({})", s.cron, s.time_zone)?;
            writeln!(
                out,
                "job:         {} in {} (priority {}, {} attempts)",
                s.job_type, s.queue, s.priority, s.max_attempts
            )?;
            writeln!(out, "payload:     {}", s.payload)?;
            writeln!(out, "enabled:     {}", s.enabled)?;
            writeln!(
                out,
                "catch-up:    {}{}",
                s.catch_up,
                if s.catch_up == "all" {
                    format!(":{}", s.catch_up_limit)
                } else {
                    String::new()
                }
            )?;
            writeln!(out, "next slot:   {}", fmt_time(s.next_slot))?;
            writeln!(
                out,
                "last slot:   {} (job {})",
                fmt_time(s.last_slot),
                s.last_job_id
                    .map(|j| j.to_string())
                    .unwrap_or_else(|| "-".into())
            )?;
            writeln!(
                out,
                "missed:      {} slots passed over after downtime",
                s.missed_slots
            )?;
            writeln!(
                out,
                "source:      {} (changed {} by {})",
                s.source,
                s.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
                s.updated_by
            )?;
            writeln!(out, "\nrecent slots:")?;
            for sl in slots {
                writeln!(
                    out,
                    "  {}  {:<9} {} {}",
                    sl.slot.format("%Y-%m-%d %H:%M:%S UTC"),
                    sl.outcome,
                    sl.job_id
                        .map(|j| format!("{j} ({})", sl.job_status.as_deref().unwrap_or("gone")))
                        .unwrap_or_default(),
                    sl.reason.unwrap_or_default()
                )?;
            }
        }
        SchedulesCommand::Enable { name } => {
            set_enabled(&mut client, &name, true, &by, out).await?
        }
        SchedulesCommand::Disable { name } => {
            set_enabled(&mut client, &name, false, &by, out).await?
        }
        SchedulesCommand::Remove { name } => {
            refuse_config_owned(&client, &name).await?;
            let tx = client.transaction().await?;
            if !queries::schedule_remove(&tx, &name, "cli").await? {
                bail!("no schedule is named {name:?}");
            }
            audit(&tx, &by, "schedule.remove", &name, serde_json::json!({})).await?;
            tx.commit().await?;
            writeln!(out, "schedule {name} removed (its jobs stay)")?;
        }
        SchedulesCommand::RunNow { name } => {
            let id = schedules::run_now(&mut client, &name, &by).await?;
            writeln!(out, "{id}")?;
        }
    }
    Ok(())
}

async fn set_enabled(
    client: &mut tokio_postgres::Client,
    name: &str,
    enabled: bool,
    by: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    refuse_config_owned(client, name).await?;
    let Some(s) = queries::schedule_list(&*client, Some(name))
        .await?
        .into_iter()
        .next()
    else {
        bail!("no schedule is named {name:?}");
    };
    let cron = schedules::Cron::parse(&s.cron, &s.time_zone)
        .map_err(|why| anyhow::anyhow!("schedule {name:?}: {why}"))?;
    let tx = client.transaction().await?;
    let now = schedules::db_time(&tx).await?;
    queries::schedule_set_enabled(&tx, name, enabled, by, cron.next_after(now)).await?;
    audit(
        &tx,
        by,
        if enabled {
            "schedule.enable"
        } else {
            "schedule.disable"
        },
        name,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    writeln!(
        out,
        "schedule {name} {}",
        if enabled { "enabled" } else { "disabled" }
    )?;
    Ok(())
}
