//! Every statement the daemon, the shim and the CLI send, one typed function
//! per file under `sql/queries/` and named after it, so that a DBA can read
//! each statement with its parameters, and a test
//! (`tests/queries.rs`) prepares them all against the migrated schema.
//!
//! This is the only module that loads `sql/queries/` (`tests/layering.rs`
//! enforces it), and it imports nothing of the crate but `error`. The
//! exceptions, sent as literal text elsewhere: `LISTEN …` (built from the
//! channel names in `db`), `SELECT 1` liveness pings, the migration
//! bookkeeping in `db::migrate`, and the measuring SQL in `cli::bench`.
//!
//! The worker's statements are prepared once per pooled connection
//! (`prepare_cached`), because they run thousands of times a second and their
//! generic plans are what `db::Plans::Generic` relies on; operator and shim
//! statements run through `tokio_postgres::GenericClient`, so they also run
//! inside a caller's transaction.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient as CachingClient;
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::Result;

/// Every statement file with its text, for `tests/queries.rs`.
pub const ALL: &[(&str, &str)] = &[
    ("worker/claim.sql", CLAIM),
    ("worker/complete.sql", COMPLETE),
    ("worker/delete_succeeded.sql", DELETE_SUCCEEDED),
    ("worker/heartbeat.sql", HEARTBEAT),
    ("worker/rescue.sql", RESCUE),
    ("worker/cancel_queued.sql", CANCEL_QUEUED),
    ("worker/enabled_flags.sql", ENABLED_FLAGS),
    ("worker/queue_stats.sql", QUEUE_STATS),
    ("worker/prune.sql", PRUNE),
    ("worker/queued_estimate.sql", QUEUED_ESTIMATE),
    ("worker/try_lead.sql", TRY_LEAD),
    ("worker/lead_lease.sql", LEAD_LEASE),
    ("worker/type_limits.sql", TYPE_LIMITS),
    ("worker/lock_type_limit.sql", LOCK_TYPE_LIMIT),
    ("worker/claim_limited.sql", CLAIM_LIMITED),
    ("worker/count_running.sql", COUNT_RUNNING),
    ("worker/claim_fair.sql", CLAIM_FAIR),
    ("worker/save_limit_state.sql", SAVE_LIMIT_STATE),
    ("worker/limit_held.sql", LIMIT_HELD),
    ("shared/limit_set.sql", LIMIT_SET),
    ("shared/ensure_fair_index.sql", ENSURE_FAIR_INDEX),
    ("shared/limit_clear.sql", LIMIT_CLEAR),
    ("shared/limit_list.sql", LIMIT_LIST),
    ("worker/resign_lease.sql", RESIGN_LEASE),
    ("worker/db_clock.sql", DB_CLOCK),
    ("shared/tenant_bind.sql", TENANT_BIND),
    ("shared/tenant_unbind.sql", TENANT_UNBIND),
    ("shared/tenant_list.sql", TENANT_LIST),
    ("worker/oldest_snapshot.sql", OLDEST_SNAPSHOT),
    ("shared/db_now.sql", DB_NOW),
    ("worker/notification_usage.sql", NOTIFICATION_USAGE),
    ("api/find_idempotent.sql", FIND_IDEMPOTENT),
    ("api/list_jobs.sql", API_LIST_JOBS),
    ("api/get_job.sql", API_GET_JOB),
    ("api/set_tenant.sql", SET_TENANT),
    ("api/job_exists.sql", JOB_EXISTS),
    ("api/role_bypasses_rls.sql", ROLE_BYPASSES_RLS),
    ("api/enqueue.sql", API_ENQUEUE),
    ("api/cancel_job.sql", API_CANCEL_JOB),
    ("worker/token_use.sql", TOKEN_USE),
    ("worker/unhandled_types.sql", UNHANDLED_TYPES),
    ("shared/session_ssl.sql", SESSION_SSL),
    ("shared/insert_job.sql", INSERT_JOB),
    ("shared/insert_jobs.sql", INSERT_JOBS),
    ("shared/cancel_job.sql", CANCEL_JOB),
    ("shared/retry_job.sql", RETRY_JOB),
    ("shared/set_flag.sql", SET_FLAG),
    ("shared/audit.sql", AUDIT),
    ("shared/key_lookup.sql", KEY_LOOKUP),
    ("shared/key_create.sql", KEY_CREATE),
    ("shared/key_list.sql", KEY_LIST),
    ("shared/key_revoke.sql", KEY_REVOKE),
    ("shared/list_flags.sql", LIST_FLAGS),
    ("shared/list_jobs.sql", LIST_JOBS),
    ("shared/show_job.sql", SHOW_JOB),
    ("shared/overview_queues.sql", OVERVIEW_QUEUES),
    ("schedules/upsert.sql", SCHEDULE_UPSERT),
    ("ui/session_create.sql", UI_SESSION_CREATE),
    ("shared/bulk_batch.sql", BULK_BATCH),
    ("shared/bulk_count.sql", BULK_COUNT),
    ("ui/session_lookup.sql", UI_SESSION_LOOKUP),
    ("ui/session_revoke.sql", UI_SESSION_REVOKE),
    ("ui/jobs_page.sql", UI_JOBS_PAGE),
    ("ui/set_flag.sql", UI_SET_FLAG),
    ("ui/retry_job.sql", UI_RETRY_JOB),
    ("ui/schedule_set_enabled.sql", UI_SCHEDULE_SET_ENABLED),
    ("ui/schedule_run_now.sql", UI_SCHEDULE_RUN_NOW),
    ("ui/throughput.sql", UI_THROUGHPUT),
    ("ui/audit_page.sql", UI_AUDIT_PAGE),
    ("schedules/list.sql", SCHEDULE_LIST),
    ("schedules/slots.sql", SCHEDULE_SLOTS),
    ("schedules/set_enabled.sql", SCHEDULE_SET_ENABLED),
    ("schedules/remove.sql", SCHEDULE_REMOVE),
    ("schedules/due.sql", SCHEDULE_DUE),
    ("schedules/advance.sql", SCHEDULE_ADVANCE),
    ("schedules/record_slot.sql", SCHEDULE_RECORD_SLOT),
    ("shared/overview_daemons.sql", OVERVIEW_DAEMONS),
    ("shared/job_events.sql", JOB_EVENTS),
    ("schedules/lock.sql", SCHEDULE_LOCK),
    ("shared/ping.sql", PING),
    ("migrate/lock.sql", MIGRATE_LOCK),
    ("migrate/unlock.sql", MIGRATE_UNLOCK),
    ("migrate/ensure_table.sql", MIGRATE_ENSURE_TABLE),
    ("migrate/record.sql", MIGRATE_RECORD),
    ("migrate/table_exists.sql", MIGRATE_TABLE_EXISTS),
    ("migrate/current_version.sql", MIGRATE_CURRENT_VERSION),
];

const CLAIM: &str = include_str!("../../sql/queries/worker/claim.sql");
const SCHEDULE_LOCK: &str = include_str!("../../sql/queries/schedules/lock.sql");
const PING: &str = include_str!("../../sql/queries/shared/ping.sql");
const MIGRATE_LOCK: &str = include_str!("../../sql/queries/migrate/lock.sql");
const MIGRATE_UNLOCK: &str = include_str!("../../sql/queries/migrate/unlock.sql");
const MIGRATE_ENSURE_TABLE: &str = include_str!("../../sql/queries/migrate/ensure_table.sql");
const MIGRATE_RECORD: &str = include_str!("../../sql/queries/migrate/record.sql");
const MIGRATE_TABLE_EXISTS: &str = include_str!("../../sql/queries/migrate/table_exists.sql");
const MIGRATE_CURRENT_VERSION: &str = include_str!("../../sql/queries/migrate/current_version.sql");
const COMPLETE: &str = include_str!("../../sql/queries/worker/complete.sql");
const DELETE_SUCCEEDED: &str = include_str!("../../sql/queries/worker/delete_succeeded.sql");
const HEARTBEAT: &str = include_str!("../../sql/queries/worker/heartbeat.sql");
const RESCUE: &str = include_str!("../../sql/queries/worker/rescue.sql");
const CANCEL_QUEUED: &str = include_str!("../../sql/queries/worker/cancel_queued.sql");
const ENABLED_FLAGS: &str = include_str!("../../sql/queries/worker/enabled_flags.sql");
const QUEUE_STATS: &str = include_str!("../../sql/queries/worker/queue_stats.sql");
const PRUNE: &str = include_str!("../../sql/queries/worker/prune.sql");
const QUEUED_ESTIMATE: &str = include_str!("../../sql/queries/worker/queued_estimate.sql");
const TRY_LEAD: &str = include_str!("../../sql/queries/worker/try_lead.sql");
const LEAD_LEASE: &str = include_str!("../../sql/queries/worker/lead_lease.sql");
const TYPE_LIMITS: &str = include_str!("../../sql/queries/worker/type_limits.sql");
const LOCK_TYPE_LIMIT: &str = include_str!("../../sql/queries/worker/lock_type_limit.sql");
const CLAIM_LIMITED: &str = include_str!("../../sql/queries/worker/claim_limited.sql");
const COUNT_RUNNING: &str = include_str!("../../sql/queries/worker/count_running.sql");
const CLAIM_FAIR: &str = include_str!("../../sql/queries/worker/claim_fair.sql");
const SAVE_LIMIT_STATE: &str = include_str!("../../sql/queries/worker/save_limit_state.sql");
const LIMIT_HELD: &str = include_str!("../../sql/queries/worker/limit_held.sql");
const LIMIT_SET: &str = include_str!("../../sql/queries/shared/limit_set.sql");
const ENSURE_FAIR_INDEX: &str = include_str!("../../sql/queries/shared/ensure_fair_index.sql");
const LIMIT_CLEAR: &str = include_str!("../../sql/queries/shared/limit_clear.sql");
const LIMIT_LIST: &str = include_str!("../../sql/queries/shared/limit_list.sql");
const RESIGN_LEASE: &str = include_str!("../../sql/queries/worker/resign_lease.sql");
const OLDEST_SNAPSHOT: &str = include_str!("../../sql/queries/worker/oldest_snapshot.sql");
const TENANT_BIND: &str = include_str!("../../sql/queries/shared/tenant_bind.sql");
const TENANT_UNBIND: &str = include_str!("../../sql/queries/shared/tenant_unbind.sql");
const TENANT_LIST: &str = include_str!("../../sql/queries/shared/tenant_list.sql");
const DB_CLOCK: &str = include_str!("../../sql/queries/worker/db_clock.sql");
const DB_NOW: &str = include_str!("../../sql/queries/shared/db_now.sql");
const NOTIFICATION_USAGE: &str = include_str!("../../sql/queries/worker/notification_usage.sql");
const FIND_IDEMPOTENT: &str = include_str!("../../sql/queries/api/find_idempotent.sql");
const API_LIST_JOBS: &str = include_str!("../../sql/queries/api/list_jobs.sql");
const API_GET_JOB: &str = include_str!("../../sql/queries/api/get_job.sql");
const SET_TENANT: &str = include_str!("../../sql/queries/api/set_tenant.sql");
const JOB_EXISTS: &str = include_str!("../../sql/queries/api/job_exists.sql");
const ROLE_BYPASSES_RLS: &str = include_str!("../../sql/queries/api/role_bypasses_rls.sql");
const API_ENQUEUE: &str = include_str!("../../sql/queries/api/enqueue.sql");
const API_CANCEL_JOB: &str = include_str!("../../sql/queries/api/cancel_job.sql");
const TOKEN_USE: &str = include_str!("../../sql/queries/worker/token_use.sql");
const SESSION_SSL: &str = include_str!("../../sql/queries/shared/session_ssl.sql");
const UNHANDLED_TYPES: &str = include_str!("../../sql/queries/worker/unhandled_types.sql");
const INSERT_JOB: &str = include_str!("../../sql/queries/shared/insert_job.sql");
const INSERT_JOBS: &str = include_str!("../../sql/queries/shared/insert_jobs.sql");
const CANCEL_JOB: &str = include_str!("../../sql/queries/shared/cancel_job.sql");
const RETRY_JOB: &str = include_str!("../../sql/queries/shared/retry_job.sql");
const SET_FLAG: &str = include_str!("../../sql/queries/shared/set_flag.sql");
const AUDIT: &str = include_str!("../../sql/queries/shared/audit.sql");
const KEY_LOOKUP: &str = include_str!("../../sql/queries/shared/key_lookup.sql");
const KEY_CREATE: &str = include_str!("../../sql/queries/shared/key_create.sql");
const KEY_LIST: &str = include_str!("../../sql/queries/shared/key_list.sql");
const KEY_REVOKE: &str = include_str!("../../sql/queries/shared/key_revoke.sql");
const LIST_FLAGS: &str = include_str!("../../sql/queries/shared/list_flags.sql");
const LIST_JOBS: &str = include_str!("../../sql/queries/shared/list_jobs.sql");
const SHOW_JOB: &str = include_str!("../../sql/queries/shared/show_job.sql");
const OVERVIEW_QUEUES: &str = include_str!("../../sql/queries/shared/overview_queues.sql");
const BULK_BATCH: &str = include_str!("../../sql/queries/shared/bulk_batch.sql");
const BULK_COUNT: &str = include_str!("../../sql/queries/shared/bulk_count.sql");
const UI_SESSION_CREATE: &str = include_str!("../../sql/queries/ui/session_create.sql");
const UI_SESSION_LOOKUP: &str = include_str!("../../sql/queries/ui/session_lookup.sql");
const UI_SESSION_REVOKE: &str = include_str!("../../sql/queries/ui/session_revoke.sql");
const UI_JOBS_PAGE: &str = include_str!("../../sql/queries/ui/jobs_page.sql");
const UI_SET_FLAG: &str = include_str!("../../sql/queries/ui/set_flag.sql");
const UI_RETRY_JOB: &str = include_str!("../../sql/queries/ui/retry_job.sql");
const UI_SCHEDULE_SET_ENABLED: &str = include_str!("../../sql/queries/ui/schedule_set_enabled.sql");
const UI_SCHEDULE_RUN_NOW: &str = include_str!("../../sql/queries/ui/schedule_run_now.sql");
const UI_THROUGHPUT: &str = include_str!("../../sql/queries/ui/throughput.sql");
const UI_AUDIT_PAGE: &str = include_str!("../../sql/queries/ui/audit_page.sql");
const SCHEDULE_UPSERT: &str = include_str!("../../sql/queries/schedules/upsert.sql");
const SCHEDULE_LIST: &str = include_str!("../../sql/queries/schedules/list.sql");
const SCHEDULE_SLOTS: &str = include_str!("../../sql/queries/schedules/slots.sql");
const SCHEDULE_SET_ENABLED: &str = include_str!("../../sql/queries/schedules/set_enabled.sql");
const SCHEDULE_REMOVE: &str = include_str!("../../sql/queries/schedules/remove.sql");
const SCHEDULE_DUE: &str = include_str!("../../sql/queries/schedules/due.sql");
const SCHEDULE_ADVANCE: &str = include_str!("../../sql/queries/schedules/advance.sql");
const SCHEDULE_RECORD_SLOT: &str = include_str!("../../sql/queries/schedules/record_slot.sql");
const OVERVIEW_DAEMONS: &str = include_str!("../../sql/queries/shared/overview_daemons.sql");
const JOB_EVENTS: &str = include_str!("../../sql/queries/shared/job_events.sql");

// ---------------------------------------------------------------- worker

/// Parameters of `worker/claim.sql`.
pub(crate) struct ClaimParams<'a> {
    pub job_types: &'a [String],
    /// `None`: every queue.
    pub queues: Option<&'a [String]>,
    pub limit: i64,
    pub owner: &'a str,
    pub lease_secs: f64,
}

/// `worker/claim.sql`: the claimed rows, already `running` under `owner`.
pub(crate) async fn claim(c: &impl CachingClient, p: &ClaimParams<'_>) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(CLAIM).await?;
    Ok(c.query(
        &stmt,
        &[&p.job_types, &p.queues, &p.limit, &p.owner, &p.lease_secs],
    )
    .await?)
}

/// The seven arrays of `worker/complete.sql`, one element per outcome.
#[derive(Default)]
pub(crate) struct CompleteColumns {
    pub ids: Vec<Uuid>,
    pub attempts: Vec<i32>,
    pub statuses: Vec<&'static str>,
    pub results: Vec<Option<Value>>,
    pub errors: Vec<Option<String>>,
    pub delays: Vec<Option<f64>>,
    pub refunds: Vec<bool>,
}

/// `worker/complete.sql`: the ids whose outcome was written (the others were
/// fenced out: this worker no longer holds that attempt's lease).
pub(crate) async fn complete(
    c: &impl CachingClient,
    cols: &CompleteColumns,
    owner: &str,
) -> Result<Vec<Uuid>> {
    let stmt = c.prepare_cached(COMPLETE).await?;
    let rows = c
        .query(
            &stmt,
            &[
                &cols.ids,
                &cols.attempts,
                &cols.statuses,
                &cols.results,
                &cols.errors,
                &cols.delays,
                &cols.refunds,
                &owner,
            ],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// `worker/delete_succeeded.sql`: deletes succeeded jobs still leased by
/// `owner` at that attempt (delete-on-success); the ids deleted.
pub(crate) async fn delete_succeeded(
    c: &impl CachingClient,
    ids: &[Uuid],
    attempts: &[i32],
    owner: &str,
) -> Result<Vec<Uuid>> {
    let stmt = c.prepare_cached(DELETE_SUCCEEDED).await?;
    let rows = c.query(&stmt, &[&ids, &attempts, &owner]).await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// A row of `worker/heartbeat.sql`: a lease renewed.
pub(crate) struct HeartbeatRow {
    pub id: Uuid,
    pub attempt: i32,
    pub cancel_requested: bool,
}

/// `worker/heartbeat.sql`: renews the leases of the `(id, attempt)` pairs
/// `owner` holds.
pub(crate) async fn heartbeat(
    c: &impl CachingClient,
    jobs: &[(Uuid, i32)],
    owner: &str,
    lease_secs: f64,
) -> Result<Vec<HeartbeatRow>> {
    let stmt = c.prepare_cached(HEARTBEAT).await?;
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.1).collect();
    let rows = c
        .query(&stmt, &[&ids, &attempts, &owner, &lease_secs])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(HeartbeatRow {
                id: r.try_get(0)?,
                attempt: r.try_get(1)?,
                cancel_requested: r.try_get(2)?,
            })
        })
        .collect()
}

/// What `worker/rescue.sql` did to expired leases.
pub(crate) struct Rescued {
    pub requeued: u64,
    pub failed: u64,
    /// Each rescued job, for the log.
    pub jobs: Vec<RescuedJob>,
}

/// One job the rescuer moved.
pub(crate) struct RescuedJob {
    pub id: Uuid,
    /// `queued` (another attempt) or `failed`.
    pub status: String,
    pub job_type: String,
    pub queue: String,
    pub attempt: i32,
    /// Which worker stopped renewing the lease.
    pub error: Option<String>,
}

/// `worker/rescue.sql`: up to `batch` expired leases back to `queued`, or to
/// `failed` when out of attempts.
pub(crate) async fn rescue(
    c: &impl CachingClient,
    batch: i64,
    max_lease_secs: f64,
) -> Result<Rescued> {
    let stmt = c.prepare_cached(RESCUE).await?;
    let rows = c.query(&stmt, &[&batch, &max_lease_secs]).await?;
    let jobs = rows
        .iter()
        .map(|r| {
            Ok(RescuedJob {
                id: r.try_get(0)?,
                status: r.try_get(1)?,
                job_type: r.try_get(2)?,
                queue: r.try_get(3)?,
                attempt: r.try_get(4)?,
                error: r.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let failed = jobs.iter().filter(|j| j.status == "failed").count() as u64;
    Ok(Rescued {
        requeued: jobs.len() as u64 - failed,
        failed,
        jobs,
    })
}

/// `worker/cancel_queued.sql`: how many queued jobs with a cancel request were
/// cancelled.
pub(crate) async fn cancel_queued(c: &impl CachingClient, batch: i64) -> Result<u64> {
    let stmt = c.prepare_cached(CANCEL_QUEUED).await?;
    Ok(c.query(&stmt, &[&batch]).await?.len() as u64)
}

/// `worker/enabled_flags.sql` without the statement cache (in a plain
/// transaction): the names of the flags that are on.
pub(crate) async fn enabled_flags_plain(c: &impl GenericClient) -> Result<Vec<String>> {
    let rows = c.query(ENABLED_FLAGS, &[]).await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// `worker/enabled_flags.sql`: the names of the flags that are on.
pub(crate) async fn enabled_flags(c: &impl CachingClient) -> Result<Vec<String>> {
    let stmt = c.prepare_cached(ENABLED_FLAGS).await?;
    let rows = c.query(&stmt, &[]).await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// A row of `worker/queue_stats.sql`.
pub(crate) struct QueueStat {
    pub queue: String,
    pub job_type: String,
    pub depth: i64,
    pub oldest_age_secs: f64,
}

/// `worker/queue_stats.sql`: runnable depth and oldest age per queue and
/// job type.
pub(crate) async fn queue_stats(c: &impl CachingClient) -> Result<Vec<QueueStat>> {
    let stmt = c.prepare_cached(QUEUE_STATS).await?;
    let rows = c.query(&stmt, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(QueueStat {
                queue: r.try_get(0)?,
                job_type: r.try_get(1)?,
                depth: r.try_get(2)?,
                oldest_age_secs: r.try_get(3)?,
            })
        })
        .collect()
}

/// What one retention batch (`worker/prune.sql`) deleted.
pub(crate) struct PruneRow {
    pub jobs: i64,
    pub events: i64,
    pub audit: i64,
}

/// The ages past which `worker/prune.sql` deletes, in seconds.
pub(crate) struct PruneParams {
    pub succeeded_secs: f64,
    pub failed_secs: f64,
    pub cancelled_secs: f64,
    pub audit_secs: f64,
    pub batch: i32,
}

/// `worker/prune.sql`: one retention batch.
pub(crate) async fn prune(c: &impl GenericClient, p: &PruneParams) -> Result<PruneRow> {
    let r = c
        .query_one(
            PRUNE,
            &[
                &p.succeeded_secs,
                &p.failed_secs,
                &p.cancelled_secs,
                &p.audit_secs,
                &p.batch,
            ],
        )
        .await?;
    Ok(PruneRow {
        jobs: r.try_get(0)?,
        events: r.try_get(1)?,
        audit: r.try_get(2)?,
    })
}

/// A row of `worker/oldest_snapshot.sql`.
pub(crate) struct OldestSnapshot {
    pub session_age_secs: f64,
    pub oldest_application: Option<String>,
    pub slot_xmin_age: i64,
}

/// `worker/oldest_snapshot.sql`.
pub(crate) async fn oldest_snapshot(c: &impl GenericClient) -> Result<OldestSnapshot> {
    let r = c.query_one(OLDEST_SNAPSHOT, &[]).await?;
    Ok(OldestSnapshot {
        session_age_secs: r.try_get(0)?,
        oldest_application: r.try_get(1)?,
        slot_xmin_age: r.try_get(2)?,
    })
}

/// `worker/db_clock.sql`: the database's clock, in Unix seconds.
pub(crate) async fn db_clock(c: &impl GenericClient) -> Result<f64> {
    Ok(c.query_one(DB_CLOCK, &[]).await?.try_get(0)?)
}

/// `shared/db_now.sql`: the database's `now()`, in Unix seconds.
pub async fn db_now(c: &impl GenericClient) -> Result<f64> {
    Ok(c.query_one(DB_NOW, &[]).await?.try_get(0)?)
}

/// `worker/queued_estimate.sql`: queued jobs, counted up to 10,001.
pub(crate) async fn queued_estimate(c: &impl GenericClient) -> Result<i64> {
    Ok(c.query_one(QUEUED_ESTIMATE, &[]).await?.try_get(0)?)
}

/// `worker/lead_lease.sql`: true when `owner` holds the lease `name` for
/// the next `secs` seconds.
pub(crate) async fn lead_lease(
    c: &impl CachingClient,
    name: &str,
    owner: &str,
    secs: f64,
) -> Result<bool> {
    let stmt = c.prepare_cached(LEAD_LEASE).await?;
    Ok(c.query_opt(&stmt, &[&name, &owner, &secs]).await?.is_some())
}

/// `worker/resign_lease.sql`: gives up `name` if `owner` holds it.
pub(crate) async fn resign_lease(c: &impl GenericClient, name: &str, owner: &str) -> Result<()> {
    c.execute(RESIGN_LEASE, &[&name, &owner]).await?;
    Ok(())
}

/// `worker/try_lead.sql`: true when this transaction now holds lock `key`.
pub(crate) async fn try_lead(c: &impl GenericClient, key: i64) -> Result<bool> {
    Ok(c.query_one(TRY_LEAD, &[&key]).await?.try_get(0)?)
}

/// `worker/notification_usage.sql`: the NOTIFY queue's fill ratio.
pub(crate) async fn notification_usage(c: &impl GenericClient) -> Result<f64> {
    Ok(c.query_one(NOTIFICATION_USAGE, &[]).await?.try_get(0)?)
}

// ---------------------------------------------------------------- api

/// A row of `api/find_idempotent.sql`.
pub(crate) struct IdempotentRow {
    pub id: Uuid,
    pub status: String,
    /// The earlier request asked for the same job type, queue and payload.
    pub same_request: bool,
}

/// `api/find_idempotent.sql`: the job an earlier request with this key made.
pub(crate) async fn find_idempotent(
    c: &impl GenericClient,
    tenant: &str,
    key: &str,
    job_type: &str,
    queue: &str,
    payload: &Value,
) -> Result<Option<IdempotentRow>> {
    let row = c
        .query_opt(
            FIND_IDEMPOTENT,
            &[&tenant, &key, &job_type, &queue, payload],
        )
        .await?;
    row.map(|r| {
        Ok(IdempotentRow {
            id: r.try_get("id")?,
            status: r.try_get("status")?,
            same_request: r.try_get("same_request")?,
        })
    })
    .transpose()
}

/// `api/list_jobs.sql`: one tenant's jobs, newest first (rows for the
/// shim's `view`).
pub(crate) async fn api_list_jobs(
    c: &impl GenericClient,
    tenant: &str,
    status: Option<&str>,
    job_type: Option<&str>,
    limit: i64,
) -> Result<Vec<Row>> {
    Ok(
        c.query(API_LIST_JOBS, &[&tenant, &status, &job_type, &limit])
            .await?,
    )
}

/// `api/get_job.sql`: one job of one tenant, with payload and result.
pub(crate) async fn api_get_job(
    c: &impl GenericClient,
    id: Uuid,
    tenant: &str,
) -> Result<Option<Row>> {
    Ok(c.query_opt(API_GET_JOB, &[&id, &tenant]).await?)
}

/// `api/set_tenant.sql`: binds the current transaction to `tenant`.
pub(crate) async fn set_tenant(c: &impl GenericClient, tenant: &str) -> Result<()> {
    c.execute(SET_TENANT, &[&tenant]).await?;
    Ok(())
}

/// `api/job_exists.sql`.
pub(crate) async fn job_exists(c: &impl GenericClient, id: Uuid, tenant: &str) -> Result<bool> {
    Ok(c.query_opt(JOB_EXISTS, &[&id, &tenant]).await?.is_some())
}

/// `api/role_bypasses_rls.sql`: `None` when the role row cannot be read.
pub(crate) async fn role_bypasses_rls(c: &impl GenericClient) -> Result<Option<bool>> {
    let row = c.query_opt(ROLE_BYPASSES_RLS, &[]).await?;
    Ok(row.and_then(|r| r.try_get(0).ok()))
}

// ---------------------------------------------------------------- shared

/// Parameters of `shared/insert_job.sql` (and, as arrays, of
/// `shared/insert_jobs.sql`).
pub(crate) struct InsertJobParams<'a> {
    /// Made by the caller (UUIDv7, time-ordered: see migration 0010).
    pub id: Uuid,
    pub job_type: &'a str,
    pub queue: &'a str,
    pub priority: i16,
    pub payload: &'a Value,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub timeout_secs: Option<f64>,
    pub tenant: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub policy_token: Option<&'a str>,
    pub dry_run: bool,
}

/// A row of `shared/insert_job.sql`.
pub(crate) struct InsertedRow {
    pub id: Uuid,
    pub status: String,
}

/// `shared/insert_job.sql`: `None` when the tenant already used the key.
pub(crate) async fn insert_job(
    c: &impl GenericClient,
    p: &InsertJobParams<'_>,
) -> Result<Option<InsertedRow>> {
    let row = c
        .query_opt(
            INSERT_JOB,
            &[
                &p.job_type,
                &p.queue,
                &p.priority,
                p.payload,
                &p.max_attempts,
                &p.run_at,
                &p.timeout_secs,
                &p.tenant,
                &p.idempotency_key,
                &p.policy_token,
                &p.dry_run,
                &p.id,
            ],
        )
        .await?;
    row.map(|r| {
        Ok(InsertedRow {
            id: r.try_get(0)?,
            status: r.try_get(1)?,
        })
    })
    .transpose()
}

/// `shared/insert_jobs.sql`: the ids of the rows created, in one statement.
pub(crate) async fn insert_jobs(
    c: &impl GenericClient,
    jobs: &[InsertJobParams<'_>],
) -> Result<Vec<Uuid>> {
    let col = |f: &dyn Fn(&InsertJobParams<'_>) -> Option<String>| -> Vec<Option<String>> {
        jobs.iter().map(f).collect()
    };
    let job_types: Vec<&str> = jobs.iter().map(|j| j.job_type).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
    let payloads: Vec<&Value> = jobs.iter().map(|j| j.payload).collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
    let run_ats: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.run_at).collect();
    let timeouts: Vec<Option<f64>> = jobs.iter().map(|j| j.timeout_secs).collect();
    let tenants = col(&|j| j.tenant.map(String::from));
    let keys = col(&|j| j.idempotency_key.map(String::from));
    let tokens = col(&|j| j.policy_token.map(String::from));
    let dry_runs: Vec<bool> = jobs.iter().map(|j| j.dry_run).collect();
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let rows = c
        .query(
            INSERT_JOBS,
            &[
                &job_types,
                &queues,
                &priorities,
                &payloads,
                &max_attempts,
                &run_ats,
                &timeouts,
                &tenants,
                &keys,
                &tokens,
                &dry_runs,
                &ids,
            ],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Parameters of `shared/cancel_job.sql`.
pub(crate) struct CancelJobParams<'a> {
    pub id: Uuid,
    pub reason: Option<&'a str>,
    pub actor: &'a str,
    pub via: &'a str,
}

/// `shared/cancel_job.sql`: the status afterwards, or `None` when there is no
/// such unfinished job.
pub(crate) async fn cancel_job(
    c: &impl GenericClient,
    p: &CancelJobParams<'_>,
) -> Result<Option<String>> {
    let row = c
        .query_opt(CANCEL_JOB, &[&p.id, &p.reason, &p.actor, &p.via])
        .await?;
    row.map(|r| Ok(r.try_get(0)?)).transpose()
}

/// `api/cancel_job.sql`: [`cancel_job`] for one tenant, through
/// `ops_api_cancel()`; `None` when that tenant has no such unfinished job.
pub(crate) async fn api_cancel(
    c: &impl GenericClient,
    tenant: &str,
    id: Uuid,
    reason: Option<&str>,
    actor: &str,
) -> Result<Option<String>> {
    let row = c
        .query_one(API_CANCEL_JOB, &[&tenant, &id, &reason, &actor])
        .await?;
    Ok(row.try_get(0)?)
}

/// `api/enqueue.sql`: [`insert_job`] through `ops_api_enqueue()`, for the
/// shim (tenant required). No row when the tenant's idempotency key was used.
pub(crate) async fn api_enqueue(
    c: &impl GenericClient,
    p: &InsertJobParams<'_>,
) -> Result<Option<InsertedRow>> {
    let row = c
        .query_opt(
            API_ENQUEUE,
            &[
                &p.tenant,
                &p.job_type,
                &p.queue,
                &p.priority,
                p.payload,
                &p.max_attempts,
                &p.run_at,
                &p.timeout_secs,
                &p.idempotency_key,
                &p.policy_token,
                &p.dry_run,
            ],
        )
        .await?;
    row.map(|r| {
        Ok(InsertedRow {
            id: r.try_get(0)?,
            status: r.try_get(1)?,
        })
    })
    .transpose()
}

/// `worker/unhandled_types.sql`: `(type, queued count)` for at most `limit`
/// types not in `handled`, largest first.
pub(crate) async fn unhandled_types(
    c: &impl GenericClient,
    handled: &[String],
    limit: i64,
) -> Result<Vec<(String, i64)>> {
    let rows = c.query(UNHANDLED_TYPES, &[&handled, &limit]).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// `shared/session_ssl.sql`: whether this session is encrypted.
pub(crate) async fn session_ssl(c: &impl GenericClient) -> Result<bool> {
    Ok(c.query_one(SESSION_SSL, &[]).await?.try_get(0)?)
}

/// `worker/token_use.sql`: the job that first carried `token`, if any.
pub(crate) async fn token_use(c: &impl GenericClient, token: &str) -> Result<Option<Uuid>> {
    let row = c.query_opt(TOKEN_USE, &[&token]).await?;
    row.map(|r| Ok(r.try_get(0)?)).transpose()
}

/// `shared/retry_job.sql`: false when the job is not failed or cancelled.
pub(crate) async fn retry_job(
    c: &impl GenericClient,
    id: Uuid,
    reason: Option<&str>,
    actor: &str,
) -> Result<bool> {
    Ok(c.query_opt(RETRY_JOB, &[&id, &reason, &actor])
        .await?
        .is_some())
}

/// Parameters of `shared/set_flag.sql`.
pub(crate) struct SetFlagParams<'a> {
    pub name: &'a str,
    pub enabled: bool,
    pub reason: Option<&'a str>,
    pub by: &'a str,
    pub cancel_running: bool,
}

/// `shared/set_flag.sql`: how many running jobs were asked to cancel.
pub(crate) async fn set_flag(c: &impl GenericClient, p: &SetFlagParams<'_>) -> Result<i64> {
    let row = c
        .query_one(
            SET_FLAG,
            &[&p.name, &p.enabled, &p.reason, &p.by, &p.cancel_running],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// `shared/audit.sql`: one audit row.
pub(crate) async fn audit(
    c: &impl GenericClient,
    actor: &str,
    action: &str,
    target: Option<&str>,
    tenant: Option<&str>,
    detail: &Value,
) -> Result<()> {
    c.execute(AUDIT, &[&actor, &action, &target, &tenant, detail])
        .await?;
    Ok(())
}

/// `shared/key_lookup.sql`: the key stored under `hash`.
pub(crate) async fn key_lookup(c: &impl GenericClient, hash: &[u8]) -> Result<Option<Row>> {
    Ok(c.query_opt(KEY_LOOKUP, &[&hash]).await?)
}

/// Parameters of `shared/key_create.sql`.
pub(crate) struct KeyCreateParams<'a> {
    pub name: &'a str,
    pub hash: &'a [u8],
    pub prefix: &'a str,
    pub scopes: &'a [String],
    pub tenant: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: &'a str,
}

/// `shared/key_create.sql`: the new key's id.
pub(crate) async fn key_create(c: &impl GenericClient, p: &KeyCreateParams<'_>) -> Result<Uuid> {
    let row = c
        .query_one(
            KEY_CREATE,
            &[
                &p.name,
                &p.hash,
                &p.prefix,
                &p.scopes,
                &p.tenant,
                &p.expires_at,
                &p.created_by,
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// `shared/key_list.sql`.
pub(crate) async fn key_list(c: &impl GenericClient) -> Result<Vec<Row>> {
    Ok(c.query(KEY_LIST, &[]).await?)
}

/// `shared/key_revoke.sql`: the revoked key's tenant, `None` when there was
/// no such active key.
pub(crate) async fn key_revoke(c: &impl GenericClient, id: Uuid) -> Result<Option<String>> {
    let row = c.query_opt(KEY_REVOKE, &[&id]).await?;
    row.map(|r| Ok(r.try_get(0)?)).transpose()
}

/// `shared/list_flags.sql`.
pub(crate) async fn list_flags(c: &impl GenericClient) -> Result<Vec<Row>> {
    Ok(c.query(LIST_FLAGS, &[]).await?)
}

/// `shared/list_jobs.sql`.
pub(crate) async fn list_jobs(
    c: &impl GenericClient,
    status: Option<&str>,
    job_type: Option<&str>,
    limit: i64,
    schedule: Option<&str>,
) -> Result<Vec<Row>> {
    Ok(c.query(LIST_JOBS, &[&status, &job_type, &limit, &schedule])
        .await?)
}

/// `shared/show_job.sql`.
pub(crate) async fn show_job(c: &impl GenericClient, id: Uuid) -> Result<Option<Row>> {
    Ok(c.query_opt(SHOW_JOB, &[&id]).await?)
}

/// `shared/job_events.sql`.
pub(crate) async fn job_events(c: &impl GenericClient, id: Uuid) -> Result<Vec<Row>> {
    Ok(c.query(JOB_EVENTS, &[&id]).await?)
}

/// `shared/tenant_bind.sql`: false when there is no such role.
pub(crate) async fn tenant_bind(
    c: &impl GenericClient,
    role: &str,
    tenant: &str,
    by: &str,
) -> Result<bool> {
    Ok(c.query_opt(TENANT_BIND, &[&role, &tenant, &by])
        .await?
        .is_some())
}

/// `shared/tenant_unbind.sql`: false when the role had no binding.
pub(crate) async fn tenant_unbind(c: &impl GenericClient, role: &str, by: &str) -> Result<bool> {
    Ok(c.query_opt(TENANT_UNBIND, &[&role, &by]).await?.is_some())
}

/// `shared/tenant_list.sql`.
pub(crate) async fn tenant_list(c: &impl GenericClient) -> Result<Vec<Row>> {
    Ok(c.query(TENANT_LIST, &[]).await?)
}

/// One job type in one queue, as `shared/overview_queues.sql` counts it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueOverview {
    /// The job type.
    pub job_type: String,
    /// The queue.
    pub queue: String,
    /// Queued and runnable now.
    pub queued: i64,
    /// Queued for later (`run_at` ahead).
    pub scheduled: i64,
    /// Running (claimed by a daemon).
    pub running: i64,
    /// Succeeded in the last minute.
    pub succeeded_last_minute: i64,
    /// Failed in the last minute.
    pub failed_last_minute: i64,
    /// Cancelled in the last minute.
    pub cancelled_last_minute: i64,
    /// Age of the oldest runnable job; `None` when none waits.
    pub oldest_queued_age_seconds: Option<f64>,
}

/// `shared/overview_queues.sql`: every tenant's jobs, or `tenant`'s; the
/// finished counts over the last `window_secs` (the fields say "minute":
/// that is `top`'s window).
pub async fn overview_queues(
    c: &impl GenericClient,
    tenant: Option<&str>,
    window_secs: f64,
) -> Result<Vec<QueueOverview>> {
    let rows = c.query(OVERVIEW_QUEUES, &[&tenant, &window_secs]).await?;
    rows.iter()
        .map(|r| {
            Ok(QueueOverview {
                job_type: r.try_get(0)?,
                queue: r.try_get(1)?,
                queued: r.try_get(2)?,
                scheduled: r.try_get(3)?,
                running: r.try_get(4)?,
                succeeded_last_minute: r.try_get(5)?,
                failed_last_minute: r.try_get(6)?,
                cancelled_last_minute: r.try_get(7)?,
                oldest_queued_age_seconds: r.try_get(8)?,
            })
        })
        .collect()
}

/// A daemon holding leases, as `shared/overview_daemons.sql` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DaemonOverview {
    /// Its lease owner name (`host:pid:random`).
    pub owner: String,
    /// Jobs it runs.
    pub running: i64,
    /// Until its latest job lease expires (a heartbeat renews it); `None`
    /// when it runs nothing.
    pub lease_expires_in_seconds: Option<f64>,
    /// It holds the maintenance lease (and exports the queue gauges).
    pub leads_maintenance: bool,
}

/// `shared/overview_daemons.sql`.
pub async fn overview_daemons(c: &impl GenericClient) -> Result<Vec<DaemonOverview>> {
    let rows = c.query(OVERVIEW_DAEMONS, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(DaemonOverview {
                owner: r.try_get(0)?,
                running: r.try_get(1)?,
                lease_expires_in_seconds: r.try_get(2)?,
                leads_maintenance: r.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
            })
        })
        .collect()
}

/// A schedule's definition, as `schedules/upsert.sql` writes it.
pub struct ScheduleParams<'a> {
    /// Its name.
    pub name: &'a str,
    /// The cron expression as given.
    pub cron: &'a str,
    /// IANA time zone.
    pub time_zone: &'a str,
    /// The job it enqueues.
    pub job_type: &'a str,
    /// Its payload.
    pub payload: &'a Value,
    /// Its queue.
    pub queue: &'a str,
    /// Its priority.
    pub priority: i16,
    /// Its attempts.
    pub max_attempts: i32,
    /// Its timeout (None: the worker's).
    pub timeout_secs: Option<f64>,
    /// `skip`, `latest` or `all`.
    pub catch_up: &'a str,
    /// The bound of `all`.
    pub catch_up_limit: i32,
    /// The first slot.
    pub next_slot: Option<DateTime<Utc>>,
    /// `cli` or `config`.
    pub source: &'a str,
    /// Replace an existing schedule of the same source.
    pub replace: bool,
    /// Who.
    pub by: &'a str,
}

/// `schedules/upsert.sql`: false when the name is taken.
pub async fn schedule_upsert(c: &impl GenericClient, p: &ScheduleParams<'_>) -> Result<bool> {
    Ok(c.query_opt(
        SCHEDULE_UPSERT,
        &[
            &p.name,
            &p.cron,
            &p.time_zone,
            &p.job_type,
            p.payload,
            &p.queue,
            &p.priority,
            &p.max_attempts,
            &p.timeout_secs,
            &p.catch_up,
            &p.catch_up_limit,
            &p.next_slot,
            &p.source,
            &p.replace,
            &p.by,
        ],
    )
    .await?
    .is_some())
}

/// One schedule, as `schedules/list.sql` reads it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleRow {
    /// Its name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub time_zone: String,
    /// The job type it enqueues.
    pub job_type: String,
    /// The payload.
    pub payload: Value,
    /// The queue.
    pub queue: String,
    /// The priority.
    pub priority: i16,
    /// The attempts.
    pub max_attempts: i32,
    /// The timeout, seconds.
    pub timeout_secs: Option<f64>,
    /// Whether it runs.
    pub enabled: bool,
    /// `skip`, `latest` or `all`.
    pub catch_up: String,
    /// The bound of `all`.
    pub catch_up_limit: i32,
    /// The first slot not yet handled.
    pub next_slot: Option<DateTime<Utc>>,
    /// The last slot that enqueued a job.
    pub last_slot: Option<DateTime<Utc>>,
    /// That job.
    pub last_job_id: Option<Uuid>,
    /// When it was enqueued.
    pub last_enqueued_at: Option<DateTime<Utc>>,
    /// Slots a catch-up policy passed over.
    pub missed_slots: i64,
    /// `cli` or `config`.
    pub source: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// By whom.
    pub updated_by: String,
}

fn schedule_row(r: &Row) -> Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: r.try_get(0)?,
        cron: r.try_get(1)?,
        time_zone: r.try_get(2)?,
        job_type: r.try_get(3)?,
        payload: r.try_get(4)?,
        queue: r.try_get(5)?,
        priority: r.try_get(6)?,
        max_attempts: r.try_get(7)?,
        timeout_secs: r.try_get(8)?,
        enabled: r.try_get(9)?,
        catch_up: r.try_get(10)?,
        catch_up_limit: r.try_get(11)?,
        next_slot: r.try_get(12)?,
        last_slot: r.try_get(13)?,
        last_job_id: r.try_get(14)?,
        last_enqueued_at: r.try_get(15)?,
        missed_slots: r.try_get(16)?,
        source: r.try_get(17)?,
        updated_at: r.try_get(18)?,
        updated_by: r.try_get(19)?,
    })
}

/// `schedules/list.sql`: all schedules, or the one named.
pub async fn schedule_list(c: &impl GenericClient, name: Option<&str>) -> Result<Vec<ScheduleRow>> {
    c.query(SCHEDULE_LIST, &[&name])
        .await?
        .iter()
        .map(schedule_row)
        .collect()
}

/// A handled slot, as `schedules/slots.sql` reads it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotRow {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// `enqueued`, `skipped` or `run_now`.
    pub outcome: String,
    /// The job it enqueued.
    pub job_id: Option<Uuid>,
    /// That job's status now (None once retention removed it).
    pub job_status: Option<String>,
    /// Why it was skipped.
    pub reason: Option<String>,
    /// When.
    pub recorded_at: DateTime<Utc>,
}

/// `schedules/slots.sql`: the latest `limit` slots of `name`.
pub async fn schedule_slots(
    c: &impl GenericClient,
    name: &str,
    limit: i64,
) -> Result<Vec<SlotRow>> {
    c.query(SCHEDULE_SLOTS, &[&name, &limit])
        .await?
        .iter()
        .map(|r| {
            Ok(SlotRow {
                slot: r.try_get(0)?,
                outcome: r.try_get(1)?,
                job_id: r.try_get(2)?,
                job_status: r.try_get(3)?,
                reason: r.try_get(4)?,
                recorded_at: r.try_get(5)?,
            })
        })
        .collect()
}

/// `schedules/set_enabled.sql`: false when no CLI-owned schedule has the name.
pub async fn schedule_set_enabled(
    c: &impl GenericClient,
    name: &str,
    enabled: bool,
    by: &str,
    next_slot: Option<DateTime<Utc>>,
) -> Result<bool> {
    Ok(
        c.query_opt(SCHEDULE_SET_ENABLED, &[&name, &enabled, &by, &next_slot])
            .await?
            .is_some(),
    )
}

/// `schedules/remove.sql`: false when no schedule of `source` has the name.
pub async fn schedule_remove(c: &impl GenericClient, name: &str, source: &str) -> Result<bool> {
    Ok(c.query_opt(SCHEDULE_REMOVE, &[&name, &source])
        .await?
        .is_some())
}

/// `schedules/due.sql`: schedules due at `now` (their `next_slot` is set),
/// locked for this transaction.
pub async fn schedule_due(c: &impl GenericClient, now: DateTime<Utc>) -> Result<Vec<ScheduleRow>> {
    c.query(SCHEDULE_DUE, &[&now])
        .await?
        .iter()
        .map(schedule_row)
        .collect()
}

/// `schedules/advance.sql`.
pub async fn schedule_advance(
    c: &impl GenericClient,
    name: &str,
    next_slot: Option<DateTime<Utc>>,
    last_slot: Option<DateTime<Utc>>,
    last_job: Option<Uuid>,
    missed: i64,
) -> Result<()> {
    c.execute(
        SCHEDULE_ADVANCE,
        &[&name, &next_slot, &last_slot, &last_job, &missed],
    )
    .await?;
    Ok(())
}

/// `schedules/record_slot.sql`.
pub async fn schedule_record_slot(
    c: &impl GenericClient,
    name: &str,
    slot: DateTime<Utc>,
    outcome: &str,
    job: Option<Uuid>,
    reason: Option<&str>,
) -> Result<()> {
    c.execute(
        SCHEDULE_RECORD_SLOT,
        &[&name, &slot, &outcome, &job, &reason],
    )
    .await?;
    Ok(())
}

/// A console session to create (`ui/session_create.sql`).
pub struct NewUiSession<'a> {
    /// SHA-256 of the cookie's token.
    pub token_hash: &'a [u8],
    /// The key signed in with (None = the master key).
    pub key_id: Option<Uuid>,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its scopes.
    pub scopes: &'a [String],
    /// Who, for the audit log.
    pub actor: &'a str,
    /// The form token of this session.
    pub csrf: &'a str,
    /// Absolute lifetime.
    pub lifetime_secs: f64,
}

/// `ui/session_create.sql`.
pub async fn ui_session_create(c: &impl GenericClient, s: &NewUiSession<'_>) -> Result<()> {
    c.execute(
        UI_SESSION_CREATE,
        &[
            &s.token_hash,
            &s.key_id,
            &s.tenant,
            &s.scopes,
            &s.actor,
            &s.csrf,
            &s.lifetime_secs,
        ],
    )
    .await?;
    Ok(())
}

/// A live console session (`ui/session_lookup.sql`).
#[derive(Debug, Clone)]
pub struct UiSession {
    /// The key (None = master).
    pub key_id: Option<Uuid>,
    /// Its tenant.
    pub tenant: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Who.
    pub actor: String,
    /// The form token.
    pub csrf: String,
}

/// `ui/session_lookup.sql`: the live session of `token_hash`, touched.
pub async fn ui_session_lookup(
    c: &impl GenericClient,
    token_hash: &[u8],
    idle_secs: f64,
) -> Result<Option<UiSession>> {
    let row = c
        .query_opt(UI_SESSION_LOOKUP, &[&token_hash, &idle_secs])
        .await?;
    row.map(|r| {
        Ok(UiSession {
            key_id: r.try_get(0)?,
            tenant: r.try_get(1)?,
            scopes: r.try_get(2)?,
            actor: r.try_get(3)?,
            csrf: r.try_get(4)?,
        })
    })
    .transpose()
}

/// `ui/session_revoke.sql`.
pub async fn ui_session_revoke(c: &impl GenericClient, token_hash: &[u8]) -> Result<()> {
    c.execute(UI_SESSION_REVOKE, &[&token_hash]).await?;
    Ok(())
}

/// Filters of the console's job list.
pub struct JobsPage<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Status filter.
    pub status: Option<&'a str>,
    /// Type filter.
    pub job_type: Option<&'a str>,
    /// Queue filter.
    pub queue: Option<&'a str>,
    /// The last id of the previous page.
    pub after: Option<Uuid>,
    /// Page size.
    pub limit: i64,
    /// Created since.
    pub since: Option<DateTime<Utc>>,
    /// Enqueued by this schedule.
    pub schedule: Option<&'a str>,
    /// Ids starting with this (hex, dashes ignored).
    pub id_prefix: Option<&'a str>,
}

/// `ui/jobs_page.sql`.
pub async fn ui_jobs_page(c: &impl GenericClient, p: &JobsPage<'_>) -> Result<Vec<Row>> {
    Ok(c.query(
        UI_JOBS_PAGE,
        &[
            &p.tenant,
            &p.status,
            &p.job_type,
            &p.queue,
            &p.after,
            &p.limit,
            &p.since,
            &p.schedule,
            &p.id_prefix,
        ],
    )
    .await?)
}

/// A bulk filter as `shared/bulk_*.sql` take it.
pub struct BulkParams<'a> {
    /// `retry` or `cancel`.
    pub action: &'a str,
    /// None: every tenant (operators only).
    pub tenant: Option<&'a str>,
    /// The status the jobs are in.
    pub status: &'a str,
    /// Only this type.
    pub job_type: Option<&'a str>,
    /// Only this queue.
    pub queue: Option<&'a str>,
    /// Only jobs finished (retry) or created (cancel) since.
    pub since: Option<DateTime<Utc>>,
}

/// `shared/bulk_count.sql`.
pub async fn bulk_count(c: &impl GenericClient, p: &BulkParams<'_>) -> Result<i64> {
    let retry = p.action == "retry";
    Ok(c.query_one(
        BULK_COUNT,
        &[
            &p.tenant,
            &p.status,
            &p.job_type,
            &p.queue,
            &p.since,
            &retry,
        ],
    )
    .await?
    .try_get(0)?)
}

/// `shared/bulk_batch.sql`: the ids changed in one batch.
pub async fn bulk_batch(
    c: &impl GenericClient,
    p: &BulkParams<'_>,
    after: Option<Uuid>,
    limit: i32,
    reason: Option<&str>,
) -> Result<Vec<Uuid>> {
    c.query(
        BULK_BATCH,
        &[
            &p.action,
            &p.tenant,
            &p.status,
            &p.job_type,
            &p.queue,
            &p.since,
            &after,
            &limit,
            &reason,
        ],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get(0)?))
    .collect()
}

/// `ui/set_flag.sql`.
pub async fn ui_set_flag(
    c: &impl GenericClient,
    name: &str,
    enabled: bool,
    reason: &str,
    by: &str,
) -> Result<()> {
    c.execute(UI_SET_FLAG, &[&name, &enabled, &reason, &by])
        .await?;
    Ok(())
}

/// `ui/audit_page.sql`.
pub async fn ui_audit_page(
    c: &impl GenericClient,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Row>> {
    Ok(c.query(UI_AUDIT_PAGE, &[&before, &limit]).await?)
}

/// `ui/retry_job.sql`: the id when the job went back to the queue.
pub async fn ui_retry_job(
    c: &impl GenericClient,
    tenant: &str,
    id: Uuid,
    by: &str,
) -> Result<Option<Uuid>> {
    Ok(c.query_one(UI_RETRY_JOB, &[&tenant, &id, &by])
        .await?
        .try_get(0)?)
}

/// `ui/throughput.sql`: (minute, succeeded, failed) over the last hour.
pub async fn ui_throughput(
    c: &impl GenericClient,
    tenant: &str,
) -> Result<Vec<(DateTime<Utc>, i64, i64)>> {
    c.query(UI_THROUGHPUT, &[&tenant])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// `ui/schedule_set_enabled.sql`.
pub async fn ui_schedule_set_enabled(
    c: &impl GenericClient,
    name: &str,
    enabled: bool,
    next_slot: Option<DateTime<Utc>>,
    by: &str,
) -> Result<bool> {
    Ok(
        c.query_one(UI_SCHEDULE_SET_ENABLED, &[&name, &enabled, &next_slot, &by])
            .await?
            .try_get(0)?,
    )
}

/// `ui/schedule_run_now.sql`.
pub async fn ui_schedule_run_now(
    c: &impl GenericClient,
    name: &str,
    by: &str,
) -> Result<Option<Uuid>> {
    Ok(c.query_one(UI_SCHEDULE_RUN_NOW, &[&name, &by])
        .await?
        .try_get(0)?)
}

/// A job type's limit rules (`ops_type_limits`), any of them optional.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct LimitRules {
    /// At most this many running at once, across every daemon.
    pub max_running: Option<i32>,
    /// At most `.0` started per `.1` seconds (1 or 60), across every daemon.
    pub rate: Option<(i32, f64)>,
    /// At most this many running per tenant.
    pub per_tenant_max_running: Option<i32>,
    /// Claimed round-robin across tenants (implied by a per-tenant limit).
    pub fair: bool,
}

impl LimitRules {
    /// Whether claims of the type go round-robin across tenants.
    pub fn claims_fairly(&self) -> bool {
        self.fair || self.per_tenant_max_running.is_some()
    }

    fn from_row(r: &Row, at: usize) -> Result<Self> {
        let rate: Option<i32> = r.try_get(at + 1)?;
        let period: Option<f64> = r.try_get(at + 2)?;
        Ok(Self {
            max_running: r.try_get(at)?,
            rate: rate.zip(period),
            per_tenant_max_running: r.try_get(at + 3)?,
            fair: r.try_get(at + 4)?,
        })
    }
}

/// `worker/type_limits.sql`: every limited type with its rules.
pub(crate) async fn type_limits(c: &impl CachingClient) -> Result<Vec<(String, LimitRules)>> {
    let stmt = c.prepare_cached(TYPE_LIMITS).await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, LimitRules::from_row(r, 1)?)))
        .collect()
}

/// A limited type's row as `worker/lock_type_limit.sql` locks it.
#[derive(Debug, Clone)]
pub(crate) struct LockedLimit {
    pub rules: LimitRules,
    /// The rate window: its start (epoch seconds), starts in it, starts in
    /// the window before.
    pub window_start: Option<f64>,
    pub window_count: i32,
    pub previous_count: i32,
    /// The tenant a fair claim served last.
    pub fair_after: Option<String>,
    /// The database's clock, epoch seconds.
    pub db_now: f64,
}

/// `worker/lock_type_limit.sql`: the type's row, locked until the
/// transaction ends; `None` when the limit was cleared meanwhile.
pub(crate) async fn lock_type_limit(
    c: &impl CachingClient,
    job_type: &str,
) -> Result<Option<LockedLimit>> {
    let stmt = c.prepare_cached(LOCK_TYPE_LIMIT).await?;
    let Some(r) = c.query_opt(&stmt, &[&job_type]).await? else {
        return Ok(None);
    };
    Ok(Some(LockedLimit::from_row(&r)?))
}

impl LockedLimit {
    /// Columns 0-9 as `worker/lock_type_limit.sql` and
    /// `worker/limit_held.sql` both select them.
    fn from_row(r: &Row) -> Result<Self> {
        Ok(Self {
            rules: LimitRules::from_row(r, 0)?,
            window_start: r.try_get(5)?,
            window_count: r.try_get(6)?,
            previous_count: r.try_get(7)?,
            fair_after: r.try_get(8)?,
            db_now: r.try_get(9)?,
        })
    }
}

/// `worker/count_running.sql`: (tenant, running jobs) of the type.
pub(crate) async fn count_running(
    c: &impl CachingClient,
    job_type: &str,
) -> Result<Vec<(String, i64)>> {
    let stmt = c.prepare_cached(COUNT_RUNNING).await?;
    c.query(&stmt, &[&job_type])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// `worker/claim_limited.sql`: at most `take` jobs of `job_type`, in
/// (priority, run_at) order.
pub(crate) async fn claim_limited(
    c: &impl CachingClient,
    job_type: &str,
    p: &ClaimParams<'_>,
    take: i64,
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(CLAIM_LIMITED).await?;
    Ok(c.query(
        &stmt,
        &[
            &job_type,
            &p.queues,
            &p.limit,
            &p.owner,
            &p.lease_secs,
            &take,
        ],
    )
    .await?)
}

/// The tenant-related parameters of `worker/claim_fair.sql`.
pub(crate) struct FairParams<'a> {
    /// The tenant served last.
    pub after: Option<&'a str>,
    /// Tenants with running jobs of the type, and how many.
    pub running_tenants: Vec<&'a str>,
    pub running_counts: Vec<i64>,
    /// The most each tenant may run.
    pub per_tenant_max: Option<i32>,
}

/// `worker/claim_fair.sql`: at most `take` jobs of `job_type`,
/// round-robin across tenants. Each row also carries `fair_round` and
/// `fair_pos` (int8).
pub(crate) async fn claim_fair(
    c: &impl CachingClient,
    job_type: &str,
    p: &ClaimParams<'_>,
    take: i64,
    f: &FairParams<'_>,
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(CLAIM_FAIR).await?;
    Ok(c.query(
        &stmt,
        &[
            &job_type,
            &p.queues,
            &take,
            &p.owner,
            &p.lease_secs,
            &f.after,
            &f.running_tenants,
            &f.running_counts,
            &f.per_tenant_max,
        ],
    )
    .await?)
}

/// `worker/save_limit_state.sql`: the rate window and fair cursor after a
/// claim.
pub(crate) async fn save_limit_state(
    c: &impl CachingClient,
    job_type: &str,
    window: (Option<f64>, i32, i32),
    fair_after: Option<&str>,
) -> Result<()> {
    let stmt = c.prepare_cached(SAVE_LIMIT_STATE).await?;
    c.execute(
        &stmt,
        &[&job_type, &window.0, &window.1, &window.2, &fair_after],
    )
    .await?;
    Ok(())
}

/// One limited type as `worker/limit_held.sql` reads it: its rules and
/// state, its runnable queued jobs, its running jobs, and the runnable
/// jobs of tenants at their per-tenant limit.
#[derive(Debug, Clone)]
pub(crate) struct LimitHeld {
    pub job_type: String,
    pub locked: LockedLimit,
    pub runnable: i64,
    pub running: i64,
    pub runnable_of_capped_tenants: i64,
}

/// `worker/limit_held.sql`.
pub(crate) async fn limit_held(c: &impl CachingClient) -> Result<Vec<LimitHeld>> {
    let stmt = c.prepare_cached(LIMIT_HELD).await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(LimitHeld {
                job_type: r.try_get(10)?,
                locked: LockedLimit::from_row(r)?,
                runnable: r.try_get(11)?,
                running: r.try_get(12)?,
                runnable_of_capped_tenants: r.try_get(13)?,
            })
        })
        .collect()
}

/// `shared/limit_set.sql`: writes the type's whole rule set.
pub async fn limit_set(
    c: &impl GenericClient,
    job_type: &str,
    rules: &LimitRules,
    by: &str,
) -> Result<()> {
    let (rate, period) = rules.rate.unzip();
    c.execute(
        LIMIT_SET,
        &[
            &job_type,
            &rules.max_running,
            &rate,
            &period,
            &rules.per_tenant_max_running,
            &rules.fair,
            &by,
        ],
    )
    .await?;
    Ok(())
}

/// `shared/ensure_fair_index.sql`: whether the index was built now.
pub async fn ensure_fair_index(c: &impl GenericClient) -> Result<bool> {
    Ok(c.query_one(ENSURE_FAIR_INDEX, &[]).await?.try_get(0)?)
}

/// `shared/limit_clear.sql`: whether a limit was removed.
pub async fn limit_clear(c: &impl GenericClient, job_type: &str, by: &str) -> Result<bool> {
    Ok(c.query_one(LIMIT_CLEAR, &[&job_type, &by])
        .await?
        .try_get::<_, i64>(0)?
        > 0)
}

/// A limit as `shared/limit_list.sql` reads it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimitRow {
    /// The type.
    pub job_type: String,
    /// Its rules.
    pub rules: LimitRules,
    /// Its running jobs now.
    pub running: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// By whom.
    pub updated_by: String,
}

/// `shared/limit_list.sql`.
pub async fn limit_list(c: &impl GenericClient) -> Result<Vec<LimitRow>> {
    c.query(LIMIT_LIST, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(LimitRow {
                rules: LimitRules::from_row(r, 0)?,
                job_type: r.try_get(5)?,
                running: r.try_get(6)?,
                updated_at: r.try_get(7)?,
                updated_by: r.try_get(8)?,
            })
        })
        .collect()
}

/// `migrate/lock.sql`: waits for the migration advisory lock `key`.
pub(crate) async fn migrate_lock(c: &impl GenericClient, key: i64) -> Result<()> {
    c.execute(MIGRATE_LOCK, &[&key]).await?;
    Ok(())
}

/// `migrate/unlock.sql`: releases the migration advisory lock `key`.
pub(crate) async fn migrate_unlock(c: &impl GenericClient, key: i64) -> Result<()> {
    c.execute(MIGRATE_UNLOCK, &[&key]).await?;
    Ok(())
}

/// `migrate/ensure_table.sql`: makes the migrations table if it is missing.
pub(crate) async fn migrate_ensure_table(c: &impl GenericClient) -> Result<()> {
    c.batch_execute(MIGRATE_ENSURE_TABLE).await?;
    Ok(())
}

/// `migrate/record.sql`: records migration `version` as applied.
pub(crate) async fn migrate_record(c: &impl GenericClient, version: i32, name: &str) -> Result<()> {
    c.execute(MIGRATE_RECORD, &[&version, &name]).await?;
    Ok(())
}

/// `migrate/table_exists.sql` then `migrate/current_version.sql`: the
/// schema version, `None` when the database was never migrated.
pub(crate) async fn migrate_current_version(c: &impl GenericClient) -> Result<Option<i32>> {
    let exists: bool = c.query_one(MIGRATE_TABLE_EXISTS, &[]).await?.try_get(0)?;
    if !exists {
        return Ok(None);
    }
    Ok(Some(
        c.query_one(MIGRATE_CURRENT_VERSION, &[])
            .await?
            .try_get(0)?,
    ))
}

/// `schedules/lock.sql`: waits for the advisory lock `key` until the
/// transaction ends.
pub(crate) async fn schedule_lock(c: &impl GenericClient, key: i64) -> Result<()> {
    c.execute(SCHEDULE_LOCK, &[&key]).await?;
    Ok(())
}

/// `shared/ping.sql`, as a simple query (no statement to prepare): whether
/// the connection answers.
pub(crate) async fn ping(c: &tokio_postgres::Client) -> Result<()> {
    c.simple_query(PING).await?;
    Ok(())
}
