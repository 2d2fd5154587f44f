//! `opsrunner enqueue` and `opsrunner jobs list|show|retry|cancel`, with
//! their table printing.

use std::io::Write;

use anyhow::{Context as _, bail};

use super::{BulkArgs, Ctx, EnqueueArgs, JobsCommand};
use crate::audit::operator_identity;
use crate::bulk::{BulkAction, BulkFilter};
use crate::jobs::{CancelRequest, JobDetail, JobSummary, NewJob};

/// `opsrunner enqueue`: one job; prints its id.
pub async fn enqueue(args: EnqueueArgs, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).context("--payload is not valid JSON")?;
    super::flags::known_type_or_force(ctx, &args.job_type, args.force)?;
    // The handler's own check, as the shim applies it (built-ins; configured
    // handlers accept any payload).
    if let Some(h) = crate::Registry::with_builtins().get(&args.job_type) {
        h.validate(&payload)
            .map_err(|e| anyhow::anyhow!("--payload is invalid for {}: {e}", args.job_type))?;
    }
    let mut job = NewJob::new(&args.job_type, payload)
        .queue(&args.queue)
        .priority(args.priority)
        .max_attempts(args.max_attempts);
    job.run_at = args.run_at;
    job.timeout = args.timeout;
    job.idempotency_key = args.idempotency_key;
    let client = ctx.connect(false).await?;
    let inserted = crate::jobs::insert(&client, &job).await?;
    writeln!(out, "{}", inserted.id)?;
    Ok(())
}

/// `opsrunner jobs …`.
pub async fn run(command: JobsCommand, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ctx.connect(false).await?;
    match command {
        JobsCommand::List {
            status,
            job_type,
            limit,
            schedule,
            json,
        } => {
            let jobs = crate::jobs::list(
                &client,
                status.as_deref(),
                job_type.as_deref(),
                limit,
                schedule.as_deref(),
            )
            .await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&jobs)?)?;
            } else {
                print_list(&jobs, out)?;
            }
        }
        JobsCommand::Show { id, json } => {
            let Some(job) = crate::jobs::show(&client, id).await? else {
                bail!("no job {id}");
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&job)?)?;
            } else {
                print_detail(&job, out)?;
            }
        }
        JobsCommand::Retry {
            id: None,
            reason,
            filter,
        } => bulk(&client, BulkAction::Retry, filter, reason, out).await?,
        JobsCommand::Cancel {
            id: None,
            reason,
            filter,
        } => bulk(&client, BulkAction::Cancel, filter, reason, out).await?,
        JobsCommand::Retry {
            id: Some(id),
            reason,
            filter,
        } => {
            refuse_filter_with_id(&filter)?;
            let by = operator_identity();
            if !crate::jobs::retry(&client, id, reason.as_deref(), &by).await? {
                bail!("no failed or cancelled job {id}");
            }
            writeln!(out, "{id}: queued again")?;
        }
        JobsCommand::Cancel {
            id: Some(id),
            reason,
            filter,
        } => {
            refuse_filter_with_id(&filter)?;
            let by = operator_identity();
            let req = CancelRequest {
                id,
                reason: reason.as_deref(),
                actor: &by,
                tenant: None,
                via: "cli",
            };
            match crate::jobs::cancel(&client, &req).await? {
                Some(s) if s == "cancelled" => writeln!(out, "{id}: cancelled")?,
                Some(_) => writeln!(
                    out,
                    "{id}: cancellation intent recorded; its worker will stop it"
                )?,
                None => bail!("no unfinished job {id}"),
            }
        }
    }
    Ok(())
}

fn refuse_filter_with_id(f: &BulkArgs) -> anyhow::Result<()> {
    if f.status.is_some()
        || f.job_type.is_some()
        || f.queue.is_some()
        || f.since.is_some()
        || f.dry_run
    {
        bail!("give either a job id or a filter (--status …), not both");
    }
    Ok(())
}

/// `jobs retry|cancel --status S [--type T --queue Q --since D] [--dry-run]`:
/// every tenant's matching jobs, in batches, audited once.
async fn bulk(
    client: &tokio_postgres::Client,
    action: BulkAction,
    f: BulkArgs,
    reason: Option<String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(status) = f.status else {
        bail!("give a job id, or --status to act on every matching job");
    };
    let filter = BulkFilter {
        status: status.parse()?,
        job_type: f.job_type,
        queue: f.queue,
        since: f.since,
    };
    let matched = crate::bulk::count(client, action, &filter, None).await?;
    let verb = match action {
        BulkAction::Retry => "retry",
        BulkAction::Cancel => "cancel",
    };
    if f.dry_run {
        writeln!(out, "{matched} jobs match; --dry-run: nothing changed")?;
        return Ok(());
    }
    let by = operator_identity();
    let who = crate::bulk::Requester {
        actor: &by,
        via: "cli",
        reason: reason.as_deref(),
    };
    let done = crate::bulk::apply(client, action, &filter, None, matched, &who).await?;
    writeln!(
        out,
        "{verb}: {} of {} matching jobs changed",
        done.changed, done.matched
    )?;
    Ok(())
}

/// The `jobs list` table.
fn print_list(jobs: &[JobSummary], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<16} {:<10} {:<9} {:>7}  created",
        "id", "type", "queue", "status", "attempt"
    )?;
    for j in jobs {
        writeln!(
            out,
            "{:<36}  {:<16} {:<10} {:<9} {:>3}/{:<3}  {}",
            j.id,
            j.job_type,
            j.queue,
            j.status,
            j.attempt,
            j.max_attempts,
            j.created_at.format("%Y-%m-%d %H:%M:%S%.3f")
        )?;
    }
    Ok(())
}

/// The `jobs show` text.
fn print_detail(job: &JobDetail, out: &mut impl Write) -> std::io::Result<()> {
    let s = &job.summary;
    writeln!(out, "id:           {}", s.id)?;
    writeln!(out, "type/queue:   {} / {}", s.job_type, s.queue)?;
    writeln!(
        out,
        "status:       {} (attempt {}/{})",
        s.status, s.attempt, s.max_attempts
    )?;
    writeln!(out, "payload:      {}", job.payload)?;
    if let Some(r) = &job.result {
        writeln!(out, "result:       {r}")?;
    }
    if let Some(e) = &job.error {
        writeln!(out, "error:        {e}")?;
    }
    writeln!(out, "created:      {}", s.created_at)?;
    writeln!(out, "history:")?;
    for ev in &job.events {
        writeln!(
            out,
            "  {}  {} -> {}  attempt {}  {}{}",
            ev.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            ev.from_status.as_deref().unwrap_or_default(),
            ev.to_status,
            ev.attempt,
            ev.worker.as_deref().unwrap_or_default(),
            ev.detail
                .as_ref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_list_table_has_a_header_and_one_line_per_job() {
        let job = JobSummary {
            id: uuid::Uuid::nil(),
            job_type: "noop".into(),
            queue: "default".into(),
            status: "queued".into(),
            attempt: 0,
            max_attempts: 3,
            created_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap(),
            finished_at: None,
        };
        let mut out = Vec::new();
        print_list(&[job], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("id"), "{text}");
        assert!(
            lines[1].contains("noop") && lines[1].contains("0/3"),
            "{text}"
        );
        assert!(lines[1].ends_with("2026-12-01 08:00:00.000"), "{text}");
    }
}
