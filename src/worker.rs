//! The daemon: wires the listener, flag reloader, producer, executors,
//! completer, heartbeat and maintenance together, and stops them in order.
//!
//! Cancellation is one token tree. `shutdown` (SIGTERM) stops claiming;
//! running jobs then get `shutdown_timeout` to finish; after that the job tree
//! root is cancelled and unfinished jobs go back to `queued` with their
//! attempt refunded. Background tasks stop last, after the completer drained.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::config::{Config, DbConfig, DbUrl, WorkerConfig};
use crate::error::{Error, Result};
use crate::executor::CancelReason;
use crate::flags::FlagSet;
use crate::handlers::Registry;
use crate::producer::Producer;

/// Jobs shorter than this on average are prefetched (see `jobs_are_short`).
pub(crate) const PREFETCH_SHORT_JOB: Duration = Duration::from_millis(50);

/// Counters, readable while the worker runs (tests, metrics, STATUS=).
#[derive(Debug, Default)]
pub struct Stats {
    pub claimed: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub cancelled: AtomicU64,
    pub requeued: AtomicU64,
    /// Completions refused by the fencing check.
    pub stale_completions: AtomicU64,
    /// Jobs claimed by a fetch that a NOTIFY woke, or that the poll timer woke.
    pub notify_claims: AtomicU64,
    pub poll_claims: AtomicU64,
    pub notifications: AtomicU64,
    pub listener_reconnects: AtomicU64,
    pub rescued: AtomicU64,
    pub db_errors: AtomicU64,
}

struct RunningJob {
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

/// State shared by the worker's tasks.
pub(crate) struct Shared {
    /// Swapped on SIGHUP; readers take a snapshot with `cfg()`.
    cfg: RwLock<Arc<WorkerConfig>>,
    pub db_config: DbConfig,
    pub retention: crate::config::RetentionConfig,
    pub listen_url: DbUrl,
    /// This process's lease owner name: `host:pid:random`.
    pub owner: String,
    pub pool: Pool,
    /// Action job types and the secret their tokens are checked with. Fixed
    /// for the life of the process (a new secret needs a restart).
    pub policy: crate::policy::Policy,
    /// Swapped on SIGHUP; a running job keeps the handler it started with.
    registry: RwLock<Arc<Registry>>,
    pub flags: FlagSet,
    pub stats: Arc<Stats>,
    /// Jobs may be waiting (NOTIFY, catch-up, rescue, flag change).
    pub wake: Notify,
    pub slot_freed: Notify,
    pub flags_changed: Notify,
    /// A cancellation was requested somewhere: check our running jobs now.
    pub cancel_check: Notify,
    pub listener_up: AtomicBool,
    /// Health marks, in ms since `started` (see `systemd::unhealthy`).
    pub last_db_ok_ms: AtomicU64,
    pub last_loop_ms: AtomicU64,
    /// Recent job run time in µs (moving average), for the prefetch rule.
    job_time_us: AtomicU64,
    started: std::time::Instant,
    running: Mutex<HashMap<Uuid, RunningJob>>,
}

impl Shared {
    pub fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn db_error(&self) {
        self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("opsrunner_db_errors_total").increment(1);
    }

    pub fn mark_db_ok(&self) {
        self.last_db_ok_ms.store(self.clock_ms(), Ordering::Relaxed);
    }

    pub fn mark_loop(&self) {
        self.last_loop_ms.store(self.clock_ms(), Ordering::Relaxed);
    }

    /// Folds one job's run time into the moving average (weight 1/8).
    /// Concurrent updates may lose one sample; the average stays sound.
    pub fn record_job_time(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let old = self.job_time_us.load(Ordering::Relaxed);
        self.job_time_us
            .store(old - old / 8 + us / 8, Ordering::Relaxed);
    }

    /// A prefetched job waited too long for a slot: count jobs as long.
    pub fn record_long_wait(&self) {
        self.job_time_us
            .fetch_max(PREFETCH_SHORT_JOB.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prefetching pays only while jobs are about as short as a claim's
    /// round trip; for longer jobs the saved round trip is noise, and a job
    /// held here waits while another worker might be idle.
    pub fn jobs_are_short(&self) -> bool {
        self.job_time_us.load(Ordering::Relaxed) < PREFETCH_SHORT_JOB.as_micros() as u64
    }

    pub fn cfg(&self) -> Arc<WorkerConfig> {
        match self.cfg.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        match self.registry.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
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
        self.flags.is_enabled(crate::flags::PAUSE_FLAG)
    }

    pub fn track_running(
        &self,
        id: Uuid,
        parent: &CancellationToken,
    ) -> (CancellationToken, Arc<OnceLock<CancelReason>>) {
        let token = parent.child_token();
        let reason = Arc::new(OnceLock::new());
        if let Ok(mut m) = self.running.lock() {
            m.insert(
                id,
                RunningJob {
                    token: token.clone(),
                    reason: reason.clone(),
                },
            );
            metrics::gauge!("opsrunner_jobs_running").set(m.len() as f64);
        }
        (token, reason)
    }

    pub fn forget_running(&self, ids: impl Iterator<Item = Uuid>) {
        if let Ok(mut m) = self.running.lock() {
            for id in ids {
                m.remove(&id);
            }
            metrics::gauge!("opsrunner_jobs_running").set(m.len() as f64);
        }
    }

    pub fn running_ids(&self) -> Vec<Uuid> {
        self.running
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn cancel_running(&self, id: Uuid, why: CancelReason) {
        let Ok(m) = self.running.lock() else { return };
        if let Some(job) = m.get(&id)
            && !job.token.is_cancelled()
        {
            let _ = job.reason.set(why);
            if why == CancelReason::Requested {
                metrics::counter!("opsrunner_cancel_requests_total").increment(1);
            }
            job.token.cancel();
            tracing::info!(job_id = %id, reason = ?why, "cancelling running job");
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn lease_owner() -> String {
    let suffix: u32 = rand::random();
    format!("{}:{}:{suffix:08x}", hostname(), std::process::id())
}

pub struct Worker {
    shared: Arc<Shared>,
    ready_tx: watch::Sender<bool>,
}

/// Applies a new configuration to a running worker (SIGHUP). Running jobs are
/// untouched: they keep the handler and timeout they started with.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

impl Reloader {
    /// Swaps in `settings.worker` and `registry`. Returns the settings that
    /// changed but only take effect after a restart (they were kept as they
    /// are).
    pub fn apply(
        &self,
        settings: &crate::config::Settings,
        registry: Registry,
    ) -> Result<Vec<&'static str>> {
        crate::systemd::reloading();
        let result = self.apply_inner(settings, registry);
        crate::systemd::reloaded();
        result
    }

    fn apply_inner(
        &self,
        settings: &crate::config::Settings,
        registry: Registry,
    ) -> Result<Vec<&'static str>> {
        settings.validate()?;
        let old = self.shared.cfg();
        let mut new = settings.worker.clone();
        let mut needs_restart = Vec::new();
        if new.concurrency != old.concurrency {
            needs_restart.push("worker.concurrency");
            new.concurrency = old.concurrency;
        }
        if new.completion_batch != old.completion_batch {
            needs_restart.push("worker.completion_batch");
            new.completion_batch = old.completion_batch;
        }
        if serde_json::to_value(&settings.db).ok()
            != serde_json::to_value(&self.shared.db_config).ok()
        {
            needs_restart.push("db.*");
        }
        if let Ok(mut c) = self.shared.cfg.write() {
            *c = Arc::new(new);
        }
        if let Ok(mut r) = self.shared.registry.write() {
            *r = Arc::new(registry);
        }
        // New job types or shorter intervals: look for work now.
        self.shared.flags_changed.notify_one();
        self.shared.wake.notify_one();
        tracing::info!(registered = ?self.shared.registry().sorted_job_types(), "configuration reloaded");
        Ok(needs_restart)
    }
}

impl Worker {
    /// Builds the worker; connects nothing yet.
    pub fn new(config: &Config, registry: Registry) -> Result<Self> {
        config.settings.validate()?;
        let policy = config.policy()?;
        let pool = crate::db::worker_pool(&config.database_url, &config.settings.db)?;
        let shared = Shared {
            cfg: RwLock::new(Arc::new(config.settings.worker.clone())),
            db_config: config.settings.db.clone(),
            retention: config.settings.retention.clone(),
            listen_url: config.listen_url.clone(),
            owner: lease_owner(),
            pool,
            policy,
            registry: RwLock::new(Arc::new(registry)),
            flags: FlagSet::default(),
            stats: Arc::new(Stats::default()),
            wake: Notify::new(),
            slot_freed: Notify::new(),
            // Unknown until jobs have run: assume long, so a daemon that
            // starts on a queue of hour-long jobs holds none back.
            job_time_us: AtomicU64::new(PREFETCH_SHORT_JOB.as_micros() as u64),
            flags_changed: Notify::new(),
            cancel_check: Notify::new(),
            listener_up: AtomicBool::new(false),
            last_db_ok_ms: AtomicU64::new(0),
            last_loop_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
            running: Mutex::new(HashMap::new()),
        };
        let (ready_tx, _) = watch::channel(false);
        Ok(Self {
            shared: Arc::new(shared),
            ready_tx,
        })
    }

    /// Becomes true once LISTEN is established and the first fetch is due.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready_tx.subscribe()
    }

    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    /// Readiness for `/readyz`: `None` when healthy, else why not.
    pub fn ready_check(&self) -> crate::metrics::ReadyCheck {
        let shared = self.shared.clone();
        Arc::new(move || crate::systemd::unhealthy(&shared))
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The name this worker writes into `lease_owner`.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Runs until `shutdown` is cancelled, then drains and returns.
    /// Fails at start-up on an unmigrated database.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let shared = self.shared;
        if !wait_for_schema(&shared, &shutdown).await? {
            return Ok(());
        }
        if let Err(e) = crate::flags::reload(&shared).await {
            tracing::warn!(error = %e, "initial flag load failed; retrying in the background");
        }
        tracing::info!(
            owner = %shared.owner,
            concurrency = shared.cfg().concurrency,
            enabled = ?shared.enabled_job_types(),
            registered = ?shared.registry().sorted_job_types(),
            "worker starting"
        );

        let background = CancellationToken::new();
        let mut tasks = vec![
            tokio::spawn(crate::listener::run(
                shared.clone(),
                self.ready_tx.clone(),
                background.clone(),
            )),
            tokio::spawn(crate::flags::run_reloader(
                shared.clone(),
                background.clone(),
            )),
            tokio::spawn(crate::heartbeat::run(shared.clone(), background.clone())),
            tokio::spawn(crate::maintenance::run(shared.clone(), background.clone())),
            tokio::spawn(crate::systemd::run(
                shared.clone(),
                self.ready_tx.subscribe(),
                background.clone(),
            )),
        ];

        let (completions_tx, completions_rx) = mpsc::channel(shared.cfg().completion_batch * 4);
        let give_up = CancellationToken::new();
        let completer = tokio::spawn(crate::completer::run(
            shared.clone(),
            completions_rx,
            give_up.clone(),
        ));

        let slots = Arc::new(Semaphore::new(shared.cfg().concurrency));
        let tracker = TaskTracker::new();
        let jobs_root = CancellationToken::new();
        let producer = Producer {
            shared: shared.clone(),
            slots,
            completions: completions_tx,
            tracker: tracker.clone(),
            jobs_root: jobs_root.clone(),
            prefetched: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        };
        let producer_task = tokio::spawn(producer.run(shutdown.clone()));

        // The claimer and the background tasks run until shutdown; if one
        // ends any other way (a bug), the daemon must not linger half alive:
        // stop, and fail so that systemd restarts it.
        let mut producer_task = producer_task;
        let mut crashed = false;
        let mut finished_task = None;
        tokio::select! {
            // Shutdown first: the claimer ends normally right after it, and
            // that must not be mistaken for a crash.
            biased;
            _ = shutdown.cancelled() => {}
            r = &mut producer_task => {
                tracing::error!(result = ?r.err(), "the claimer stopped unexpectedly; shutting down");
                crashed = !shutdown.is_cancelled();
                shutdown.cancel();
            }
            (r, i, _) = futures_util::future::select_all(tasks.iter_mut()) => {
                let name = ["listener", "flag reloader", "heartbeat", "maintenance", "systemd notifier"].get(i).copied().unwrap_or("?");
                tracing::error!(task = name, result = ?r.err(), "a background task stopped unexpectedly; shutting down");
                crashed = true;
                finished_task = Some(i);
                shutdown.cancel();
            }
        }
        if let Some(i) = finished_task {
            // Already joined; a JoinHandle must not be awaited twice.
            drop(tasks.remove(i));
        }
        if !crashed {
            let _ = producer_task.await;
        }
        crate::systemd::stopping();
        let running = shared.running_ids().len();
        tracing::info!(running, timeout = ?shared.cfg().shutdown_timeout, "stopping: claiming stopped, draining running jobs");
        tracker.close();
        if tokio::time::timeout(shared.cfg().shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "drain timeout reached; cancelling running jobs and returning them to the queue"
            );
            jobs_root.cancel();
            // Executors abandon handlers that ignore the token after cancel_grace.
            let _ = tokio::time::timeout(
                shared.cfg().cancel_grace + Duration::from_secs(1),
                tracker.wait(),
            )
            .await;
        }
        // All senders are gone once the executors are: the completer drains
        // what is left, and gets a bounded time to do so.
        let mut completer = completer;
        if tokio::time::timeout(Duration::from_secs(10), &mut completer)
            .await
            .is_err()
        {
            give_up.cancel();
            let _ = completer.await;
        }
        background.cancel();
        for t in tasks {
            let _ = t.await;
        }
        shared.pool.close();
        if crashed {
            return Err(Error::Invalid(
                "the claimer stopped unexpectedly; see the log".into(),
            ));
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Verifies the schema, retrying while the database is unreachable. Returns
/// false when shutdown was requested before the database answered.
async fn wait_for_schema(shared: &Shared, shutdown: &CancellationToken) -> Result<bool> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let attempt = async {
            let client = shared.pool.get().await.map_err(Error::from)?;
            crate::migrate::check_schema(&client).await
        };
        match attempt.await {
            Ok(()) => return Ok(true),
            Err(e) if crate::db::is_transient(&e) => {
                shared.db_error();
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "database not reachable at start-up; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}
