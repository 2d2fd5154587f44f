//! systemd integration (Type=notify): READY=1 once the worker listens,
//! STATUS= with running and queued counts, STOPPING=1 on shutdown,
//! RELOADING=1 around a SIGHUP reload, and WATCHDOG=1 only while the daemon is
//! healthy: LISTEN connection up, the database answered recently, and the
//! claim loop is turning. A stuck loop or a dead database stops the pings, and
//! systemd restarts the unit after WatchdogSec.
//!
//! Every call is a no-op when NOTIFY_SOCKET is unset (not under systemd).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::worker::Shared;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1 with a status line (the shim; the worker's loop is [`run`]).
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn notify_watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn notify_stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Half of WatchdogSec when systemd asked for pings.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|w| (w / 2).max(Duration::from_millis(100)))
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining running jobs"),
    ]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

/// Why the daemon is unhealthy, or `None` when it is healthy.
pub(crate) fn unhealthy(shared: &Shared) -> Option<&'static str> {
    let now = shared.clock_ms();
    let cfg = shared.cfg();
    if !shared.listener_up.load(Ordering::Relaxed) {
        return Some("LISTEN connection down");
    }
    let db_window = (cfg.flags_reload_interval * 3)
        .max(Duration::from_secs(1))
        .as_millis() as u64;
    if now.saturating_sub(shared.last_db_ok_ms.load(Ordering::Relaxed)) > db_window {
        return Some("database not answering");
    }
    let loop_window = (cfg.poll_interval * 3 + Duration::from_secs(10)).as_millis() as u64;
    if now.saturating_sub(shared.last_loop_ms.load(Ordering::Relaxed)) > loop_window {
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
    send(&[NotifyState::Ready, NotifyState::Status("running: 0 jobs")]);
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
        let running = shared.running_ids().len();
        match unhealthy(&shared) {
            None => {
                let status = format!("running: {running} jobs; queued: {queued}");
                if watchdog.is_some() {
                    send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    send(&[NotifyState::Status(&status)]);
                }
            }
            Some(why) => {
                tracing::warn!(reason = why, "unhealthy: withholding the watchdog ping");
                send(&[NotifyState::Status(&format!(
                    "unhealthy: {why}; running: {running} jobs"
                ))]);
            }
        }
    }
}

/// Queued jobs, counted up to 10,000 so the cost stays bounded.
async fn queued_estimate(shared: &Shared) -> String {
    let count = async {
        let client = shared.pool.get().await.ok()?;
        let row = client
            .query_one(
                "SELECT count(*) FROM (SELECT 1 FROM ops_jobs WHERE status = 'queued' LIMIT 10001) q",
                &[],
            )
            .await
            .ok()?;
        Some(row.get::<_, i64>(0))
    };
    match tokio::time::timeout(Duration::from_secs(2), count).await {
        Ok(Some(n)) if n > 10_000 => "10000+".into(),
        Ok(Some(n)) => n.to_string(),
        _ => "unknown".into(),
    }
}
