//! Prometheus metrics (`opsrunner_` prefix, base units, bounded labels:
//! job_type, queue, outcome, source, flag; never a job id or tenant) and the
//! `/metrics`, `/healthz`, `/readyz` endpoints, on 127.0.0.1:9464 by default.
//!
//! Queue depth and oldest-queued age come from one periodic query run by the
//! elected maintenance leader only, never from a scan per scrape: take `max()`
//! over instances in PromQL.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Seconds; from a 5 ms no-op to an hour-long job.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Seconds from `run_at` to claim.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Seconds to answer an HTTP request.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("opsrunner_job_duration_seconds".into()),
            DURATION_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("opsrunner_job_queue_wait_seconds".into()),
                WAIT_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("opsrunner_http_request_duration_seconds".into()),
                HTTP_BUCKETS,
            )
        })
        .map_err(|e| Error::Config(format!("metrics: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    // Another recorder (an embedding program's) wins; we still render ours.
    let _ = metrics::set_global_recorder(recorder);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Readiness: `None` when ready, else why not.
pub type ReadyCheck = std::sync::Arc<dyn Fn() -> Option<&'static str> + Send + Sync>;

/// Binds `settings.metrics.listen` (unless empty) and serves in the
/// background until `stop`. A taken port fails start-up, naming the setting.
pub async fn start(
    settings: &crate::config::Settings,
    ready: ReadyCheck,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    if settings.metrics.listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = settings.metrics.listen.parse().map_err(|_| {
        Error::Config("metrics.listen (env OPSRUNNER_METRICS__LISTEN) is not an address".into())
    })?;
    let handle = install()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(format!(
            "metrics.listen (env OPSRUNNER_METRICS__LISTEN) {addr} cannot be bound: {e}"
        ))
    })?;
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = serve(listener, handle, ready, stop).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    })))
}

/// Serves the endpoints until `stop`. `/healthz` answers while the process
/// serves requests; `/readyz` is 503 with the reason while unhealthy.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    ready: ReadyCheck,
    stop: CancellationToken,
) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening");
    }
    let upkeep = handle.clone();
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = upkeep_stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => upkeep.run_upkeep(),
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| std::future::ready("ok")))
        .route(
            "/readyz",
            get(move || {
                let r = ready();
                std::future::ready(match r {
                    None => (StatusCode::OK, "ready".to_string()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
                })
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(())
}

/// The `queue` label for a job of `queue`: its own name when the operator
/// configured it (`worker.queues`) or it is `default`, otherwise `other`.
/// Queue names are chosen by whoever inserts a job, so they may not become
/// label values: 60 invented names would make 60 series.
pub fn queue_label(configured: &[String], queue: &str) -> String {
    if queue == "default" || configured.iter().any(|q| q == queue) {
        queue.to_string()
    } else {
        "other".to_string()
    }
}

/// The `method` label for an HTTP request: one of the methods the API
/// knows, otherwise `OTHER` (clients can send any token as a method).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn invented_queues_and_methods_share_one_label() {
        let configured = vec!["billing".to_string()];
        assert_eq!(queue_label(&configured, "billing"), "billing");
        assert_eq!(queue_label(&configured, "default"), "default");
        assert_eq!(queue_label(&configured, "x-123"), "other");
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
        let invented = axum::http::Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&invented), "OTHER");
    }
}
