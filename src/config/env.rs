//! Every environment variable the binary reads, in one place, with its
//! reader. Secrets may come from a file instead (`VAR_FILE`, for systemd
//! `LoadCredential=`); errors name the variable, never the value.
//! Settings variables (`OPSRUNNER_SECTION__KEY`) are mapped by `Settings::load`.

use std::path::PathBuf;

use super::DbUrl;
use crate::error::{Error, Result};

/// The database URL (or `DATABASE_URL_FILE`).
pub const DATABASE_URL: &str = "DATABASE_URL";
/// A separate session-mode URL for LISTEN (or `OPSRUNNER_LISTEN_URL_FILE`).
pub const LISTEN_URL: &str = "OPSRUNNER_LISTEN_URL";
/// The config file, when `--config` is not given.
pub const CONFIG: &str = "OPSRUNNER_CONFIG";
/// The policy-token signing secret (or `OPS_POLICY_SECRET_FILE`).
pub const POLICY_SECRET: &str = crate::policy::SECRET_VAR;
/// The shim's master key (or `OPS_API_KEY_FILE`).
pub const API_KEY: &str = crate::keys::MASTER_KEY_VAR;
/// `dev`/`development` or `prod`/`production` (the default).
pub const APP_ENV: &str = "APP_ENV";

/// Reads `DATABASE_URL`, or the file named by `DATABASE_URL_FILE`. `None`
/// when neither is set.
pub fn database_url() -> Result<Option<DbUrl>> {
    url_from_env(DATABASE_URL)
}

/// `DATABASE_URL`, required: the error says how to set it.
pub fn require_database_url() -> Result<DbUrl> {
    database_url()?.ok_or_else(|| {
        Error::Config(
            "DATABASE_URL is not set; set it (or DATABASE_URL_FILE) to a postgres:// URL".into(),
        )
    })
}

/// `OPSRUNNER_LISTEN_URL`, if set.
pub fn listen_url() -> Result<Option<DbUrl>> {
    url_from_env(LISTEN_URL)
}

/// The config file named by `--config` (`flag`) or `OPSRUNNER_CONFIG`.
pub fn config_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os(CONFIG).map(PathBuf::from))
}

/// `OPS_POLICY_SECRET` (or its file), if set.
pub fn policy_secret() -> Result<Option<crate::policy::Secret>> {
    secret_from_env(POLICY_SECRET).map(|o| o.map(|s| crate::policy::Secret::new(s.into_bytes())))
}

/// `OPS_API_KEY` (or its file), if set.
pub fn api_key() -> Result<Option<String>> {
    secret_from_env(API_KEY)
}

/// Where the deployment is, from `APP_ENV`: production requires the master
/// key `OPS_API_KEY`; development makes it optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    /// `dev` or `development`.
    Development,
    /// Unset, `prod` or `production`.
    Production,
}

impl AppEnv {
    /// Unset, `prod` or `production` is production; `dev` or `development`
    /// is development; anything else is a start-up error.
    pub fn from_env() -> Result<Self> {
        match std::env::var(APP_ENV) {
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
/// the name of the variable it came from (for messages). `var` holds a
/// secret: it is taken with [`crate::secret_env::take`].
fn from_env_or_file(var: &str) -> Result<Option<(String, String)>> {
    if let Some(raw) = crate::secret_env::take(var)? {
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
    crate::secret_env::non_empty(var)
}
