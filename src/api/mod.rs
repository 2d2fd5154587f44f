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

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::{ApiConfig, Config};
use crate::error::{Error, Result};
use crate::handlers::Registry;
use crate::policy::Policy;

pub mod auth;
pub mod jobs;
pub mod openapi;
mod ratelimit;

pub use auth::Principal;

/// Every route the shim serves, for the OpenAPI sync test.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/ops/jobs"),
    ("get", "/api/ops/jobs"),
    ("get", "/api/ops/jobs/{id}"),
    ("post", "/api/ops/jobs/{id}/cancel"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

/// Where the deployment is, from `APP_ENV`: production requires the master
/// key `OPS_API_KEY`; development makes it optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    /// Unset, `prod` or `production` is production; `dev` or `development`
    /// is development; anything else is a start-up error.
    pub fn from_env() -> Result<Self> {
        match std::env::var("APP_ENV") {
            Err(std::env::VarError::NotPresent) => Ok(Self::Production),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "prod" | "production" => Ok(Self::Production),
                "dev" | "development" => Ok(Self::Development),
                _ => Err(Error::Config(
                    "APP_ENV must be one of dev, development, prod, production (or unset, \
                     which means production)"
                        .into(),
                )),
            },
            Err(_) => Err(Error::Config("APP_ENV is not valid UTF-8".into())),
        }
    }
}

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
    let key = crate::config::secret_from_env(var)?;
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
    pub fn from_key(key: &str) -> Self {
        Self(crate::keys::hash(key))
    }
}

pub struct ApiState {
    pub(crate) pool: Pool,
    pub(crate) cfg: ApiConfig,
    pub(crate) master: Option<MasterKey>,
    pub(crate) registry: Registry,
    pub(crate) policy: Policy,
    pub(crate) limits: ratelimit::Limits,
}

pub type SharedState = Arc<ApiState>;

impl ApiState {
    pub fn new(
        config: &Config,
        master: Option<MasterKey>,
        registry: Registry,
        policy: Policy,
    ) -> Result<Self> {
        let pool = crate::db::pool(
            &config.database_url,
            &config.settings.db,
            "opsrunner-api",
            crate::db::Plans::Default,
        )?;
        Ok(Self {
            pool,
            cfg: config.settings.api.clone(),
            master,
            registry,
            policy,
            limits: ratelimit::Limits::new(&config.settings.api),
        })
    }

    /// Job types the shim accepts: those with a handler here, plus
    /// `api.job_types`.
    pub(crate) fn accepts(&self, job_type: &str) -> bool {
        self.registry.get(job_type).is_some() || self.cfg.job_types.iter().any(|t| t == job_type)
    }
}

/// The JSON error every failure is answered with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Invalid or missing X-Ops-Key")
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Job not found")
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn too_many(retry_after: Duration) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Rate limit exceeded".into(),
            retry_after: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // The full error goes to the log (it holds no secret: database errors
        // never carry the connection string); the client gets a fixed text.
        match &e {
            Error::Db(db) if db.code().is_some_and(|c| c.code() == "23514") => {
                ApiError::unprocessable("Rejected by a database constraint")
            }
            Error::Invalid(msg) => ApiError::unprocessable(msg.clone()),
            _ if crate::db::is_transient(&e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable")
            }
            _ => {
                tracing::error!(error = %e, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
            }
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        let mut resp = (self.status, body).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// The client's address as the socket saw it. A reverse proxy in front makes
/// every request come from the proxy: see docs/security.md.
pub(crate) fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
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
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Not found") })
        .layer(middleware::from_fn_with_state(state.clone(), per_ip_limit));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .merge(api)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            timeout_and_metrics,
        ))
        .with_state(state)
}

async fn readyz(State(state): State<SharedState>) -> Response {
    let check = async {
        let client = state.pool.get().await.map_err(Error::from)?;
        crate::migrate::check_schema(&client).await
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
    let ip = client_ip(&req);
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
    let method = req.method().as_str().to_string();
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
        "route" => route.clone(), "method" => method.clone(), "status" => status.clone())
    .increment(1);
    metrics::histogram!("opsrunner_http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, %status, ms = elapsed.as_millis() as u64, "request");
    resp
}

/// `opsrunner serve`: checks the schema, binds `api.listen`, tells systemd
/// it is ready, serves until `stop`, then drains in-flight requests.
pub async fn serve(state: ApiState, stop: CancellationToken) -> Result<()> {
    {
        let client = state.pool.get().await.map_err(Error::from)?;
        crate::migrate::check_schema(&client).await?;
        warn_if_rls_bypassed(&client).await;
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
                    let c = pool.get().await.ok()?;
                    c.simple_query("SELECT 1").await.ok()
                })
                .await;
                if matches!(ok, Ok(Some(_))) {
                    crate::systemd::notify_watchdog();
                }
            }
        })
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let s = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            s.cancelled().await;
            crate::systemd::notify_stopping();
        })
        .await?;
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("api stopped");
    Ok(())
}

/// Row-level security does not bind superusers or BYPASSRLS roles; the
/// shim's queries filter by tenant too, but say so loudly.
async fn warn_if_rls_bypassed(client: &tokio_postgres::Client) {
    let row = client
        .query_opt(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await;
    if let Ok(Some(r)) = row
        && r.try_get::<_, bool>(0).unwrap_or(false)
    {
        tracing::warn!(
            "the shim's database role bypasses row-level security; tenant isolation rests on \
             its query filters alone. Run it as a member of opsrunner_api (sql/roles/roles.sql)"
        );
    }
}
