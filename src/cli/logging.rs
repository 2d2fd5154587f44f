//! Logs: human format on a terminal, JSON otherwise (or when asked), to
//! stderr. The filter comes from RUST_LOG, then OPSRUNNER_LOG, then config;
//! the database driver is held at info whatever it says.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::LogFormat;

/// tokio-postgres logs every statement's parameters at debug level (job
/// payloads, policy tokens, key hashes). This holds for every directive: a
/// more specific one such as `tokio_postgres::query=debug` used to win over
/// a `tokio_postgres=info` directive added to the filter, so the guard is a
/// filter of its own, applied after the configured one.
fn driver_quiet(meta: &tracing::Metadata<'_>) -> bool {
    let driver = meta.target().starts_with("tokio_postgres")
        || meta.target().starts_with("postgres_protocol")
        || meta.target().starts_with("deadpool_postgres");
    !driver || *meta.level() <= tracing::Level::INFO
}

/// Starts logging with the configured format and level (RUST_LOG and
/// OPSRUNNER_LOG win over the level). A second call does nothing.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("OPSRUNNER_LOG").ok())
        .or_else(|| level.map(String::from))
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = filter.and(filter_fn(driver_quiet));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let layer = if json {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    // try_init: a second call (tests, embedding programs) is not an error.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Logging for commands that read no configuration (`openapi`, `token`).
pub fn init_default() {
    init(LogFormat::Auto, None);
}
