//! The OpenAPI document of the public routes. `opsrunner openapi` prints it;
//! `docs/openapi.json` is that output, kept in sync by a test.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use super::jobs;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opsrunner HTTP shim",
        description = "Authenticated, rate-limited, tenant-isolated enqueue of operations jobs. \
                       The shim only inserts, reads and flags rows; workers run the jobs.",
        license(name = "Apache-2.0")
    ),
    paths(jobs::create, jobs::list, jobs::get_one, jobs::cancel, jobs::bulk_retry,
          jobs::bulk_cancel, healthz, readyz),
    components(schemas(jobs::CreateJob, jobs::JobAccepted, jobs::JobView, jobs::JobList,
                       jobs::ErrorBody, jobs::CancelJob, jobs::StatusFilter,
                       jobs::BulkRetry, jobs::BulkCancel, jobs::BulkDone, jobs::RetryStatus,
                       jobs::CancelStatus)),
    modifiers(&KeyAuth),
    tags((name = "jobs", description = "Enqueue and inspect jobs"),
         (name = "health", description = "Liveness and readiness"))
)]
/// The shim's OpenAPI document (`opsrunner openapi`).
pub struct ApiDoc;

struct KeyAuth;

impl Modify for KeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "ops_key",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-Ops-Key",
                    "OPS_API_KEY, or a scoped key from `opsrunner keys create`",
                ))),
            );
        }
    }
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive")))]
#[allow(dead_code)]
fn healthz() {}

/// Readiness: the database answers and its schema is at this version.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"),
              (status = 503, description = "Not ready", body = jobs::ErrorBody)))]
#[allow(dead_code)]
fn readyz() {}

/// The document as pretty JSON with a trailing newline.
pub fn json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
