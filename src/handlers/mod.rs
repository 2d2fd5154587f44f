//! The handler registry and the built-in handlers.
//!
//! A handler receives the job's payload and a cancellation token and returns a
//! JSON result or a [`HandlerError`]. Library users register native async
//! handlers; the worker only claims job types that are registered *and* whose
//! feature flag is on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod exec;
pub mod http;
pub mod noop;
pub mod sleep;
pub mod ssrf;

/// Job types whose handlers are built in.
pub const BUILTINS: &[&str] = &["noop", "sleep"];

/// A job type declared in the config file: a valid name that is not a built-in.
fn check_configured_job_type(at: &str, job_type: &str) -> Result<(), String> {
    if !crate::jobs::valid_name(job_type)
        || BUILTINS.contains(&job_type)
        || job_type == crate::flags::PAUSE_FLAG
    {
        return Err(format!(
            "{at}.job_type must be a job type name other than a built-in"
        ));
    }
    Ok(())
}

/// What a handler sees of its job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: Uuid,
    pub job_type: String,
    pub queue: String,
    /// 1 on the first run.
    pub attempt: i32,
    pub max_attempts: i32,
    pub payload: Value,
    /// Cancelled on cancel request, timeout, lost lease or forced shutdown.
    /// Handlers that can stop early should select on it.
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt (network trouble, a busy dependency).
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way again (bad payload, refused request): no retry.
    #[error("{0}")]
    Permanent(String),
}

pub type HandlerResult = Result<Value, HandlerError>;
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

pub trait Handler: Send + Sync + 'static {
    fn run(&self, job: JobContext) -> HandlerFuture;

    /// Checks a payload without side effects; used for dry runs. The default
    /// accepts any payload.
    fn validate(&self, _payload: &Value) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A handler from a run function and a payload check.
pub struct Validated<R, V> {
    pub run: R,
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

#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-ins that need no configuration: `noop` and `sleep`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register("noop", noop::handle);
        r.register(
            "sleep",
            Validated {
                run: sleep::handle,
                validate: sleep::validate,
            },
        );
        r
    }

    /// Registers (or replaces) the handler for `job_type`.
    ///
    /// # Panics
    /// When `job_type` is not a valid job type name; that is a programming
    /// error in the embedding program, caught at its start-up.
    pub fn register(&mut self, job_type: &str, handler: impl Handler) -> &mut Self {
        assert!(
            job_type != crate::flags::PAUSE_FLAG,
            "{job_type:?} is reserved for the global pause switch"
        );
        assert!(
            crate::jobs::valid_name(job_type),
            "job type {job_type:?} is not [a-z][a-z0-9_.-]{{0,63}}"
        );
        self.handlers
            .insert(job_type.to_string(), Arc::new(handler));
        self
    }

    /// The built-ins plus one handler per `[[exec]]` and `[[http]]` entry.
    /// Fails (naming the entry) when a webhook's secret is missing or short.
    pub fn from_settings(settings: &crate::config::Settings) -> crate::Result<Self> {
        settings.validate()?;
        let mut r = Self::with_builtins();
        // Leave the executor's own grace room to see the process stop.
        let kill_grace = settings.worker.cancel_grace / 2;
        for cfg in &settings.exec {
            let job_type = cfg.job_type.clone();
            r.register(&job_type, exec::ExecHandler::new(cfg.clone(), kill_grace));
        }
        for (i, cfg) in settings.http.iter().enumerate() {
            let handler = http::HttpHandler::new(cfg, i).map_err(crate::Error::Config)?;
            r.register(&cfg.job_type, handler);
        }
        Ok(r)
    }

    pub fn get(&self, job_type: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(job_type).cloned()
    }

    pub fn job_types(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    pub fn sorted_job_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handlers.keys().cloned().collect();
        v.sort_unstable();
        v
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<_> = self.job_types().collect();
        types.sort_unstable();
        f.debug_struct("Registry")
            .field("job_types", &types)
            .finish()
    }
}
