//! One statement per interval renews the leases of all of this worker's
//! running jobs and reports which were asked to cancel. A job whose lease we
//! no longer hold (rescued after a long outage) is cancelled locally, because
//! its completion would be fenced out anyway.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::running::CancelReason;
use super::state::Shared;
use crate::db::queries;
use crate::error::{Error, Result};

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg().heartbeat_interval) => {}
            _ = shared.signals.cancel_check.notified() => {}
        }
        let ids = shared.running.ids();
        if ids.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        match beat(&shared, &ids).await {
            Ok(rows) => {
                shared.mark_db_ok();
                last_ok = Instant::now();
                let mine: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
                for r in rows {
                    if r.cancel_requested {
                        shared.running.cancel(r.id, CancelReason::Requested);
                    }
                }
                for id in ids.iter().filter(|id| !mine.contains(id)) {
                    shared.running.cancel(*id, CancelReason::LeaseLost);
                }
            }
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, jobs = ids.len(), "heartbeat failed");
                if last_ok.elapsed() > shared.cfg().lease {
                    tracing::error!("leases expired without a heartbeat; abandoning running jobs");
                    for id in ids {
                        shared.running.cancel(id, CancelReason::LeaseLost);
                    }
                }
            }
        }
    }
}

async fn beat(shared: &Shared, ids: &[Uuid]) -> Result<Vec<queries::HeartbeatRow>> {
    let client = shared.pool.get().await.map_err(Error::from)?;
    let lease = shared.cfg().lease.as_secs_f64();
    queries::heartbeat(&client, ids, &shared.owner, lease).await
}
