//! Parsing a create request: unknown fields refused, errors described
//! without echoing the body, and the payload bounds the shim adds to
//! `NewJob::validate` (depth). `parse_create` is the payload fuzz target's
//! entry.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::CreateJob;
use crate::api::ApiError;
use crate::jobs::MAX_PAYLOAD_BYTES;

/// Deepest payload nesting accepted (`{}` and `[]` count one level each).
pub const MAX_PAYLOAD_DEPTH: usize = 10;
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Nesting depth: a scalar is 0, `{}` or `[]` is 1.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A parse error, described without echoing the request's values back.
pub(super) fn describe_json_error(e: &serde_json::Error) -> ApiError {
    let msg = e.to_string();
    if msg.contains("recursion limit") {
        return ApiError::unprocessable(format!(
            "payload is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
        ));
    }
    match e.classify() {
        serde_json::error::Category::Data => {
            if let Some(rest) = msg.strip_prefix("unknown field `")
                && let Some(name) = rest.split('`').next()
            {
                let name: String = name.chars().take(64).collect();
                return ApiError::unprocessable(format!("unknown field `{name}`"));
            }
            if let Some(rest) = msg.strip_prefix("missing field `")
                && let Some(name) = rest.split('`').next()
            {
                return ApiError::unprocessable(format!("missing field `{name}`"));
            }
            ApiError::unprocessable(format!(
                "a field has the wrong type or value (line {}, column {})",
                e.line(),
                e.column()
            ))
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "Request body is not valid JSON"),
    }
}

/// Parses a create request as the shim does: unknown fields refused, errors
/// described without echoing the body. (Also the payload fuzz target's entry.)
pub fn parse_create(bytes: &[u8]) -> Result<CreateJob, String> {
    serde_json::from_slice(bytes).map_err(|e| describe_json_error(&e).message)
}

/// The payload bounds: at most 1 MiB as Postgres stores it
/// ([`crate::jobs::payload_size`]), at most 10 levels deep.
pub fn check_payload(payload: &Value) -> Result<(), String> {
    let size = crate::jobs::payload_size(payload);
    if size > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} (1 MiB)"
        ));
    }
    if has_nul(payload) {
        return Err(
            "payload contains a NUL character (\\u0000), which PostgreSQL cannot store".into(),
        );
    }
    if depth(payload) > MAX_PAYLOAD_DEPTH {
        return Err(format!(
            "payload is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
        ));
    }
    Ok(())
}

/// The `Idempotency-Key` header, if any: 1-200 printable ASCII characters.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::unprocessable("Idempotency-Key must be 1-200 printable ASCII characters")
        })?;
    Ok(Some(s.to_string()))
}

/// An optional integer field that also takes a number with a zero fraction
/// (`24.0`): JSON Schema calls that an integer, and JavaScript clients send
/// it. Out of the type's range, or with a fraction, is the usual type error.
pub(super) fn integral<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    });
    whole
        .and_then(|i| T::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom("an integer in range"))
}

/// Whether a string or key anywhere in `v` holds U+0000 (jsonb refuses it).
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::list_limit;
    use super::*;

    #[test]
    fn list_limit_defaults_to_50_and_refuses_values_outside_1_to_200() {
        assert_eq!(list_limit(None), Ok(50));
        assert_eq!(list_limit(Some("1")), Ok(1));
        assert_eq!(list_limit(Some("200")), Ok(200));
        for bad in ["0", "-5", "abc", "", " 7", "201", "9223372036854775808"] {
            assert!(list_limit(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&serde_json::json!(1)), 0);
        assert_eq!(depth(&serde_json::json!({})), 1);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    }

    #[test]
    fn json_errors_do_not_echo_values() {
        let e = serde_json::from_str::<CreateJob>(r#"{"job_type": 5, "x": "opt1.secret"}"#)
            .unwrap_err();
        let msg = describe_json_error(&e).message;
        assert!(!msg.contains("secret"), "{msg}");
        let e =
            serde_json::from_str::<CreateJob>(r#"{"job_type": "noop", "bogus": 1}"#).unwrap_err();
        assert_eq!(describe_json_error(&e).message, "unknown field `bogus`");
    }

    #[test]
    fn integer_fields_take_a_zero_fraction_and_nothing_else() {
        let parse = |body: &str| serde_json::from_str::<CreateJob>(body);
        let j = parse(r#"{"job_type": "noop", "priority": 24.0, "max_attempts": 5}"#).unwrap();
        assert_eq!((j.priority, j.max_attempts), (Some(24), Some(5)));
        let j = parse(r#"{"job_type": "noop", "priority": null}"#).unwrap();
        assert_eq!(j.priority, None);
        for bad in [
            r#""priority": 1.5"#,
            r#""priority": 40000"#,
            r#""priority": "1""#,
            r#""max_attempts": 1e300"#,
        ] {
            assert!(
                parse(&format!(r#"{{"job_type": "noop", {bad}}}"#)).is_err(),
                "{bad}"
            );
        }
    }
}
