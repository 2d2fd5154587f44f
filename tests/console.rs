//! The operator console (`/ui`) of a real shim running as its production
//! role: sessions, tenant isolation, form tokens, scopes, revocation and
//! pagination, over HTTP as a browser speaks it (cookies, form posts, no
//! redirects followed).

mod common;

use common::*;

fn browser() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Console {
    api: ApiProcess,
    http: reqwest::Client,
}

impl Console {
    async fn start(db: &RolesDb, env: &[(&str, &str)]) -> Self {
        let url = db.login("opsrunner_api").await;
        let mut all = vec![("APP_ENV", "development")];
        all.extend_from_slice(env);
        Self {
            api: ApiProcess::start(&url, &all, &[]).await,
            http: browser(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(self.api.url(path));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let body: String = form
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.replace('%', "%25")
                        .replace('&', "%26")
                        .replace('=', "%3D")
                        .replace('+', "%2B")
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut r = self
            .http
            .post(self.api.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    /// The text of a page fetched with `cookie`.
    async fn page(&self, path: &str, cookie: &str) -> String {
        self.get(path, Some(cookie)).await.text().await.unwrap()
    }

    /// The sign-in form's `name=value` cookie and its form token.
    async fn login_form(&self) -> (String, String) {
        let r = self.get("/ui/login", None).await;
        assert_eq!(r.status(), 200);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        let page = r.text().await.unwrap();
        let needle = "name=\"form\" value=\"";
        let at = page.find(needle).expect("a sign-in form token") + needle.len();
        (cookie, page[at..at + 64].to_string())
    }

    /// Posts the sign-in form with `key`, as a browser that loaded it does.
    async fn post_login(&self, key: &str) -> reqwest::Response {
        let (cookie, token) = self.login_form().await;
        self.post(
            "/ui/login",
            Some(&cookie),
            &[("form", &token), ("key", key)],
        )
        .await
    }

    /// Signs in with `key`; the `name=value` cookie and the page's form token.
    async fn sign_in(&self, key: &str) -> (String, String) {
        let r = self.post_login(key).await;
        assert_eq!(r.status(), 303, "sign-in");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        let page = self.page("/ui", &cookie).await;
        (cookie, csrf_of(&page))
    }
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    page[at..at + 64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_gives_a_strict_http_only_session_and_every_page_needs_one() {
    let db = roles_db().await;
    let key = create_key(&db.url, "ops", "default", "jobs:read").await;
    let ui = Console::start(&db, &[]).await;
    for path in [
        "/ui",
        "/ui/jobs",
        "/ui/jobs/01a2355d-1d34-7346-a189-3cb0901eed60",
    ] {
        let r = ui.get(path, None).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/ui/login", "{path}");
    }
    let r = ui.get("/ui", Some("ops_session=00")).await;
    assert_eq!(r.status(), 303, "a malformed cookie is no session");
    let r = ui.post_login("not-a-key").await;
    assert_eq!(r.status(), 401);
    assert!(
        !r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("ops_session=")),
        "no session for a bad key (only a fresh sign-in form)"
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains("That key is not valid") && !page.contains("not-a-key"),
        "{page}"
    );

    let r = ui.post_login(&key).await;
    assert_eq!(r.status(), 303);
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("ops_session="))
        .expect("a session cookie")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain http and no https public_url: {set}"
    );
    assert!(!set.contains(&key), "the cookie is not the key");
    let cookie = set.split(';').next().unwrap();
    let r = ui.get("/ui", Some(cookie)).await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<h1>Overview</h1>") && page.contains("key:ops"),
        "{page}"
    );
    let css = ui.get("/ui/assets/console.css", None).await;
    assert_eq!(css.status(), 200);

    // Failed sign-ins are audited like the API's auth failures.
    let c = db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM ops_audit_log WHERE action = 'auth.failure' AND detail->>'route' = '/ui/login'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Behind https, the cookie is Secure.
    let secure = Console::start(
        &db,
        &[("OPSRUNNER_API__PUBLIC_URL", "https://ops.example.com")],
    )
    .await;
    let r = secure.post_login(&key).await;
    let cookies: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies.len() == 2 && cookies.iter().all(|c| c.contains("; Secure")),
        "{cookies:?}"
    );
}

/// Login CSRF: a sign-in form posted from another site (no form cookie, or
/// another browser's token) is refused before the key is looked at, so a
/// browser cannot be signed into an attacker's key (and tenant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_posted_from_another_site_is_refused_before_the_key_is_checked() {
    let db = roles_db().await;
    let key = create_key(&db.url, "attacker", "tenant-x", "jobs:read").await;
    let ui = Console::start(&db, &[]).await;
    let (cookie, token) = ui.login_form().await;
    let (_, other_token) = ui.login_form().await;
    let no_session = |r: &reqwest::Response| {
        !r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("ops_session="))
    };
    for (what, cookie, form) in [
        (
            "no form cookie, no token",
            None,
            vec![("key", key.as_str())],
        ),
        (
            "no form cookie",
            None,
            vec![("form", token.as_str()), ("key", key.as_str())],
        ),
        (
            "another form's token",
            Some(cookie.as_str()),
            vec![("form", other_token.as_str()), ("key", key.as_str())],
        ),
    ] {
        let r = ui.post("/ui/login", cookie, &form).await;
        assert_eq!(r.status(), 403, "{what}");
        assert!(no_session(&r), "{what}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains("came from another site") && !page.contains(&key),
            "{what}: {page}"
        );
    }
    let c = db.client().await;
    let audited = count(
        &c,
        "SELECT count(*) FROM ops_audit_log WHERE action IN ('ui.sign_in', 'auth.failure')",
    )
    .await;
    assert_eq!(audited, 0, "the key was never checked");
    // The browser's own form still signs in.
    let r = ui
        .post(
            "/ui/login",
            Some(&cookie),
            &[("form", &token), ("key", &key)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(!no_session(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sees_only_its_tenant_and_cancel_needs_the_form_token_and_the_scope() {
    let db = roles_db().await;
    let reader_a = create_key(&db.url, "reader-a", "tenant-a", "jobs:read").await;
    let canceller_b = create_key(&db.url, "canceller-b", "tenant-b", "jobs:read,jobs:cancel").await;
    let c = db.client().await;
    let job = |tenant: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "INSERT INTO ops_jobs (job_type, tenant_id, payload) VALUES ('noop', $1, '{\"who\": \"<b>x</b>\"}') RETURNING id",
                &[&tenant],
            )
            .await
            .unwrap()
            .get::<_, uuid::Uuid>(0)
        }
    };
    let (a, b) = (job("tenant-a").await, job("tenant-b").await);
    let ui = Console::start(&db, &[]).await;
    let (ca, csrf_a) = ui.sign_in(&reader_a).await;
    let (cb, csrf_b) = ui.sign_in(&canceller_b).await;
    let list = ui.page("/ui/jobs", &ca).await;
    assert!(
        list.contains(&a.to_string()) && !list.contains(&b.to_string()),
        "{list}"
    );
    assert_eq!(
        ui.get(&format!("/ui/jobs/{b}"), Some(&ca)).await.status(),
        404
    );
    let detail = ui.page(&format!("/ui/jobs/{a}"), &ca).await;
    assert!(
        detail.contains("&lt;b&gt;x&lt;/b&gt;") && !detail.contains("<b>x</b>"),
        "escaped: {detail}"
    );
    assert!(
        !detail.contains("Cancel this job"),
        "no cancel button without the scope"
    );
    let overview = ui.page("/ui", &ca).await;
    assert!(overview.contains("noop"), "{overview}");

    // Cancel: the form token and the scope, or nothing happens.
    let path = format!("/ui/jobs/{b}/cancel");
    assert_eq!(
        ui.post(&path, Some(&cb), &[]).await.status(),
        422,
        "no token field"
    );
    assert_eq!(
        ui.post(&path, Some(&cb), &[("csrf", &csrf_a)])
            .await
            .status(),
        403,
        "another session's token"
    );
    assert_eq!(
        ui.post(
            &format!("/ui/jobs/{a}/cancel"),
            Some(&ca),
            &[("csrf", &csrf_a)]
        )
        .await
        .status(),
        403,
        "no jobs:cancel scope"
    );
    let status = |id: uuid::Uuid| {
        let c = &c;
        async move {
            c.query_one("SELECT status::text FROM ops_jobs WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(status(a).await, "queued");
    assert_eq!(status(b).await, "queued");
    let r = ui.post(&path, Some(&cb), &[("csrf", &csrf_b)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(status(b).await, "cancelled");
    // B's session cannot cancel A's job either: the tenant decides.
    ui.post(
        &format!("/ui/jobs/{a}/cancel"),
        Some(&cb),
        &[("csrf", &csrf_b)],
    )
    .await;
    assert_eq!(status(a).await, "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_or_signing_out_ends_the_session_at_once() {
    let db = roles_db().await;
    let key = create_key(&db.url, "short-lived", "default", "jobs:read").await;
    let ui = Console::start(&db, &[]).await;
    let (cookie, csrf) = ui.sign_in(&key).await;
    let (other, _) = ui.sign_in(&key).await;
    // An idle session ends after api.ui_session_idle.
    let idle = Console::start(&db, &[("OPSRUNNER_API__UI_SESSION_IDLE", "1s")]).await;
    let (sleepy, _) = idle.sign_in(&key).await;
    assert_eq!(idle.get("/ui", Some(&sleepy)).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        idle.get("/ui", Some(&sleepy)).await.status(),
        303,
        "idle too long"
    );
    let r = ui
        .post("/ui/logout", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        ui.get("/ui", Some(&cookie)).await.status(),
        303,
        "signed out"
    );
    assert_eq!(
        ui.get("/ui", Some(&other)).await.status(),
        200,
        "the other session lives"
    );
    let id: String = db
        .client()
        .await
        .query_one(
            "SELECT id::text FROM ops_api_keys WHERE name = 'short-lived'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    cli_ok(&db.url, &["keys", "revoke", &id]).await;
    assert_eq!(
        ui.get("/ui", Some(&other)).await.status(),
        303,
        "a revoked key's session ends at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_list_pages_by_keyset_without_repeats_or_gaps() {
    let db = roles_db().await;
    let key = create_key(&db.url, "pager", "default", "jobs:read").await;
    db.client()
        .await
        .execute(
            "INSERT INTO ops_jobs (job_type) SELECT 'noop' FROM generate_series(1, 120)",
            &[],
        )
        .await
        .unwrap();
    let ui = Console::start(&db, &[]).await;
    let (cookie, _) = ui.sign_in(&key).await;
    let mut seen = std::collections::HashSet::new();
    let mut path = "/ui/jobs?status=queued".to_string();
    let mut pages = 0;
    loop {
        let page = ui.page(&path, &cookie).await;
        pages += 1;
        for chunk in page.split("href=\"/ui/jobs/").skip(1) {
            assert!(seen.insert(chunk[..36].to_string()), "a job on two pages");
        }
        match page
            .split("rel=\"next\"")
            .next()
            .and_then(|p| p.rsplit("href=\"").next())
        {
            Some(next) if page.contains("rel=\"next\"") => {
                path = next.split('"').next().unwrap().replace("&amp;", "&");
            }
            _ => break,
        }
        assert!(pages < 10);
    }
    assert_eq!((pages, seen.len()), (3, 120));
}

/// Bulk retry from the console: the count first, then, confirmed, the
/// change; only the session tenant's jobs; needs `jobs:retry`; audited with
/// the filter and the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retry_shows_the_count_first_then_changes_only_the_tenants_jobs() {
    let db = roles_db().await;
    let retrier = create_key(&db.url, "retrier", "tenant-a", "jobs:read,jobs:retry").await;
    let reader = create_key(&db.url, "reader", "tenant-a", "jobs:read").await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, tenant_id, status, attempt, finished_at, error) \
         SELECT 'noop', t, 'failed', 3, now(), 'boom' FROM generate_series(1, 7), unnest(ARRAY['tenant-a', 'tenant-b']) t",
    )
    .await
    .unwrap();
    let ui = Console::start(&db, &[]).await;
    let (cookie, csrf) = ui.sign_in(&retrier).await;
    let list = ui.page("/ui/jobs?status=failed", &cookie).await;
    assert!(list.contains("Retry every matching job"), "{list}");
    let form = [
        ("csrf", csrf.as_str()),
        ("action", "retry"),
        ("status", "failed"),
        ("job_type", "noop"),
        ("queue", ""),
    ];
    let page = ui
        .post("/ui/jobs/bulk", Some(&cookie), &form)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("7 jobs match") && page.contains("Yes, retry 7 jobs"),
        "{page}"
    );
    let failed = |t: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT count(*) FROM ops_jobs WHERE tenant_id = $1 AND status = 'failed'",
                &[&t],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(
        failed("tenant-a").await,
        7,
        "nothing changes before the confirmation"
    );
    let mut confirmed = form.to_vec();
    confirmed.push(("confirm", "yes"));
    let page = ui
        .post("/ui/jobs/bulk", Some(&cookie), &confirmed)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("7 of 7 matching jobs changed"), "{page}");
    assert_eq!((failed("tenant-a").await, failed("tenant-b").await), (0, 7));
    let detail: serde_json::Value = c
        .query_one(
            "SELECT detail FROM ops_audit_log WHERE action = 'job.bulk_retry'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (
            detail["matched"].as_i64(),
            detail["changed"].as_u64(),
            detail["via"].as_str()
        ),
        (Some(7), Some(7), Some("ui"))
    );
    assert_eq!(detail["filter"]["job_type"], "noop");
    // Without the scope: no button, and the POST is refused.
    let (rc, rcsrf) = ui.sign_in(&reader).await;
    let list = ui.page("/ui/jobs?status=failed", &rc).await;
    assert!(!list.contains("Retry every matching job"));
    let form = [
        ("csrf", rcsrf.as_str()),
        ("action", "retry"),
        ("status", "failed"),
        ("confirm", "yes"),
    ];
    assert_eq!(
        ui.post("/ui/jobs/bulk", Some(&rc), &form).await.status(),
        403
    );
}

/// Flags, schedules and the audit log are for the operators' tenant; a flag
/// switch needs `flags:write`, the form token and a reason, and is audited;
/// the audit page needs `admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pages_switch_flags_with_a_reason_and_show_schedules_and_the_audit_log() {
    let db = roles_db().await;
    let master = "console-master-key-0123456789abcdef0123456789";
    let outsider = create_key(
        &db.url,
        "outsider",
        "tenant-x",
        "jobs:read,flags:write,admin",
    )
    .await;
    let flagger = create_key(&db.url, "flagger", "default", "jobs:read,flags:write").await;
    cli_ok(
        &db.url,
        &[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--type",
            "noop",
        ],
    )
    .await;
    let ui = Console::start(&db, &[("OPS_API_KEY", master)]).await;
    let (xc, xcsrf) = ui.sign_in(&outsider).await;
    for path in ["/ui/flags", "/ui/schedules", "/ui/audit"] {
        assert_eq!(
            ui.get(path, Some(&xc)).await.status(),
            403,
            "{path} for another tenant"
        );
    }
    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("name", "noop".to_string()),
            ("enabled", "true".to_string()),
            ("reason", "incident 9 over".to_string()),
        ]
    };
    let f = form(&xcsrf);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(ui.post("/ui/flags", Some(&xc), &f).await.status(), 403);

    let (fc, fcsrf) = ui.sign_in(&flagger).await;
    let page = ui.page("/ui/flags", &fc).await;
    assert!(page.contains("Feature flags"), "{page}");
    let mut no_reason = form(&fcsrf);
    no_reason[3].1 = " ".into();
    let nr: Vec<(&str, &str)> = no_reason.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(ui.post("/ui/flags", Some(&fc), &nr).await.status(), 422);
    let f = form(&fcsrf);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(ui.post("/ui/flags", Some(&fc), &f).await.status(), 303);
    let c = db.client().await;
    let (on, reason): (bool, String) = {
        let r = c
            .query_one(
                "SELECT enabled, reason FROM ops_feature_flags WHERE name = 'noop'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(on && reason == "incident 9 over");
    let page = ui.page("/ui/flags", &fc).await;
    assert!(
        page.contains("incident 9 over") && page.contains("key:flagger"),
        "{page}"
    );
    let schedules = ui.page("/ui/schedules", &fc).await;
    assert!(
        schedules.contains("nightly") && schedules.contains("0 3 * * *"),
        "{schedules}"
    );
    assert_eq!(
        ui.get("/ui/audit", Some(&fc)).await.status(),
        403,
        "no admin scope"
    );
    let (mc, _) = ui.sign_in(master).await;
    let audit = ui.page("/ui/audit", &mc).await;
    assert!(
        audit.contains("flag.enable") && audit.contains("ui.sign_in"),
        "{audit}"
    );
}

/// A minimal W3C WebDriver client for chromedriver: enough to type, click
/// and read, in a real headless Chromium.
struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: tokio::process::Child,
    _profile: TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        // Its own process group, so that Drop takes Chromium down with it
        // even when a test fails half-way.
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (scripts/test installs chromium-driver)");
        let http = browser();
        let root = format!("http://127.0.0.1:{port}");
        let profile = temp_dir("chromium-profile");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut session = None;
        for _ in 0..100 {
            if let Ok(r) = http
                .post(format!("{root}/session"))
                .header("content-type", "application/json")
                .body(caps.to_string())
                .send()
                .await
            {
                let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
                session = Some(
                    v["value"]["sessionId"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{v}"))
                        .to_string(),
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let id = session.expect("chromedriver answered");
        Self {
            http,
            base: format!("{root}/session/{id}"),
            _driver: driver,
            _profile: profile,
        }
    }

    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let r = self.http.request(method, format!("{}{path}", self.base));
        let r = if body.is_null() {
            r
        } else {
            r.header("content-type", "application/json")
                .body(body.to_string())
        };
        let v: serde_json::Value =
            serde_json::from_str(&r.send().await.unwrap().text().await.unwrap()).unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({"url": url}),
        )
        .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no {css}: {v}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            serde_json::json!({"text": text}),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            serde_json::json!({}),
        )
        .await;
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", serde_json::Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn source(&self) -> String {
        self.cmd(reqwest::Method::GET, "/source", serde_json::Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn cookies(&self) -> serde_json::Value {
        self.cmd(reqwest::Method::GET, "/cookie", serde_json::Value::Null)
            .await
    }

    /// Ends the session: chromedriver closes Chromium.
    async fn quit(&self) {
        self.cmd(reqwest::Method::DELETE, "", serde_json::Value::Null)
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id() {
            // SAFETY: kill(2) on the process group of a child we spawned.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// In a real Chromium: sign in through the form, read the overview and the
/// job list, open a job, cancel it with its button (the form token travels
/// in the page), see the cookie as the browser keeps it (HttpOnly, Strict),
/// and sign out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_an_operator_signs_in_finds_a_job_cancels_it_and_signs_out() {
    let db = roles_db().await;
    let key = create_key(&db.url, "browser", "default", "jobs:read,jobs:cancel").await;
    let c = db.client().await;
    let id: uuid::Uuid = c
        .query_one(
            "INSERT INTO ops_jobs (job_type, payload) VALUES ('sleep', '{\"ms\": 5}') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ui = Console::start(&db, &[]).await;
    let b = Browser::start().await;
    b.go(&ui.api.url("/ui/jobs")).await;
    assert!(
        b.url().await.ends_with("/ui/login"),
        "no session: the sign-in form"
    );
    b.type_into("input[name=key]", &key).await;
    b.click("button[type=submit]").await;
    // A click returns before the navigation it starts has finished (seen
    // under CI load): wait for each page.
    let page = |what: &'static str, done: fn(&str, &str) -> bool| {
        let b = &b;
        async move {
            wait_for(std::time::Duration::from_secs(15), what, || async {
                let (url, src) = (b.url().await, b.source().await);
                done(&url, &src).then_some(())
            })
            .await
        }
    };
    page("the overview", |url, src| {
        url.ends_with("/ui") && src.contains("Overview")
    })
    .await;
    let cookies = b.cookies().await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ops_session")
        .unwrap_or_else(|| panic!("{cookies}"))
        .clone();
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert_eq!(session["path"], "/ui", "{session}");
    b.go(&ui.api.url("/ui/jobs?status=queued")).await;
    b.click(&format!("a[href='/ui/jobs/{id}']")).await;
    page("the job's page", |_, src| src.contains("Cancel this job")).await;
    b.click("form[action$='/cancel'] button").await;
    page("the cancelled job's page", |_, src| {
        src.contains("status-cancelled")
    })
    .await;
    let status: String = c
        .query_one("SELECT status::text FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "cancelled");
    b.click("form[action='/ui/logout'] button").await;
    page("the sign-in form", |url, _| url.ends_with("/ui/login")).await;
    b.go(&ui.api.url("/ui")).await;
    assert!(b.url().await.ends_with("/ui/login"), "signed out for good");
    b.quit().await;
}

/// The job list's time-range, schedule and id-prefix filters; the
/// overview's chart of the last hour; a failed job retried from its page
/// (form token and `jobs:retry`; another tenant's job cannot be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_chart_and_retrying_one_failed_job() {
    let db = roles_db().await;
    let key = create_key(&db.url, "ops", "default", "jobs:read,jobs:retry").await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, idempotency_key) VALUES ('noop', 'schedule:nightly:2026-12-01T03:00:00Z'); \
         INSERT INTO ops_jobs (job_type, created_at) VALUES ('noop', now() - interval '3 days'); \
         INSERT INTO ops_jobs (job_type, status, attempt, finished_at, error) \
         SELECT 'noop', 'succeeded', 1, now() - interval '5 minutes', NULL FROM generate_series(1, 4); \
         INSERT INTO ops_jobs (job_type, tenant_id, status, attempt, finished_at) VALUES ('noop', 'other', 'failed', 3, now());",
    )
    .await
    .unwrap();
    let failed: uuid::Uuid = c
        .query_one(
            "INSERT INTO ops_jobs (job_type, status, attempt, finished_at, error) VALUES ('noop', 'failed', 3, now(), 'boom') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let other: uuid::Uuid = c
        .query_one("SELECT id FROM ops_jobs WHERE tenant_id = 'other'", &[])
        .await
        .unwrap()
        .get(0);
    let ui = Console::start(&db, &[]).await;
    let (cookie, csrf) = ui.sign_in(&key).await;
    let rows = |page: &str| page.matches("href=\"/ui/jobs/").count();
    let all = ui.page("/ui/jobs", &cookie).await;
    assert_eq!(rows(&all), 7, "{all}");
    let recent = ui.page("/ui/jobs?since=24h", &cookie).await;
    assert_eq!(rows(&recent), 6, "the 3-day-old job is out");
    let sched = ui.page("/ui/jobs?schedule=nightly", &cookie).await;
    assert_eq!(rows(&sched), 1);
    let prefix = &failed.to_string()[..13];
    let by_id = ui.page(&format!("/ui/jobs?id={prefix}"), &cookie).await;
    assert!(by_id.contains(&failed.to_string()), "{by_id}");
    assert_eq!(
        ui.get("/ui/jobs?id=zz';--", Some(&cookie)).await.status(),
        422
    );
    assert_eq!(
        ui.get("/ui/jobs?since=forever", Some(&cookie))
            .await
            .status(),
        422
    );
    let overview = ui.page("/ui", &cookie).await;
    assert!(
        overview.contains("<svg") && overview.contains("5 jobs finished in the last hour"),
        "{overview}"
    );

    let page = ui.page(&format!("/ui/jobs/{failed}"), &cookie).await;
    assert!(page.contains("Retry this job"), "{page}");
    let r = ui
        .post(
            &format!("/ui/jobs/{other}/retry"),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 409, "another tenant's job");
    assert_eq!(
        ui.post(
            &format!("/ui/jobs/{failed}/retry"),
            Some(&cookie),
            &[("csrf", "0")]
        )
        .await
        .status(),
        403
    );
    let r = ui
        .post(
            &format!("/ui/jobs/{failed}/retry"),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (status, attempt): (String, i32) = {
        let r = c
            .query_one(
                "SELECT status::text, attempt FROM ops_jobs WHERE id = $1",
                &[&failed],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), attempt), ("queued", 0));
    let audited: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_audit_log WHERE action = 'job.retry' AND target = $1",
            &[&failed.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
}

/// Schedules from the console (admin): disable and enable a CLI-made
/// schedule, run one now; a key without `admin` cannot; all audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sessions_disable_enable_and_run_a_schedule_now() {
    let db = roles_db().await;
    let admin = create_key(&db.url, "admin", "default", "jobs:read,admin").await;
    let plain = create_key(&db.url, "plain", "default", "jobs:read").await;
    cli_ok(
        &db.url,
        &[
            "schedules",
            "add",
            "hourly",
            "--cron",
            "0 * * * *",
            "--type",
            "noop",
        ],
    )
    .await;
    let ui = Console::start(&db, &[]).await;
    let (pc, pcsrf) = ui.sign_in(&plain).await;
    let page = ui.page("/ui/schedules", &pc).await;
    assert!(
        page.contains("hourly") && !page.contains("Run now"),
        "{page}"
    );
    let op = |csrf: &str, op: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("name", "hourly".to_string()),
            ("op", op.to_string()),
        ]
    };
    let as_refs = |v: &Vec<(&'static str, String)>| {
        v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let f = as_refs(&op(&pcsrf, "run-now"));
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(ui.post("/ui/schedules", Some(&pc), &f).await.status(), 403);

    let (ac, acsrf) = ui.sign_in(&admin).await;
    for (what, expect_enabled) in [("disable", false), ("enable", true)] {
        let f = as_refs(&op(&acsrf, what));
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            ui.post("/ui/schedules", Some(&ac), &f).await.status(),
            303,
            "{what}"
        );
        let enabled: bool = db
            .client()
            .await
            .query_one(
                "SELECT enabled FROM ops_schedules WHERE name = 'hourly'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(enabled, expect_enabled, "{what}");
    }
    let f = as_refs(&op(&acsrf, "run-now"));
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(ui.post("/ui/schedules", Some(&ac), &f).await.status(), 303);
    let c = db.client().await;
    let jobs: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_jobs WHERE idempotency_key LIKE 'schedule:hourly:run-now:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1);
    let actions: Vec<String> = column(
        &c,
        "SELECT action FROM ops_audit_log WHERE target = 'hourly' ORDER BY id",
    )
    .await;
    assert_eq!(
        actions,
        [
            "schedule.add",
            "schedule.disable",
            "schedule.enable",
            "schedule.run_now"
        ]
    );
}

/// A job's page shows its attempts and transitions with the worker that ran
/// each; the shim's role reads the events of its tenant's jobs only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_page_shows_its_trail_and_the_worker_and_no_tenant_sees_anothers_events() {
    let db = roles_db().await;
    let key = create_key(&db.url, "ops", "tenant-a", "jobs:read").await;
    let c = db.client().await;
    let mut ids = Vec::new();
    for (tenant, worker) in [("tenant-a", "vm-a:101:aaaa"), ("tenant-b", "vm-b:202:bbbb")] {
        let id: uuid::Uuid = c
            .query_one(
                "INSERT INTO ops_jobs (job_type, tenant_id, status, attempt, finished_at, error) \
                 VALUES ('noop', $1, 'failed', 1, now(), 'exit 1') RETURNING id",
                &[&tenant],
            )
            .await
            .unwrap()
            .get(0);
        c.execute(
            "INSERT INTO ops_job_events (job_id, from_status, to_status, attempt, worker, detail, attempt_started_at) \
             VALUES ($1, 'running', 'failed', 1, $2, 'exit 1', now() - interval '1 second')",
            &[&id, &worker],
        )
        .await
        .unwrap();
        ids.push(id);
    }
    let ui = Console::start(&db, &[]).await;
    let (cookie, _) = ui.sign_in(&key).await;
    let page = ui.page(&format!("/ui/jobs/{}", ids[0]), &cookie).await;
    assert!(
        page.contains("Attempts and transitions") && page.contains("vm-a:101:aaaa"),
        "{page}"
    );
    assert!(
        page.contains("running") && page.contains("failed"),
        "{page}"
    );
    // The role itself, with tenant-a set: tenant-a's event only.
    let api = connect(&db.login("opsrunner_api").await).await;
    api.batch_execute("BEGIN; SET LOCAL app.tenant_id = 'tenant-a'")
        .await
        .unwrap();
    let workers: Vec<String> = api
        .query("SELECT worker FROM ops_job_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(workers, ["vm-a:101:aaaa"]);
}
