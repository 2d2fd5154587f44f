//! Every metric opsrunner exports, in one place: name, type, unit, help
//! text, labels and which process exports it. `install` describes them all
//! to the recorder (so every family has `# HELP` and `# TYPE`), histograms
//! get their buckets from here, and docs/metrics.md is checked against this
//! list by a test (tests/metrics.rs).

use metrics::Unit;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets at restart); the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in buckets, with `_sum` and `_count`.
    Histogram,
}

/// Which process exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// `opsrunner worker` (port 9464).
    Worker,
    /// `opsrunner serve`, the HTTP shim (port 9465).
    Api,
    /// Both.
    Both,
}

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The full name, base units in it (`_seconds`, `_bytes`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its unit (also said in the name).
    pub unit: Unit,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Its label names (every value of each is bounded).
    pub labels: &'static [&'static str],
    /// Who exports it.
    pub exporter: Exporter,
    /// Histogram buckets (upper bounds), empty for the other kinds.
    pub buckets: &'static [f64],
}

/// Seconds a handler ran: from a half-millisecond noop to an hour-long job.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
];
/// Seconds from `run_at` to claim: the p50 is under 2 ms on an idle worker.
pub const WAIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
/// Seconds to answer an HTTP request.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds to get a connection from a pool: 0 when one is idle, up to
/// `db.acquire_timeout` (5 s) when the pool is exhausted.
pub const ACQUIRE_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The outcomes a completion records (`opsrunner_jobs_completed_total`).
pub const OUTCOMES: &[&str] = &["succeeded", "retried", "failed", "cancelled", "requeued"];
/// Where a policy token is checked.
pub const POLICY_STAGES: &[&str] = &["api", "worker"];
/// How a claim was triggered.
pub const PICKUP_SOURCES: &[&str] = &["notify", "poll"];
/// Why the shim refused a key.
pub const AUTH_FAILURE_REASONS: &[&str] = &[
    "missing",
    "duplicate",
    "unknown",
    "revoked",
    "expired",
    "scope",
];
/// Which rate limit answered 429.
pub const RATE_LIMITS: &[&str] = &["ip", "key"];

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    exporter: Exporter,
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        unit: Unit::Count,
        help,
        labels,
        exporter,
        buckets: &[],
    }
}

const fn gauge(
    name: &'static str,
    unit: Unit,
    help: &'static str,
    labels: &'static [&'static str],
    exporter: Exporter,
) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        unit,
        help,
        labels,
        exporter,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    exporter: Exporter,
    buckets: &'static [f64],
) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help,
        labels,
        exporter,
        buckets,
    }
}

use Exporter::{Api, Both, Worker};

/// Every metric, worker's first, then both's, then the shim's.
pub const CATALOG: &[Metric] = &[
    counter(
        "opsrunner_jobs_claimed_total",
        "Jobs claimed by this daemon.",
        &["job_type", "queue"],
        Worker,
    ),
    counter(
        "opsrunner_jobs_completed_total",
        "Job outcomes written by this daemon: succeeded, retried, failed, cancelled, requeued (graceful stop).",
        &["job_type", "queue", "outcome"],
        Worker,
    ),
    histogram(
        "opsrunner_job_duration_seconds",
        "Handler run time of one attempt.",
        &["job_type", "outcome"],
        Worker,
        DURATION_BUCKETS,
    ),
    histogram(
        "opsrunner_job_queue_wait_seconds",
        "Time from a job's run_at to its claim.",
        &["job_type", "queue"],
        Worker,
        WAIT_BUCKETS,
    ),
    gauge(
        "opsrunner_jobs_running",
        Unit::Count,
        "Jobs this daemon holds (running or prefetched).",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_jobs_prefetched",
        Unit::Count,
        "Claimed jobs waiting in this daemon for a free slot.",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_worker_slots",
        Unit::Count,
        "Jobs this daemon may run at once (worker.concurrency).",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_maintenance_leader",
        Unit::Count,
        "1 on the daemon that holds the maintenance leadership (and exports the queue gauges), 0 elsewhere.",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_limit_held_jobs",
        Unit::Count,
        "Runnable queued jobs of a limited type that its limit holds back now, by type and limit (max_running, rate, per_tenant; exported by the maintenance leader only).",
        &["job_type", "limit"],
        Worker,
    ),
    gauge(
        "opsrunner_queue_depth",
        Unit::Count,
        "Runnable queued jobs per queue and job type (exported by the maintenance leader only; 0 on a daemon that lost it).",
        &["queue", "job_type"],
        Worker,
    ),
    gauge(
        "opsrunner_queue_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest runnable job per queue and job type (maintenance leader only).",
        &["queue", "job_type"],
        Worker,
    ),
    gauge(
        "opsrunner_notification_queue_usage_ratio",
        Unit::Count,
        "pg_notification_queue_usage() (maintenance leader only).",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_oldest_snapshot_age_seconds",
        Unit::Seconds,
        "Age of the oldest snapshot other sessions of this database hold (maintenance leader only).",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_replication_slot_xmin_age_transactions",
        Unit::Count,
        "Transactions the oldest replication slot's xmin holds back (maintenance leader only).",
        &[],
        Worker,
    ),
    counter(
        "opsrunner_jobs_rescued_total",
        "Expired leases returned to the queue or failed by this daemon's rescuer.",
        &[],
        Worker,
    ),
    counter(
        "opsrunner_stale_completions_total",
        "Completions refused by fencing: this daemon had lost the job's lease.",
        &[],
        Worker,
    ),
    counter(
        "opsrunner_cancel_requests_total",
        "Cancel requests seen for jobs running in this daemon.",
        &[],
        Worker,
    ),
    counter(
        "opsrunner_job_pickups_total",
        "Jobs claimed after a NOTIFY wake-up or by the poll backstop.",
        &["source"],
        Worker,
    ),
    counter(
        "opsrunner_listener_reconnects_total",
        "Times the LISTEN connection was re-established.",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_feature_flag_enabled",
        Unit::Count,
        "1 when the feature flag is on (registered job types and pause-all).",
        &["flag"],
        Worker,
    ),
    counter(
        "opsrunner_db_errors_total",
        "Failed database calls (all retried), including calls past their client-side deadline.",
        &[],
        Worker,
    ),
    counter(
        "opsrunner_jobs_fenced_total",
        "Running jobs this daemon stopped itself because it could not renew their leases in time.",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_db_clock_offset_seconds",
        Unit::Seconds,
        "The database's clock minus this machine's.",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_last_prune_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last retention pass this daemon completed.",
        &[],
        Worker,
    ),
    gauge(
        "opsrunner_unhandled_queued_jobs",
        Unit::Count,
        "Queued jobs of types this daemon has no handler for (the 10 largest types, then other).",
        &["job_type"],
        Worker,
    ),
    counter(
        "opsrunner_schedule_slots_total",
        "Schedule slots handled by this daemon: enqueued, skipped (the type's flag or pause-all off) or missed (passed over by the catch-up policy).",
        &["schedule", "outcome"],
        Worker,
    ),
    gauge(
        "opsrunner_schedule_last_enqueue_age_seconds",
        Unit::Seconds,
        "Seconds since the schedule last enqueued a job (maintenance leader only).",
        &["schedule"],
        Worker,
    ),
    gauge(
        "opsrunner_schedules_behind",
        Unit::Count,
        "Enabled schedules whose next slot is more than 60 s overdue (maintenance leader only).",
        &[],
        Worker,
    ),
    counter(
        "opsrunner_limit_reached_total",
        "Claims of a limited job type that took fewer jobs than they had slots for because a limit (ops_type_limits) said so, by type and limit (max_running, rate, per_tenant).",
        &["job_type", "limit"],
        Worker,
    ),
    counter(
        "opsrunner_policy_token_refusals_total",
        "Policy tokens refused, by reason and where.",
        &["reason", "stage"],
        Both,
    ),
    gauge(
        "opsrunner_build_info",
        Unit::Count,
        "Always 1; the labels say which build runs.",
        &["version", "commit"],
        Both,
    ),
    gauge(
        "opsrunner_db_pool_size",
        Unit::Count,
        "Connections the pool holds now.",
        &["pool"],
        Both,
    ),
    gauge(
        "opsrunner_db_pool_max_size",
        Unit::Count,
        "Connections the pool may hold (db.pool_size).",
        &["pool"],
        Both,
    ),
    gauge(
        "opsrunner_db_pool_available",
        Unit::Count,
        "Idle connections in the pool.",
        &["pool"],
        Both,
    ),
    gauge(
        "opsrunner_db_pool_waiting",
        Unit::Count,
        "Callers waiting for a connection.",
        &["pool"],
        Both,
    ),
    histogram(
        "opsrunner_db_pool_acquire_seconds",
        "Time to get a connection from the pool (successful or not).",
        &["pool"],
        Both,
        ACQUIRE_BUCKETS,
    ),
    counter(
        "process_cpu_seconds_total",
        "User and system CPU time spent by this process, in seconds.",
        &[],
        Both,
    ),
    gauge(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory size.",
        &[],
        Both,
    ),
    gauge(
        "process_virtual_memory_bytes",
        Unit::Bytes,
        "Virtual memory size.",
        &[],
        Both,
    ),
    gauge(
        "process_open_fds",
        Unit::Count,
        "Open file descriptors.",
        &[],
        Both,
    ),
    gauge(
        "process_max_fds",
        Unit::Count,
        "The open file descriptor limit (LimitNOFILE).",
        &[],
        Both,
    ),
    gauge(
        "process_start_time_seconds",
        Unit::Seconds,
        "Start time of the process, seconds since the Unix epoch.",
        &[],
        Both,
    ),
    counter(
        "opsrunner_http_requests_total",
        "Requests the shim answered, by route template, method and status.",
        &["route", "method", "status"],
        Api,
    ),
    histogram(
        "opsrunner_http_request_duration_seconds",
        "Time to answer a request.",
        &["route"],
        Api,
        HTTP_BUCKETS,
    ),
    counter(
        "opsrunner_api_auth_failures_total",
        "Failed authentications (each also audited), by reason.",
        &["reason"],
        Api,
    ),
    counter(
        "opsrunner_api_rate_limited_total",
        "Requests answered 429, by the limit that was reached.",
        &["limit"],
        Api,
    ),
    counter(
        "opsrunner_api_connections_refused_total",
        "Connections closed at accept because api.max_connections or api.max_connections_per_ip was reached.",
        &[],
        Api,
    ),
];

/// The entry for `name`.
pub fn find(name: &str) -> Option<&'static Metric> {
    CATALOG.iter().find(|m| m.name == name)
}

/// Whether `m` is exported by `who` (`Both` counts for either).
pub fn exported_by(m: &Metric, who: Exporter) -> bool {
    m.exporter == who || m.exporter == Exporter::Both
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_rules_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in CATALOG {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                m.name.starts_with("opsrunner_") || m.name.starts_with("process_"),
                "{}",
                m.name
            );
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Histogram,
                !m.buckets.is_empty(),
                "{}",
                m.name
            );
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
            if m.unit == Unit::Seconds && m.kind != Kind::Counter {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
            if m.unit == Unit::Bytes {
                assert!(m.name.ends_with("_bytes"), "{}", m.name);
            }
            assert!(m.help.ends_with('.') && m.help.len() > 10, "{}", m.name);
        }
    }
}
