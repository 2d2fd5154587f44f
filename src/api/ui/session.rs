//! Console sign-in, sign-out and the session extractor.

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::api::{ApiState, SharedState};
use crate::db::queries;

/// The session cookie.
pub(super) const COOKIE: &str = "ops_session";

/// The sign-in form's cookie: a random token that the form also carries.
/// A sign-in posted from another site (login CSRF: signing a browser into
/// the attacker's own key, whose tenant the victim would then work in)
/// comes without it, since the cookie is SameSite=Strict.
const LOGIN_COOKIE: &str = "ops_login";

/// How long a sign-in form stays usable: 10 minutes.
const LOGIN_FORM_SECS: u64 = 600;

/// A signed-in operator: the key's tenant and scopes, and the form token.
pub(super) struct Session {
    pub tenant: String,
    pub scopes: Vec<String>,
    pub actor: String,
    pub csrf: String,
    token_hash: [u8; 32],
}

impl Session {
    pub fn may(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

fn sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

/// Cookie `name` when it is a 64-digit hex token (as every token here is).
fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// No live session: every page sends the browser to the sign-in form.
pub(super) struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/ui/login").into_response()
    }
}

impl FromRequestParts<SharedState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Response> {
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(SignIn.into_response());
        };
        let hash = sha256(&token);
        let found = async {
            let c = crate::db::checkout(&state.pool).await?;
            let s = queries::ui_session_lookup(
                c.client(),
                &hash,
                state.cfg.ui_session_idle.as_secs_f64(),
            )
            .await?;
            c.release();
            Ok::<_, crate::Error>(s)
        };
        match found.await {
            Ok(Some(s)) => Ok(Session {
                tenant: s.tenant,
                scopes: s.scopes,
                actor: s.actor,
                csrf: s.csrf,
                token_hash: hash,
            }),
            Ok(None) => Err(SignIn.into_response()),
            Err(e) => Err(crate::api::ApiError::from(e).into_response()),
        }
    }
}

/// A page of the console around `body`.
pub(super) fn layout(title: &str, session: Option<&Session>, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · opsrunner" }
                    link rel="stylesheet" href="/ui/assets/console.css";
                }
                body {
                    header {
                        strong { "opsrunner" }
                        @if let Some(s) = session {
                            a href="/ui" { "Overview" }
                            a href="/ui/jobs" { "Jobs" }
                            a href="/ui/flags" { "Flags" }
                            a href="/ui/schedules" { "Schedules" }
                            @if s.may("admin") { a href="/ui/audit" { "Audit" } }
                            span { (s.actor) " · tenant " (s.tenant) }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// `GET /ui/login`.
pub(super) async fn login_form(State(state): State<SharedState>) -> Response {
    login_page(&state, StatusCode::OK, None)
}

/// The sign-in form, with a fresh form token in the page and in its cookie.
fn login_page(state: &ApiState, status: StatusCode, error: Option<&str>) -> Response {
    let token = hex(&rand::random::<[u8; 32]>());
    let page = layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/ui/login" {
                input type="hidden" name="form" value=(token);
                label { "API key " input type="password" name="key" autocomplete="off" required; }
                " "
                button type="submit" { "Sign in" }
            }
        },
    );
    let mut resp = (status, page).into_response();
    let cookie = cookie_attrs(state, LOGIN_COOKIE, &token, "/ui/login", LOGIN_FORM_SECS);
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The sign-in form.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    key: String,
    /// The form token; absent from forms made elsewhere.
    #[serde(default)]
    form: String,
}

/// `POST /ui/login`: the key is checked like an `X-Ops-Key` (failures
/// counted, audited and rate-limited the same way) and exchanged for a
/// session; the key itself is never stored or echoed.
pub(super) async fn login(
    State(state): State<SharedState>,
    parts: axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let ip = parts.0.ip();
    // Before the key is looked at: a form from another site is not a
    // sign-in attempt of this browser's user.
    let from_our_form = cookie_named(&headers, LOGIN_COOKIE).is_some_and(|t| {
        t.len() == form.form.len() && bool::from(t.as_bytes().ct_eq(form.form.as_bytes()))
    });
    if !from_our_form {
        tracing::warn!(%ip, "a sign-in without this console's form token was refused (expired form, or a form on another site)");
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or came from another site; sign in again."),
        );
    }
    let who =
        match crate::api::auth::authenticate_key(&state, form.key.trim(), ip, "/ui/login", None)
            .await
        {
            Ok(w) => w,
            Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => return e.into_response(),
            Err(_) => {
                return login_page(
                    &state,
                    StatusCode::UNAUTHORIZED,
                    Some("That key is not valid."),
                );
            }
        };
    let token = hex(&rand::random::<[u8; 32]>());
    let csrf = hex(&rand::random::<[u8; 32]>());
    let created = async {
        let c = crate::db::checkout(&state.pool).await?;
        queries::ui_session_create(
            c.client(),
            &queries::NewUiSession {
                token_hash: &sha256(&token),
                key_id: who.key_id,
                tenant: &who.tenant,
                scopes: &who.scopes,
                actor: &who.actor,
                csrf: &csrf,
                lifetime_secs: state.cfg.ui_session_lifetime.as_secs_f64(),
            },
        )
        .await?;
        crate::audit::write(
            c.client(),
            &crate::audit::AuditEntry {
                actor: &who.actor,
                action: "ui.sign_in",
                target: None,
                tenant: Some(&who.tenant),
                detail: &serde_json::json!({ "ip": ip.to_string() }),
            },
        )
        .await?;
        c.release();
        Ok::<_, crate::Error>(())
    };
    if let Err(e) = created.await {
        return crate::api::ApiError::from(e).into_response();
    }
    let mut resp = Redirect::to("/ui").into_response();
    let session = session_cookie(&state, &token, state.cfg.ui_session_lifetime.as_secs());
    // The form token is spent.
    let spent = cookie_attrs(&state, LOGIN_COOKIE, "", "/ui/login", 0);
    for c in [session, spent] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

fn session_cookie(state: &ApiState, value: &str, max_age: u64) -> String {
    cookie_attrs(state, COOKIE, value, "/ui", max_age)
}

/// A console cookie: HttpOnly, SameSite=Strict, Secure behind https.
fn cookie_attrs(state: &ApiState, name: &str, value: &str, path: &str, max_age: u64) -> String {
    let secure = if state.cfg.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A POST's form token.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    pub csrf: String,
}

/// The checks every console write makes: this session's form token, then
/// the scope. `Some` is the refusal to answer.
pub(super) fn refuse_write(session: &Session, presented: &str, scope: &str) -> Option<Response> {
    if !csrf_ok(session, presented) {
        return Some((StatusCode::FORBIDDEN, "Form token missing or wrong").into_response());
    }
    if !session.may(scope) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                format!("This key lacks the {scope} scope"),
            )
                .into_response(),
        );
    }
    None
}

/// Whether `presented` is this session's form token (constant time).
pub(super) fn csrf_ok(session: &Session, presented: &str) -> bool {
    session.csrf.len() == presented.len()
        && bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
}

/// `POST /ui/logout`: ends the session (with its form token) and clears
/// the cookie.
pub(super) async fn logout(
    State(state): State<SharedState>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return (StatusCode::FORBIDDEN, "Form token missing or wrong").into_response();
    }
    let ended = async {
        let c = crate::db::checkout(&state.pool).await?;
        queries::ui_session_revoke(c.client(), &session.token_hash).await?;
        c.release();
        Ok::<_, crate::Error>(())
    };
    if let Err(e) = ended.await {
        return crate::api::ApiError::from(e).into_response();
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    if let Ok(v) = session_cookie(&state, "", 0).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
