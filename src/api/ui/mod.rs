//! The operator console at `/ui`: server-rendered HTML (maud, escaped by
//! construction), one embedded stylesheet, no script. Sign-in exchanges an
//! API key (form field `key`) for a server-side session (`ops_ui_sessions`)
//! whose cookie is HttpOnly, SameSite=Strict, Path=/ui, and Secure when
//! `api.public_url` is https. A session has its key's tenant and scopes:
//! every page reads through the same tenant transaction (and row-level
//! security) as the API, and every write is a POST carrying the session's
//! CSRF token and needing its scope. A revoked or expired key ends its
//! sessions at the next request.
//!
//! Built so far: sign-in, sign-out, the overview, the job list (filters,
//! keyset pages), a job's detail, cancel, and bulk retry/cancel by filter
//! (count first, then batches), flags (switchable with `flags:write`),
//! schedules and the audit log (`admin`), the last three for sessions of
//! the operators' tenant only.

mod admin;
mod pages;
mod session;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::SharedState;

/// The console's routes (merged into the shim's router).
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/cancel", post(pages::cancel))
        .route("/ui/jobs/{id}/retry", post(pages::retry))
        .route("/ui/jobs/bulk", post(pages::bulk))
        .route("/ui/flags", get(admin::flags).post(admin::set_flag))
        .route(
            "/ui/schedules",
            get(admin::schedules).post(admin::schedule_op),
        )
        .route("/ui/audit", get(admin::audit))
        .route("/ui/assets/console.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// No script, no framing, no sniffing, no referrer, and no caching of
/// pages that show a tenant's jobs.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
