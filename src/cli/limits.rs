//! `opsrunner limits set|list|clear`: per-type limits (`ops_type_limits`:
//! max running, rate, per-tenant max running, fair claiming), audited,
//! reloaded by every daemon within a second.

use std::io::Write;

use anyhow::{Context, bail};

use super::{Ctx, LimitsCommand};
use crate::audit::operator_identity;
use crate::db::queries::{self, LimitRules};

/// `opsrunner limits …`.
pub async fn run(command: LimitsCommand, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = ctx.connect(true).await?;
    let by = operator_identity();
    match command {
        LimitsCommand::Set {
            job_type,
            max_running,
            rate,
            per_tenant_max_running,
            fair,
            no_fair,
        } => {
            if !crate::jobs::valid_name(&job_type) {
                bail!("job type {job_type:?} must match [a-z][a-z0-9_.-]{{0,63}}");
            }
            if max_running.is_none()
                && rate.is_none()
                && per_tenant_max_running.is_none()
                && !fair
                && !no_fair
            {
                bail!(
                    "name a limit: --max-running, --rate, --per-tenant-max-running, --fair or --no-fair"
                );
            }
            let before = current_rules(&client, &job_type).await?;
            let mut rules = before.clone();
            if let Some(v) = max_running {
                rules.max_running = parse_count(&v, "--max-running")?;
            }
            if let Some(v) = rate {
                rules.rate = parse_rate(&v)?;
            }
            if let Some(v) = per_tenant_max_running {
                rules.per_tenant_max_running = parse_count(&v, "--per-tenant-max-running")?;
            }
            if fair {
                rules.fair = true;
            }
            if no_fair {
                rules.fair = false;
            }
            if rules == LimitRules::default() {
                bail!("that leaves {job_type} no limit: use `opsrunner limits clear {job_type}`");
            }
            if rules.claims_fairly() {
                // Its own statement, committed before the rules: the build
                // holds inserts back, so its lock lasts no longer than it.
                let started = std::time::Instant::now();
                if queries::ensure_fair_index(&client).await? {
                    writeln!(
                        out,
                        "built ops_jobs_tenant_claim_idx for fair claiming in {:.1} s",
                        started.elapsed().as_secs_f64()
                    )?;
                }
            }
            // Written only if nobody changed the type's rules since they
            // were read, so that two operators changing different rules at
            // once do not undo each other (serializable: the loser fails).
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::Serializable)
                .start()
                .await?;
            if current_rules(&tx, &job_type).await? != before {
                bail!("{job_type}'s limits changed meanwhile; run the command again");
            }
            queries::limit_set(&tx, &job_type, &rules, &by).await?;
            tx.commit().await?;
            writeln!(out, "{job_type}: {}, on every daemon", describe(&rules))?;
        }
        LimitsCommand::List { json } => {
            let all = queries::limit_list(&client).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<24} {:>12} {:>10} {:>11} {:>5} {:>8}  CHANGED",
                "JOB TYPE", "MAX RUNNING", "RATE", "PER TENANT", "FAIR", "RUNNING"
            )?;
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for l in all {
                let r = &l.rules;
                writeln!(
                    out,
                    "{:<24} {:>12} {:>10} {:>11} {:>5} {:>8}  {} by {}",
                    l.job_type,
                    or_dash(r.max_running.map(|n| n.to_string())),
                    or_dash(r.rate.map(rate_text)),
                    or_dash(r.per_tenant_max_running.map(|n| n.to_string())),
                    if r.claims_fairly() { "yes" } else { "no" },
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

/// The type's rules now (none: the default).
async fn current_rules(
    c: &impl tokio_postgres::GenericClient,
    job_type: &str,
) -> anyhow::Result<LimitRules> {
    Ok(queries::limit_list(c)
        .await?
        .into_iter()
        .find(|l| l.job_type == job_type)
        .map(|l| l.rules)
        .unwrap_or_default())
}

/// `N` (1..100000) or `none`.
fn parse_count(v: &str, option: &str) -> anyhow::Result<Option<i32>> {
    if v == "none" {
        return Ok(None);
    }
    let n: i32 = v
        .parse()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .with_context(|| format!("{option} must be from 1 to 100000, or none (got {v:?})"))?;
    Ok(Some(n))
}

/// `N/s`, `N/min` (N 1..1000000) or `none`: (N, period in seconds).
fn parse_rate(v: &str) -> anyhow::Result<Option<(i32, f64)>> {
    if v == "none" {
        return Ok(None);
    }
    let bad =
        || format!("--rate must be N/s or N/min with N from 1 to 1000000, or none (got {v:?})");
    let (n, unit) = v.split_once('/').with_context(bad)?;
    let period = match unit {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        _ => bail!(bad()),
    };
    let n: i32 = n
        .parse()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .with_context(bad)?;
    Ok(Some((n, period)))
}

fn rate_text((n, period): (i32, f64)) -> String {
    if period >= 60.0 {
        format!("{n}/min")
    } else {
        format!("{n}/s")
    }
}

/// The rules in words, for `limits set`'s confirmation.
fn describe(r: &LimitRules) -> String {
    let mut parts = Vec::new();
    if let Some(n) = r.max_running {
        parts.push(format!("at most {n} running at once"));
    }
    if let Some((n, period)) = r.rate {
        let per = if period >= 60.0 { "minute" } else { "second" };
        parts.push(format!("at most {n} started per {per}"));
    }
    if let Some(n) = r.per_tenant_max_running {
        parts.push(format!("at most {n} running per tenant"));
    }
    if r.claims_fairly() {
        parts.push("claimed round-robin across tenants".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_per_second_and_per_minute_and_refuse_the_rest() {
        assert_eq!(parse_rate("20/s").unwrap(), Some((20, 1.0)));
        assert_eq!(parse_rate("600/min").unwrap(), Some((600, 60.0)));
        assert_eq!(parse_rate("none").unwrap(), None);
        for bad in ["20", "0/s", "20/h", "-1/s", "2000000/s", "x/s"] {
            let e = parse_rate(bad).unwrap_err().to_string();
            assert!(e.contains("--rate"), "{bad}: {e}");
        }
    }

    #[test]
    fn counts_are_bounded_and_name_their_option() {
        assert_eq!(parse_count("5", "--max-running").unwrap(), Some(5));
        assert_eq!(parse_count("none", "--max-running").unwrap(), None);
        let e = parse_count("0", "--per-tenant-max-running")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--per-tenant-max-running"), "{e}");
    }
}
