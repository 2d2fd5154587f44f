//! Handlers: what runs a job of each type.
//!
//! A handler receives the job's payload and a cancellation token and returns a
//! JSON result or a [`HandlerError`]. Library users register native async
//! handlers in a [`Registry`], untyped ([`Registry::register`]) or typed
//! ([`Registry::register_args`] with a [`JobArgs`] payload); the worker only
//! claims job types that are registered *and* whose feature flag is on.
//!
//! This module never reads the configuration: `config::Settings::registry`
//! builds the registry of configured `exec` and `http` handlers.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod args;
pub mod exec;
pub mod http;
pub mod noop;
mod registry;
pub mod sleep;
pub mod ssrf;

pub use args::JobArgs;
pub use registry::{BUILTINS, Registry, check_configured_job_type};

/// What a handler sees of its job.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobContext {
    /// The job's id.
    pub id: Uuid,
    /// Its type (the handler's registered name).
    pub job_type: String,
    /// Its queue.
    pub queue: String,
    /// 1 on the first run.
    pub attempt: i32,
    /// The attempt after which a retryable error fails the job.
    pub max_attempts: i32,
    /// The payload as stored.
    pub payload: Value,
    /// Cancelled on cancel request, timeout, lost lease or forced shutdown.
    /// Handlers that can stop early should select on it.
    pub cancel: CancellationToken,
    /// The database's clock minus this worker's, in seconds, as last
    /// measured: add it to the local time for timestamps others check.
    pub db_clock_offset: f64,
    /// The largest offset at which this worker still signs timestamps
    /// (`worker.clock_offset_limit`).
    pub clock_offset_limit: std::time::Duration,
}

impl JobContext {
    /// Unix seconds by the database's clock, or an error (worth a retry)
    /// when this worker's clock is further off than the limit.
    pub fn db_unix_time(&self) -> Result<u64, HandlerError> {
        if self.db_clock_offset.abs() > self.clock_offset_limit.as_secs_f64() {
            return Err(HandlerError::Retryable(format!(
                "this worker's clock is {:.1} s off the database's, more than \
                 worker.clock_offset_limit ({:?}); refusing to sign timestamps",
                self.db_clock_offset, self.clock_offset_limit
            )));
        }
        let local = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Ok((local + self.db_clock_offset).max(0.0) as u64)
    }
}

impl JobContext {
    /// A context for calling a handler outside a worker (handler unit tests).
    pub fn new(job_type: &str, payload: Value) -> Self {
        Self {
            id: Uuid::new_v4(),
            job_type: job_type.into(),
            queue: "default".into(),
            attempt: 1,
            max_attempts: 1,
            payload,
            cancel: CancellationToken::new(),
            db_clock_offset: 0.0,
            clock_offset_limit: std::time::Duration::from_secs(5),
        }
    }
}

/// How a handler failed: whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Worth another attempt (network trouble, a busy dependency).
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way again (bad payload, refused request): no retry.
    #[error("{0}")]
    Permanent(String),
}

/// Turns any `Result<T, E: Display>` into a handler result, so that a handler
/// says with `?` whether an error is worth a retry:
/// `client.get(url).await.retryable()?`, `parse(x).permanent()?`.
pub trait ResultExt<T> {
    /// The error is [`HandlerError::Retryable`].
    fn retryable(self) -> Result<T, HandlerError>;
    /// The error is [`HandlerError::Permanent`].
    fn permanent(self) -> Result<T, HandlerError>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, HandlerError> {
        self.map_err(|e| HandlerError::Retryable(e.to_string()))
    }

    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(|e| HandlerError::Permanent(e.to_string()))
    }
}

/// What a handler returns: a JSON result (bounded to 10 KB when stored).
pub type HandlerResult = Result<Value, HandlerError>;
/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

/// Runs jobs of one type.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, job: JobContext) -> HandlerFuture;

    /// Checks a payload without side effects; used for dry runs and by the
    /// shim before it enqueues. The default accepts any payload.
    fn validate(&self, _payload: &Value) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A handler from a run function and a payload check.
pub struct Validated<R, V> {
    /// Runs one attempt.
    pub run: R,
    /// Checks a payload (dry runs, the shim).
    pub validate: V,
}

impl<R, V, Fut> Handler for Validated<R, V>
where
    R: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
    V: Fn(&Value) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin((self.run)(job))
    }

    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        (self.validate)(payload)
    }
}

/// Any `Fn(JobContext) -> impl Future<Output = HandlerResult>` is a handler.
impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(self(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_signed_by_the_database_clock_and_refused_past_the_limit() {
        let mut ctx = JobContext::new("hook", serde_json::json!({}));
        let local = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        ctx.db_clock_offset = 3.0;
        let t = ctx.db_unix_time().unwrap();
        assert!((local + 2..=local + 4).contains(&t), "{t} vs {local}");
        ctx.db_clock_offset = -600.0;
        assert!(matches!(
            ctx.db_unix_time(),
            Err(HandlerError::Retryable(_))
        ));
    }

    #[test]
    fn result_ext_says_whether_to_retry() {
        let e: Result<(), &str> = Err("busy");
        assert_eq!(e.retryable(), Err(HandlerError::Retryable("busy".into())));
        assert_eq!(e.permanent(), Err(HandlerError::Permanent("busy".into())));
        let ok: Result<u8, &str> = Ok(1);
        assert_eq!(ok.permanent(), Ok(1));
    }
}
