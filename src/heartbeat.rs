//! One statement per interval renews the leases of all of this worker's
//! running jobs and reports which were asked to cancel. A job whose lease we
//! no longer hold (rescued after a long outage) is cancelled locally, because
//! its completion would be fenced out anyway.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::executor::CancelReason;
use crate::worker::Shared;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg().heartbeat_interval) => {}
            _ = shared.cancel_check.notified() => {}
        }
        let ids = shared.running_ids();
        if ids.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        match beat(&shared, &ids).await {
            Ok(rows) => {
                shared.mark_db_ok();
                last_ok = Instant::now();
                let mine: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
                for (id, cancel) in rows {
                    if cancel {
                        shared.cancel_running(id, CancelReason::Requested);
                    }
                }
                for id in ids.iter().filter(|id| !mine.contains(id)) {
                    shared.cancel_running(*id, CancelReason::LeaseLost);
                }
            }
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, jobs = ids.len(), "heartbeat failed");
                if last_ok.elapsed() > shared.cfg().lease {
                    tracing::error!("leases expired without a heartbeat; abandoning running jobs");
                    for id in ids {
                        shared.cancel_running(id, CancelReason::LeaseLost);
                    }
                }
            }
        }
    }
}

async fn beat(shared: &Shared, ids: &[Uuid]) -> Result<Vec<(Uuid, bool)>> {
    let client = shared.pool.get().await.map_err(Error::from)?;
    let stmt = client
        .prepare_cached(include_str!("../sql/queries/heartbeat.sql"))
        .await?;
    let lease = shared.cfg().lease.as_secs_f64();
    let rows = client.query(&stmt, &[&ids, &shared.owner, &lease]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
