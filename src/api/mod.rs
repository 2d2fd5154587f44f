//! The HTTP shim (`opsrunner serve`): authenticated, rate-limited,
//! tenant-isolated enqueue. It validates, authenticates and inserts, reads or
//! flags rows; it never executes a job, never calls a worker and starts no
//! background work besides the systemd watchdog ping.
//!
//! Every response body is JSON built here: no stack trace, key, token,
//! configured URL or database message ever reaches a client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::Pool;
use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::config::{ApiConfig, Config};
use crate::error::{Error, Result};
use crate::handlers::Registry;
use crate::policy::Policy;

pub mod auth;
mod conn;
mod error;
pub mod jobs;
pub mod openapi;
mod ratelimit;
mod ui;

pub use auth::Principal;
pub use error::ApiError;

/// Every route the shim serves, for the OpenAPI sync test.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/ops/jobs"),
    ("get", "/api/ops/jobs"),
    ("get", "/api/ops/jobs/{id}"),
    ("post", "/api/ops/jobs/{id}/cancel"),
    ("post", "/api/ops/bulk/retry"),
    ("post", "/api/ops/bulk/cancel"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

pub use crate::config::AppEnv;

/// The master key, hashed, so that comparisons are constant-time and the key
/// itself is not kept in memory longer than start-up.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Shortest `OPS_API_KEY` accepted in production.
pub const MIN_MASTER_KEY_LEN: usize = 32;

/// Reads `OPS_API_KEY` (or `OPS_API_KEY_FILE`) and applies the `APP_ENV`
/// rule. Errors name the variable, never the value.
pub fn master_key_from_env(env: AppEnv) -> Result<Option<MasterKey>> {
    let var = crate::keys::MASTER_KEY_VAR;
    let key = crate::config::env::api_key()?;
    match (env, key) {
        (AppEnv::Production, None) => Err(Error::Config(format!(
            "{var} (or {var}_FILE) must be set when APP_ENV is unset, prod or production; \
             set APP_ENV=development to run without it"
        ))),
        (AppEnv::Production, Some(k)) if k.len() < MIN_MASTER_KEY_LEN => Err(Error::Config(
            format!("{var} must be at least {MIN_MASTER_KEY_LEN} characters in production"),
        )),
        (_, Some(k)) => Ok(Some(MasterKey(crate::keys::hash(&k)))),
        (AppEnv::Development, None) => Ok(None),
    }
}

impl MasterKey {
    /// The master key's hash, from the key itself (tests, embedders).
    pub fn from_key(key: &str) -> Self {
        Self(crate::keys::hash(key))
    }
}

/// What every request handler of the shim shares: its own pool (default
/// plans), settings, master key, handlers (for payload checks), policy and
/// rate limiters.
pub struct ApiState {
    pub(crate) pool: Pool,
    pub(crate) cfg: ApiConfig,
    pub(crate) master: Option<MasterKey>,
    pub(crate) registry: Registry,
    pub(crate) policy: Policy,
    pub(crate) limits: ratelimit::Limits,
    /// Where the pool connects, for the plaintext warning at start-up.
    pub(crate) database_url: crate::config::DbUrl,
}

/// The shim's state as axum holds it.
pub type SharedState = Arc<ApiState>;

impl ApiState {
    /// Builds the state and the shim's pool; connects nothing yet.
    pub fn new(
        config: &Config,
        master: Option<MasterKey>,
        registry: Registry,
        policy: Policy,
    ) -> Result<Self> {
        let pool = crate::db::pool(
            &config.database_url,
            &config.settings.db,
            crate::db::API_APPLICATION_NAME,
            crate::db::Plans::Default,
        )?;
        Ok(Self {
            pool,
            cfg: config.settings.api.clone(),
            master,
            registry,
            policy,
            limits: ratelimit::Limits::new(&config.settings.api),
            database_url: config.database_url.clone(),
        })
    }

    /// Job types the shim accepts: those with a handler here, plus
    /// `api.job_types`.
    pub(crate) fn accepts(&self, job_type: &str) -> bool {
        self.registry.get(job_type).is_some() || self.cfg.job_types.iter().any(|t| t == job_type)
    }
}

/// The client's address as the socket saw it. A reverse proxy in front makes
/// every request come from the proxy: see docs/security.md.
/// Reads it off a request's (or its parts') extensions.
pub(crate) fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Builds the router with every layer.
pub fn router(state: SharedState) -> Router {
    let api = Router::new()
        .route("/api/ops/jobs", post(jobs::create).get(jobs::list))
        .route("/api/ops/jobs/{id}", get(jobs::get_one))
        .route("/api/ops/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/ops/bulk/retry", post(jobs::bulk_retry))
        .route("/api/ops/bulk/cancel", post(jobs::bulk_cancel))
        // The console: under the same per-IP limit (sign-in attempts too).
        .merge(ui::router())
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), per_ip_limit));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(wrong_method)
        .merge(api)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            timeout_and_metrics,
        ))
        .with_state(state)
}

/// Anything the routes do not match. Under `/api/ops` an unauthenticated
/// client gets the fixed 401, the same answer as on a real route, so it
/// cannot map which routes exist; an authenticated one, and anything
/// elsewhere, gets a JSON 404.
async fn unknown_route(State(state): State<SharedState>, req: Parts) -> ApiError {
    refuse_unless_authenticated(&state, &req)
        .await
        .unwrap_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Not found"))
}

/// A route called with a method it does not serve: JSON 405 (after the same
/// authentication rule as [`unknown_route`]).
async fn wrong_method(State(state): State<SharedState>, req: Parts) -> ApiError {
    refuse_unless_authenticated(&state, &req)
        .await
        .unwrap_or_else(|| ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"))
}

/// The 401 for a request under `/api/ops` without a valid key.
async fn refuse_unless_authenticated(state: &ApiState, req: &Parts) -> Option<ApiError> {
    if !req.uri.path().starts_with("/api/ops") {
        return None;
    }
    let ip = client_ip(&req.extensions);
    auth::authenticate(state, &req.headers, ip, "unmatched", None)
        .await
        .err()
}

async fn readyz(State(state): State<SharedState>) -> Response {
    let check = async {
        let client = crate::db::checkout(&state.pool).await?;
        crate::db::migrate::check_schema(client.client()).await?;
        client.release();
        Ok::<(), Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Not ready").into_response()
        }
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Not ready").into_response(),
    }
}

/// Per-client-IP limit, before authentication so that it also slows guessing.
async fn per_ip_limit(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let ip = client_ip(req.extensions());
    if let Err(wait) = state.limits.check_ip(ip) {
        metrics::counter!("opsrunner_api_rate_limited_total", "limit" => "ip").increment(1);
        return ApiError::too_many(wait).into_response();
    }
    next.run(req).await
}

/// Bounds each request's time and records `opsrunner_http_requests_total` and
/// the duration histogram by route template (never the raw path).
async fn timeout_and_metrics(
    State(state): State<SharedState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = crate::metrics::method_label(req.method());
    let started = Instant::now();
    let resp = match tokio::time::timeout(state.cfg.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(%route, "request timed out");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Request timed out").into_response()
        }
    };
    let status = resp.status().as_u16().to_string();
    let elapsed = started.elapsed();
    metrics::counter!("opsrunner_http_requests_total",
        "route" => route.clone(), "method" => method, "status" => status.clone())
    .increment(1);
    metrics::histogram!("opsrunner_http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, %status, ms = elapsed.as_millis() as u64, "request");
    resp
}

/// `opsrunner serve`: checks the schema, binds `api.listen`, tells systemd
/// it is ready, serves until `stop`, then drains in-flight requests.
pub async fn serve(state: ApiState, stop: CancellationToken) -> Result<()> {
    crate::metrics::zero_counters(crate::metrics::catalog::Exporter::Api, &[], &[]);
    {
        let client = state.pool.get().await.map_err(Error::from)?;
        crate::db::migrate::check_schema(&client).await?;
        warn_if_rls_bypassed(&client).await;
        crate::db::warn_if_plaintext(&client, &state.database_url).await;
    }
    let addr: SocketAddr = state.cfg.listen.parse().map_err(|_| {
        Error::Config("api.listen (env OPSRUNNER_API__LISTEN) is not an address".into())
    })?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(format!(
            "api.listen (env OPSRUNNER_API__LISTEN) {addr} cannot be bound: {e}"
        ))
    })?;
    serve_on(listener, Arc::new(state), stop).await
}

/// Serves on a bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: SharedState,
    stop: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    crate::systemd::notify_ready("api: serving");
    let watchdog = crate::systemd::watchdog_interval().map(|every| {
        let pool = state.pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                // Pinged only while the database answers.
                let ok = tokio::time::timeout(every, async {
                    let c = crate::db::checkout(&pool).await.ok()?;
                    let ok = crate::db::queries::ping(&c).await.ok();
                    c.release();
                    ok
                })
                .await;
                if matches!(ok, Ok(Some(_))) {
                    crate::systemd::notify_watchdog();
                }
            }
        })
    });
    let limits = conn::Limits {
        header_read_timeout: state.cfg.header_read_timeout,
        max_connections: state.cfg.max_connections,
        max_connections_per_ip: state.cfg.max_connections_per_ip,
    };
    let s = stop.clone();
    let stopping = tokio::spawn(async move {
        s.cancelled().await;
        crate::systemd::notify_stopping();
    });
    conn::serve(listener, router(state), limits, stop).await?;
    stopping.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("api stopped");
    Ok(())
}

/// Row-level security does not bind superusers or BYPASSRLS roles; the
/// shim's queries filter by tenant too, but say so loudly.
pub async fn warn_if_rls_bypassed(client: &tokio_postgres::Client) {
    if let Ok(Some(true)) = crate::db::queries::role_bypasses_rls(client).await {
        tracing::warn!(
            "the shim's database role bypasses row-level security; tenant isolation rests on \
             its query filters alone. Run it as a member of opsrunner_api (sql/roles/roles.sql)"
        );
    }
}
