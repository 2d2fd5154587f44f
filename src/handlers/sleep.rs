//! `sleep`: waits `{"ms": N}` milliseconds, stopping early when cancelled.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{HandlerError, HandlerResult, JobContext};

/// A day: anything longer is surely a mistake in the payload.
const MAX_MS: u64 = 86_400_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    ms: u64,
}

fn parse(payload: &Value) -> Result<Payload, HandlerError> {
    // serde would also accept `[250]` for a struct; only an object is meant.
    if !payload.is_object() {
        return Err(HandlerError::Permanent(
            "sleep expects a JSON object like {\"ms\": 250}".into(),
        ));
    }
    let p: Payload = serde_json::from_value(payload.clone()).map_err(|e| {
        HandlerError::Permanent(format!("sleep expects a payload like {{\"ms\": 250}}: {e}"))
    })?;
    if p.ms > MAX_MS {
        return Err(HandlerError::Permanent(format!(
            "sleep ms must be at most {MAX_MS}"
        )));
    }
    Ok(p)
}

pub fn validate(payload: &Value) -> Result<(), HandlerError> {
    parse(payload).map(|_| ())
}

pub async fn handle(job: JobContext) -> HandlerResult {
    let p = parse(&job.payload)?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(p.ms)) => Ok(json!({ "slept_ms": p.ms })),
        _ = job.cancel.cancelled() => Err(HandlerError::Retryable("sleep interrupted by cancellation".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn ctx(payload: serde_json::Value) -> JobContext {
        JobContext {
            id: uuid::Uuid::new_v4(),
            job_type: "sleep".into(),
            queue: "default".into(),
            attempt: 1,
            max_attempts: 1,
            payload,
            cancel: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn bad_payload_is_a_permanent_error() {
        for p in [
            json!({}),
            json!({"ms": "x"}),
            json!({"ms": 1, "extra": 2}),
            json!([1]),
            json!({"ms": MAX_MS + 1}),
        ] {
            assert!(validate(&p).is_err(), "{p}");
            assert!(matches!(
                handle(ctx(p)).await,
                Err(HandlerError::Permanent(_))
            ));
        }
        assert!(validate(&json!({"ms": 5})).is_ok());
    }

    #[tokio::test]
    async fn cancellation_stops_the_sleep() {
        let c = ctx(json!({"ms": 60_000}));
        let token = c.cancel.clone();
        let task = tokio::spawn(handle(c));
        token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(r.is_err());
    }
}
