//! Prometheus metrics (`opsrunner_` prefix, base units, bounded labels:
//! job_type, queue, outcome, source, flag; never a job id or tenant) and the
//! `/metrics`, `/healthz`, `/readyz` endpoints, on 127.0.0.1:9464 by default.
//!
//! Queue depth and oldest-queued age come from one periodic query run by the
//! maintenance leader only, never from a scan per scrape; a daemon that
//! loses the leadership sets them to 0, so a `sum()` over instances is right
//! (and `opsrunner_maintenance_leader` says who leads).
//!
//! Every metric is listed, with its help text, in [`catalog`].

pub mod catalog;
pub mod process;

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use catalog::{CATALOG, Exporter, Kind};

/// The package version, as `opsrunner_build_info{version}` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit built from (build.rs), as `opsrunner_build_info{commit}`.
pub const COMMIT: &str = env!("OPSRUNNER_COMMIT");

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same
/// handle): every catalogued metric described (HELP text and unit),
/// histogram buckets set, and `opsrunner_build_info` at 1.
pub fn install() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for m in CATALOG.iter().filter(|m| m.kind == Kind::Histogram) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(m.name.into()), m.buckets)
            .map_err(|e| Error::Config(format!("metrics: {e}")))?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Another recorder (an embedding program's) wins; we still render ours.
    if metrics::set_global_recorder(recorder).is_ok() {
        describe_all();
        metrics::gauge!("opsrunner_build_info", "version" => VERSION, "commit" => COMMIT).set(1.0);
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Gives the recorder the help text and unit of every catalogued metric
/// (the `process_*` ones are rendered by [`process`] instead).
fn describe_all() {
    for m in CATALOG.iter().filter(|m| !m.name.starts_with("process_")) {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Registers at 0 every counter of `who` without labels, and each label
/// set of the counters whose values are known in advance, so that
/// `rate()` and `increase()` see the first event. `job_types` and `queues`
/// are the worker's registered types and configured queues (ignored for
/// the shim). `opsrunner dev`, which runs both, calls it for each.
pub fn zero_counters(who: Exporter, job_types: &[String], queues: &[String]) {
    for m in CATALOG.iter().filter(|m| {
        m.kind == Kind::Counter
            && m.labels.is_empty()
            && !m.name.starts_with("process_")
            && catalog::exported_by(m, who)
    }) {
        metrics::counter!(m.name).increment(0);
    }
    let stage = match who {
        Exporter::Api => "api",
        _ => "worker",
    };
    for r in crate::policy::Refusal::ALL {
        metrics::counter!("opsrunner_policy_token_refusals_total", "reason" => r.code(), "stage" => stage)
            .increment(0);
    }
    if who == Exporter::Api {
        for &reason in catalog::AUTH_FAILURE_REASONS {
            metrics::counter!("opsrunner_api_auth_failures_total", "reason" => reason).increment(0);
        }
        for &limit in catalog::RATE_LIMITS {
            metrics::counter!("opsrunner_api_rate_limited_total", "limit" => limit).increment(0);
        }
        return;
    }
    for &source in catalog::PICKUP_SOURCES {
        metrics::counter!("opsrunner_job_pickups_total", "source" => source).increment(0);
    }
    let mut labels: Vec<String> = vec!["default".into()];
    labels.extend(queues.iter().filter(|q| *q != "default").cloned());
    for t in job_types {
        for q in &labels {
            metrics::counter!("opsrunner_jobs_claimed_total", "job_type" => t.clone(), "queue" => q.clone())
                .increment(0);
            for &outcome in catalog::OUTCOMES {
                metrics::counter!(
                    "opsrunner_jobs_completed_total",
                    "job_type" => t.clone(), "queue" => q.clone(), "outcome" => outcome
                )
                .increment(0);
            }
        }
    }
}

/// What `/metrics` answers: the recorder's families, with the pool gauges
/// refreshed first, and the `process_*` families.
pub fn render(handle: &PrometheusHandle) -> String {
    crate::db::publish_pool_gauges();
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(&process::render(&process::sample()));
    text
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
        .route("/metrics", get(move || std::future::ready(render(&handle))))
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

/// The `job_type` label for a type found in the table: the type itself when
/// this daemon has a handler for it, otherwise `other` (types are chosen by
/// whoever inserts a job, like queue names).
pub fn job_type_label(registered: &[String], job_type: &str) -> String {
    if registered.iter().any(|t| t == job_type) {
        job_type.to_string()
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
