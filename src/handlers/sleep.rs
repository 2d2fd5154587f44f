//! `sleep`: waits `{"ms": N}` milliseconds, stopping early when cancelled.
//! Its payload is a [`JobArgs`] type: the decode that runs it validates it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{HandlerError, HandlerResult, JobArgs, JobContext};

/// A day: anything longer is surely a mistake in the payload.
const MAX_MS: u64 = 86_400_000;

/// The `sleep` payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// How long to sleep, in milliseconds (at most a day).
    pub ms: u64,
}

impl JobArgs for Sleep {
    const KIND: &'static str = "sleep";
    const EXAMPLE: &'static str = r#"{"ms": 250}"#;

    fn check(&self) -> Result<(), String> {
        if self.ms > MAX_MS {
            return Err(format!("sleep ms must be at most {MAX_MS}"));
        }
        Ok(())
    }
}

/// Sleeps, or stops early (retryable) when the job is cancelled. Registered
/// with `Registry::register_args`: the payload arrives decoded and checked,
/// and the same decode validates dry runs and the shim's requests.
pub async fn run(p: Sleep, job: JobContext) -> HandlerResult {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(p.ms)) => Ok(json!({ "slept_ms": p.ms })),
        _ = job.cancel.cancelled() => Err(HandlerError::Retryable("sleep interrupted by cancellation".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::Handler;

    fn ctx(payload: serde_json::Value) -> JobContext {
        JobContext::new("sleep", payload)
    }

    /// The handler as the built-in registry has it.
    fn sleep() -> std::sync::Arc<dyn Handler> {
        crate::Registry::with_builtins()
            .get("sleep")
            .expect("built in")
    }

    fn validate(p: &serde_json::Value) -> Result<(), HandlerError> {
        sleep().validate(p)
    }

    async fn handle(job: JobContext) -> HandlerResult {
        sleep().run(job).await
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
