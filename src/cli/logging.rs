//! Logs: human format on a terminal, JSON otherwise (or when asked), to
//! stderr. The filter comes from RUST_LOG, then OPSRUNNER_LOG, then config;
//! the database driver is held at info whatever it says.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Starts logging with the configured format and level (RUST_LOG and
/// OPSRUNNER_LOG win over the level). A second call does nothing.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("OPSRUNNER_LOG").ok())
        .or_else(|| level.map(String::from))
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // tokio-postgres logs every statement's parameters at debug level: job
    // payloads, policy tokens, key hashes. Never let a debug filter show them.
    let filter = match "tokio_postgres=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests, embedding programs) is not an error.
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Logging for commands that read no configuration (`openapi`, `token`).
pub fn init_default() {
    init(LogFormat::Auto, None);
}
