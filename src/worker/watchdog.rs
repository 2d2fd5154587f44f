//! The worker's systemd loop (Type=notify): READY=1 once the worker listens,
//! STATUS= with running and queued counts, and WATCHDOG=1 only while the
//! daemon is healthy: LISTEN connection up, the database answered recently,
//! and the claim loop is turning. A stuck loop or a dead database stops the
//! pings, and systemd restarts the unit after WatchdogSec.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::systemd::{self, NotifyState};

/// Why the daemon is unhealthy, or `None` when it is healthy.
pub(crate) fn unhealthy(shared: &Shared) -> Option<&'static str> {
    let now = shared.health.clock_ms();
    let cfg = shared.cfg();
    if !shared.health.listener_up.load(Ordering::Relaxed) {
        return Some("LISTEN connection down");
    }
    let db_window = (cfg.flags_reload_interval * 3)
        .max(Duration::from_secs(1))
        .as_millis() as u64;
    if now.saturating_sub(shared.health.last_db_ok_ms.load(Ordering::Relaxed)) > db_window {
        return Some("database not answering");
    }
    let loop_window = (cfg.poll_interval * 3 + Duration::from_secs(10)).as_millis() as u64;
    if now.saturating_sub(shared.health.last_loop_ms.load(Ordering::Relaxed)) > loop_window {
        return Some("claim loop stuck");
    }
    None
}

/// Sends READY=1 once ready, then STATUS= and (when enabled and healthy)
/// WATCHDOG=1 at half the watchdog interval, or every 5 s without one.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut ready: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
    }
    systemd::send(&[NotifyState::Ready, NotifyState::Status("running: 0 jobs")]);
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog
        .map(|w| w / 2)
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let queued = queued_estimate(&shared).await;
        let running = shared.running.len();
        match unhealthy(&shared) {
            None => {
                let status = format!("running: {running} jobs; queued: {queued}");
                if watchdog.is_some() {
                    systemd::send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    systemd::send(&[NotifyState::Status(&status)]);
                }
            }
            Some(why) => {
                tracing::warn!(reason = why, "unhealthy: withholding the watchdog ping");
                systemd::send(&[NotifyState::Status(&format!(
                    "unhealthy: {why}; running: {running} jobs"
                ))]);
            }
        }
    }
}

/// Queued jobs, counted up to 10,000 so the cost stays bounded.
async fn queued_estimate(shared: &Shared) -> String {
    let count = crate::db::bounded(shared.call_timeout.min(Duration::from_secs(2)), async {
        let c = crate::db::checkout(&shared.pool).await?;
        let n = crate::db::queries::queued_estimate(c.client()).await?;
        c.release();
        Ok(n)
    });
    match count.await {
        Ok(n) if n > 10_000 => "10000+".into(),
        Ok(n) => n.to_string(),
        Err(_) => "unknown".into(),
    }
}
