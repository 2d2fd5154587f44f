//! The `opsrunner` binary: start-up validation, migrations, operator commands, dev.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn opsrunner(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsrunner"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OPSRUNNER_LOG__FORMAT", "json")
        .envs(NO_DEFAULT_PORTS)
        .envs(env.iter().copied())
        .output()
        .expect("run opsrunner")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn missing_database_url_fails_at_once_naming_the_variable() {
    for cmd in ["worker", "migrate", "check"] {
        let o = opsrunner(&[cmd], &[]);
        assert!(!o.status.success());
        assert!(
            text(&o).contains("DATABASE_URL is not set"),
            "{cmd}: {}",
            text(&o)
        );
    }
}

#[test]
fn a_non_postgres_url_is_refused_without_printing_its_password() {
    let o = opsrunner(
        &["worker"],
        &[("DATABASE_URL", "sqlite://admin:Pa55word-xyz@x.db")],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("DATABASE_URL") && t.contains("sqlite"), "{t}");
    assert!(!t.contains("Pa55word-xyz"), "{t}");
}

#[test]
fn an_unreachable_database_error_does_not_print_the_password() {
    let o = opsrunner(
        &["check"],
        &[(
            "DATABASE_URL",
            "postgres://app:Pa55word-xyz@127.0.0.1:1/ops",
        )],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(!t.contains("Pa55word-xyz"), "{t}");
    assert!(t.contains("error"), "{t}");
}

#[test]
fn a_bad_setting_fails_at_start_up_naming_its_variable() {
    let o = opsrunner(
        &["worker"],
        &[
            ("DATABASE_URL", "postgres://u@127.0.0.1:1/x"),
            ("OPSRUNNER_WORKER__CONCURRENCY", "many"),
        ],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("OPSRUNNER_WORKER__CONCURRENCY"),
        "{}",
        text(&o)
    );
    let o = opsrunner(
        &["worker"],
        &[
            ("DATABASE_URL", "postgres://u@127.0.0.1:1/x"),
            ("OPSRUNNER_WORKER__CONCURRENCY", "0"),
        ],
    );
    assert!(
        text(&o).contains("OPSRUNNER_WORKER__CONCURRENCY"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_twice_is_a_no_op() {
    let db = fresh_db().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let first = opsrunner(&["migrate"], &env);
    assert!(first.status.success(), "{}", text(&first));
    let all: Vec<i32> = (1..=opsrunner::db::migrate::latest_version()).collect();
    assert!(
        text(&first).contains(&format!("applied migrations {all:?}")),
        "{}",
        text(&first)
    );
    let c = db.client().await;
    let snapshot = || async {
        c.query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace),
                    (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),
                    (SELECT count(*) FROM ops_schema_migrations)",
            &[],
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)))
        .unwrap()
    };
    let before = snapshot().await;
    let second = opsrunner(&["migrate"], &env);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("schema is up to date"),
        "{}",
        text(&second)
    );
    assert_eq!(snapshot().await, before);
    let check = opsrunner(&["check"], &env);
    assert!(check.status.success(), "{}", text(&check));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_an_unmigrated_database() {
    // With `opsrunner dev` running elsewhere the default ports are taken;
    // the test must still see the schema error, not a bind error.
    let _ports = hold_default_ports();
    let db = fresh_db().await;
    let o = opsrunner(&["worker"], &[("DATABASE_URL", db.url.as_str())]);
    assert!(!o.status.success());
    assert!(text(&o).contains("run `opsrunner migrate`"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_then_jobs_list_and_show() {
    let db = migrated_db().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let o = opsrunner(
        &[
            "enqueue",
            "sleep",
            "--payload",
            r#"{"ms": 5}"#,
            "--priority",
            "-5",
            "--timeout",
            "30s",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    uuid::Uuid::parse_str(&id).expect("enqueue prints the id");
    let list = opsrunner(&["jobs", "list", "--json"], &env);
    let jobs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json list");
    assert_eq!(jobs[0]["id"], id.as_str());
    assert_eq!(jobs[0]["status"], "queued");
    let show = opsrunner(&["jobs", "show", &id, "--json"], &env);
    let job: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json show");
    assert_eq!(job["payload"]["ms"], 5);
    assert_eq!(job["priority"], -5);
    let bad = opsrunner(&["enqueue", "sleep", "--payload", "{not json"], &env);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--payload is not valid JSON"),
        "{}",
        text(&bad)
    );
}

#[test]
fn dev_runs_a_demo_job_to_success_on_a_throwaway_cluster() {
    let _ports = hold_default_ports();
    let o = opsrunner(
        &["dev", "--exit-after-demo"],
        &[("OPSRUNNER_METRICS__LISTEN", "127.0.0.1:0")],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let q = t.find("status: queued").expect(&t);
    let r = t.find("status: running").expect(&t);
    let s = t.find("status: succeeded").expect(&t);
    assert!(q < r && r < s, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_measurement_as_json() {
    let db = fresh_db().await;
    let out = opsrunner(
        &[
            "bench",
            "--json",
            "--jobs",
            "300",
            "--workers",
            "2",
            "--concurrency",
            "10",
            "--single-inserts",
            "20",
            "--batch-rows",
            "500",
            "--latency-samples",
            "5",
        ],
        &[("DATABASE_URL", db.url.as_str())],
    );
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["process"]["jobs"], 300);
    assert!(r["process"]["jobs_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["enqueue_batch"]["rows_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["enqueue_copy"]["rows_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["enqueue_single"]["rows_per_second"].as_f64().unwrap() > 0.0);
    let p99 = r["latency"]["p99_ms"].as_f64().unwrap();
    assert!(p99 > 0.0, "{p99}");
    // Its database is gone afterwards.
    let c = db.client().await;
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'opsrunner_bench_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_retry_requeues_a_failed_job_with_attempts_reset_and_audits_it() {
    let db = migrated_db().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let c = db.client().await;
    let id: uuid::Uuid = c
        .query_one(
            "INSERT INTO ops_jobs (job_type, status, attempt, error, finished_at)
             VALUES ('noop', 'failed', 3, 'boom', now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let id_s = id.to_string();
    let o = opsrunner(
        &["jobs", "retry", &id_s, "--reason", "fixed upstream"],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    let row = c
        .query_one(
            "SELECT status::text, attempt, error, finished_at IS NULL FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "queued");
    assert_eq!(row.get::<_, i32>(1), 0);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert!(row.get::<_, bool>(3));
    let audited: String = c
        .query_one(
            "SELECT detail->>'reason' FROM ops_audit_log WHERE action = 'job.retry' AND target = $1",
            &[&id_s],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, "fixed upstream");
    // A queued job is not "retried".
    let again = opsrunner(&["jobs", "retry", &id_s], &env);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("no failed or cancelled job"),
        "{}",
        text(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_killed_with_sigkill_leaves_no_files_behind() {
    use tokio::io::AsyncBufReadExt;
    let tmp = temp_dir("devkill");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrunner"))
        .arg("dev")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", &*tmp)
        .envs(NO_DEFAULT_PORTS)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn opsrunner dev");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let running = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            let done = l.contains("Press Ctrl-C");
            seen.push(l);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(running, Ok(true)), "dev did not come up: {seen:?}");
    let entries = || std::fs::read_dir(&*tmp).unwrap().count();
    assert!(
        entries() >= 2,
        "the cluster and the key file live in TMPDIR"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
    wait_for(
        std::time::Duration::from_secs(15),
        "TMPDIR to be empty",
        || async { (entries() == 0).then_some(()) },
    )
    .await;
}

#[test]
fn openapi_and_token_sign_need_no_valid_config_file() {
    let missing = [("OPSRUNNER_CONFIG", "/nonexistent/opsrunner.toml")];
    let o = opsrunner(&["openapi"], &missing);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the OpenAPI JSON");
    assert!(doc["paths"]["/api/ops/jobs"].is_object());
    let o = opsrunner(
        &[
            "token",
            "sign",
            "--action",
            "restart-service",
            "--actor",
            "alice",
        ],
        &[
            missing[0],
            (
                "OPS_POLICY_SECRET",
                "a-policy-secret-of-at-least-32-bytes!!",
            ),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).trim().is_empty());
    // Commands that use the configuration still refuse it.
    let o = opsrunner(
        &["check"],
        &[missing[0], ("DATABASE_URL", "postgres://u@127.0.0.1:1/x")],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_to_a_closed_pipe_ends_quietly_with_exit_zero() {
    let db = migrated_db().await;
    let c = db.client().await;
    insert_job(&c, "noop", serde_json::json!({})).await;
    for args in [&["openapi"][..], &["jobs", "list"][..]] {
        // The reader is gone before the command writes a byte, as with
        // `opsrunner jobs list | head -0`: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_opsrunner"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("OPSRUNNER_LOG__FORMAT", "json")
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run opsrunner");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_and_flags_enable_refuse_unknown_types_unless_forced_and_check_the_payload() {
    let db = migrated_db().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    for args in [&["enqueue", "slep"][..], &["flags", "enable", "slep"][..]] {
        let o = opsrunner(args, &env);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            text(&o).contains("no handler knows the job type \"slep\""),
            "{}",
            text(&o)
        );
    }
    let forced = opsrunner(&["enqueue", "slep", "--force"], &env);
    assert!(forced.status.success(), "{}", text(&forced));
    // The handler's own payload check, as the shim applies it.
    let bad = opsrunner(
        &["enqueue", "sleep", "--payload", r#"{"ms": "fast"}"#],
        &env,
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--payload is invalid for sleep"),
        "{}",
        text(&bad)
    );
    let check = opsrunner(&["check"], &env);
    assert!(
        text(&check).contains("job types known here: noop, sleep"),
        "{}",
        text(&check)
    );
}

#[tokio::test]
async fn no_log_directive_lets_statement_parameters_into_the_log() {
    let db = migrated_db().await;
    let marker = "payload-marker-7f3a91";
    for directive in [
        "debug",
        "trace",
        "info,tokio_postgres::query=debug",
        "info,tokio_postgres=trace,postgres_protocol=trace",
    ] {
        let out = opsrunner_cli(
            &db.url,
            &[
                "enqueue",
                "noop",
                "--payload",
                &format!("{{\"m\": \"{marker}\"}}"),
            ],
            &[("RUST_LOG", directive)],
        )
        .await;
        assert!(
            out.status.success(),
            "{directive}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            !log.contains(marker),
            "RUST_LOG={directive} logged a parameter:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_a_database_that_comes_up_late_and_fails_at_once_without_wait() {
    let db = fresh_db().await;
    let upstream = server_addr(&db.url);
    let port = free_port();
    let mut late = url::Url::parse(&db.url).unwrap();
    late.set_host(Some("127.0.0.1")).unwrap();
    late.set_port(Some(port)).unwrap();
    let late = late.to_string();
    // Nothing listens there yet: without --wait, migrate fails at once.
    let started = std::time::Instant::now();
    let out = opsrunner_cli(&late, &["migrate"], &[]).await;
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    // The "database" comes up 1.5 s after `migrate --wait` starts.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let (mut inbound, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    let out = opsrunner_cli(&late, &["migrate", "--wait", "30s"], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied migrations"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reachable yet"));
}

/// `opsrunner stats --json` and `opsrunner top` over a pipe, as a member of
/// the worker role (the operators' role), while another session holds row
/// locks on queued jobs and the ROW EXCLUSIVE lock every claim takes: the
/// reads wait for neither, and count what is queued, scheduled and running
/// and which daemon runs it and leads maintenance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_top_read_the_queue_without_waiting_for_locks_workers_hold() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let _w = WorkerProcess::start_url(&operator, &[]).await;
    let running = insert_job(&c, "sleep", serde_json::json!({"ms": 20_000})).await;
    wait_status(&c, running, "running", Duration::from_secs(10)).await;
    for _ in 0..2 {
        insert_job(&c, "noop", serde_json::json!({})).await;
    }
    c.execute(
        "INSERT INTO ops_jobs (job_type, run_at) VALUES ('sleep', now() + interval '1 hour')",
        &[],
    )
    .await
    .unwrap();
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute(
        "LOCK TABLE ops_jobs IN ROW EXCLUSIVE MODE; \
         SELECT id FROM ops_jobs WHERE job_type = 'noop' FOR UPDATE",
    )
    .await
    .unwrap();
    let stats = wait_for(
        Duration::from_secs(15),
        "stats with the leader and the running job",
        || async {
            let out = tokio::time::timeout(
                Duration::from_secs(10),
                opsrunner_cli(&operator, &["stats", "--json"], &[]),
            )
            .await
            .expect("stats waited for a lock");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let leader = v["daemons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["running"] == 1 && d["leads_maintenance"] == true);
            leader.then_some(v)
        },
    )
    .await;
    let row = |t: &str| {
        stats["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["job_type"] == t && q["queue"] == "default")
            .cloned()
            .unwrap_or_else(|| panic!("no {t} row: {stats}"))
    };
    assert_eq!(row("noop")["queued"], 2, "{stats}");
    assert!(row("noop")["oldest_queued_age_seconds"].as_f64().is_some());
    assert_eq!(row("sleep")["running"], 1, "{stats}");
    assert_eq!(row("sleep")["scheduled"], 1, "{stats}");
    assert_eq!(stats["daemons"].as_array().unwrap().len(), 1, "{stats}");

    let out = tokio::time::timeout(
        Duration::from_secs(10),
        opsrunner_cli(&operator, &["top"], &[]),
    )
    .await
    .expect("top over a pipe prints once and exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("JOB TYPE"), "{text}");
    assert!(
        text.contains("maintenance leader") && !text.contains("\x1b["),
        "{text}"
    );
    tx.rollback().await.unwrap();
}

/// `jobs retry --status failed --type T [--dry-run]` and `jobs cancel
/// --status queued …` from the CLI, across tenants, as the operators' role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retry_and_cancel_from_the_cli_count_first_and_change_every_tenants_jobs() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ops_jobs (job_type, tenant_id, status, attempt, finished_at) \
         SELECT 'noop', t, 'failed', 3, now() FROM generate_series(1, 3), unnest(ARRAY['a', 'b']) t; \
         INSERT INTO ops_jobs (job_type, tenant_id, status, attempt, finished_at) \
         VALUES ('noop', 'a', 'failed', 3, now() - interval '2 hours'); \
         INSERT INTO ops_jobs (job_type) SELECT 'sleep' FROM generate_series(1, 2);",
    )
    .await
    .unwrap();
    let run = |args: &'static [&'static str]| {
        let url = operator.clone();
        async move {
            let out = opsrunner_cli(&url, args, &[]).await;
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let dry = run(&[
        "jobs",
        "retry",
        "--status",
        "failed",
        "--type",
        "noop",
        "--since",
        "1h",
        "--dry-run",
    ])
    .await;
    assert!(dry.contains("6 jobs match"), "{dry}");
    let done = run(&[
        "jobs", "retry", "--status", "failed", "--type", "noop", "--since", "1h",
    ])
    .await;
    assert!(done.contains("6 of 6"), "{done}");
    let done = run(&["jobs", "cancel", "--status", "queued", "--type", "sleep"]).await;
    assert!(done.contains("2 of 2"), "{done}");
    let failed: i64 = c
        .query_one("SELECT count(*) FROM ops_jobs WHERE status = 'failed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 1, "the one that failed two hours ago");
    let out = opsrunner_cli(&operator, &["jobs", "retry", "--status", "queued"], &[]).await;
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("failed or cancelled")
    );
}
