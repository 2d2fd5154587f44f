//! The console's operator pages: flags (switchable with `flags:write`),
//! schedules and the audit log (`admin`). Flags and schedules are global,
//! not per tenant, so these pages are for sessions of the operators'
//! tenant (`api.tenant`) only; other tenants get a 403.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::session::{Session, layout, refuse_write};
use crate::api::{ApiError, SharedState};
use crate::db::queries;

fn operators_only(state: &SharedState, s: &Session) -> Option<Response> {
    (s.tenant != state.cfg.tenant).then(|| {
        (
            StatusCode::FORBIDDEN,
            "Flags, schedules and the audit log are for the operators' tenant",
        )
            .into_response()
    })
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `GET /ui/flags`.
pub(super) async fn flags(State(state): State<SharedState>, session: Session) -> Response {
    if let Some(r) = operators_only(&state, &session) {
        return r;
    }
    let read = async {
        let c = crate::db::checkout(&state.pool).await?;
        let f = crate::flags::list(c.client()).await?;
        c.release();
        Ok::<_, ApiError>(f)
    };
    let flags = match read.await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let can = session.may("flags:write");
    layout(
        "Flags",
        Some(&session),
        html! {
            h1 { "Feature flags" }
            p { "A job type runs only while its flag is on; pause-all stops every claim." }
            table {
                thead { tr { th { "Flag" } th { "State" } th { "Changed" } th { "By" } th { "Reason" } @if can { th { "Change" } } } }
                tbody {
                    @for f in &flags {
                        tr {
                            td { (f.name) }
                            td { @if f.enabled { "on" } @else { "off" } }
                            td { (f.updated_at.format("%Y-%m-%d %H:%M:%S")) }
                            td { (f.updated_by.clone().unwrap_or_default()) }
                            td { (f.reason.clone().unwrap_or_default()) }
                            @if can {
                                td {
                                    form method="post" action="/ui/flags" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="name" value=(f.name);
                                        input type="hidden" name="enabled" value=(if f.enabled { "false" } else { "true" });
                                        input name="reason" placeholder="reason (required)" required;
                                        button type="submit" { @if f.enabled { "Disable" } @else { "Enable" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

/// A flag change.
#[derive(serde::Deserialize)]
pub(super) struct FlagForm {
    csrf: String,
    name: String,
    enabled: String,
    reason: String,
}

/// `POST /ui/flags`: form token, `flags:write`, a reason; audited.
pub(super) async fn set_flag(
    State(state): State<SharedState>,
    session: Session,
    Form(f): Form<FlagForm>,
) -> Response {
    if let Some(r) = operators_only(&state, &session) {
        return r;
    }
    if let Some(refused) = refuse_write(&session, &f.csrf, "flags:write") {
        return refused;
    }
    if !crate::jobs::valid_name(&f.name) || f.reason.trim().is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "A flag name and a reason are needed",
        )
            .into_response();
    }
    let enabled = f.enabled == "true";
    let write = async {
        let c = crate::db::checkout(&state.pool).await?;
        queries::ui_set_flag(
            c.client(),
            &f.name,
            enabled,
            f.reason.trim(),
            &session.actor,
        )
        .await?;
        c.release();
        Ok::<_, ApiError>(())
    };
    match write.await {
        Ok(()) => Redirect::to("/ui/flags").into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /ui/schedules`.
pub(super) async fn schedules(State(state): State<SharedState>, session: Session) -> Response {
    if let Some(r) = operators_only(&state, &session) {
        return r;
    }
    let read = async {
        let c = crate::db::checkout(&state.pool).await?;
        let s = queries::schedule_list(c.client(), None).await?;
        c.release();
        Ok::<_, ApiError>(s)
    };
    let rows = match read.await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    layout(
        "Schedules",
        Some(&session),
        html! {
            h1 { "Cron schedules" }
            p { "Define them with " code { "opsrunner schedules add" } " or the config file." }
            table {
                thead { tr { th { "Name" } th { "Cron" } th { "Zone" } th { "Type" } th { "Enabled" } th { "Next slot" } th { "Last slot" } th.num { "Missed" } th { "Source" } } }
                tbody {
                    @for s in &rows {
                        tr {
                            td { a href={ "/ui/jobs?status=&job_type=" (s.job_type) } { (s.name) } }
                            td { code { (s.cron) } } td { (s.time_zone) } td { (s.job_type) }
                            td { (if s.enabled { "yes" } else { "no" }) }
                            td { (when(s.next_slot)) } td { (when(s.last_slot)) }
                            td.num { (s.missed_slots) } td { (s.source) }
                            @if session.may("admin") {
                                td {
                                    @if s.source == "cli" {
                                        form method="post" action="/ui/schedules" {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input type="hidden" name="name" value=(s.name);
                                            input type="hidden" name="op" value=(if s.enabled { "disable" } else { "enable" });
                                            button type="submit" { @if s.enabled { "Disable" } @else { "Enable" } }
                                        }
                                    }
                                    form method="post" action="/ui/schedules" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="name" value=(s.name);
                                        input type="hidden" name="op" value="run-now";
                                        button type="submit" { "Run now" }
                                    }
                                }
                            }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="9" { "No schedules." } } }
                }
            }
        },
    )
    .into_response()
}

/// `GET /ui/audit?before=ID`: the audit log, newest first (`admin`).
pub(super) async fn audit(
    State(state): State<SharedState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = operators_only(&state, &session) {
        return r;
    }
    if !session.may("admin") {
        return (StatusCode::FORBIDDEN, "This key lacks the admin scope").into_response();
    }
    let before = q.get("before").and_then(|b| b.parse::<i64>().ok());
    let read = async {
        let c = crate::db::checkout(&state.pool).await?;
        let r = queries::ui_audit_page(c.client(), before, 100).await?;
        c.release();
        Ok::<_, ApiError>(r)
    };
    let rows = match read.await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let last: Option<i64> = rows.last().map(|r| r.get("id"));
    layout(
        "Audit",
        Some(&session),
        html! {
            h1 { "Audit log" }
            table {
                thead { tr { th { "When" } th { "Who" } th { "What" } th { "Target" } th { "Tenant" } th { "Detail" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (r.get::<_, chrono::DateTime<chrono::Utc>>("at").format("%Y-%m-%d %H:%M:%S")) }
                            td { (r.get::<_, String>("actor")) }
                            td { (r.get::<_, String>("action")) }
                            td { (r.get::<_, Option<String>>("target").unwrap_or_default()) }
                            td { (r.get::<_, Option<String>>("tenant_id").unwrap_or_default()) }
                            td { code { (r.get::<_, Option<serde_json::Value>>("detail").map(|d| d.to_string()).unwrap_or_default()) } }
                        }
                    }
                }
            }
            @if rows.len() == 100 { @if let Some(l) = last { p { a href={ "/ui/audit?before=" (l) } rel="next" { "Older entries →" } } } }
        },
    )
    .into_response()
}

/// A schedule button.
#[derive(serde::Deserialize)]
pub(super) struct ScheduleForm {
    csrf: String,
    name: String,
    op: String,
}

/// `POST /ui/schedules`: enable, disable (CLI-made schedules) or run now;
/// form token and `admin`; audited.
pub(super) async fn schedule_op(
    State(state): State<SharedState>,
    session: Session,
    Form(f): Form<ScheduleForm>,
) -> Response {
    if let Some(r) = operators_only(&state, &session) {
        return r;
    }
    if let Some(refused) = refuse_write(&session, &f.csrf, "admin") {
        return refused;
    }
    let write = async {
        let c = crate::db::checkout(&state.pool).await?;
        let done = match f.op.as_str() {
            "run-now" => queries::ui_schedule_run_now(c.client(), &f.name, &session.actor)
                .await?
                .is_some(),
            "enable" | "disable" => {
                let enabled = f.op == "enable";
                let next = match queries::schedule_list(c.client(), Some(&f.name))
                    .await?
                    .first()
                {
                    Some(s) => {
                        let now = crate::schedules::db_time(c.client()).await?;
                        crate::schedules::Cron::parse(&s.cron, &s.time_zone)
                            .ok()
                            .and_then(|cron| cron.next_after(now))
                    }
                    None => None,
                };
                queries::ui_schedule_set_enabled(c.client(), &f.name, enabled, next, &session.actor)
                    .await?
            }
            _ => false,
        };
        c.release();
        Ok::<_, ApiError>(done)
    };
    match write.await {
        Ok(true) => Redirect::to("/ui/schedules").into_response(),
        Ok(false) => (
            StatusCode::CONFLICT,
            "No such schedule, or it belongs to the config file (change it there)",
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
