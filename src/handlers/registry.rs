//! The registry: which handler runs each job type.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::args::{JobArgs, Typed};
use super::{Handler, HandlerResult, JobContext, noop, sleep};
use crate::jobs::{PAUSE_FLAG, valid_name};

/// Job types whose handlers are built in.
pub const BUILTINS: &[&str] = &["noop", "sleep"];

/// A job type declared in the config file: a valid name that is not a
/// built-in (`at` names the entry in messages, e.g. `exec[0]`).
pub fn check_configured_job_type(at: &str, job_type: &str) -> Result<(), String> {
    if !valid_name(job_type) || BUILTINS.contains(&job_type) || job_type == PAUSE_FLAG {
        return Err(format!(
            "{at}.job_type must be a job type name other than a built-in"
        ));
    }
    Ok(())
}

/// Handlers by job type. Cheap to clone (handlers are shared).
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-ins that need no configuration: `noop` and `sleep`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register("noop", noop::handle);
        r.register_args(sleep::run);
        r
    }

    /// Registers (or replaces) the handler for `job_type`.
    ///
    /// # Panics
    /// When `job_type` is not a valid job type name; that is a programming
    /// error in the embedding program, caught at its start-up.
    pub fn register(&mut self, job_type: &str, handler: impl Handler) -> &mut Self {
        assert!(
            job_type != PAUSE_FLAG,
            "{job_type:?} is reserved for the global pause switch"
        );
        assert!(
            valid_name(job_type),
            "job type {job_type:?} is not [a-z][a-z0-9_.-]{{0,63}}"
        );
        self.handlers
            .insert(job_type.to_string(), Arc::new(handler));
        self
    }

    /// Registers `f` for jobs of kind `A::KIND`. The payload is decoded into
    /// `A` once per attempt, then checked with [`JobArgs::check`]; a payload
    /// that does not decode or check fails the job at once
    /// ([`super::HandlerError::Permanent`]), and the same decode validates
    /// dry runs and the shim's requests.
    ///
    /// # Panics
    /// As [`Registry::register`], when `A::KIND` is not a valid name.
    pub fn register_args<A, F, Fut>(&mut self, f: F) -> &mut Self
    where
        A: JobArgs,
        F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(A::KIND, Typed::<A, F>::new(f))
    }

    /// The handler for `job_type`, if any.
    pub fn get(&self, job_type: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(job_type).cloned()
    }

    /// The registered job types, in no order.
    pub fn job_types(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// The registered job types, sorted.
    pub fn sorted_job_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handlers.keys().cloned().collect();
        v.sort_unstable();
        v
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("job_types", &self.sorted_job_types())
            .finish()
    }
}
