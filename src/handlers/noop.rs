//! `noop`: succeeds at once. For demos, tests and benchmarks.

use serde_json::json;

use super::{HandlerResult, JobContext};

/// Succeeds with `{}`.
pub async fn handle(_job: JobContext) -> HandlerResult {
    Ok(json!({}))
}
