//! [`ApiError`]: the JSON error every failure is answered with, and how
//! library errors map onto it without leaking their text.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The JSON error every failure is answered with.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error` field of the body.
    pub message: String,
    /// Seconds, for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The fixed 401.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Invalid or missing X-Ops-Key")
    }

    /// The 404 for a job that does not exist for this tenant.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Job not found")
    }

    /// A 422 with the reason.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// A 429 with Retry-After.
    pub fn too_many(retry_after: Duration) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Rate limit exceeded".into(),
            retry_after: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // The full error goes to the log (it holds no secret: database errors
        // never carry the connection string); the client gets a fixed text.
        match &e {
            Error::Db(db) if db.code().is_some_and(|c| c.code() == "23514") => {
                ApiError::unprocessable("Rejected by a database constraint")
            }
            // Class 22, data exception: a value PostgreSQL cannot take (a NUL
            // character in text, say). The request's fault, not the server's.
            Error::Db(db) if db.code().is_some_and(|c| c.code().starts_with("22")) => {
                ApiError::unprocessable(
                    "A value was refused by the database (for example a NUL character)",
                )
            }
            Error::Invalid(msg) => ApiError::unprocessable(msg.clone()),
            Error::Conflict(msg) => ApiError::new(StatusCode::CONFLICT, msg.clone()),
            _ if crate::db::is_transient(&e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable")
            }
            _ => {
                tracing::error!(error = %e, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
            }
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        let mut resp = (self.status, body).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
