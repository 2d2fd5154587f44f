//! Library error type. Messages never include a connection string or secret.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// Invalid configuration; the message names the setting or variable.
    #[error("configuration error: {0}")]
    Config(String),

    // Not marked as the source: its Display already carries the cause, and
    // chaining it too prints every message twice.
    #[error("database error: {}", describe_db(.0))]
    Db(tokio_postgres::Error),

    #[error("database pool error: {0}")]
    Pool(String),

    /// The database has not been migrated to the version this binary needs.
    #[error("{0}")]
    Schema(String),

    #[error("throwaway PostgreSQL cluster: {0}")]
    TempCluster(String),

    #[error("invalid input: {0}")]
    Invalid(String),

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
