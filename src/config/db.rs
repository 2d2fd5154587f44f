//! `[db]`: the pool and the session limits of every connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Check;

/// `[db]`: the pool and the session limits every connection carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbConfig {
    /// Pool connections for claims, completions, heartbeats and maintenance
    /// (the LISTEN connection is separate).
    pub pool_size: usize,
    /// Longest wait for a pooled connection.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Longest wait for a new connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `statement_timeout` of every session (server side).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every session.
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: Duration,
    /// Client-side deadline of every database call the daemon and the shim
    /// make (a server-side `statement_timeout` cannot end a statement that
    /// never reached the server). A call past it is abandoned and its
    /// connection closed, never reused. Unset: a sixth of `worker.lease`, at
    /// most 10 s (5 s with the default lease).
    #[serde(with = "humantime_serde::option")]
    pub call_timeout: Option<Duration>,
    /// TLS to the database, as libpq's `sslmode` (disable, prefer, require,
    /// verify-ca, verify-full); overrides the URL's. Unset: the URL's, or
    /// `prefer`.
    pub sslmode: Option<crate::db::tls::SslMode>,
    /// PEM file of the CA certificates to trust (libpq's `sslrootcert`);
    /// overrides the URL's.
    pub sslrootcert: Option<std::path::PathBuf>,
    /// PEM file of a client certificate (`sslcert`); overrides the URL's.
    pub sslcert: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's key (`sslkey`).
    pub sslkey: Option<std::path::PathBuf>,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            pool_size: 8,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(10),
            call_timeout: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
        }
    }
}

impl DbConfig {
    /// The TLS settings of connections to `url`: the URL's parameters, with
    /// each `[db]` setting that is set taking their place.
    pub fn tls_for(&self, url: &super::DbUrl) -> crate::db::tls::TlsSettings {
        let mut t = url.tls().clone();
        if let Some(m) = self.sslmode {
            t.mode = m;
        }
        for (from, to) in [
            (&self.sslrootcert, &mut t.root_cert),
            (&self.sslcert, &mut t.cert),
            (&self.sslkey, &mut t.key),
        ] {
            if from.is_some() {
                *to = from.clone();
            }
        }
        t
    }

    /// The `[db]` rules.
    pub(crate) fn check(&self, c: &mut Check) {
        c.nonzero("db.acquire_timeout", self.acquire_timeout);
        c.nonzero("db.connect_timeout", self.connect_timeout);
        c.range("db.pool_size", self.pool_size, 2..=1000);
        if let Some(d) = self.call_timeout {
            c.nonzero("db.call_timeout", d);
        }
    }

    /// The client-side deadline of one call, given the worker's lease.
    pub fn call_timeout(&self, lease: Duration) -> Duration {
        self.call_timeout
            .unwrap_or_else(|| (lease / 6).min(Duration::from_secs(10)))
    }
}
