//! The LISTEN connection: one session connection (never in a transaction),
//! reconnected with backoff. Every (re)connect triggers an immediate catch-up
//! fetch, flag reload and cancel check, because notifications sent while it
//! was down are lost. A periodic ping detects a connection that died silently.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::state::Shared;
use crate::db::{CANCEL_CHANNEL, FLAGS_CHANNEL, JOBS_CHANNEL, LISTENER_APPLICATION_NAME};
use crate::error::Result;

/// A LISTEN connection gets no traffic of its own to notice a dead peer by;
/// a ping every 5 s does (with the call deadline, a stalled one is dropped
/// within 5 s + `call_timeout`).
const PING_EVERY: Duration = Duration::from_secs(5);
/// Reconnect backoff: 100 ms doubling to 2 s, so that after an outage the
/// daemon is listening (and ready) again within about 2 s of the database.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

pub(crate) async fn run(shared: Arc<Shared>, ready: watch::Sender<bool>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), RECONNECT_MAX);
    let mut connected_before = false;
    loop {
        // The socket connect has `connect_timeout`; start-up and LISTEN get
        // the call deadline on top.
        let deadline = shared.db_config.connect_timeout + shared.call_timeout;
        match crate::db::bounded(deadline, connect(&shared)).await {
            Ok((client, mut rx)) => {
                backoff.reset();
                if connected_before {
                    shared
                        .stats
                        .listener_reconnects
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("opsrunner_listener_reconnects_total").increment(1);
                    tracing::info!("LISTEN connection re-established; catching up");
                }
                connected_before = true;
                shared.health.listener_up.store(true, Ordering::Relaxed);
                ready.send_replace(true);
                shared.signals.wake.notify_one();
                shared.signals.flags_changed.notify_one();
                shared.signals.cancel_check.notify_one();

                let mut ping = tokio::time::interval(PING_EVERY);
                ping.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        msg = rx.recv() => match msg.as_deref() {
                            Some(JOBS_CHANNEL) => {
                                shared.stats.notifications.fetch_add(1, Ordering::Relaxed);
                                shared.signals.wake.notify_one();
                            }
                            Some(CANCEL_CHANNEL) => shared.signals.cancel_check.notify_one(),
                            Some(FLAGS_CHANNEL) => shared.signals.flags_changed.notify_one(),
                            Some(_) => {}
                            None => break,
                        },
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(shared.call_timeout, crate::db::queries::ping(&client)).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                shared.health.listener_up.store(false, Ordering::Relaxed);
                tracing::warn!("LISTEN connection lost; reconnecting with backoff");
            }
            Err(e) => {
                shared.db_error();
                tracing::warn!(error = %e, "cannot open the LISTEN connection; retrying");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Connects, subscribes, and returns a channel of notification channel names
/// that closes when the connection ends.
async fn connect(
    shared: &Shared,
) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<String>)> {
    let pg = crate::db::session_config(
        &shared.listen_url,
        &shared.db_config,
        LISTENER_APPLICATION_NAME,
    );
    let tls = shared.db_config.tls_for(&shared.listen_url).connector()?;
    let (client, mut conn) = pg.connect(tls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.channel().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "LISTEN connection error");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {JOBS_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {FLAGS_CHANNEL};"
        ))
        .await?;
    Ok((client, rx))
}
