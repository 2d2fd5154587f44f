//! Durable cron schedules (`ops_schedules`): each slot of a schedule's cron
//! expression, in its time zone, enqueues one job, exactly once, across
//! leader changes, crashes and downtime.
//!
//! How: the elected daemon's [`tick`] locks the due schedules, enqueues each
//! due slot's job with the idempotency key `schedule:<name>:<slot>` and
//! advances `next_slot`, all in one transaction. A crash between the writes
//! undoes both; two daemons at once are kept apart by an advisory lock and
//! the rows' locks; and a slot handled twice (`next_slot` moved back by hand)
//! finds its first job through the key.
//!
//! After downtime the catch-up policy decides: slots at most [`GRACE`] old
//! are on time and always enqueued; older ones are missed, and `skip` drops
//! them, `latest` (the default) enqueues the most recent once (unless an
//! on-time slot runs now anyway), `all:N` enqueues the most recent N.
//!
//! Daylight saving time follows croner's documented rules (OCPS): a
//! fixed-time slot in a spring-forward gap runs at the first valid time
//! after the gap that day; in a fall-back overlap it runs once, at the first
//! occurrence; wildcard and step fields skip the gap and run in both halves
//! of the overlap.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::queries::{self, ScheduleRow};
use crate::error::{Error, Result};
use crate::jobs::NewJob;

/// How late a slot may be handled and still count as on time: a daemon
/// restart or a leader change takes seconds, and a slot they delay must not
/// be treated as missed. 60 s: twice the default lease.
pub const GRACE: Duration = Duration::from_secs(60);
/// Most missed slots `all:N` enqueues.
pub const MAX_CATCH_UP: u32 = 1000;
/// Most due slots counted in one tick; past it the missed count is a lower
/// bound (a per-second schedule down for more than a day).
const COUNT_CAP: u64 = 100_000;
/// Arbitrary constant: "opsrsche".
const SCHEDULER_LOCK: i64 = 0x6f70_7372_7363_6865;

/// What to do with slots missed while no daemon ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Only slots from now on.
    Skip,
    /// The most recent missed slot, once.
    Latest,
    /// The most recent N missed slots.
    All(u32),
}

impl CatchUp {
    /// The column values: (`skip`|`latest`|`all`, limit).
    pub fn columns(self) -> (&'static str, i32) {
        match self {
            CatchUp::Skip => ("skip", 1),
            CatchUp::Latest => ("latest", 1),
            CatchUp::All(n) => ("all", n as i32),
        }
    }

    fn from_columns(kind: &str, limit: i32) -> Self {
        match kind {
            "skip" => CatchUp::Skip,
            "all" => CatchUp::All(limit.clamp(1, MAX_CATCH_UP as i32) as u32),
            _ => CatchUp::Latest,
        }
    }
}

impl FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "latest" => Ok(CatchUp::Latest),
            other => other
                .strip_prefix("all:")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=MAX_CATCH_UP).contains(n))
                .map(CatchUp::All)
                .ok_or_else(|| {
                    format!(
                        "catch-up {other:?}: use skip, latest or all:N (N from 1 to {MAX_CATCH_UP})"
                    )
                }),
        }
    }
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Cron {
    /// Parses `expr` (five fields, or six with seconds first) in the IANA
    /// zone `tz`. The error says which is wrong and why.
    pub fn parse(expr: &str, tz: &str) -> std::result::Result<Self, String> {
        let tz: chrono_tz::Tz = tz.parse().map_err(|_| {
            format!("time zone {tz:?} is not an IANA zone (e.g. UTC, Europe/Berlin)")
        })?;
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("cron expression {expr:?} is invalid: {e}"))?;
        let c = Self { cron, tz };
        if c.next_after(Utc::now()).is_none() {
            return Err(format!("cron expression {expr:?} has no future slot"));
        }
        Ok(c)
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last slot at or before `t`.
    fn previous_or_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// What one tick does with a schedule's due slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Slots to enqueue, oldest first.
    pub enqueue: Vec<DateTime<Utc>>,
    /// Due slots not enqueued (passed over by the catch-up policy).
    pub missed: u64,
    /// The first slot after `now`.
    pub next_slot: Option<DateTime<Utc>>,
}

/// The slots of `cron` from `next_slot` to `now` (both included) and what
/// `catch_up` makes of them. Pure: the tick passes the database's time.
pub fn plan(cron: &Cron, catch_up: CatchUp, next_slot: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
    let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
    let on_time_from = now - grace;
    // The most recent slots, newest first, walking back from now: what any
    // policy may enqueue is among the on-time ones and the latest N missed.
    let keep = (MAX_CATCH_UP as usize) + 64;
    let mut recent = Vec::new();
    let mut at = cron.previous_or_at(now);
    while let Some(s) = at {
        if s < next_slot || recent.len() >= keep {
            break;
        }
        recent.push(s);
        at = cron
            .previous_or_at(s - chrono::Duration::milliseconds(1))
            .filter(|p| *p < s);
    }
    let total = if recent.len() < keep {
        recent.len() as u64
    } else {
        // More than we keep: count forward, up to a cap.
        let mut n = 0u64;
        let mut s = Some(next_slot);
        while let Some(t) = s.filter(|t| *t <= now && n < COUNT_CAP) {
            n += 1;
            s = cron.next_after(t);
        }
        n
    };
    let (on_time, missed): (Vec<_>, Vec<_>) = recent.iter().partition(|s| **s >= on_time_from);
    let mut enqueue: Vec<DateTime<Utc>> = on_time;
    match catch_up {
        CatchUp::Skip => {}
        CatchUp::Latest => {
            if enqueue.is_empty()
                && let Some(s) = missed.first()
            {
                enqueue.push(*s);
            }
        }
        CatchUp::All(n) => enqueue.extend(missed.iter().take(n as usize)),
    }
    enqueue.sort();
    enqueue.dedup();
    Plan {
        missed: total.saturating_sub(enqueue.len() as u64),
        enqueue,
        next_slot: cron.next_after(now),
    }
}

/// The idempotency key of a slot's job: `schedule:<name>:<slot, RFC 3339 UTC>`.
pub fn slot_key(name: &str, slot: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// A schedule to create or replace.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Its name (`[a-z][a-z0-9_.-]{0,63}`).
    pub name: String,
    /// Five cron fields, or six with seconds first.
    pub cron: String,
    /// IANA time zone; UTC by default.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The job type it enqueues.
    pub job_type: String,
    /// The jobs' payload.
    #[serde(default = "empty")]
    pub payload: Value,
    /// The jobs' queue.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// The jobs' priority.
    #[serde(default)]
    pub priority: i16,
    /// The jobs' attempts.
    #[serde(default = "three")]
    pub max_attempts: i32,
    /// The jobs' timeout; the worker's when absent.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// `skip`, `latest` or `all:N`.
    #[serde(default = "latest")]
    pub catch_up: String,
}

fn utc() -> String {
    "UTC".into()
}
fn empty() -> Value {
    Value::Object(Default::default())
}
fn default_queue() -> String {
    "default".into()
}
fn three() -> i32 {
    3
}
fn latest() -> String {
    "latest".into()
}

impl ScheduleSpec {
    /// Checks everything that can be checked without the database: the
    /// name, the expression, the zone, the catch-up policy, the job's bounds
    /// and, when `registry` knows the type, the handler's payload check. A
    /// type `registry` does not know is refused (`known` lists the types
    /// this configuration knows).
    pub fn validate(
        &self,
        registry: &crate::handlers::Registry,
        known: &[String],
    ) -> std::result::Result<(Cron, CatchUp), String> {
        if !crate::jobs::valid_name(&self.name) {
            return Err(format!(
                "schedule name {:?} must match [a-z][a-z0-9_.-]{{0,63}}",
                self.name
            ));
        }
        let cron = Cron::parse(&self.cron, &self.time_zone)?;
        let catch_up: CatchUp = self.catch_up.parse()?;
        if !known.contains(&self.job_type) {
            return Err(format!(
                "job type {:?} is unknown to this configuration (known: {})",
                self.job_type,
                known.join(", ")
            ));
        }
        self.job(Utc::now()).validate().map_err(|e| e.to_string())?;
        if let Some(h) = registry.get(&self.job_type) {
            h.validate(&self.payload)
                .map_err(|e| format!("payload refused by the {} handler: {e}", self.job_type))?;
        }
        Ok((cron, catch_up))
    }

    fn job(&self, slot: DateTime<Utc>) -> NewJob {
        NewJob {
            queue: self.queue.clone(),
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout: self.timeout,
            idempotency_key: Some(slot_key(&self.name, slot)),
            ..NewJob::new(&self.job_type, self.payload.clone())
        }
    }

    /// Writes it (`source` is `cli` or `config`); false when the name is
    /// taken by a schedule that may not be replaced (the other source, or
    /// `replace` false).
    pub async fn save(
        &self,
        client: &impl GenericClient,
        catch_up: CatchUp,
        cron: &Cron,
        source: &str,
        replace: bool,
        by: &str,
    ) -> Result<bool> {
        let (kind, limit) = catch_up.columns();
        let now = db_time(client).await?;
        queries::schedule_upsert(
            client,
            &queries::ScheduleParams {
                name: &self.name,
                cron: &self.cron,
                time_zone: &self.time_zone,
                job_type: &self.job_type,
                payload: &self.payload,
                queue: &self.queue,
                priority: self.priority,
                max_attempts: self.max_attempts,
                timeout_secs: self.timeout.map(|d| d.as_secs_f64()),
                catch_up: kind,
                catch_up_limit: limit,
                next_slot: cron.next_after(now),
                source,
                replace,
                by,
            },
        )
        .await
    }
}

/// The database's `now()`: every slot is judged by one clock, whatever
/// the clocks of the daemons.
pub async fn db_time(client: &impl GenericClient) -> Result<DateTime<Utc>> {
    let secs = queries::db_now(client).await?;
    DateTime::from_timestamp_micros((secs * 1e6).round() as i64)
        .ok_or_else(|| Error::Invalid(format!("the database's clock reads {secs}")))
}

/// What one [`tick`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// (schedule, slot, job) of every job enqueued.
    pub enqueued: Vec<(String, DateTime<Utc>, Uuid)>,
    /// (schedule, slot, why) of every slot skipped for a flag.
    pub skipped: Vec<(String, DateTime<Utc>, String)>,
    /// (schedule, count) of slots the catch-up policy passed over.
    pub missed: Vec<(String, u64)>,
    /// Schedules whose definition no longer parses (disabled by the tick).
    pub broken: Vec<(String, String)>,
}

/// One scheduling pass, in its own transaction: `None` when another daemon
/// holds the scheduler lock. Every due slot of every enabled schedule is
/// enqueued (or recorded as skipped when its type's flag or pause-all is
/// off) and the schedule advanced, at the database's time.
pub async fn tick(client: &mut tokio_postgres::Client) -> Result<Option<TickReport>> {
    let tx = client.transaction().await?;
    if !queries::try_lead(&tx, SCHEDULER_LOCK).await? {
        return Ok(None);
    }
    let now = db_time(&tx).await?;
    let due = queries::schedule_due(&tx, now).await?;
    let mut report = TickReport::default();
    if due.is_empty() {
        // The common second: nothing due, so no flag read.
        tx.commit().await?;
        return Ok(Some(report));
    }
    let flags: HashSet<String> = queries::enabled_flags_plain(&tx)
        .await?
        .into_iter()
        .collect();
    let paused = flags.contains(crate::flags::PAUSE_FLAG);
    for s in due {
        handle(&tx, &s, now, &flags, paused, &mut report).await?;
    }
    tx.commit().await?;
    Ok(Some(report))
}

async fn handle(
    tx: &tokio_postgres::Transaction<'_>,
    s: &ScheduleRow,
    now: DateTime<Utc>,
    flags: &HashSet<String>,
    paused: bool,
    report: &mut TickReport,
) -> Result<()> {
    let cron = match Cron::parse(&s.cron, &s.time_zone) {
        Ok(c) => c,
        Err(why) => {
            // Written by SQL past the CLI's checks (or a zone the tz data no
            // longer has): stop it rather than fail every tick.
            queries::schedule_advance(tx, &s.name, None, None, None, 0).await?;
            report.broken.push((s.name.clone(), why));
            return Ok(());
        }
    };
    // due.sql selects only rows whose next slot is set and due.
    let Some(next_slot) = s.next_slot else {
        return Ok(());
    };
    let plan = plan(
        &cron,
        CatchUp::from_columns(&s.catch_up, s.catch_up_limit),
        next_slot,
        now,
    );
    let spec = ScheduleSpec {
        name: s.name.clone(),
        cron: s.cron.clone(),
        time_zone: s.time_zone.clone(),
        job_type: s.job_type.clone(),
        payload: s.payload.clone(),
        queue: s.queue.clone(),
        priority: s.priority,
        max_attempts: s.max_attempts,
        timeout: s.timeout_secs.map(Duration::from_secs_f64),
        catch_up: String::new(),
    };
    let mut last: Option<(DateTime<Utc>, Uuid)> = None;
    for slot in &plan.enqueue {
        let off = if paused {
            Some(format!("{} is on", crate::flags::PAUSE_FLAG))
        } else if !flags.contains(&s.job_type) {
            Some(format!("the {} flag is off", s.job_type))
        } else {
            None
        };
        if let Some(why) = off {
            queries::schedule_record_slot(tx, &s.name, *slot, "skipped", None, Some(&why)).await?;
            report.skipped.push((s.name.clone(), *slot, why));
            continue;
        }
        let inserted = crate::jobs::insert(tx, &spec.job(*slot)).await?;
        queries::schedule_record_slot(tx, &s.name, *slot, "enqueued", Some(inserted.id), None)
            .await?;
        report.enqueued.push((s.name.clone(), *slot, inserted.id));
        last = Some((*slot, inserted.id));
    }
    if plan.missed > 0 {
        report.missed.push((s.name.clone(), plan.missed));
    }
    queries::schedule_advance(
        tx,
        &s.name,
        plan.next_slot,
        last.map(|l| l.0),
        last.map(|l| l.1),
        plan.missed as i64,
    )
    .await?;
    Ok(())
}

/// What [`apply_config`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigApplied {
    /// Entries created or redefined (or re-applied unchanged).
    pub saved: Vec<String>,
    /// Config-owned schedules no longer in the file, removed.
    pub removed: Vec<String>,
    /// Entries whose name a CLI-made schedule holds (left alone).
    pub conflicts: Vec<String>,
}

/// Makes the config-owned schedules those of `specs` (validated when the
/// file was loaded): each saved as `source = config` (an unchanged
/// expression keeps its next slot), the config-owned ones no longer listed
/// removed, in one transaction that the daemons take turns at (an advisory
/// lock), audited when anything changed.
pub async fn apply_config(
    client: &mut tokio_postgres::Client,
    specs: &[ScheduleSpec],
    by: &str,
) -> Result<ConfigApplied> {
    let tx = client.transaction().await?;
    queries::schedule_lock(&tx, SCHEDULER_LOCK).await?;
    let existing = queries::schedule_list(&tx, None).await?;
    let mut done = ConfigApplied::default();
    for spec in specs {
        let (cron, catch_up) = match (
            Cron::parse(&spec.cron, &spec.time_zone),
            spec.catch_up.parse::<CatchUp>(),
        ) {
            (Ok(c), Ok(k)) => (c, k),
            _ => continue, // refused at load; a zone gone since is the tick's to report
        };
        if spec.save(&tx, catch_up, &cron, "config", true, by).await? {
            done.saved.push(spec.name.clone());
        } else {
            done.conflicts.push(spec.name.clone());
        }
    }
    for s in existing.iter().filter(|s| s.source == "config") {
        if !specs.iter().any(|p| p.name == s.name)
            && queries::schedule_remove(&tx, &s.name, "config").await?
        {
            done.removed.push(s.name.clone());
        }
    }
    let changed = done.removed.len()
        + specs
            .iter()
            .filter(|p| {
                !existing.iter().any(|s| {
                    s.name == p.name
                        && s.source == "config"
                        && s.cron == p.cron
                        && s.time_zone == p.time_zone
                        && s.job_type == p.job_type
                        && s.payload == p.payload
                        && s.queue == p.queue
                        && s.priority == p.priority
                        && s.max_attempts == p.max_attempts
                })
            })
            .count();
    if changed > 0 {
        crate::audit::write(
            &tx,
            &crate::audit::AuditEntry {
                actor: by,
                action: "schedule.config_apply",
                target: None,
                tenant: None,
                detail: &serde_json::json!({ "saved": done.saved, "removed": done.removed, "conflicts": done.conflicts }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(done)
}

/// `schedules run-now`: one extra job of schedule `name` now, outside its
/// slots (its key is `schedule:<name>:run-now:<id>`), recorded and audited.
pub async fn run_now(client: &mut tokio_postgres::Client, name: &str, by: &str) -> Result<Uuid> {
    let tx = client.transaction().await?;
    let s = queries::schedule_list(&tx, Some(name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid(format!("no schedule is named {name:?}")))?;
    let now = db_time(&tx).await?;
    let job = NewJob {
        queue: s.queue.clone(),
        priority: s.priority,
        max_attempts: s.max_attempts,
        timeout: s.timeout_secs.map(Duration::from_secs_f64),
        idempotency_key: Some(format!("schedule:{name}:run-now:{}", Uuid::now_v7())),
        ..NewJob::new(&s.job_type, s.payload.clone())
    };
    let inserted = crate::jobs::insert(&tx, &job).await?;
    queries::schedule_record_slot(&tx, name, now, "run_now", Some(inserted.id), None).await?;
    crate::audit::write(
        &tx,
        &crate::audit::AuditEntry {
            actor: by,
            action: "schedule.run_now",
            target: Some(name),
            tenant: None,
            detail: &serde_json::json!({ "job_id": inserted.id }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(inserted.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_or_six_fields_and_errors_name_what_is_wrong() {
        assert!(Cron::parse("*/5 * * * *", "UTC").is_ok());
        assert!(Cron::parse("*/10 * * * * *", "Europe/Berlin").is_ok());
        let e = Cron::parse("61 * * * *", "UTC").unwrap_err();
        assert!(
            e.contains("cron expression \"61 * * * *\" is invalid"),
            "{e}"
        );
        let e = Cron::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("time zone \"Mars/Olympus\""), "{e}");
        assert!("all:0".parse::<CatchUp>().is_err());
        assert_eq!("all:5".parse::<CatchUp>(), Ok(CatchUp::All(5)));
    }

    #[test]
    fn on_time_slots_are_all_enqueued_and_catch_up_decides_the_missed() {
        let c = Cron::parse("0 * * * *", "UTC").unwrap(); // hourly
        let now = at("2026-12-02T10:00:30Z");
        // Down since 05:00: slots 05:00 .. 10:00; 10:00 is on time.
        let from = at("2026-12-02T05:00:00Z");
        let p = plan(&c, CatchUp::Skip, from, now);
        assert_eq!(p.enqueue, vec![at("2026-12-02T10:00:00Z")]);
        assert_eq!(p.missed, 5);
        assert_eq!(p.next_slot, Some(at("2026-12-02T11:00:00Z")));
        // 10:00 runs now anyway: latest adds nothing.
        assert_eq!(plan(&c, CatchUp::Latest, from, now).enqueue.len(), 1);
        let p = plan(&c, CatchUp::All(3), from, now);
        assert_eq!(
            p.enqueue,
            vec![
                at("2026-12-02T07:00:00Z"),
                at("2026-12-02T08:00:00Z"),
                at("2026-12-02T09:00:00Z"),
                at("2026-12-02T10:00:00Z")
            ]
        );
        assert_eq!(p.missed, 2);
        // Between slots, down since 05:00, latest runs 09:00 once.
        let now = at("2026-12-02T09:30:00Z");
        let p = plan(&c, CatchUp::Latest, from, now);
        assert_eq!(p.enqueue, vec![at("2026-12-02T09:00:00Z")]);
        assert_eq!(p.missed, 4);
        // Nothing due yet.
        let p = plan(&c, CatchUp::Latest, at("2026-12-02T10:00:00Z"), now);
        assert!(p.enqueue.is_empty() && p.missed == 0);
    }

    #[test]
    fn a_per_second_schedule_down_for_two_days_is_counted_not_enumerated_into_jobs() {
        let c = Cron::parse("* * * * * *", "UTC").unwrap();
        let now = at("2026-12-03T00:00:00Z");
        let p = plan(&c, CatchUp::Skip, at("2026-12-01T00:00:00Z"), now);
        assert_eq!(p.enqueue.len(), 61, "the last minute is on time");
        assert!(p.missed >= COUNT_CAP - 61, "{}", p.missed);
    }

    #[test]
    fn daylight_saving_follows_the_documented_rules() {
        let berlin = Cron::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // Spring forward, 2026-03-29: 02:00 -> 03:00 local. The 02:30 slot
        // runs at the first valid time after the gap (03:00 CEST = 01:00 UTC).
        let next = berlin.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(next, at("2026-03-29T01:00:00Z"));
        // Fall back, 2026-10-25: 03:00 -> 02:00 local. 02:30 runs once, at
        // its first occurrence (02:30 CEST = 00:30 UTC), not again an hour later.
        let first = berlin.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        let second = berlin.next_after(first).unwrap();
        assert_eq!(
            second,
            chrono_tz::Europe::Berlin
                .with_ymd_and_hms(2026, 10, 26, 2, 30, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
        // An hourly wildcard runs in both halves of the overlap.
        let hourly = Cron::parse("15 * * * *", "Europe/Berlin").unwrap();
        let a = hourly.next_after(at("2026-10-25T00:00:00Z")).unwrap();
        let b = hourly.next_after(a).unwrap();
        assert_eq!(
            (a, b),
            (at("2026-10-25T00:15:00Z"), at("2026-10-25T01:15:00Z"))
        );
    }

    #[test]
    fn slot_keys_are_rfc3339_utc() {
        assert_eq!(
            slot_key("nightly", at("2026-12-02T03:00:00+01:00")),
            "schedule:nightly:2026-12-02T02:00:00Z"
        );
    }
}
