//! The daemon: wires the listener, flag cache, claimer, executors, completer,
//! heartbeat, maintenance and the systemd loop together, and stops them in
//! the order `shutdown::Stops` documents.
//!
//! Services share `state::Shared` (five documented parts) and import
//! `state`, `running`, `prefetch`, `stats` and `backoff`, never this module.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::handlers::Registry;

mod backoff;
mod claimer;
mod completer;
mod executor;
mod flag_cache;
mod heartbeat;
mod limits;
mod listener;
mod maintenance;
mod outcome_log;
mod prefetch;
mod reload;
mod running;
mod scheduler;
mod shutdown;
mod state;
mod stats;
mod watchdog;

pub(crate) use backoff::Backoff;
pub use maintenance::{PruneCounts, prune_all, prune_batch};
pub use reload::Reloader;
pub use stats::Stats;

use claimer::Claimer;
use shutdown::Stops;
use state::{Health, Live, Shared, Signals};

fn lease_owner() -> String {
    let suffix: u32 = rand::random();
    format!(
        "{}:{}:{suffix:08x}",
        crate::audit::hostname(),
        std::process::id()
    )
}

/// A worker daemon: build it with [`Worker::new`], then [`Worker::run`] it
/// until a token is cancelled.
pub struct Worker {
    shared: Arc<Shared>,
    ready_tx: watch::Sender<bool>,
}

impl Worker {
    /// Builds the worker from a validated `config`; connects nothing yet.
    pub fn new(config: &Config, registry: Registry) -> Result<Self> {
        let policy = config.policy()?;
        let call_timeout = config
            .settings
            .db
            .call_timeout(config.settings.worker.lease);
        let pool = crate::db::worker_pool(&config.database_url, &config.settings.db, call_timeout)?;
        let shared = Shared {
            live: Live::new(config.settings.worker.clone(), registry),
            signals: Signals::default(),
            health: Health::default(),
            running: Default::default(),
            prefetch: Default::default(),
            db_config: config.settings.db.clone(),
            retention: config.settings.retention.clone(),
            listen_url: config.listen_url.clone(),
            pool_url: config.database_url.clone(),
            owner: lease_owner(),
            pool,
            call_timeout,
            policy,
            stats: Arc::new(Stats::default()),
            outcome_log: Default::default(),
            config_schedules: std::sync::RwLock::new(Arc::new(config.settings.schedule.clone())),
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

    /// A handle to apply a reloaded configuration (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    /// Readiness for `/readyz`: `None` when healthy, else why not.
    pub fn ready_check(&self) -> crate::metrics::ReadyCheck {
        let shared = self.shared.clone();
        Arc::new(move || watchdog::unhealthy(&shared))
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The name this worker writes into `lease_owner`.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Runs until `shutdown` is cancelled, then drains and returns.
    /// Fails at start-up on an unmigrated database, and with
    /// [`Error::TaskStopped`] when one of its tasks ends on its own.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let shared = self.shared.clone();
        // Before anything can happen: counters at 0, so rate() sees the first event.
        shared.publish_static_metrics();
        metrics::gauge!("opsrunner_maintenance_leader").set(0.0);
        if !wait_for_schema(&shared, &shutdown).await? {
            return Ok(());
        }
        if let Err(e) = heartbeat::measure_clock(&shared).await {
            tracing::warn!(error = %e, "cannot measure the clock offset to the database at start-up");
        }
        if let Err(e) = flag_cache::reload(&shared).await {
            tracing::warn!(error = %e, "initial flag load failed; retrying in the background");
        }
        tracing::info!(
            owner = %shared.owner,
            concurrency = shared.cfg().concurrency,
            enabled = ?shared.live.enabled_job_types(),
            registered = ?shared.live.registry().sorted_job_types(),
            "worker starting"
        );
        let stops = Stops::new(shutdown);
        let mut background = self.start_background(&stops.background);
        let (completions_tx, completions_rx) = mpsc::channel(shared.cfg().completion_batch * 4);
        let completer = tokio::spawn(completer::run(
            shared.clone(),
            completions_rx,
            stops.completer_give_up.clone(),
        ));
        let tracker = TaskTracker::new();
        let claimer = Claimer {
            shared: shared.clone(),
            slots: Arc::new(Semaphore::new(shared.cfg().concurrency)),
            completions: completions_tx,
            tracker: tracker.clone(),
            jobs_root: stops.jobs.clone(),
            prefetched: shared.prefetch.waiting.clone(),
        };
        let claimer = tokio::spawn(claimer.run(stops.claiming.clone()));
        let crashed = wait_for_stop_or_crash(&stops.claiming, claimer, &mut background).await;
        stops.drain(&shared, tracker, completer, background).await;
        if let Some(task) = crashed {
            return Err(Error::TaskStopped { task });
        }
        tracing::info!("worker stopped");
        Ok(())
    }

    /// Spawns the tasks that run until `stop`, each with its name.
    fn start_background(&self, stop: &CancellationToken) -> Vec<(&'static str, JoinHandle<()>)> {
        let s = &self.shared;
        vec![
            (
                "listener",
                tokio::spawn(listener::run(
                    s.clone(),
                    self.ready_tx.clone(),
                    stop.clone(),
                )),
            ),
            (
                "flag reloader",
                tokio::spawn(flag_cache::run_reloader(s.clone(), stop.clone())),
            ),
            (
                "heartbeat",
                tokio::spawn(heartbeat::run(s.clone(), stop.clone())),
            ),
            (
                "fence",
                tokio::spawn(heartbeat::fence(s.clone(), stop.clone())),
            ),
            (
                "maintenance",
                tokio::spawn(maintenance::run(s.clone(), stop.clone())),
            ),
            (
                "scheduler",
                tokio::spawn(scheduler::run(s.clone(), stop.clone())),
            ),
            (
                "systemd notifier",
                tokio::spawn(watchdog::run(
                    s.clone(),
                    self.ready_tx.subscribe(),
                    stop.clone(),
                )),
            ),
        ]
    }
}

/// Waits for the stop, or for the claimer or a background task to end on
/// its own (a bug): the daemon must not linger half alive, so it stops, and
/// returns the task's name so that `run` fails and systemd restarts it. A
/// task that ended is removed from `background` (a JoinHandle must not be
/// awaited twice); the claimer has ended when this returns.
async fn wait_for_stop_or_crash(
    claiming: &CancellationToken,
    mut claimer: JoinHandle<()>,
    background: &mut Vec<(&'static str, JoinHandle<()>)>,
) -> Option<&'static str> {
    let crashed = tokio::select! {
        // Shutdown first: the claimer ends normally right after it, and that
        // must not be mistaken for a crash.
        biased;
        _ = claiming.cancelled() => None,
        r = &mut claimer => {
            tracing::error!(result = ?r.err(), "the claimer stopped unexpectedly; shutting down");
            let crashed = (!claiming.is_cancelled()).then_some("claimer");
            claiming.cancel();
            return crashed;
        }
        (r, i, _) = futures_util::future::select_all(background.iter_mut().map(|(_, h)| h)) => {
            let (name, _) = background.remove(i);
            tracing::error!(task = name, result = ?r.err(), "a background task stopped unexpectedly; shutting down");
            claiming.cancel();
            Some(name)
        }
    };
    let _ = claimer.await;
    crashed
}

/// Verifies the schema, retrying while the database is unreachable. Returns
/// false when shutdown was requested before the database answered.
async fn wait_for_schema(shared: &Shared, shutdown: &CancellationToken) -> Result<bool> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let attempt = crate::db::bounded(shared.call_timeout, async {
            let c = crate::db::checkout(&shared.pool).await?;
            crate::db::migrate::check_schema(c.client()).await?;
            // The pool's connection, so the pool's host decides.
            crate::db::warn_if_plaintext(c.client(), &shared.pool_url).await;
            c.release();
            Ok(())
        });
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
