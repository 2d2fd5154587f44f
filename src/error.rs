//! Library error type. Messages never include a connection string or secret.

use thiserror::Error;

/// Everything the library can fail with. New variants may be added in any
/// release, so match with a wildcard arm.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration; the message names the setting or variable.
    #[error("configuration error: {0}")]
    Config(String),

    /// One setting is invalid: `key (env VAR) why`, the format every
    /// configuration check uses (see `config::check`).
    #[error("configuration error: {key} (env {}) {why}", setting_env_var(.key))]
    Setting {
        /// The dotted setting name, e.g. `worker.concurrency`.
        key: &'static str,
        /// What is wrong with it, e.g. `must be between 1 and 10000`.
        why: String,
    },

    /// A statement failed. Not marked as the source: its Display already
    /// carries the cause, and chaining it too prints every message twice.
    #[error("database error: {}", describe_db(.0))]
    Db(tokio_postgres::Error),

    /// No pooled connection could be had (timeout, closed pool, connect
    /// failure).
    #[error("database pool error: {0}")]
    Pool(String),

    /// A database call did not answer within its client-side deadline.
    #[error("database call timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// The database has not been migrated to the version this binary needs.
    #[error("{0}")]
    Schema(String),

    /// A throwaway PostgreSQL cluster could not be started or driven.
    #[error("throwaway PostgreSQL cluster: {0}")]
    TempCluster(String),

    /// Input that fails a documented bound; the message says which.
    #[error("invalid input: {0}")]
    Invalid(String),

    /// An idempotency key was already used for a different request.
    #[error("conflict: {0}")]
    Conflict(String),

    /// The policy token was already used by another job: a token is good for
    /// one job (the database refused the second row that carried it).
    #[error("policy token was already used by another job; sign a new token for each job")]
    TokenReused,

    /// One of the worker's long-running tasks ended on its own (a bug): the
    /// daemon stops and fails so that its supervisor restarts it.
    #[error("the worker's {task} task stopped unexpectedly; see the log")]
    TaskStopped {
        /// Which task: `claimer`, `listener`, `heartbeat`, …
        task: &'static str,
    },

    /// A file or socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(db) => Error::Db(db),
            other => Error::Pool(other.to_string()),
        }
    }
}

/// `Result` with [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// tokio-postgres' own Display says only "db error"; the server's message is
/// what an operator needs. Neither ever holds the connection string.
fn describe_db(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            use std::error::Error as _;
            match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        }
    }
}

/// The environment variable that sets `key`: `worker.concurrency` is
/// `OPSRUNNER_WORKER__CONCURRENCY`. The one place this mapping is written
/// (`config::env_var_for` and the figment loader use it).
pub(crate) fn setting_env_var(key: &str) -> String {
    format!("OPSRUNNER_{}", key.replace('.', "__").to_ascii_uppercase())
}
