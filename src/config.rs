//! Configuration: a TOML file plus `OPSRUNNER_*` environment overrides, and
//! secrets (the database URL) from the environment or a credential file.
//!
//! Every validation error names the setting and the environment variable that
//! sets it, and never echoes a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A PostgreSQL connection string. Debug and Display never show it: only the
/// host, port and database name can be printed, through [`DbUrl::describe`].
#[derive(Clone)]
pub struct DbUrl {
    raw: String,
    pg: tokio_postgres::Config,
}

impl DbUrl {
    /// Validates a connection string. `var` is the name used in messages.
    pub fn parse(raw: &str, var: &str) -> Result<Self> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Error::Config(format!(
                "{var} is empty; set it to a postgres:// URL"
            )));
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "postgres" && scheme != "postgresql" {
                return Err(Error::Config(format!(
                    "{var} must be a PostgreSQL URL (postgres:// or postgresql://), \
                     but its scheme is '{}'; opsrunner only runs on PostgreSQL",
                    // The scheme carries no secret; bound it anyway.
                    scheme.chars().take(20).collect::<String>()
                )));
            }
        }
        // tokio-postgres' parse errors do not echo the input, but we still
        // replace them with a fixed message so no future version can leak.
        let pg: tokio_postgres::Config = trimmed.parse().map_err(|_| {
            Error::Config(format!("{var} is not a valid PostgreSQL connection string"))
        })?;
        if pg.get_dbname().is_none() && pg.get_user().is_none() {
            // libpq would default both from the OS user; be explicit instead.
            return Err(Error::Config(format!(
                "{var} names neither a database nor a user; add at least the database name"
            )));
        }
        Ok(Self {
            raw: trimmed.to_string(),
            pg,
        })
    }

    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// The connection string itself, for handing to a child process.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// `host:port/dbname`, safe to log.
    pub fn describe(&self) -> String {
        let host = self
            .pg
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        let db = self.pg.get_dbname().unwrap_or("(default)");
        format!("{host}:{port}/{db}")
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbUrl({})", self.describe())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs run at once by this daemon.
    pub concurrency: usize,
    /// Queues this daemon serves; empty means every queue.
    pub queues: Vec<String>,
    /// Fetch even without a NOTIFY this often (the backstop for lost wake-ups).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claimed job is ours without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often the elected rescuer looks for expired leases.
    #[serde(with = "humantime_serde")]
    pub rescue_interval: Duration,
    /// Periodic flag reload, the backstop for a missed flag NOTIFY.
    #[serde(with = "humantime_serde")]
    pub flags_reload_interval: Duration,
    /// On SIGTERM, how long running jobs may finish before they are cancelled
    /// and returned to the queue.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Timeout for a job whose row sets none.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// How long a cancelled handler may take to stop before it is abandoned.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most outcomes written by one completion statement.
    pub completion_batch: usize,
    /// Jobs claimed beyond the free slots, held in the worker so that a slot
    /// freed by a short job starts the next one without a round trip. Unset:
    /// as many as `concurrency`; 0 turns prefetching off. Only used while
    /// jobs run shorter than 50 ms on average; a held job goes back to the
    /// queue (attempt refunded) when it waited 2 s or the worker stops.
    pub prefetch: Option<usize>,
}

impl WorkerConfig {
    pub fn prefetch(&self) -> usize {
        self.prefetch.unwrap_or(self.concurrency)
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 10,
            queues: Vec::new(),
            poll_interval: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            rescue_interval: Duration::from_secs(5),
            flags_reload_interval: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(30),
            default_timeout: Duration::from_secs(300),
            cancel_grace: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            completion_batch: 500,
            prefetch: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbConfig {
    /// Pool connections for claims, completions, heartbeats and maintenance
    /// (the LISTEN connection is separate).
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            pool_size: 8,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished jobs (and their events) older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub jobs: Duration,
    /// Audit rows older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub audit: Duration,
    /// How often the elected daemon prunes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows deleted per statement, so that no prune holds locks for long.
    pub batch: i32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            jobs: Duration::from_secs(90 * 86_400),
            audit: Duration::from_secs(365 * 86_400),
            interval: Duration::from_secs(3600),
            batch: 5000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for /metrics, /healthz and /readyz; empty disables them.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human format on a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `opsrunner=debug`; RUST_LOG wins.
    pub level: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where `opsrunner serve` listens. Loopback by default: put a TLS
    /// reverse proxy in front to expose it.
    pub listen: String,
    /// The shim's own /metrics, /healthz, /readyz (a port apart from the
    /// worker's 9464, so both can run on one VM); empty disables it.
    pub metrics_listen: String,
    /// The tenant of requests made with `OPS_API_KEY` (scoped keys carry
    /// their own).
    pub tenant: String,
    /// Longest time a request may take before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body; a job payload is further bounded to 1 MiB.
    pub max_body_bytes: usize,
    /// Sustained requests per second, and burst, per API key.
    pub rate_per_key: u32,
    pub burst_per_key: u32,
    /// Sustained requests per second, and burst, per client IP (checked
    /// before authentication, so it also slows key guessing).
    pub rate_per_ip: u32,
    pub burst_per_ip: u32,
    /// Job types accepted besides those with a built-in or configured
    /// handler (types served by an embedding program's native handlers).
    pub job_types: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: "127.0.0.1:9465".into(),
            tenant: "default".into(),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 2 * 1024 * 1024,
            rate_per_key: 50,
            burst_per_key: 100,
            rate_per_ip: 100,
            burst_per_ip: 200,
            job_types: Vec::new(),
        }
    }
}

/// Everything read from the file and `OPSRUNNER_*` variables.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub worker: WorkerConfig,
    pub db: DbConfig,
    pub retention: RetentionConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// The HTTP shim (`opsrunner serve`).
    pub api: ApiConfig,
    /// Action job types and their policy tokens.
    pub policy: crate::policy::PolicyConfig,
    /// Commands run by `exec` handlers, one job type each.
    pub exec: Vec<crate::handlers::exec::ExecConfig>,
    /// Webhooks run by `http` handlers, one job type each.
    pub http: Vec<crate::handlers::http::HttpConfig>,
}

/// Settings plus the database URL, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub database_url: DbUrl,
    /// A separate session-mode URL for LISTEN (PgBouncer in transaction mode
    /// cannot LISTEN); defaults to `database_url`.
    pub listen_url: DbUrl,
    /// Signs and verifies policy tokens (`OPS_POLICY_SECRET`).
    pub policy_secret: Option<crate::policy::Secret>,
}

/// Reads `DATABASE_URL`, or the file named by `DATABASE_URL_FILE` (systemd
/// `LoadCredential=`). `None` when neither is set.
pub fn database_url_from_env() -> Result<Option<DbUrl>> {
    url_from_env("DATABASE_URL")
}

fn url_from_env(var: &str) -> Result<Option<DbUrl>> {
    from_env_or_file(var)?
        .map(|(raw, source)| DbUrl::parse(&raw, &source))
        .transpose()
}

/// A secret from `var`, or from the file named by `{var}_FILE` (systemd
/// `LoadCredential=`), trailing newline removed. Errors name the variable,
/// never the value.
pub fn secret_from_env(var: &str) -> Result<Option<String>> {
    let Some((raw, source)) = from_env_or_file(var)? else {
        return Ok(None);
    };
    let v = raw.trim_end_matches(['\r', '\n']).to_string();
    if v.is_empty() {
        return Err(Error::Config(format!("{source} names an empty file")));
    }
    Ok(Some(v))
}

/// The value of `var`, or the contents of the file `{var}_FILE` names, with
/// the name of the variable it came from (for messages).
fn from_env_or_file(var: &str) -> Result<Option<(String, String)>> {
    if let Some(raw) = non_empty_env(var)? {
        return Ok(Some((raw, var.to_string())));
    }
    let file_var = format!("{var}_FILE");
    if let Some(path) = non_empty_env(&file_var)? {
        let raw = std::fs::read_to_string(&path).map_err(|e| {
            Error::Config(format!("{file_var} names a file that cannot be read: {e}"))
        })?;
        return Ok(Some((raw, file_var)));
    }
    Ok(None)
}

fn non_empty_env(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Config(format!("{var} is not valid UTF-8")))
        }
    }
}

impl Settings {
    /// Loads defaults, then the file (if any), then `OPSRUNNER_SECTION__KEY`
    /// variables, e.g. `OPSRUNNER_WORKER__CONCURRENCY=20`.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::Config(format!(
                    "config file {} (--config / OPSRUNNER_CONFIG) does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(
            // Only SECTION__KEY variables are settings; OPSRUNNER_CONFIG,
            // OPSRUNNER_LOG and OPSRUNNER_LISTEN_URL(_FILE) are read elsewhere.
            Env::prefixed("OPSRUNNER_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let settings: Settings = fig.extract().map_err(|e| {
            let mut msgs = Vec::new();
            for err in e {
                let key = err.path.join(".");
                let env = format!("OPSRUNNER_{}", err.path.join("__").to_ascii_uppercase());
                msgs.push(format!("{key} (env {env}): {}", err.kind));
            }
            Error::Config(msgs.join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<()> {
        let w = &self.worker;
        let bad = |key: &str, why: &str| {
            let env = format!("OPSRUNNER_{}", key.replace('.', "__").to_ascii_uppercase());
            Err(Error::Config(format!("{key} (env {env}) {why}")))
        };
        if w.concurrency == 0 || w.concurrency > 10_000 {
            return bad("worker.concurrency", "must be between 1 and 10000");
        }
        for q in &w.queues {
            if !crate::jobs::valid_name(q) {
                return bad(
                    "worker.queues",
                    "holds a name that is not [a-z][a-z0-9_.-]{0,63}",
                );
            }
        }
        for (key, d) in [
            ("worker.poll_interval", w.poll_interval),
            ("worker.lease", w.lease),
            ("worker.heartbeat_interval", w.heartbeat_interval),
            ("worker.rescue_interval", w.rescue_interval),
            ("worker.flags_reload_interval", w.flags_reload_interval),
            ("worker.default_timeout", w.default_timeout),
            ("worker.backoff_base", w.backoff_base),
            ("db.acquire_timeout", self.db.acquire_timeout),
            ("db.connect_timeout", self.db.connect_timeout),
            ("retention.jobs", self.retention.jobs),
            ("retention.audit", self.retention.audit),
            ("retention.interval", self.retention.interval),
        ] {
            if d.is_zero() {
                return bad(key, "must be greater than zero");
            }
        }
        if w.heartbeat_interval * 2 > w.lease {
            return bad(
                "worker.heartbeat_interval",
                "must be at most half of worker.lease, or a single slow heartbeat loses every lease",
            );
        }
        if w.backoff_max < w.backoff_base {
            return bad(
                "worker.backoff_max",
                "must not be below worker.backoff_base",
            );
        }
        if w.completion_batch == 0 || w.completion_batch > 10_000 {
            return bad("worker.completion_batch", "must be between 1 and 10000");
        }
        if w.prefetch.is_some_and(|p| p > 10_000) {
            return bad("worker.prefetch", "must be between 0 and 10000");
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "metrics.listen",
                "must be an address like 127.0.0.1:9464, or empty to disable",
            );
        }
        let a = &self.api;
        if a.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("api.listen", "must be an address like 127.0.0.1:8080");
        }
        if !a.metrics_listen.is_empty() && a.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "api.metrics_listen",
                "must be an address like 127.0.0.1:9465, or empty to disable",
            );
        }
        if a.tenant.is_empty() || a.tenant.len() > 200 {
            return bad("api.tenant", "must be 1-200 characters");
        }
        if a.request_timeout.is_zero() {
            return bad("api.request_timeout", "must be greater than zero");
        }
        if a.max_body_bytes < 1024 || a.max_body_bytes > 16 * 1024 * 1024 {
            return bad("api.max_body_bytes", "must be between 1024 and 16777216");
        }
        for (key, v) in [
            ("api.rate_per_key", a.rate_per_key),
            ("api.burst_per_key", a.burst_per_key),
            ("api.rate_per_ip", a.rate_per_ip),
            ("api.burst_per_ip", a.burst_per_ip),
        ] {
            if v == 0 {
                return bad(key, "must be greater than zero");
            }
        }
        if a.job_types.iter().any(|t| !crate::jobs::valid_name(t)) {
            return bad(
                "api.job_types",
                "holds a name that is not [a-z][a-z0-9_.-]{0,63}",
            );
        }
        self.policy
            .validate()
            .map_err(|m| Error::Config(format!("{m} (config file)")))?;
        if !(1..=100_000).contains(&self.retention.batch) {
            return bad("retention.batch", "must be between 1 and 100000");
        }
        if self.db.pool_size < 2 || self.db.pool_size > 1000 {
            return bad("db.pool_size", "must be between 2 and 1000");
        }
        // Configured handlers: each entry valid, each job type declared once
        // across both kinds.
        let exec = self
            .exec
            .iter()
            .enumerate()
            .map(|(i, e)| ("exec", i, &e.job_type, e.validate(i)));
        let http = self
            .http
            .iter()
            .enumerate()
            .map(|(i, h)| ("http", i, &h.job_type, h.validate(i)));
        let mut seen = std::collections::HashSet::new();
        for (kind, i, job_type, valid) in exec.chain(http) {
            valid.map_err(|m| Error::Config(format!("{m} (config file)")))?;
            if !seen.insert(job_type) {
                return Err(Error::Config(format!(
                    "{kind}[{i}].job_type {job_type} is defined twice"
                )));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Loads settings and requires `DATABASE_URL`.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let settings = Settings::load(file)?;
        let database_url = database_url_from_env()?.ok_or_else(|| {
            Error::Config(
                "DATABASE_URL is not set; set it (or DATABASE_URL_FILE) to a postgres:// URL"
                    .into(),
            )
        })?;
        Self::with_url(settings, database_url)
    }

    /// The policy as configured, validated: fails when action job types need
    /// tokens and the secret is missing or short.
    pub fn policy(&self) -> Result<crate::policy::Policy> {
        crate::policy::Policy::new(self.settings.policy.clone(), self.policy_secret.clone())
    }

    pub fn with_url(settings: Settings, database_url: DbUrl) -> Result<Self> {
        let listen_url =
            url_from_env("OPSRUNNER_LISTEN_URL")?.unwrap_or_else(|| database_url.clone());
        let policy_secret = crate::policy::secret_from_env()?;
        Ok(Self {
            settings,
            database_url,
            listen_url,
            policy_secret,
        })
    }
}

/// The config file named by `--config` or `OPSRUNNER_CONFIG`.
pub fn config_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("OPSRUNNER_CONFIG").map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_is_refused_by_name_without_echoing_it() {
        let err = DbUrl::parse("sqlite://secret-pass@x.db", "DATABASE_URL").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("DATABASE_URL"), "{msg}");
        assert!(msg.contains("sqlite"), "{msg}");
        assert!(!msg.contains("secret-pass"), "{msg}");
    }

    #[test]
    fn describe_hides_the_password() {
        let u = DbUrl::parse("postgres://app:hunter2@db.example:6543/ops", "DATABASE_URL").unwrap();
        assert_eq!(u.describe(), "db.example:6543/ops");
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn garbage_url_error_does_not_echo_input() {
        let err = DbUrl::parse("postgres://u:pw@host:notaport/db", "DATABASE_URL").unwrap_err();
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    fn heartbeat_longer_than_half_the_lease_is_refused() {
        let mut s = Settings::default();
        s.worker.heartbeat_interval = Duration::from_secs(20);
        let msg = s.validate().unwrap_err().to_string();
        assert!(
            msg.contains("OPSRUNNER_WORKER__HEARTBEAT_INTERVAL"),
            "{msg}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own error type
    fn top_level_opsrunner_variables_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OPSRUNNER_LISTEN_URL_FILE", "/run/credentials/x/listen-url");
            jail.set_env("OPSRUNNER_LISTEN_URL", "postgres://x@h/db");
            jail.set_env("OPSRUNNER_WORKER__CONCURRENCY", "7");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.worker.concurrency, 7);
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }
}
