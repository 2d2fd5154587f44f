//! TLS to PostgreSQL, with libpq's `sslmode` values, over the rustls already
//! in the tree (`tokio-postgres-rustls`, ring provider).
//!
//! | `sslmode` | TLS | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default, as libpq) | when the server offers it, else plaintext | no (with `sslrootcert`: chain, as libpq) |
//! | `require` | always | no (with `sslrootcert`: chain, as libpq) |
//! | `verify-ca` | always | chain to `sslrootcert` (or the system roots) |
//! | `verify-full` | always | chain and host name |
//!
//! `sslcert` and `sslkey` present a client certificate (for `cert`
//! authentication in pg_hba). The settings come from the connection URL's
//! parameters, or from `[db]` (`OPSRUNNER_DB__SSLMODE`, ...), which wins;
//! under systemd, point them at credentials (`LoadCredential=` and
//! `Environment=OPSRUNNER_DB__SSLROOTCERT=%d/db-ca.pem`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// Where the system's CA bundle lives on Debian and its relatives; used by
/// `verify-ca` and `verify-full` without `sslrootcert`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless a root
    /// certificate is given).
    Require,
    /// TLS, certificate chained to a trusted root; any host name.
    VerifyCa,
    /// TLS, certificate chained to a trusted root and naming the host.
    VerifyFull,
}

impl SslMode {
    /// From libpq's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            // libpq's `allow` tries plaintext first; treat it as prefer.
            "allow" => Self::Prefer,
            _ => return None,
        })
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of one connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: PEM file of the CA certificates to trust.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: PEM file of the client certificate (chain).
    pub cert: Option<PathBuf>,
    /// `sslkey`: PEM file of the client certificate's key.
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// Takes the `ssl*` parameters out of a `postgres://` URL's query
    /// (tokio-postgres knows only three of libpq's modes and no file
    /// parameters); returns the URL without them. Key=value strings are
    /// handled the same way, token by token.
    pub(crate) fn split_off(raw: &str, var: &str) -> Result<(String, Self)> {
        let mut tls = Self::default();
        let mut set = |key: &str, value: &str| -> Result<bool> {
            match key {
                "sslmode" => {
                    tls.mode = SslMode::parse(value).ok_or_else(|| {
                        Error::Config(format!(
                            "{var}: sslmode must be one of disable, prefer, require, verify-ca, verify-full"
                        ))
                    })?;
                }
                "sslrootcert" => tls.root_cert = Some(PathBuf::from(value)),
                "sslcert" => tls.cert = Some(PathBuf::from(value)),
                "sslkey" => tls.key = Some(PathBuf::from(value)),
                _ => return Ok(false),
            }
            Ok(true)
        };
        if raw.contains("://") {
            let Ok(mut url) = url::Url::parse(raw) else {
                // Left to tokio-postgres' parse, which names the variable.
                return Ok((raw.to_string(), Self::default()));
            };
            let mut kept = Vec::new();
            for (k, v) in url.query_pairs() {
                if !set(&k, &v)? {
                    kept.push((k.into_owned(), v.into_owned()));
                }
            }
            if kept.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(kept);
            }
            return Ok((url.to_string(), tls));
        }
        let mut kept = Vec::new();
        for token in raw.split_whitespace() {
            match token.split_once('=') {
                Some((k, v)) if set(k, v.trim_matches('\''))? => {}
                _ => kept.push(token),
            }
        }
        Ok((kept.join(" "), tls))
    }

    /// What tokio-postgres is told: whether to ask for TLS at all.
    pub(crate) fn pg_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The connector for these settings. Fails, naming the setting, when a
    /// file cannot be read or parsed.
    pub fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let roots = match (&self.root_cert, self.mode) {
            (Some(p), _) => Some(load_roots(p, "sslrootcert")?),
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => Some(load_roots(
                Path::new(SYSTEM_ROOTS),
                "sslrootcert (system roots)",
            )?),
            (None, _) => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (self.mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::Config(format!("sslrootcert: {e}")))?
            }
            (_, roots) => Arc::new(Lenient {
                roots: roots.map(Arc::new),
                provider,
            }),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| file_error("sslcert", cert, &e.to_string()))?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| file_error("sslkey", key, &e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| Error::Config(format!("sslcert/sslkey: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::Config(
                    "sslcert and sslkey must be given together".into(),
                ));
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn file_error(setting: &str, path: &Path, why: &str) -> Error {
    Error::Config(format!("{setting} {}: {why}", path.display()))
}

fn load_roots(path: &Path, setting: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| file_error(setting, path, &e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(file_error(setting, path, "holds no CA certificate"));
    }
    Ok(roots)
}

/// Every mode but `verify-full`. With roots (`verify-ca`, or `require` and
/// `prefer` given `sslrootcert`, as libpq), the chain must lead to a trusted
/// root and be valid now, whatever name it carries; without roots (`prefer`
/// and `require` as libpq has them), any certificate is accepted. The
/// handshake's signatures are checked either way, so the peer holds the key
/// of the certificate it sent.
#[derive(Debug)]
struct Lenient {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, TlsError> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether `host` is this machine (plaintext there crosses no network).
pub fn is_loopback(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(h) => {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_taken_out_of_the_url_and_the_rest_is_kept() {
        let (url, tls) = TlsSettings::split_off(
            "postgres://u:p@db.example:5432/ops?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
            "DATABASE_URL",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db.example:5432/ops?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        let (url, tls) = TlsSettings::split_off("postgres://u@h/db", "DATABASE_URL").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(tls.mode, SslMode::Prefer, "libpq's default");
        let (kv, tls) =
            TlsSettings::split_off("host=h dbname=d sslmode=require sslcert=/c sslkey=/k", "X")
                .unwrap();
        assert_eq!(kv, "host=h dbname=d");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.key.as_deref(), Some(Path::new("/k")));
        let e = TlsSettings::split_off("postgres://h/d?sslmode=sometimes", "DATABASE_URL")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DATABASE_URL") && e.contains("verify-full"),
            "{e}"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let tls = TlsSettings {
            cert: Some("/nonexistent".into()),
            ..Default::default()
        };
        assert!(tls.connector().is_err());
    }
}
