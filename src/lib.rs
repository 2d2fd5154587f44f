//! opsrunner: runs operations jobs out of PostgreSQL.
//!
//! Apps insert rows into `ops_jobs`; the worker daemon claims them with
//! `FOR UPDATE SKIP LOCKED`, runs the handler registered for each job type
//! (when its feature flag is on) and writes a bounded result. PostgreSQL is
//! the only coordination point between any number of daemons.
//!
//! # Embed a worker with typed handlers
//!
//! Register handlers in a [`Registry`], typed with [`JobArgs`] or untyped,
//! and run a [`Worker`] until a `CancellationToken` is cancelled
//! (`examples/embed.rs`):
//!
//! ```no_run
//! use opsrunner::{JobArgs, Registry, ResultExt, Worker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Resize { image: String, width: u32 }
//!
//! impl JobArgs for Resize {
//!     const KIND: &'static str = "resize";
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::with_builtins();
//! registry.register_args(|job: Resize, _ctx| async move {
//!     let width = u16::try_from(job.width).permanent()?;
//!     Ok(serde_json::json!({ "image": job.image, "width": width }))
//! });
//! let config = opsrunner::config::Config::load(None)?;
//! let worker = Worker::new(&config, registry)?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! worker.run(stop).await?;
//! # Ok(()) }
//! ```
//!
//! # Enqueue in your own transaction
//!
//! [`jobs::insert`] takes any client, so a job can be committed (or rolled
//! back) together with the application's own writes
//! (`examples/enqueue_in_tx.rs`):
//!
//! ```no_run
//! use opsrunner::NewJob;
//!
//! # async fn demo(client: &mut tokio_postgres::Client) -> opsrunner::Result<()> {
//! let tx = client.transaction().await?;
//! tx.execute("INSERT INTO orders (id) VALUES (42)", &[]).await?;
//! let job = NewJob::new("sleep", serde_json::json!({ "ms": 250 })).idempotency_key("order-42");
//! opsrunner::jobs::insert(&tx, &job).await?;
//! tx.commit().await?; // the job is visible, and a worker woken, from here on
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! `worker` is the daemon's services, `api` the HTTP shim, `cli` the
//! commands, `config` the settings, `db` the pools and every SQL statement
//! (`db::queries`), `handlers` the job handlers, `testing` test support.
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod bulk;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod flags;
pub mod handlers;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod overview;
pub mod policy;
pub mod schedules;
pub mod secret_env;
pub mod systemd;
pub mod tenants;
pub mod testing;
pub mod worker;

pub use error::{Error, Result};
pub use handlers::{Handler, HandlerError, JobArgs, JobContext, Registry, ResultExt};
pub use jobs::NewJob;
pub use worker::{Reloader, Stats, Worker};
