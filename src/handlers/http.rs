//! `http`: POSTs the job's payload to a URL fixed in the config file, signed
//! with HMAC-SHA256, through the SSRF guard.
//!
//! Signature header: `X-Opsrunner-Signature: t=<unix seconds>,v1=<hex>` where
//! `<hex>` is HMAC-SHA256(secret, "`<t>`." + body). Receivers should check it in
//! constant time and refuse old timestamps. `Idempotency-Key` carries the
//! job id, so a retried delivery can be recognised.
//!
//! The guard: an IP-literal host is checked before sending; a host name is
//! resolved by our resolver, which refuses the request if any address is
//! forbidden, and the connection goes to the vetted addresses only (no
//! second lookup, so no DNS rebinding). No redirects, no proxies.
//! Outcome: 2xx succeeds, 429 and 5xx are retried, any other status fails
//! at once. Errors never contain the URL (it may hold credentials).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ssrf::{self, Cidr};
use super::{HandlerError, HandlerFuture, JobContext};

/// Bytes of response body read at most.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Shortest accepted signing secret.
pub const MIN_SECRET_BYTES: usize = 32;

/// One `[[http]]` entry: a job type run as a signed webhook.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The job type.
    pub job_type: String,
    /// http:// or https:// URL; fixed here, never taken from a payload.
    pub url: String,
    /// Environment variable that holds the signing secret...
    #[serde(default)]
    pub secret_env: Option<String>,
    /// ...or a file that does (systemd LoadCredential=).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Addresses or CIDR blocks allowed although the guard would refuse them.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Per-request time limit.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry credentials: never print it.
        f.debug_struct("HttpConfig")
            .field("job_type", &self.job_type)
            .field("url", &"<redacted>")
            .field("allow", &self.allow)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpConfig {
    /// Checks the entry (`idx` names it in messages) without reading its secret.
    pub fn validate(&self, idx: usize) -> Result<(), String> {
        let at = format!("http[{idx}]");
        super::check_configured_job_type(&at, &self.job_type)?;
        let url = url::Url::parse(&self.url).map_err(|_| format!("{at}.url is not a valid URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "{at}.url must be an http:// or https:// URL with a host"
            ));
        }
        for a in &self.allow {
            a.parse::<Cidr>().map_err(|e| format!("{at}.allow: {e}"))?;
        }
        if self.secret_env.is_some() == self.secret_file.is_some() {
            return Err(format!(
                "{at} needs exactly one of secret_env or secret_file"
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err(format!("{at}.timeout must be between 1 ms and 1 hour"));
        }
        Ok(())
    }

    /// Reads the secret; errors name where it was looked for, never its value.
    fn load_secret(&self, idx: usize) -> Result<Vec<u8>, String> {
        let at = format!("http[{idx}]");
        let secret = match (&self.secret_env, &self.secret_file) {
            (Some(var), _) => crate::secret_env::take(var).ok().flatten().ok_or_else(|| {
                format!("{at}: environment variable {var} (secret_env) is not set")
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("{at}: secret_file {} cannot be read: {e}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => return Err(format!("{at} needs secret_env or secret_file")),
        };
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{at}: the signing secret must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        Ok(secret.into_bytes())
    }
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves once, refuses forbidden answers, and hands the vetted addresses
/// to the connector.
struct GuardedResolver {
    allow: Arc<Vec<Cidr>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(Box::new(Refused("the host name has no addresses".into())) as _);
            }
            for a in &addrs {
                ssrf::check(a.ip(), &allow).map_err(|e| {
                    Box::new(Refused(e)) as Box<dyn std::error::Error + Send + Sync>
                })?;
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The `http` handler of one configured job type.
pub struct HttpHandler {
    url: url::Url,
    secret: Arc<Vec<u8>>,
    allow: Arc<Vec<Cidr>>,
    client: reqwest::Client,
}

impl HttpHandler {
    /// A handler for `cfg`; reads its secret (errors name where, never the value).
    pub fn new(cfg: &HttpConfig, idx: usize) -> Result<Self, String> {
        cfg.validate(idx)?;
        let secret = cfg.load_secret(idx)?;
        let url =
            url::Url::parse(&cfg.url).map_err(|_| format!("http[{idx}].url is not a valid URL"))?;
        let allow: Arc<Vec<Cidr>> =
            Arc::new(cfg.allow.iter().filter_map(|a| a.parse().ok()).collect());
        // Several handlers may race to install it; any one will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: allow.clone(),
            }))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("opsrunner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                format!(
                    "http[{idx}]: cannot build the HTTP client: {}",
                    e.without_url()
                )
            })?;
        Ok(Self {
            url,
            secret: Arc::new(secret),
            allow,
            client,
        })
    }
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the shim registers for an `[[http]]` entry: the shim only accepts
/// and checks jobs of the type, it never calls the webhook, so it needs
/// neither the secret nor a client (it used to refuse to start without
/// webhook secrets it never used). Running it is a bug, answered as such.
pub struct HttpAcceptOnly;

impl super::Handler for HttpAcceptOnly {
    fn run(&self, _job: JobContext) -> HandlerFuture {
        Box::pin(async {
            Err(HandlerError::Permanent(
                "the shim's stand-in for an http handler cannot run jobs".into(),
            ))
        })
    }
}

impl super::Handler for HttpHandler {
    fn run(&self, job: JobContext) -> HandlerFuture {
        let (url, secret, allow, client) = (
            self.url.clone(),
            self.secret.clone(),
            self.allow.clone(),
            self.client.clone(),
        );
        Box::pin(async move {
            let literal = match url.host() {
                Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
                Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
                _ => None,
            };
            if let Some(ip) = literal {
                ssrf::check(ip, &allow).map_err(HandlerError::Permanent)?;
            }
            let body = serde_json::to_vec(&job.payload).unwrap_or_default();
            // Receivers compare it with their clock; ours may be off, the
            // database's is the reference every daemon shares.
            let ts = job.db_unix_time()?;
            let signature = format!("t={ts},v1={}", sign(&secret, ts, &body));
            let request = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-opsrunner-signature", signature)
                .header("x-opsrunner-job-id", job.id.to_string())
                .header("idempotency-key", job.id.to_string())
                .body(body);
            let delivery = async {
                let resp = request.send().await.map_err(classify_error)?;
                let status = resp.status();
                let body = read_bounded(resp).await.map_err(classify_error)?;
                Ok::<_, HandlerError>((status, body))
            };
            let (status, body) = tokio::select! {
                r = delivery => r?,
                _ = job.cancel.cancelled() => return Err(HandlerError::Retryable("request abandoned: job cancelled or timed out".into())),
            };
            let code = status.as_u16();
            if status.is_success() {
                let text = String::from_utf8_lossy(&body);
                let parsed = serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|_| Value::String(text.into_owned()));
                return Ok(json!({ "status": code, "body": parsed }));
            }
            let msg = format!("HTTP {code}");
            if code == 429 || status.is_server_error() {
                Err(HandlerError::Retryable(msg))
            } else if status.is_redirection() {
                Err(HandlerError::Permanent(format!(
                    "{msg}: redirects are not followed"
                )))
            } else {
                Err(HandlerError::Permanent(msg))
            }
        })
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    Ok(body)
}

fn classify_error(e: reqwest::Error) -> HandlerError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return HandlerError::Permanent(refused.0.clone());
        }
        source = s.source();
    }
    // Without the URL: it may hold credentials.
    let e = e.without_url();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    HandlerError::Retryable(format!("{kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        // Here the signed message is "<t>." + body, so split it accordingly.
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(sign(b"k", 1, b"{}"), sign(b"k", 1, b"{}"));
        assert_ne!(sign(b"k", 1, b"{}"), sign(b"k", 2, b"{}"));
    }

    #[test]
    fn debug_never_shows_the_url() {
        let c = HttpConfig {
            job_type: "hook".into(),
            url: "https://user:hunter2@example.com/x?token=abc".into(),
            secret_env: Some("X".into()),
            secret_file: None,
            allow: vec![],
            timeout: default_timeout(),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("token=abc"), "{d}");
    }
}
