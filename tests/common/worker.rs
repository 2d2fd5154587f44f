//! A worker running inside the test process.

use std::sync::Arc;
use std::time::Duration;

use opsrunner::config::Config;
use opsrunner::{Registry, Stats, Worker};
use tokio_util::sync::CancellationToken;

/// A worker running in this process.
pub struct RunningWorker {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<opsrunner::Result<()>>,
    pub stats: Arc<Stats>,
    pub owner: String,
    /// What `/readyz` and the watchdog ask: `None` when healthy.
    pub ready: opsrunner::metrics::ReadyCheck,
}

impl RunningWorker {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task")
            .expect("worker run");
    }
}

pub async fn start_worker(config: &Config, registry: Registry) -> RunningWorker {
    let worker = Worker::new(config, registry).expect("worker");
    let mut ready = worker.ready();
    let stats = worker.stats();
    let owner = worker.owner().to_string();
    let ready_check = worker.ready_check();
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
        .await
        .expect("worker ready within 30 s")
        .expect("ready channel");
    RunningWorker {
        stop,
        task,
        stats,
        owner,
        ready: ready_check,
    }
}
