//! sd_notify helpers (Type=notify): READY=1, STATUS=, STOPPING=1,
//! RELOADING=1 and WATCHDOG=1. The worker's loop that decides when to send
//! them is `worker::watchdog`; the shim's is in `api`. A leaf module.
//!
//! Every call is a no-op when NOTIFY_SOCKET is unset (not under systemd).

use std::time::Duration;

pub use sd_notify::NotifyState;

/// Sends `states`; a failure is logged at debug and otherwise ignored.
pub fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1 with a status line (the shim; the worker's loop is `worker::watchdog`).
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// WATCHDOG=1.
pub fn notify_watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// STOPPING=1 (the shim).
pub fn notify_stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Half of WatchdogSec when systemd asked for pings.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|w| (w / 2).max(Duration::from_millis(100)))
}

/// STOPPING=1 with the worker's drain status.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining running jobs"),
    ]);
}

/// RELOADING=1 with the monotonic time systemd asks for.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// READY=1 after a reload.
pub fn reloaded() {
    send(&[NotifyState::Ready]);
}
