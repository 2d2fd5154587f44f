//! The shim's accept loop: what a hostile network reaches before any request
//! is parsed. Every connection must send a whole request head within
//! `api.header_read_timeout` (hyper's header timer, which also runs while a
//! keep-alive connection waits for its next request, so idle sockets are
//! closed too); at most `api.max_connections` are served at once, and at
//! most `api.max_connections_per_ip` from one address. A connection over a
//! cap is closed at accept, before it costs more than its socket, so that
//! 150 silent sockets from one client cannot keep /healthz from answering
//! another (they did with `axum::serve`, which has no such limits).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The caps and the timeout (from `[api]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `api.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `api.max_connections`.
    pub max_connections: usize,
    /// `api.max_connections_per_ip`.
    pub max_connections_per_ip: usize,
}

/// Open connections, overall and per address.
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's place in [`Open`], given back on drop.
struct Admitted {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut o) = self.open.lock() {
            o.total = o.total.saturating_sub(1);
            if let Some(n) = o.by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    o.by_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// A place for a connection from `ip`, or `None` when a cap is reached.
fn admit(open: &Arc<Mutex<Open>>, ip: IpAddr, limits: &Limits) -> Option<Admitted> {
    let mut o = open.lock().ok()?;
    let from_ip = o.by_ip.get(&ip).copied().unwrap_or(0);
    if o.total >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
        return None;
    }
    o.total += 1;
    *o.by_ip.entry(ip).or_insert(0) += 1;
    Some(Admitted {
        open: open.clone(),
        ip,
    })
}

/// Serves `app` on `listener` until `stop`, then lets each connection finish
/// its request in flight (graceful shutdown) and returns when all are closed.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let connections = TaskTracker::new();
    // None until the first refusal (an Instant a minute back could underflow
    // on a machine booted less than a minute ago).
    let mut refused_logged: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(place) = admit(&open, peer.ip(), &limits) else {
            metrics::counter!("opsrunner_api_connections_refused_total").increment(1);
            // One line a minute at most: a flood must not flood the journal.
            if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                refused_logged = Some(std::time::Instant::now());
                tracing::warn!(
                    client = %peer.ip(),
                    "connection limit reached (api.max_connections / api.max_connections_per_ip); closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = connection_service(app.clone(), peer);
        let stop = stop.clone();
        let header_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let _place = place;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The router as a hyper service for one connection, with the client's
/// address where `ConnectInfo<SocketAddr>` finds it.
fn connection_service(
    app: Router,
    peer: SocketAddr,
) -> hyper_util::service::TowerToHyperService<
    tower::util::MapRequest<
        Router,
        impl FnMut(
            axum::http::Request<hyper::body::Incoming>,
        ) -> axum::http::Request<hyper::body::Incoming>
        + Clone,
    >,
> {
    let svc = tower::ServiceExt::map_request(
        app,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        },
    );
    hyper_util::service::TowerToHyperService::new(svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_at_its_cap_leaves_room_for_others_and_places_come_back() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_ip: 2,
        };
        let open = Arc::new(Mutex::new(Open::default()));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = admit(&open, a, &limits).unwrap();
        let _a2 = admit(&open, a, &limits).unwrap();
        assert!(admit(&open, a, &limits).is_none(), "per-address cap");
        let b1 = admit(&open, b, &limits).unwrap();
        assert!(admit(&open, b, &limits).is_none(), "overall cap");
        drop(a1);
        drop(b1);
        assert!(admit(&open, b, &limits).is_some());
        assert!(admit(&open, a, &limits).is_some());
    }
}
