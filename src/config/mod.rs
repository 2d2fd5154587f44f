//! Configuration: a TOML file plus `OPSRUNNER_*` environment overrides, and
//! secrets (the database URL) from the environment or a credential file.
//!
//! Raw [`Settings`] are validated once, in [`Settings::load`] and
//! [`Config::with_url`], so a `Config` is valid by construction (ripgrep's
//! low/high args). Each section checks itself (`worker.rs`, `db.rs`,
//! `api.rs`, `retention.rs`) through [`check::Check`], and every error names
//! the setting and the environment variable that sets it, never a secret.
//! Every environment variable the binary reads is in `env.rs`.
//!
//! This is also where the pieces are composed: [`Settings::registry`] builds
//! the handlers and [`Config::policy`] the policy, so that `handlers` and
//! `policy` never read the configuration themselves.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::handlers::{Registry, exec, http};

mod api;
pub mod check;
mod db;
mod db_url;
pub mod env;
mod retention;
mod worker;

pub use api::ApiConfig;
pub use check::env_var_for;
pub use db::DbConfig;
pub use db_url::DbUrl;
pub use env::{AppEnv, config_path, database_url as database_url_from_env, secret_from_env};
pub use retention::RetentionConfig;
pub use worker::{MAX_LEASE, WorkerConfig};

/// `[metrics]`: the worker's /metrics, /healthz and /readyz.
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

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human format on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line (journald, log shippers).
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Text, JSON, or decided by whether stderr is a terminal.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `opsrunner=debug`; RUST_LOG wins.
    pub level: Option<String>,
}

/// Everything read from the file and `OPSRUNNER_*` variables.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[worker]`.
    pub worker: WorkerConfig,
    /// `[db]`.
    pub db: DbConfig,
    /// `[retention]`.
    pub retention: RetentionConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// The HTTP shim (`opsrunner serve`).
    pub api: ApiConfig,
    /// Action job types and their policy tokens.
    pub policy: crate::policy::PolicyConfig,
    /// Commands run by `exec` handlers, one job type each.
    pub exec: Vec<crate::handlers::exec::ExecConfig>,
    /// Webhooks run by `http` handlers, one job type each.
    pub http: Vec<crate::handlers::http::HttpConfig>,
    /// Cron schedules owned by this file (`[[schedule]]`): the daemons
    /// apply them at start-up and on SIGHUP, and the CLI refuses to edit
    /// them. Give every daemon the same entries.
    pub schedule: Vec<crate::schedules::ScheduleSpec>,
}

impl Settings {
    /// Loads defaults, then the file (if any), then `OPSRUNNER_SECTION__KEY`
    /// variables, e.g. `OPSRUNNER_WORKER__CONCURRENCY=20`, and validates.
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
                msgs.push(format!("{key} (env {}): {}", env_var_for(&key), err.kind));
            }
            Error::Config(msgs.join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every rule, section by section; the first failure is the error.
    pub fn validate(&self) -> Result<()> {
        let mut c = check::Check::new();
        self.worker.check(&mut c);
        self.db.check(&mut c);
        self.worker
            .check_with_db(self.db.call_timeout(self.worker.lease), &mut c);
        self.retention.check(&mut c);
        c.addr(
            "metrics.listen",
            &self.metrics.listen,
            true,
            "127.0.0.1:9464",
        );
        self.api.check(&mut c);
        if let Err(m) = self.policy.validate() {
            c.fail_with(Error::Config(format!("{m} (config file)")));
        }
        if let Err(e) = self.check_handlers() {
            c.fail_with(e);
        }
        if let Err(e) = self.check_schedules() {
            c.fail_with(e);
        }
        c.finish()
    }

    /// `[[schedule]]` entries: each valid as `opsrunner schedules add` would
    /// check it (against handlers built without reading secrets), each name
    /// once.
    fn check_schedules(&self) -> Result<()> {
        if self.schedule.is_empty() {
            return Ok(());
        }
        let registry = self.api_registry()?;
        let known = self.known_job_types();
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.schedule.iter().enumerate() {
            s.validate(&registry, &known).map_err(|why| {
                Error::Config(format!("schedule[{i}] ({}): {why} (config file)", s.name))
            })?;
            if !seen.insert(&s.name) {
                return Err(Error::Config(format!(
                    "schedule[{i}].name {} is defined twice (config file)",
                    s.name
                )));
            }
        }
        Ok(())
    }

    /// Configured handlers: each entry valid, each job type declared once
    /// across both kinds.
    fn check_handlers(&self) -> Result<()> {
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

    /// Every job type this configuration knows: the built-ins, the
    /// `[[exec]]` and `[[http]]` entries, and `api.job_types` (types an
    /// embedding program serves). Sorted. Reads no secret.
    pub fn known_job_types(&self) -> Vec<String> {
        let mut v: Vec<String> = crate::handlers::BUILTINS
            .iter()
            .map(|s| s.to_string())
            .chain(self.exec.iter().map(|e| e.job_type.clone()))
            .chain(self.http.iter().map(|h| h.job_type.clone()))
            .chain(self.api.job_types.iter().cloned())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The built-ins plus one handler per `[[exec]]` and `[[http]]` entry.
    /// Fails (naming the entry) when an entry is invalid or a webhook's
    /// secret is missing or short.
    pub fn registry(&self) -> Result<Registry> {
        let mut r = self.builtins_and_exec()?;
        for (i, cfg) in self.http.iter().enumerate() {
            let handler = http::HttpHandler::new(cfg, i).map_err(Error::Config)?;
            r.register(&cfg.job_type, handler);
        }
        Ok(r)
    }

    /// The handlers the shim checks requests against: as [`Settings::registry`],
    /// but `[[http]]` entries are validated without reading their secrets
    /// (the shim never calls a webhook).
    pub fn api_registry(&self) -> Result<Registry> {
        let mut r = self.builtins_and_exec()?;
        for (i, cfg) in self.http.iter().enumerate() {
            cfg.validate(i).map_err(Error::Config)?;
            r.register(&cfg.job_type, http::HttpAcceptOnly);
        }
        Ok(r)
    }

    /// The built-in handlers and the `[[exec]]` ones, after the checks every
    /// handler entry must pass.
    fn builtins_and_exec(&self) -> Result<Registry> {
        self.check_handlers()?;
        let mut r = Registry::with_builtins();
        // Leave the executor's own grace room to see the process stop.
        let kill_grace = self.worker.cancel_grace / 2;
        for cfg in &self.exec {
            r.register(
                &cfg.job_type,
                exec::ExecHandler::new(cfg.clone(), kill_grace),
            );
        }
        Ok(r)
    }
}

/// Settings plus the database URL, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the file and `OPSRUNNER_*` variables say.
    pub settings: Settings,
    /// `DATABASE_URL`.
    pub database_url: DbUrl,
    /// A separate session-mode URL for LISTEN (PgBouncer in transaction mode
    /// cannot LISTEN); defaults to `database_url`.
    pub listen_url: DbUrl,
    /// Signs and verifies policy tokens (`OPS_POLICY_SECRET`).
    pub policy_secret: Option<crate::policy::Secret>,
}

impl Config {
    /// Loads settings and requires `DATABASE_URL`.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let settings = Settings::load(file)?;
        Self::with_url(settings, env::require_database_url()?)
    }

    /// The policy as configured, validated: fails when action job types need
    /// tokens and the secret is missing or short.
    pub fn policy(&self) -> Result<crate::policy::Policy> {
        crate::policy::Policy::new(self.settings.policy.clone(), self.policy_secret.clone())
    }

    /// Validates `settings` (the one place hand-built settings are checked)
    /// and reads the listen URL and the policy secret from the environment.
    pub fn with_url(settings: Settings, database_url: DbUrl) -> Result<Self> {
        settings.validate()?;
        let listen_url = env::listen_url()?.unwrap_or_else(|| database_url.clone());
        let policy_secret = env::policy_secret()?;
        Ok(Self {
            settings,
            database_url,
            listen_url,
            policy_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
