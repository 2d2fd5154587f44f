//! [`Stops`]: the worker's stop order, in one place. Each token has one
//! owner (this type) and is cancelled once, in this order:
//!
//! 1. `claiming` (SIGTERM, or a crashed task): the claimer stops; a claim
//!    already under way hands its jobs back unstarted;
//! 2. drain: running jobs get `worker.shutdown_timeout` to finish;
//! 3. `jobs`: the parent of every job's token; the unfinished jobs are
//!    cancelled and go back to `queued` with their attempt refunded;
//! 4. `cancel_grace` (+1 s): handlers that ignore their token are abandoned;
//! 5. the completer writes what is left, for at most 10 s; then
//!    `completer_give_up`: unwritten outcomes are left to lease expiry;
//! 6. `background`: listener, flag reloader, heartbeat, maintenance and the
//!    systemd loop stop last, so leases are renewed while jobs drain.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::Shared;

/// How long the completer may take to write the last outcomes.
const COMPLETER_DRAIN: Duration = Duration::from_secs(10);

/// The worker's cancellation tokens, in stop order.
pub(crate) struct Stops {
    /// Stops the claimer (the caller's shutdown token).
    pub claiming: CancellationToken,
    /// Parent of every job's token.
    pub jobs: CancellationToken,
    /// Tells the completer to stop retrying writes.
    pub completer_give_up: CancellationToken,
    /// Stops the background tasks.
    pub background: CancellationToken,
}

impl Stops {
    /// Fresh tokens under the caller's shutdown token.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            claiming: shutdown,
            jobs: CancellationToken::new(),
            completer_give_up: CancellationToken::new(),
            background: CancellationToken::new(),
        }
    }

    /// Steps 2 to 6 (claiming has stopped): drains the jobs in `tracker`,
    /// then the completer, then the named background tasks.
    pub async fn drain(
        self,
        shared: &Shared,
        tracker: TaskTracker,
        completer: JoinHandle<()>,
        background: Vec<(&'static str, JoinHandle<()>)>,
    ) {
        crate::systemd::stopping();
        let cfg = shared.cfg();
        tracing::info!(running = shared.running.len(), timeout = ?cfg.shutdown_timeout,
            "stopping: claiming stopped, draining running jobs");
        tracker.close();
        if tokio::time::timeout(cfg.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "drain timeout reached; cancelling running jobs and returning them to the queue"
            );
            self.jobs.cancel();
            // Executors abandon handlers that ignore the token after cancel_grace.
            let grace = cfg.cancel_grace + Duration::from_secs(1);
            let _ = tokio::time::timeout(grace, tracker.wait()).await;
        }
        // All senders are gone once the executors are: the completer drains
        // what is left, and gets a bounded time to do so.
        let mut completer = completer;
        if tokio::time::timeout(COMPLETER_DRAIN, &mut completer)
            .await
            .is_err()
        {
            self.completer_give_up.cancel();
            let _ = completer.await;
        }
        self.background.cancel();
        for (_, t) in background {
            let _ = t.await;
        }
        shared.pool.close();
    }
}
