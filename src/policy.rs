//! Policy tokens: a signed, short-lived permission to run one *action* job
//! type (a job with side effects, such as restarting a service).
//!
//! A token is `opt1.<claims>.<mac>`: base64url (no padding) of a JSON object
//! `{tenant, actor, action, scopes, jti, iat, exp}`, and base64url of
//! HMAC-SHA256 over `opt1.<claims>` with the secret from `OPS_POLICY_SECRET`.
//! The shim checks it at enqueue; the worker checks it again before running,
//! because rows can be inserted by plain SQL.
//!
//! A token is good for one job. `jti` is 128 random bits, so no two signed
//! tokens are equal; the database records the first job that carried a token
//! (`ops_policy_token_uses`, written by an insert trigger in the enqueueing
//! transaction) and refuses a second, and the worker runs an action job only
//! when the recorded use is that job's. Tokens signed before v9 carry no
//! `jti` and are refused as malformed: sign new ones.
//!
//! Nothing here ever prints a token: refusals say why, not what.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

const PREFIX: &str = "opt1";
/// Longest token accepted (the column holds 4096 characters).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Shortest secret accepted when tokens are required.
pub const MIN_SECRET_LEN: usize = 32;
/// A token may not be valid for longer than this (from `iat` to `exp`).
pub const MAX_TTL_SECS: i64 = 7 * 86_400;
/// How far in the future a token's issue time may lie: the signer's clock may
/// be ahead of the database's by this much (the worker warns long before, at
/// `worker.clock_offset_limit`, 5 s by default).
pub const MAX_ISSUE_SKEW_SECS: i64 = 300;

/// Environment variables that carry the signing secret.
pub const SECRET_VAR: &str = "OPS_POLICY_SECRET";

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The tenant of the jobs it may create; `None` for jobs without a tenant
    /// (inserted by SQL without `tenant_id`).
    pub tenant: Option<String>,
    /// Who asked, for the audit log.
    pub actor: String,
    /// The job type it permits.
    pub action: String,
    /// Scopes it grants, e.g. `ops:execute`.
    pub scopes: Vec<String>,
    /// Its unique id: 32 lowercase hex digits (128 random bits).
    pub jti: String,
    /// Issue time, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds; at most [`MAX_TTL_SECS`] after `iat`.
    pub exp: i64,
}

impl Claims {
    /// Claims issued at `now` (Unix seconds) and valid for `ttl_secs`, with a
    /// fresh random id. [`sign`] refuses a `ttl_secs` outside
    /// `1..=MAX_TTL_SECS`.
    pub fn new(
        tenant: Option<String>,
        actor: impl Into<String>,
        action: impl Into<String>,
        scopes: Vec<String>,
        now: i64,
        ttl_secs: i64,
    ) -> Self {
        let id: [u8; 16] = rand::random();
        Self {
            tenant,
            actor: actor.into(),
            action: action.into(),
            scopes,
            jti: id.iter().map(|b| format!("{b:02x}")).collect(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
        }
    }
}

/// Why a token was refused. The message carries no part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No token with an action job.
    #[error("a policy token is required for this job type")]
    Missing,
    /// Not a token.
    #[error("policy token is malformed")]
    Malformed,
    /// Not signed with our secret.
    #[error("policy token signature is invalid")]
    BadSignature,
    /// Past its expiry.
    #[error("policy token has expired")]
    Expired,
    /// Signed for another job type.
    #[error("policy token is for a different action")]
    WrongAction,
    /// Signed for another tenant.
    #[error("policy token is for a different tenant")]
    WrongTenant,
    /// Lacks the scope the action needs.
    #[error("policy token lacks the required scope")]
    MissingScope,
    /// Issued in the future (more than [`MAX_ISSUE_SKEW_SECS`] ahead).
    #[error("policy token is not valid yet")]
    NotYetValid,
    /// Already carried by another job: a token is good for one job.
    #[error("policy token was already used by another job")]
    Reused,
}

impl Refusal {
    /// Every refusal, for metrics registered at 0 from start-up.
    pub const ALL: [Refusal; 9] = [
        Refusal::Missing,
        Refusal::Malformed,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::WrongAction,
        Refusal::WrongTenant,
        Refusal::MissingScope,
        Refusal::NotYetValid,
        Refusal::Reused,
    ];

    /// A short label for metrics and the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::WrongAction => "wrong_action",
            Refusal::WrongTenant => "wrong_tenant",
            Refusal::MissingScope => "missing_scope",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Reused => "reused",
        }
    }
}

/// An action job type and the scope its tokens must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The action job type.
    pub job_type: String,
    /// Defaults to `ops:execute`.
    #[serde(default = "default_scope")]
    pub scope: String,
}

fn default_scope() -> String {
    "ops:execute".into()
}

/// `[policy]`: which job types are actions and whether they need tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// When false, action jobs run without a token (development only).
    pub require_tokens: bool,
    /// Job types that need a policy token.
    pub actions: Vec<ActionConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            require_tokens: true,
            actions: Vec::new(),
        }
    }
}

impl PolicyConfig {
    /// Checks the names and scopes.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.actions.iter().enumerate() {
            if !crate::jobs::valid_name(&a.job_type) {
                return Err(format!(
                    "policy.actions[{i}].job_type is not a job type name"
                ));
            }
            if !valid_scope(&a.scope) {
                return Err(format!(
                    "policy.actions[{i}].scope must be 1-64 characters of [a-z0-9:_.-]"
                ));
            }
            if !seen.insert(&a.job_type) {
                return Err(format!(
                    "policy.actions[{i}].job_type {} is listed twice",
                    a.job_type
                ));
            }
        }
        Ok(())
    }
}

/// `[a-z0-9:_.-]{1,64}`.
pub fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_.-".contains(&b))
}

/// The signing secret. Debug never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A token as read from a job row. Debug never shows it.
#[derive(Clone)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// The policy as the worker and shim apply it.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    secret: Option<Secret>,
}

impl Policy {
    /// Fails, naming the variable, when action jobs are configured, tokens are
    /// required and the secret is missing or shorter than 32 bytes.
    pub fn new(config: PolicyConfig, secret: Option<Secret>) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        if config.require_tokens && !config.actions.is_empty() {
            match &secret {
                None => {
                    return Err(Error::Config(format!(
                        "{SECRET_VAR} (or {SECRET_VAR}_FILE) is not set, but policy.actions lists \
                         action job types and policy.require_tokens is on"
                    )));
                }
                Some(s) if s.len() < MIN_SECRET_LEN => {
                    return Err(Error::Config(format!(
                        "{SECRET_VAR} must be at least {MIN_SECRET_LEN} bytes long"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(Self { config, secret })
    }

    /// No action types, no tokens.
    pub fn disabled() -> Self {
        Self {
            config: PolicyConfig::default(),
            secret: None,
        }
    }

    fn action(&self, job_type: &str) -> Option<&ActionConfig> {
        self.config.actions.iter().find(|a| a.job_type == job_type)
    }

    /// Whether `job_type` is an action job type (needs a token).
    pub fn is_action(&self, job_type: &str) -> bool {
        self.action(job_type).is_some()
    }

    /// Checks the token a job of `job_type` for `tenant` carries. `Ok(None)`
    /// when the type needs no token; `Ok(Some(claims))` when it is valid.
    pub fn check(
        &self,
        job_type: &str,
        tenant: Option<&str>,
        token: Option<&str>,
        now_unix: i64,
    ) -> std::result::Result<Option<Claims>, Refusal> {
        let Some(action) = self.action(job_type) else {
            return Ok(None);
        };
        if !self.config.require_tokens {
            return Ok(None);
        }
        let token = token.ok_or(Refusal::Missing)?;
        // Policy::new guarantees a secret whenever tokens are required.
        let secret = self.secret.as_ref().ok_or(Refusal::BadSignature)?;
        let claims = verify(secret, token)?;
        if claims.exp <= now_unix {
            return Err(Refusal::Expired);
        }
        if claims.iat > now_unix.saturating_add(MAX_ISSUE_SKEW_SECS) {
            return Err(Refusal::NotYetValid);
        }
        if claims.action != job_type {
            return Err(Refusal::WrongAction);
        }
        // A token without a tenant is for the default tenant's jobs, which is
        // where jobs without one live.
        let tenant_of = |t: Option<&str>| t.unwrap_or(crate::jobs::DEFAULT_TENANT).to_owned();
        if tenant_of(claims.tenant.as_deref()) != tenant_of(tenant) {
            return Err(Refusal::WrongTenant);
        }
        if !claims.scopes.iter().any(|s| s == &action.scope) {
            return Err(Refusal::MissingScope);
        }
        Ok(Some(claims))
    }
}

fn mac(secret: &Secret, signed: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    m.update(signed);
    m
}

/// Signs `claims`. Refuses claims that `verify` would refuse as malformed,
/// among them a validity (`exp - iat`) over [`MAX_TTL_SECS`] (7 days).
pub fn sign(secret: &Secret, claims: &Claims) -> Result<String> {
    let ttl = claims.exp.saturating_sub(claims.iat);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(Error::Invalid(format!(
            "a policy token must be valid for between 1 second and {MAX_TTL_SECS} seconds              (7 days); these claims ask for {ttl}"
        )));
    }
    check_claims(claims).map_err(|_| Error::Invalid("policy token claims out of bounds".into()))?;
    let json = serde_json::to_vec(claims)
        .map_err(|e| Error::Invalid(format!("policy token claims: {e}")))?;
    let body = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
    let tag = mac(secret, body.as_bytes()).finalize().into_bytes();
    let token = format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag));
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::Invalid(
            "policy token would be longer than 4096 characters".into(),
        ));
    }
    Ok(token)
}

fn check_claims(c: &Claims) -> std::result::Result<(), Refusal> {
    let tenant_ok = c
        .tenant
        .as_ref()
        .is_none_or(|t| !t.is_empty() && t.len() <= 200);
    if !tenant_ok
        || c.actor.is_empty()
        || c.actor.len() > 200
        || !crate::jobs::valid_name(&c.action)
        || c.scopes.is_empty()
        || c.scopes.len() > 16
        || !c.scopes.iter().all(|s| valid_scope(s))
        || c.jti.len() != 32
        || !c
            .jti
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        || !(1..=MAX_TTL_SECS).contains(&c.exp.saturating_sub(c.iat))
    {
        return Err(Refusal::Malformed);
    }
    Ok(())
}

/// Parses and authenticates a token; expiry and binding are the caller's.
/// The MAC is checked (in constant time) before the claims are parsed, so no
/// unauthenticated JSON is ever interpreted.
pub fn verify(secret: &Secret, token: &str) -> std::result::Result<Claims, Refusal> {
    if token.len() > MAX_TOKEN_LEN || !token.is_ascii() {
        return Err(Refusal::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(prefix), Some(claims_b64), Some(tag_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    if prefix != PREFIX {
        return Err(Refusal::Malformed);
    }
    let tag = URL_SAFE_NO_PAD
        .decode(tag_b64)
        .map_err(|_| Refusal::Malformed)?;
    let signed_len = prefix.len() + 1 + claims_b64.len();
    mac(secret, &token.as_bytes()[..signed_len])
        .verify_slice(&tag)
        .map_err(|_| Refusal::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| Refusal::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| Refusal::Malformed)?;
    check_claims(&claims)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    fn policy() -> Policy {
        Policy::new(
            PolicyConfig {
                require_tokens: true,
                actions: vec![ActionConfig {
                    job_type: "restart-service".into(),
                    scope: "ops:execute".into(),
                }],
            },
            Some(secret()),
        )
        .unwrap()
    }

    fn claims() -> Claims {
        Claims::new(
            Some("acme".into()),
            "alice",
            "restart-service",
            vec!["ops:execute".into()],
            500,
            1_500,
        )
    }

    #[test]
    fn a_valid_token_passes_and_every_binding_is_checked() {
        let p = policy();
        let t = sign(&secret(), &claims()).unwrap();
        let check = |job: &str, tenant: Option<&str>, now| p.check(job, tenant, Some(&t), now);
        assert_eq!(
            check("restart-service", Some("acme"), 1_000)
                .unwrap()
                .map(|c| c.exp),
            Some(2_000)
        );
        assert_eq!(
            check("restart-service", Some("acme"), 2_000),
            Err(Refusal::Expired)
        );
        assert_eq!(
            check("restart-service", Some("other"), 1_000),
            Err(Refusal::WrongTenant)
        );
        assert_eq!(
            check("restart-service", None, 1_000),
            Err(Refusal::WrongTenant),
            "no tenant is the default tenant, not acme"
        );
        // Not an action type: no token needed, whatever is passed.
        assert_eq!(check("noop", Some("acme"), 1_000), Ok(None));
        assert_eq!(
            p.check("restart-service", Some("acme"), None, 1_000),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn signing_refuses_validity_over_seven_days_and_every_token_is_unique() {
        let s = secret();
        let mut long = claims();
        long.exp = long.iat + MAX_TTL_SECS + 1;
        let msg = sign(&s, &long).unwrap_err().to_string();
        assert!(msg.contains("7 days"), "{msg}");
        let mut backwards = claims();
        backwards.exp = backwards.iat;
        assert!(sign(&s, &backwards).is_err());
        let mut week = claims();
        week.exp = week.iat + MAX_TTL_SECS;
        sign(&s, &week).unwrap();
        // The same grant signed twice: two tokens (their ids differ).
        assert_ne!(sign(&s, &claims()).unwrap(), sign(&s, &claims()).unwrap());
    }

    #[test]
    fn a_token_issued_in_the_future_is_not_valid_yet() {
        let p = policy();
        let mut c = claims();
        c.iat = 1_000 + MAX_ISSUE_SKEW_SECS + 1;
        c.exp = c.iat + 60;
        let t = sign(&secret(), &c).unwrap();
        assert_eq!(
            p.check("restart-service", Some("acme"), Some(&t), 1_000),
            Err(Refusal::NotYetValid)
        );
    }

    #[test]
    fn a_token_without_a_tenant_is_the_default_tenants() {
        let p = policy();
        let mut c = claims();
        c.tenant = None;
        let t = sign(&secret(), &c).unwrap();
        assert!(
            p.check(
                "restart-service",
                Some(crate::jobs::DEFAULT_TENANT),
                Some(&t),
                1_000
            )
            .is_ok()
        );
        assert!(p.check("restart-service", None, Some(&t), 1_000).is_ok());
        assert_eq!(
            p.check("restart-service", Some("acme"), Some(&t), 1_000),
            Err(Refusal::WrongTenant)
        );
    }

    #[test]
    fn wrong_action_and_wrong_scope_are_refused() {
        let p = Policy::new(
            PolicyConfig {
                require_tokens: true,
                actions: vec![
                    ActionConfig {
                        job_type: "restart-service".into(),
                        scope: "ops:execute".into(),
                    },
                    ActionConfig {
                        job_type: "rotate-keys".into(),
                        scope: "ops:execute".into(),
                    },
                ],
            },
            Some(secret()),
        )
        .unwrap();
        let t = sign(&secret(), &claims()).unwrap();
        assert_eq!(
            p.check("rotate-keys", Some("acme"), Some(&t), 1_000),
            Err(Refusal::WrongAction)
        );
        let read_only = sign(
            &secret(),
            &Claims {
                scopes: vec!["ops:read".into()],
                ..claims()
            },
        )
        .unwrap();
        assert_eq!(
            p.check("restart-service", Some("acme"), Some(&read_only), 1_000),
            Err(Refusal::MissingScope)
        );
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let p = policy();
        let t = sign(&secret(), &claims()).unwrap();
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        // Re-encode different claims under the old MAC.
        let forged = Claims {
            tenant: Some("other".into()),
            ..claims()
        };
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let forged = parts.join(".");
        assert_eq!(
            p.check("restart-service", Some("other"), Some(&forged), 1_000),
            Err(Refusal::BadSignature)
        );
        // Flip one character of the MAC.
        let mut bytes = t.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            p.check("restart-service", Some("acme"), Some(&flipped), 1_000),
            Err(Refusal::BadSignature)
        );
        // Signed with another secret.
        let other = sign(&Secret::new(vec![7u8; 32]), &claims()).unwrap();
        assert_eq!(
            p.check("restart-service", Some("acme"), Some(&other), 1_000),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let s = secret();
        for t in [
            "",
            "opt1",
            "opt1..",
            "opt1.a.b.c",
            "opt2.e30.AAAA",
            "opt1.!!!.AAAA",
            "opt1.e30.***",
            "ö.ö.ö",
        ] {
            let r = verify(&s, t);
            assert!(
                matches!(r, Err(Refusal::Malformed) | Err(Refusal::BadSignature)),
                "{t:?}: {r:?}"
            );
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verify(&s, &long), Err(Refusal::Malformed));
    }

    #[test]
    fn refusals_never_contain_the_token() {
        let t = sign(&secret(), &claims()).unwrap();
        for r in Refusal::ALL {
            assert!(!r.to_string().contains(&t));
        }
    }

    #[test]
    fn a_short_or_missing_secret_fails_start_up_naming_the_variable() {
        let cfg = policy().config.clone();
        for secret in [None, Some(Secret::new(b"short".to_vec()))] {
            let msg = Policy::new(cfg.clone(), secret).unwrap_err().to_string();
            assert!(msg.contains(SECRET_VAR), "{msg}");
        }
        // Without action types no secret is needed.
        Policy::new(PolicyConfig::default(), None).unwrap();
    }
}
