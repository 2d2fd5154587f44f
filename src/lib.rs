//! opsrunner: runs operations jobs out of PostgreSQL.
//!
//! Apps insert rows into `ops_jobs`; the worker daemon claims them with
//! `FOR UPDATE SKIP LOCKED`, runs the handler registered for each job type
//! (when its feature flag is on) and writes a bounded result. PostgreSQL is
//! the only coordination point between any number of daemons.
//!
//! Embedding: build a [`handlers::Registry`], register async handlers, and
//! run a [`worker::Worker`] until a `CancellationToken` is cancelled.

pub mod api;
pub mod audit;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod dev;
pub mod error;
pub mod flags;
pub mod handlers;
pub mod jobs;
pub mod keys;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod migrate;
pub mod pgtemp;
pub mod policy;
pub mod systemd;
pub mod worker;

mod completer;
mod executor;
mod heartbeat;
mod listener;
mod producer;

pub use error::{Error, Result};
pub use handlers::{Handler, HandlerError, JobContext, Registry};
pub use worker::{Stats, Worker};
