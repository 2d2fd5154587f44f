//! What the worker's services share, in five documented parts, so that each
//! service's needs can be read off the parts it touches (and narrowed to
//! them later, as River's per-service configs do). A leaf: it imports no
//! sibling service.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::db::Pool;
use tokio::sync::Notify;

use super::flag_cache::FlagSet;
use super::prefetch::Prefetch;
use super::running::RunningJobs;
use super::stats::Stats;
use crate::config::{DbConfig, DbUrl, RetentionConfig, WorkerConfig};
use crate::handlers::Registry;

/// Limited job types with their rules.
pub(crate) type Limits = std::collections::HashMap<String, crate::db::queries::LimitRules>;

/// What may be claimed and how: swapped on SIGHUP (config, registry) or on a
/// flag change (flags). A running job keeps the handler and timeout it
/// started with.
pub(crate) struct Live {
    /// `[worker]`; readers take a snapshot with [`Live::cfg`].
    cfg: RwLock<Arc<WorkerConfig>>,
    /// Handlers by type; readers take a snapshot with [`Live::registry`].
    registry: RwLock<Arc<Registry>>,
    /// The flags that are on, reloaded on NOTIFY and every
    /// `flags_reload_interval`.
    pub flags: FlagSet,
    /// Per-type concurrency limits (`ops_type_limits`), reloaded with the
    /// flags: the claimer claims these types one at a time, under the limit.
    pub limits: RwLock<Arc<Limits>>,
}

impl Live {
    pub fn new(cfg: WorkerConfig, registry: Registry) -> Self {
        Self {
            cfg: RwLock::new(Arc::new(cfg)),
            registry: RwLock::new(Arc::new(registry)),
            flags: FlagSet::default(),
            limits: RwLock::new(Arc::default()),
        }
    }

    /// The current per-type limits.
    pub fn limits(&self) -> Arc<Limits> {
        match self.limits.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current `[worker]` settings.
    pub fn cfg(&self) -> Arc<WorkerConfig> {
        match self.cfg.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current handlers.
    pub fn registry(&self) -> Arc<Registry> {
        match self.registry.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in new settings and handlers (SIGHUP).
    pub fn replace(&self, cfg: WorkerConfig, registry: Registry) {
        if let Ok(mut c) = self.cfg.write() {
            *c = Arc::new(cfg);
        }
        if let Ok(mut r) = self.registry.write() {
            *r = Arc::new(registry);
        }
    }

    /// Registered job types whose flag is on.
    pub fn enabled_job_types(&self) -> Vec<String> {
        if self.paused() {
            return Vec::new();
        }
        let mut v = self.registry().sorted_job_types();
        v.retain(|t| self.flags.is_enabled(t));
        v
    }

    /// Whether `job_type` is among `enabled_job_types()`, without building
    /// the list (checked for each prefetched job as it starts).
    pub fn job_type_enabled(&self, job_type: &str) -> bool {
        !self.paused() && self.flags.is_enabled(job_type) && self.registry().get(job_type).is_some()
    }

    fn paused(&self) -> bool {
        self.flags.is_enabled(crate::jobs::PAUSE_FLAG)
    }
}

/// Wake-ups between services; each is a `Notify`, so a wake-up sent while
/// nobody waits is kept for the next wait (one permit).
#[derive(Default)]
pub(crate) struct Signals {
    /// Jobs may be waiting (NOTIFY, catch-up after reconnect, rescue, flag
    /// change): the claimer fetches.
    pub wake: Notify,
    /// A slot was freed after a full claim: the claimer may fetch more.
    pub slot_freed: Notify,
    /// A flag changed (NOTIFY) or the listener reconnected: reload flags.
    pub flags_changed: Notify,
    /// A cancellation was requested somewhere: check our running jobs now.
    pub cancel_check: Notify,
    /// The config file's `[[schedule]]` entries changed (SIGHUP): apply them.
    pub schedules_changed: Notify,
}

/// What the watchdog and `/readyz` judge health by.
pub(crate) struct Health {
    /// The LISTEN connection is established.
    pub listener_up: AtomicBool,
    /// When a database call last succeeded, in ms since `started`.
    pub last_db_ok_ms: AtomicU64,
    /// When the claim loop last turned, in ms since `started`.
    pub last_loop_ms: AtomicU64,
    /// The clock the two marks count from.
    started: Instant,
    /// The database's clock minus ours, in microseconds (last measured).
    pub clock_offset_us: std::sync::atomic::AtomicI64,
    /// The offset is past `worker.clock_offset_limit` (warned once).
    pub clock_off: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            listener_up: AtomicBool::new(false),
            last_db_ok_ms: AtomicU64::new(0),
            last_loop_ms: AtomicU64::new(0),
            started: Instant::now(),
            clock_offset_us: std::sync::atomic::AtomicI64::new(0),
            clock_off: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// Milliseconds since the worker was built.
    pub fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Everything the worker's tasks share.
pub(crate) struct Shared {
    /// What may be claimed (config, handlers, flags).
    pub live: Live,
    /// Wake-ups between services.
    pub signals: Signals,
    /// Health marks for the watchdog and `/readyz`.
    pub health: Health,
    /// Jobs this process runs or holds, with their tokens.
    pub running: RunningJobs,
    /// The prefetch rule's state.
    pub prefetch: Prefetch,
    /// `[db]` as started (a change needs a restart).
    pub db_config: DbConfig,
    /// `[retention]`, for the elected pruner.
    pub retention: RetentionConfig,
    /// Where the LISTEN connection goes (`OPSRUNNER_LISTEN_URL`).
    pub listen_url: DbUrl,
    /// Where the pool connects (`DATABASE_URL`): whether its host is this
    /// machine decides the start-up warning about a plaintext connection.
    pub pool_url: DbUrl,
    /// This process's lease owner name: `host:pid:random`.
    pub owner: String,
    /// Claims, completions, heartbeats, maintenance (generic plans).
    pub pool: Pool,
    /// The client-side deadline of each database call (`db.call_timeout`).
    pub call_timeout: std::time::Duration,
    /// Action job types and the secret their tokens are checked with. Fixed
    /// for the life of the process (a new secret needs a restart).
    pub policy: crate::policy::Policy,
    /// Counters for tests, embedders and STATUS=.
    pub stats: Arc<Stats>,
    /// The config file's `[[schedule]]` entries, applied by the scheduler.
    pub config_schedules: std::sync::RwLock<Arc<Vec<crate::schedules::ScheduleSpec>>>,
    /// Rate limit of the per-job outcome lines.
    pub outcome_log: super::outcome_log::OutcomeLog,
}

impl Shared {
    /// The current `[worker]` settings.
    pub fn cfg(&self) -> Arc<WorkerConfig> {
        self.live.cfg()
    }

    /// The metrics the configuration decides: every known counter label set
    /// at 0 (registered types × configured queues × outcomes, reasons,
    /// sources) and the slot count. At start and after each reload.
    pub fn publish_static_metrics(&self) {
        let cfg = self.cfg();
        crate::metrics::zero_counters(
            crate::metrics::catalog::Exporter::Worker,
            &self.live.registry().sorted_job_types(),
            &cfg.queues,
        );
        metrics::gauge!("opsrunner_worker_slots").set(cfg.concurrency as f64);
    }

    /// Counts a failed database call.
    pub fn db_error(&self) {
        self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("opsrunner_db_errors_total").increment(1);
    }

    /// Marks a successful database call (health).
    pub fn mark_db_ok(&self) {
        self.health
            .last_db_ok_ms
            .store(self.health.clock_ms(), Ordering::Relaxed);
    }

    /// The database's clock minus ours, in seconds, as last measured.
    pub fn clock_offset(&self) -> f64 {
        self.health.clock_offset_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Marks a turn of the claim loop (health).
    pub fn mark_loop(&self) {
        self.health
            .last_loop_ms
            .store(self.health.clock_ms(), Ordering::Relaxed);
    }
}
