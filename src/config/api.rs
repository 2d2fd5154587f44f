//! `[api]`: the HTTP shim's address, limits and tenant.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Check;

/// `[api]`: the HTTP shim.
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
    /// Burst per API key.
    pub burst_per_key: u32,
    /// Sustained requests per second, and burst, per client IP (checked
    /// before authentication, so it also slows key guessing).
    pub rate_per_ip: u32,
    /// Burst per client IP.
    pub burst_per_ip: u32,
    /// Job types accepted besides those with a built-in or configured
    /// handler (types served by an embedding program's native handlers).
    pub job_types: Vec<String>,
    /// A connection that has not sent a whole request head within this time
    /// is closed: a silent or slow-sending socket, and a keep-alive
    /// connection idle that long between requests.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections served at once; one more is closed as soon as it is
    /// accepted. Keep it below the unit's `LimitNOFILE` (65536), with room
    /// for the database pool and the metrics listener.
    pub max_connections: usize,
    /// Connections from one client address at once; more are closed at
    /// accept, so one client cannot take the others' share.
    pub max_connections_per_ip: usize,
    /// The URL operators reach the shim at (through a TLS proxy, say):
    /// when it is https, the console's session cookie is marked `Secure`.
    /// Empty: not known.
    pub public_url: String,
    /// A console session unused this long ends.
    #[serde(with = "humantime_serde")]
    pub ui_session_idle: Duration,
    /// A console session ends this long after sign-in, used or not.
    #[serde(with = "humantime_serde")]
    pub ui_session_lifetime: Duration,
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
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 128,
            public_url: String::new(),
            ui_session_idle: Duration::from_secs(30 * 60),
            ui_session_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

impl ApiConfig {
    /// The `[api]` rules.
    pub(crate) fn check(&self, c: &mut Check) {
        c.addr("api.listen", &self.listen, false, "127.0.0.1:8080");
        c.addr(
            "api.metrics_listen",
            &self.metrics_listen,
            true,
            "127.0.0.1:9465",
        );
        c.range("api.tenant", self.tenant.chars().count(), 1..=200);
        c.nonzero("api.request_timeout", self.request_timeout);
        c.nonzero("api.ui_session_idle", self.ui_session_idle);
        c.nonzero("api.ui_session_lifetime", self.ui_session_lifetime);
        c.rule(
            "api.public_url",
            self.public_url.is_empty()
                || self.public_url.starts_with("https://")
                || self.public_url.starts_with("http://"),
            "must be an http:// or https:// URL, or empty",
        );
        c.range(
            "api.max_body_bytes",
            self.max_body_bytes,
            1024..=16 * 1024 * 1024,
        );
        for (key, v) in [
            ("api.rate_per_key", self.rate_per_key),
            ("api.burst_per_key", self.burst_per_key),
            ("api.rate_per_ip", self.rate_per_ip),
            ("api.burst_per_ip", self.burst_per_ip),
        ] {
            c.range(key, v, 1..=u32::MAX);
        }
        c.names("api.job_types", &self.job_types);
        c.nonzero("api.header_read_timeout", self.header_read_timeout);
        c.range("api.max_connections", self.max_connections, 1..=60_000);
        c.range(
            "api.max_connections_per_ip",
            self.max_connections_per_ip,
            1..=self.max_connections.max(1),
        );
    }
}
