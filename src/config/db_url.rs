//! [`DbUrl`]: a connection string that never prints its password.

use crate::error::{Error, Result};

/// A PostgreSQL connection string. Debug and Display never show it: only the
/// host, port and database name can be printed, through [`DbUrl::describe`].
#[derive(Clone)]
pub struct DbUrl {
    raw: String,
    pg: tokio_postgres::Config,
    tls: crate::db::tls::TlsSettings,
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
        // libpq's TLS parameters first: tokio-postgres knows three of the
        // five modes and none of the file parameters.
        let (rest, tls) = crate::db::tls::TlsSettings::split_off(trimmed, var)?;
        // tokio-postgres' parse errors do not echo the input, but we still
        // replace them with a fixed message so no future version can leak.
        let mut pg: tokio_postgres::Config = rest.parse().map_err(|_| {
            Error::Config(format!("{var} is not a valid PostgreSQL connection string"))
        })?;
        pg.ssl_mode(tls.pg_mode());
        if pg.get_dbname().is_none() && pg.get_user().is_none() {
            // libpq would default both from the OS user; be explicit instead.
            return Err(Error::Config(format!(
                "{var} names neither a database nor a user; add at least the database name"
            )));
        }
        Ok(Self {
            raw: trimmed.to_string(),
            pg,
            tls,
        })
    }

    /// The TLS settings its parameters name (`sslmode`, `sslrootcert`,
    /// `sslcert`, `sslkey`; `prefer` when none).
    pub fn tls(&self) -> &crate::db::tls::TlsSettings {
        &self.tls
    }

    /// Whether every host it names is this machine.
    pub fn is_local(&self) -> bool {
        self.pg.get_hosts().iter().all(crate::db::tls::is_loopback)
    }

    /// The parsed form, for connecting.
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
