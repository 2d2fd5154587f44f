//! Time comes from the database's clock wherever it matters: a worker (or
//! CLI) whose own clock is 10 minutes off, made so with libfaketime, still
//! checks policy-token expiry and retention cutoffs by the database's clock,
//! measures its offset and warns. Needs Debian's `libfaketime` (the README's
//! test command and `.ci/run` install it).

mod common;

use std::time::Duration;

use common::*;
use opsrunner::policy::{Claims, Secret, sign};

const SECRET: &str = "clock-test-policy-secret-0123456789abcdef";

/// libfaketime, or a failure that names the package: never a silent skip.
fn faketime() -> String {
    let found = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| format!("{d}/faketime/libfaketime.so.1"))
    .find(|p| std::path::Path::new(p).exists());
    found.unwrap_or_else(|| {
        panic!("libfaketime is not installed: `apt-get install libfaketime` (the README's test command does it)")
    })
}

/// Environment that puts a process's wall clock `offset` (e.g. "+10m") off.
fn skewed(lib: &str, offset: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", lib.to_string()),
        ("FAKETIME", offset.to_string()),
        // Only the wall clock: timers and leases run on the monotonic one.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

fn token(exp_from_now: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = Claims::new(
        None,
        "alice",
        "restart-service",
        vec!["ops:execute".into()],
        now - 60,
        60,
    );
    claims.exp = now + exp_from_now;
    claims.iat = claims.exp - 3_600;
    sign(&Secret::new(SECRET.as_bytes().to_vec()), &claims).unwrap()
}

fn action_config(dir: &TempDir) -> String {
    let path = dir.config(
        r#"
[[policy.actions]]
job_type = "restart-service"
scope = "ops:execute"

[[exec]]
job_type = "restart-service"
command = ["/bin/true"]
"#,
    );
    path.to_string_lossy().into_owned()
}

async fn finish(c: &tokio_postgres::Client, id: uuid::Uuid) -> (String, Option<String>) {
    wait_for(
        Duration::from_secs(15),
        "the action job to finish",
        || async {
            let r = c
                .query_one(
                    "SELECT status::text, error FROM ops_jobs WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            let s: String = r.get(0);
            (s == "succeeded" || s == "failed").then(|| (s, r.get(1)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_is_off_checks_token_expiry_by_the_database_clock() {
    let lib = faketime();
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["restart-service"]).await;
    let dir = temp_dir("clock");
    let cfg = action_config(&dir);
    for (offset, token_exp, want) in [
        // 10 min fast: a fresh 5-minute token looked expired by the worker's clock.
        ("+10m", 300, "succeeded"),
        // 10 min slow: a token that expired 2 minutes ago looked valid.
        ("-10m", -120, "failed"),
    ] {
        let mut env = skewed(&lib, offset);
        env.push(("OPS_POLICY_SECRET", SECRET.into()));
        env.push(("OPSRUNNER_CONFIG", cfg.clone()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut w = WorkerProcess::start(&db, &env).await;
        let id = JobRow::new("restart-service")
            .policy_token(&token(token_exp))
            .max_attempts(1)
            .insert(&c)
            .await;
        let (status, error) = finish(&c, id).await;
        assert_eq!(status, want, "clock {offset}: {error:?}");
        if want == "failed" {
            assert!(error.unwrap_or_default().contains("expired"));
        }
        w.wait_log("clock is off the database's", Duration::from_secs(5))
            .await;
        w.signal(libc::SIGTERM);
        let _ = tokio::time::timeout(Duration::from_secs(20), w.child.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_cutoffs_come_from_the_database_clock_not_the_callers() {
    let lib = faketime();
    let db = migrated_db().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, status, finished_at) VALUES
           ('noop', 'succeeded', now() - interval '55 minutes'),
           ('noop', 'succeeded', now() - interval '65 minutes')",
    )
    .await
    .unwrap();
    let env = skewed(&lib, "+10m");
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("OPSRUNNER_RETENTION__JOBS", "1h"));
    let out = opsrunner_cli(&db.url, &["prune"], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // By the database's clock only the 65-minute-old job is past an hour;
    // by the caller's (10 min fast) both were.
    assert_eq!(count(&c, "SELECT count(*) FROM ops_jobs").await, 1);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM ops_jobs WHERE finished_at > now() - interval '1 hour'"
        )
        .await,
        1
    );
}
