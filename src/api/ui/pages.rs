//! The console's pages: overview, jobs, a job, and cancel. Every read runs
//! in the session tenant's transaction (row-level security, and each query
//! filters by tenant too), as the API's do.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use uuid::Uuid;

use super::session::{CsrfForm, Session, layout, refuse_write};
use crate::api::jobs::tenant_tx;
use crate::api::{ApiError, SharedState};
use crate::db::queries;

/// Rows per page of `/ui/jobs`.
const PAGE: i64 = 50;

/// The time ranges of the job list: (value, label, seconds).
const SINCE: &[(&str, &str, i64)] = &[
    ("15m", "last 15 minutes", 900),
    ("1h", "last hour", 3600),
    ("24h", "last 24 hours", 86_400),
    ("7d", "last 7 days", 604_800),
];

fn fail(e: impl Into<ApiError>) -> Response {
    e.into().into_response()
}

fn age(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) if s < 7200.0 => format!("{:.0} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

/// `GET /ui`: the last hour's chart, then per job type and queue the
/// tenant's queued, later, running and last-hour outcomes, and the oldest
/// queued age.
pub(super) async fn overview(State(state): State<SharedState>, session: Session) -> Response {
    let read = async {
        let mut c = crate::db::checkout(&state.pool).await?;
        let tx = tenant_tx(&mut c, &session.tenant).await?;
        let rows = queries::overview_queues(&*tx, Some(&session.tenant), 3600.0).await?;
        let per_minute = queries::ui_throughput(&*tx, &session.tenant).await?;
        tx.commit().await?;
        c.release();
        Ok::<_, ApiError>((rows, per_minute))
    };
    let (rows, per_minute) = match read.await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    layout(
        "Overview",
        Some(&session),
        html! {
            h1 { "Overview" }
            h2 { "Finished per minute, last hour" }
            (chart(&per_minute, chrono::Utc::now()))
            table {
                thead { tr {
                    th { "Job type" } th { "Queue" } th.num { "Queued" } th.num { "Later" }
                    th.num { "Running" } th.num { "Succeeded, last hour" } th.num { "Failed, last hour" }
                    th.num { "Cancelled, last hour" } th.num { "Oldest queued" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a href={ "/ui/jobs?job_type=" (r.job_type) } { (r.job_type) } }
                            td { (r.queue) }
                            td.num { (r.queued) } td.num { (r.scheduled) } td.num { (r.running) }
                            td.num { (r.succeeded_last_minute) } td.num { (r.failed_last_minute) }
                            td.num { (r.cancelled_last_minute) }
                            td.num { (age(r.oldest_queued_age_seconds)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="9" { "No unfinished jobs, and none finished in the last hour." } } }
                }
            }
        },
    )
    .into_response()
}

/// The last hour as SVG bars, one per minute: succeeded (green) under
/// failed (red). Presentation attributes only: the CSP allows no inline
/// style.
fn chart(
    per_minute: &[(chrono::DateTime<chrono::Utc>, i64, i64)],
    now: chrono::DateTime<chrono::Utc>,
) -> maud::Markup {
    let (w, h, bar) = (600.0_f64, 120.0_f64, 10.0_f64);
    let max = per_minute
        .iter()
        .map(|(_, s, f)| s + f)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let total: i64 = per_minute.iter().map(|(_, s, f)| s + f).sum();
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(w) height=(h + 14.0) viewBox={ "0 0 " (w) " " (h + 14.0) }
            role="img" aria-label={ (total) " jobs finished in the last hour" } {
            rect x="0" y="0" width=(w) height=(h) fill="#ffffff" stroke="#e3e6ea" {}
            @for (minute, ok, failed) in per_minute {
                @let ago = (now - *minute).num_minutes().clamp(0, 59) as f64;
                @let x = w - (ago + 1.0) * bar;
                @let ok_h = (*ok as f64) / max * (h - 4.0);
                @let fail_h = (*failed as f64) / max * (h - 4.0);
                rect x=(x) y=(h - ok_h) width=(bar - 1.0) height=(ok_h) fill="#1b6e3a" {
                    title { (minute.format("%H:%M")) ": " (ok) " succeeded, " (failed) " failed" }
                }
                rect x=(x) y=(h - ok_h - fail_h) width=(bar - 1.0) height=(fail_h) fill="#b3261e" {}
            }
            text x="0" y=(h + 12.0) font-size="10" fill="#555" { "-60 min" }
            text x=(w - 24.0) y=(h + 12.0) font-size="10" fill="#555" { "now" }
        }
    }
}

fn filter<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// `GET /ui/jobs?status=&job_type=&queue=&after=`: newest first, 50 a page.
pub(super) async fn jobs(
    State(state): State<SharedState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let status = filter(&q, "status");
    if let Some(s) = status
        && s.parse::<crate::jobs::JobStatus>().is_err()
    {
        return (StatusCode::UNPROCESSABLE_ENTITY, "Unknown status").into_response();
    }
    let after = match filter(&q, "after").map(Uuid::parse_str).transpose() {
        Ok(a) => a,
        Err(_) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, "`after` is not a job id").into_response();
        }
    };
    let (job_type, queue) = (filter(&q, "job_type"), filter(&q, "queue"));
    let schedule = filter(&q, "schedule");
    let id_prefix = filter(&q, "id");
    if id_prefix
        .is_some_and(|p| p.len() > 36 || !p.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "`id` is not the start of a job id",
        )
            .into_response();
    }
    let lower_prefix = id_prefix.map(str::to_ascii_lowercase);
    let since_key = filter(&q, "since");
    let since = match since_key {
        None => None,
        Some(k) => match SINCE.iter().find(|(key, _, _)| *key == k) {
            Some((_, _, secs)) => Some(chrono::Utc::now() - chrono::Duration::seconds(*secs)),
            None => {
                return (StatusCode::UNPROCESSABLE_ENTITY, "Unknown time range").into_response();
            }
        },
    };
    let read = async {
        let mut c = crate::db::checkout(&state.pool).await?;
        let tx = tenant_tx(&mut c, &session.tenant).await?;
        let rows = queries::ui_jobs_page(
            &*tx,
            &queries::JobsPage {
                tenant: &session.tenant,
                status,
                job_type,
                queue,
                after,
                limit: PAGE,
                since,
                schedule,
                id_prefix: lower_prefix.as_deref(),
            },
        )
        .await?;
        tx.commit().await?;
        c.release();
        Ok::<_, ApiError>(rows)
    };
    let rows = match read.await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let last: Option<Uuid> = rows.last().and_then(|r| r.try_get("id").ok());
    let next = (rows.len() as i64 == PAGE)
        .then_some(last)
        .flatten()
        .map(|id| {
            let mut params = vec![format!("after={id}")];
            for (k, v) in [
                ("status", status),
                ("job_type", job_type),
                ("queue", queue),
                ("since", since_key),
                ("schedule", schedule),
                ("id", id_prefix),
            ] {
                if let Some(v) = v {
                    params.push(format!("{k}={}", urlencode(v)));
                }
            }
            format!("/ui/jobs?{}", params.join("&"))
        });
    layout(
        "Jobs",
        Some(&session),
        html! {
            h1 { "Jobs" }
            form.filters method="get" action="/ui/jobs" {
                select name="status" {
                    option value="" { "any status" }
                    @for s in crate::jobs::JobStatus::ALL {
                        option value=(s.as_str()) selected[status == Some(s.as_str())] { (s.as_str()) }
                    }
                }
                input name="job_type" placeholder="job type" value=(job_type.unwrap_or(""));
                input name="queue" placeholder="queue" value=(queue.unwrap_or(""));
                select name="since" {
                    option value="" { "any time" }
                    @for (key, label, _) in SINCE {
                        option value=(key) selected[since_key == Some(*key)] { (label) }
                    }
                }
                input name="schedule" placeholder="schedule" value=(schedule.unwrap_or(""));
                input name="id" placeholder="id starts with" value=(id_prefix.unwrap_or(""));
                button type="submit" { "Filter" }
            }
            table {
                thead { tr { th { "Id" } th { "Type" } th { "Queue" } th { "Status" } th.num { "Attempt" } th { "Created" } th { "Error" } } }
                tbody {
                    @for r in &rows {
                        @let id: Uuid = r.get("id");
                        @let st: String = r.get("status");
                        tr {
                            td { a href={ "/ui/jobs/" (id) } { code { (id) } } }
                            td { (r.get::<_, String>("job_type")) }
                            td { (r.get::<_, String>("queue")) }
                            td class={ "status-" (st) } { (st) }
                            td.num { (r.get::<_, i32>("attempt")) "/" (r.get::<_, i32>("max_attempts")) }
                            td { (r.get::<_, chrono::DateTime<chrono::Utc>>("created_at").format("%Y-%m-%d %H:%M:%S")) }
                            td { (r.get::<_, Option<String>>("error").unwrap_or_default()) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="7" { "No jobs match." } } }
                }
            }
            @if let Some(n) = next { p { a href=(n) rel="next" { "Older jobs →" } } }
            @if let Some((action, label, scope)) = bulk_offer(status) {
                @if session.may(scope) {
                    form method="post" action="/ui/jobs/bulk" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="action" value=(action);
                        input type="hidden" name="status" value=(status.unwrap_or(""));
                        input type="hidden" name="job_type" value=(job_type.unwrap_or(""));
                        input type="hidden" name="queue" value=(queue.unwrap_or(""));
                        button type="submit" { (label) }
                    }
                }
            }
        },
    )
    .into_response()
}

/// The bulk action a status filter allows: (action, button, scope).
fn bulk_offer(status: Option<&str>) -> Option<(&'static str, &'static str, &'static str)> {
    match status? {
        "failed" | "cancelled" => Some(("retry", "Retry every matching job…", "jobs:retry")),
        "queued" | "running" => Some(("cancel", "Cancel every matching job…", "jobs:cancel")),
        _ => None,
    }
}

/// The bulk form: a filter, and `confirm` once the count was shown.
#[derive(serde::Deserialize)]
pub(super) struct BulkForm {
    csrf: String,
    action: String,
    status: String,
    #[serde(default)]
    job_type: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /ui/jobs/bulk`: first shows how many jobs match and asks to
/// confirm; confirmed, changes them in batches ([`crate::bulk`], audited
/// with the filter and the counts) and shows the result.
pub(super) async fn bulk(
    State(state): State<SharedState>,
    session: Session,
    Form(f): Form<BulkForm>,
) -> Response {
    let (action, scope) = match f.action.as_str() {
        "retry" => (crate::bulk::BulkAction::Retry, "jobs:retry"),
        "cancel" => (crate::bulk::BulkAction::Cancel, "jobs:cancel"),
        _ => return (StatusCode::UNPROCESSABLE_ENTITY, "Unknown action").into_response(),
    };
    if let Some(refused) = refuse_write(&session, &f.csrf, scope) {
        return refused;
    }
    let Ok(status) = f.status.parse::<crate::jobs::JobStatus>() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "Unknown status").into_response();
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let filter = crate::bulk::BulkFilter {
        status,
        job_type: some(&f.job_type),
        queue: some(&f.queue),
        since: None,
    };
    if let Err(e) = filter.check(action) {
        return fail(e);
    }
    let work = async {
        let mut c = crate::db::checkout(&state.pool).await?;
        let tx = tenant_tx(&mut c, &session.tenant).await?;
        let matched = crate::bulk::count(&*tx, action, &filter, Some(&session.tenant)).await?;
        tx.commit().await?;
        let done = if f.confirm == "yes" {
            let who = crate::bulk::Requester {
                actor: &session.actor,
                via: "ui",
                reason: Some("bulk change in the console"),
            };
            Some(
                crate::bulk::apply(
                    c.client(),
                    action,
                    &filter,
                    Some(&session.tenant),
                    matched,
                    &who,
                )
                .await?,
            )
        } else {
            None
        };
        c.release();
        Ok::<_, ApiError>((matched, done))
    };
    let (matched, done) = match work.await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    layout(
        "Bulk change",
        Some(&session),
        html! {
            h1 { "Bulk " (f.action) }
            p { "Filter: status " (f.status)
                @if !f.job_type.is_empty() { ", type " (f.job_type) }
                @if !f.queue.is_empty() { ", queue " (f.queue) } "." }
            @if let Some(d) = done {
                p { (d.changed) " of " (d.matched) " matching jobs changed." }
                p { a href="/ui/jobs" { "Back to the jobs" } }
            } @else {
                p { (matched) " jobs match." }
                form method="post" action="/ui/jobs/bulk" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="action" value=(f.action);
                    input type="hidden" name="status" value=(f.status);
                    input type="hidden" name="job_type" value=(f.job_type);
                    input type="hidden" name="queue" value=(f.queue);
                    input type="hidden" name="confirm" value="yes";
                    button type="submit" { "Yes, " (f.action) " " (matched) " jobs" }
                }
            }
        },
    )
    .into_response()
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /ui/jobs/{id}`: payload, result, error and times. Another tenant's
/// job, or no job, is the same 404.
pub(super) async fn job(
    State(state): State<SharedState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, Html("Job not found".to_string())).into_response();
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found();
    };
    let read = async {
        let mut c = crate::db::checkout(&state.pool).await?;
        let tx = tenant_tx(&mut c, &session.tenant).await?;
        let row = queries::api_get_job(&*tx, id, &session.tenant).await?;
        // Only for a job of this tenant (the row above), though row-level
        // security would show no other tenant's events anyway.
        let trail = match &row {
            Some(_) => queries::job_events(&*tx, id).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        c.release();
        Ok::<_, ApiError>(row.map(|r| (r, trail)))
    };
    let (row, trail) = match read.await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(),
        Err(e) => return fail(e),
    };
    let status: String = row.get("status");
    let finished = matches!(status.as_str(), "succeeded" | "failed" | "cancelled");
    let pretty = |v: Option<serde_json::Value>| {
        v.map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or_else(|| "-".into())
    };
    let time = |c: &str| {
        row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(c)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    layout(
        "Job",
        Some(&session),
        html! {
            h1 { "Job " code { (id) } }
            table {
                tr { th { "Type" } td { (row.get::<_, String>("job_type")) } }
                tr { th { "Queue" } td { (row.get::<_, String>("queue")) } }
                tr { th { "Status" } td class={ "status-" (status) } { (status) } }
                tr { th { "Attempt" } td { (row.get::<_, i32>("attempt")) " of " (row.get::<_, i32>("max_attempts")) } }
                tr { th { "Run at" } td { (time("run_at")) } }
                tr { th { "Created" } td { (time("created_at")) } }
                tr { th { "Started" } td { (time("started_at")) } }
                tr { th { "Finished" } td { (time("finished_at")) } }
                tr { th { "Cancel requested" } td { (row.get::<_, bool>("cancel_requested")) } }
                tr { th { "Error" } td { (row.get::<_, Option<String>>("error").unwrap_or_default()) } }
            }
            h2 { "Attempts and transitions" }
            table {
                thead { tr { th { "When" } th { "From" } th { "To" } th.num { "Attempt" } th { "Worker" } th { "Detail" } } }
                tbody {
                    @for e in &trail {
                        tr {
                            td { (e.get::<_, Option<chrono::DateTime<chrono::Utc>>>("at").map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()).unwrap_or_default()) }
                            td { (e.get::<_, Option<String>>("from_status").unwrap_or_default()) }
                            td { (e.get::<_, Option<String>>("to_status").unwrap_or_default()) }
                            td.num { (e.get::<_, i32>("attempt")) }
                            td { (e.get::<_, Option<String>>("worker").unwrap_or_default()) }
                            td { (e.get::<_, Option<String>>("detail").unwrap_or_default()) }
                        }
                    }
                    @if trail.is_empty() { tr { td colspan="6" { "Not started yet." } } }
                }
            }
            h2 { "Payload" } pre { (pretty(row.get("payload"))) }
            h2 { "Result" } pre { (pretty(row.get("result"))) }
            @if matches!(status.as_str(), "failed" | "cancelled") && session.may("jobs:retry") {
                form method="post" action={ "/ui/jobs/" (id) "/retry" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Retry this job" }
                }
            }
            @if !finished && session.may("jobs:cancel") {
                form method="post" action={ "/ui/jobs/" (id) "/cancel" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Cancel this job" }
                }
            }
        },
    )
    .into_response()
}

/// `POST /ui/jobs/{id}/cancel`: needs the form token and `jobs:cancel`;
/// audited like the API's cancel.
pub(super) async fn cancel(
    State(state): State<SharedState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = refuse_write(&session, &form.csrf, "jobs:cancel") {
        return refused;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return (StatusCode::NOT_FOUND, "Job not found").into_response();
    };
    let write = async {
        let mut c = crate::db::checkout(&state.pool).await?;
        let tx = tenant_tx(&mut c, &session.tenant).await?;
        let req = crate::jobs::CancelRequest {
            id,
            reason: Some("cancelled in the console"),
            actor: &session.actor,
            tenant: Some(&session.tenant),
            via: "ui",
        };
        let done = crate::jobs::cancel(&*tx, &req).await?;
        tx.commit().await?;
        c.release();
        Ok::<_, ApiError>(done)
    };
    match write.await {
        Ok(_) => Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
        Err(e) => fail(e),
    }
}

/// `POST /ui/jobs/{id}/retry`: a failed or cancelled job of the session's
/// tenant back to the queue as new; form token and `jobs:retry`; audited.
pub(super) async fn retry(
    State(state): State<SharedState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = refuse_write(&session, &form.csrf, "jobs:retry") {
        return refused;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return (StatusCode::NOT_FOUND, "Job not found").into_response();
    };
    let write = async {
        let c = crate::db::checkout(&state.pool).await?;
        let done = queries::ui_retry_job(c.client(), &session.tenant, id, &session.actor).await?;
        c.release();
        Ok::<_, ApiError>(done)
    };
    match write.await {
        Ok(Some(_)) => Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
        Ok(None) => (
            StatusCode::CONFLICT,
            "Only a failed or cancelled job of yours can be retried",
        )
            .into_response(),
        Err(e) => fail(e),
    }
}
