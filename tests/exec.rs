//! The `exec` handler: a configured command, payload on stdin, clean
//! environment, bounded output, and the whole process tree stopped on
//! timeout or cancel.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use opsrunner::handlers::exec::ExecConfig;
use serde_json::json;
use uuid::Uuid;

fn sh(job_type: &str, script: &str) -> ExecConfig {
    ExecConfig {
        job_type: job_type.into(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        workdir: None,
        user: None,
        group: None,
    }
}

/// Gone, or a zombie waiting for init to reap it: either way not running.
fn process_is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(|rest| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

async fn finished(
    c: &tokio_postgres::Client,
    id: Uuid,
) -> (String, Option<serde_json::Value>, Option<String>, i32) {
    wait_for(
        Duration::from_secs(15),
        "the exec job to finish",
        || async {
            let r = c
                .query_one(
                    "SELECT status::text, result, error, attempt FROM ops_jobs WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            let s: String = r.get(0);
            matches!(s.as_str(), "succeeded" | "failed" | "cancelled")
                .then(|| (s, r.get(1), r.get(2), r.get(3)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_the_payload_on_stdin_in_a_clean_environment_and_stores_stdout_json() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["echo", "env", "text", "big"]).await;
    let mut settings = fast_settings();
    settings.exec = vec![
        sh("echo", "cat"),
        sh(
            "env",
            r#"printf '{"home":"%s","db":"%s","job":"%s","greeting":"%s","cwd":"%s"}' "$HOME" "$DATABASE_URL" "$OPSRUNNER_JOB_ID" "$GREETING" "$(pwd)""#,
        ),
        sh("text", "echo plain words"),
        sh("big", "head -c 200000 /dev/zero | tr '\\0' x"),
    ];
    let cfg = opsrunner::config::Config::with_url(settings.clone(), db.db_url()).unwrap();
    let w = start_worker(&cfg, settings.registry().unwrap()).await;

    let echo = JobRow::new("echo")
        .payload(json!({"a": [1, 2, {"b": "c"}]}))
        .max_attempts(1)
        .insert(&c)
        .await;
    let env = JobRow::new("env")
        .payload(json!({}))
        .max_attempts(1)
        .insert(&c)
        .await;
    let text = JobRow::new("text")
        .payload(json!({}))
        .max_attempts(1)
        .insert(&c)
        .await;
    let big = JobRow::new("big")
        .payload(json!({}))
        .max_attempts(1)
        .insert(&c)
        .await;
    assert_eq!(
        finished(&c, echo).await.1,
        Some(json!({"a": [1, 2, {"b": "c"}]}))
    );
    let env_result = finished(&c, env).await.1.unwrap();
    assert_eq!(env_result["home"], "", "the parent's environment leaked");
    assert_eq!(env_result["db"], "", "DATABASE_URL leaked into the child");
    assert_eq!(env_result["job"], env.to_string());
    assert_eq!(env_result["greeting"], "hello");
    assert_eq!(env_result["cwd"], "/");
    assert_eq!(
        finished(&c, text).await.1,
        Some(json!({"output": "plain words"}))
    );
    assert_eq!(
        finished(&c, big).await.1,
        Some(json!({"error": "Result too large", "truncated": true}))
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_failures_keep_the_stderr_tail_and_exit_65_is_not_retried() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["flaky", "baddata"]).await;
    let mut settings = fast_settings();
    settings.exec = vec![
        sh(
            "flaky",
            "echo 'noise that scrolls away' >&2; head -c 3000 /dev/zero | tr '\\0' y >&2; echo ' disk full' >&2; exit 3",
        ),
        sh("baddata", "echo 'payload lacks host' >&2; exit 65"),
    ];
    let cfg = opsrunner::config::Config::with_url(settings.clone(), db.db_url()).unwrap();
    let w = start_worker(&cfg, settings.registry().unwrap()).await;
    let flaky: Uuid = JobRow::new("flaky").max_attempts(2).insert(&c).await;
    let baddata: Uuid = JobRow::new("baddata").max_attempts(5).insert(&c).await;
    let (s, _, e, attempt) = finished(&c, flaky).await;
    let e = e.unwrap();
    assert_eq!((s.as_str(), attempt), ("failed", 2));
    assert!(
        e.starts_with("exit code 3: ") && e.ends_with("disk full"),
        "{e}"
    );
    assert!(
        !e.contains("noise that scrolls away") && e.chars().count() <= 500,
        "{e}"
    );
    let (s, _, e, attempt) = finished(&c, baddata).await;
    assert_eq!((s.as_str(), attempt), ("failed", 1));
    assert_eq!(e.as_deref(), Some("exit code 65: payload lacks host"));
    w.shutdown().await;
}

/// Starts a shell that backgrounds a `sleep` (a grandchild in the same
/// process group), records both pids, and waits.
fn tree(job_type: &str, dir: &std::path::Path) -> ExecConfig {
    sh(
        job_type,
        &format!(
            "echo $$ > {d}/{job_type}.sh; sleep 300 & echo $! > {d}/{job_type}.child; wait",
            d = dir.display()
        ),
    )
}

async fn pids(dir: &std::path::Path, job_type: &str) -> (i32, i32) {
    wait_for(
        Duration::from_secs(10),
        "the command to record its pids",
        || async {
            let read = |ext: &str| {
                std::fs::read_to_string(dir.join(format!("{job_type}.{ext}")))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
            };
            Some((read("sh")?, read("child")?))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_timeout_and_cancel_kill_the_whole_process_group() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["slowcancel", "slowtimeout"]).await;
    let dir = temp_dir("exec");
    let mut settings = fast_settings();
    settings.exec = vec![tree("slowcancel", &dir), tree("slowtimeout", &dir)];
    let cfg = opsrunner::config::Config::with_url(settings.clone(), db.db_url()).unwrap();
    let w = start_worker(&cfg, settings.registry().unwrap()).await;

    let timed = JobRow::new("slowtimeout")
        .payload(json!({}))
        .max_attempts(1)
        .timeout("1 second")
        .insert(&c)
        .await;
    let cancelled = JobRow::new("slowcancel")
        .payload(json!({}))
        .max_attempts(1)
        .insert(&c)
        .await;
    let (timed_sh, timed_child) = pids(&dir, "slowtimeout").await;
    let (cancel_sh, cancel_child) = pids(&dir, "slowcancel").await;
    opsrunner::jobs::cancel(
        &c,
        &opsrunner::jobs::CancelRequest {
            id: cancelled,
            reason: Some("test"),
            actor: "tests",
            tenant: None,
            via: "cli",
        },
    )
    .await
    .unwrap();

    let (s, _, e, _) = finished(&c, timed).await;
    assert_eq!(s, "failed");
    assert!(
        e.as_deref().unwrap_or("").starts_with("timed out after 1s"),
        "{e:?}"
    );
    let (s, _, _, _) = finished(&c, cancelled).await;
    assert_eq!(s, "cancelled");
    for pid in [timed_sh, timed_child, cancel_sh, cancel_child] {
        wait_for(Duration::from_secs(5), "the process to be dead", || async {
            process_is_dead(pid).then_some(())
        })
        .await;
    }
    w.shutdown().await;
}

#[test]
fn exec_config_is_validated_at_start_up() {
    let mut s = fast_settings();
    s.exec = vec![ExecConfig {
        command: vec!["relative/path".into()],
        ..sh("x", "")
    }];
    let e = s.validate().unwrap_err().to_string();
    assert!(
        e.contains("exec[0].command[0] must be an absolute path"),
        "{e}"
    );
    s.exec = vec![sh("sleep", "true")];
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("other than a built-in")
    );
    s.exec = vec![sh("dup", "true"), sh("dup", "true")];
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("defined twice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_that_leaves_the_process_group_does_not_hold_the_job_open() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["escapee"]).await;
    let dir = temp_dir("escapee");
    // The grandchild leaves the group (setsid) and keeps stdout and stderr
    // open for 300 s; the command itself waits until it has escaped (else
    // the group kill at the command's exit could still reach it), prints
    // its result and exits 0.
    let pid_file = dir.join("escaped.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 300' & \
         while [ ! -s {p} ]; do sleep 0.05; done; echo '{{\"ok\": 1}}'",
        p = pid_file.display()
    );
    let mut settings = fast_settings();
    settings.exec = vec![sh("escapee", &script)];
    let cfg = db.config(|s| *s = settings.clone());
    let w = start_worker(&cfg, settings.registry().unwrap()).await;
    let id = JobRow::new("escapee").max_attempts(1).insert(&c).await;
    let (status, result, error, attempt) = finished(&c, id).await;
    let escaped: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if escaped > 0 {
        // SAFETY: kill(2) on the process this test's command started.
        unsafe { libc::kill(escaped, libc::SIGKILL) };
    }
    assert!(escaped > 0, "the grandchild escaped the group");
    assert_eq!((status.as_str(), attempt), ("succeeded", 1), "{error:?}");
    assert_eq!(result, Some(json!({"ok": 1})));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_child_finds_none_of_the_workers_secrets_in_its_parents_environment() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["peek"]).await;
    let dir = temp_dir("exec-secrets");
    let cfg = dir.config(
        r#"
[[exec]]
job_type = "peek"
command = ["/bin/sh", "-c", "tr '\\000' '\\n' < /proc/$PPID/environ 2>&1; echo; env"]

[[http]]
job_type = "hook"
url = "https://hooks.example.com/x"
secret_env = "PEEK_HOOK_SECRET"
"#,
    );
    // A password the test server ignores (trust), but that sits in the URL.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("db-password-4be1c0")).unwrap();
    let hook = "hook-secret-0123456789abcdef-91d2e7";
    let w = WorkerProcess::start_url(
        url.as_str(),
        &[
            ("OPSRUNNER_CONFIG", cfg.to_str().unwrap()),
            ("PEEK_HOOK_SECRET", hook),
        ],
    )
    .await;
    let id = insert_job(&c, "peek", json!({})).await;
    wait_status(&c, id, "succeeded", Duration::from_secs(15)).await;
    let result: serde_json::Value = c
        .query_one("SELECT result FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let seen = result.to_string();
    // The child did read something: its parent's environment (as root, which
    // non-dumpable does not stop) or a refusal.
    assert!(
        seen.contains("PATH=") || seen.contains("ermission denied"),
        "{seen}"
    );
    for secret in ["db-password-4be1c0", hook] {
        assert!(!seen.contains(secret), "a child read {secret}: {seen}");
    }
    drop(w);
}

/// A worker killed outside systemd (SIGKILL: no drain, no cleanup) takes
/// its command with it, so that the job's re-run after the lease expires
/// is not a second copy running beside the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_command_dies_with_a_worker_killed_by_sigkill() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["long"]).await;
    let dir = temp_dir("exec-pdeathsig");
    let pid_file = dir.join("pid");
    let cfg = dir.config(format!(
        r#"
[[exec]]
job_type = "long"
command = ["/bin/sh", "-c", "echo $$ > {}; exec sleep 60"]
"#,
        pid_file.display()
    ));
    let w = WorkerProcess::start(&db, &[("OPSRUNNER_CONFIG", cfg.to_str().unwrap())]).await;
    let id = insert_job(&c, "long", json!({})).await;
    wait_status(&c, id, "running", Duration::from_secs(15)).await;
    let pid: i32 = wait_for(Duration::from_secs(10), "the command's pid", || async {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await;
    assert!(
        !process_is_dead(pid),
        "the command runs while its worker does"
    );
    w.signal(libc::SIGKILL);
    wait_for(
        Duration::from_secs(5),
        "the command to die with its worker",
        || async { process_is_dead(pid).then_some(()) },
    )
    .await;
    drop(w);
}

/// Runs as root (as CI does): a command with `user = "nobody"` runs as
/// nobody, in nobody's group only, with nobody's HOME and no capability.
/// Not root and without CAP_SETUID: start-up refuses the entry and names
/// the setting and what the worker lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_command_runs_as_the_configured_user_with_no_capabilities() {
    let nobody = ExecConfig {
        user: Some("nobody".into()),
        ..sh(
            "as_nobody",
            r#"printf '{"uid":"%s","gid":"%s","groups":"%s","home":"%s","user":"%s","caps":"%s"}' "$(id -u)" "$(id -g)" "$(id -G)" "$HOME" "$USER" "$(grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status | tr -s '\t\n' '  ')""#,
        )
    };
    let mut settings = fast_settings();
    settings.exec = vec![nobody.clone()];
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let e = settings.validate().unwrap_err().to_string();
        assert!(
            e.contains("exec[0].user") && e.contains("CAP_SETUID"),
            "{e}"
        );
        return;
    }
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["as_nobody"]).await;
    let cfg = opsrunner::config::Config::with_url(settings.clone(), db.db_url()).unwrap();
    let w = start_worker(&cfg, settings.registry().unwrap()).await;
    let id = JobRow::new("as_nobody")
        .payload(json!({}))
        .max_attempts(1)
        .insert(&c)
        .await;
    let (status, result, error, _) = finished(&c, id).await;
    assert_eq!(status, "succeeded", "{error:?}");
    let r = result.unwrap();
    let want = nobody.run_as().unwrap().unwrap();
    assert_eq!(r["uid"], want.uid.to_string(), "{r}");
    assert_eq!(r["gid"], want.gid.to_string(), "{r}");
    assert_eq!(
        r["groups"],
        want.gid.to_string(),
        "no supplementary groups: {r}"
    );
    assert_eq!(r["user"], "nobody");
    assert_eq!(r["home"], want.home.to_str().unwrap());
    let caps = r["caps"].as_str().unwrap();
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert!(
            caps.contains(&format!("{set}:\t0000000000000000"))
                || caps.contains(&format!("{set}: 0000000000000000")),
            "{set} not empty: {caps}"
        );
    }
    w.shutdown().await;
}

#[test]
fn an_unknown_exec_user_or_group_is_refused_at_start_up_with_the_setting() {
    let mut s = fast_settings();
    s.exec = vec![ExecConfig {
        user: Some("no-such-user-7f3a".into()),
        ..sh("x", "true")
    }];
    let e = s.validate().unwrap_err().to_string();
    assert!(
        e.contains("exec[0].user = \"no-such-user-7f3a\": no such user"),
        "{e}"
    );
    s.exec = vec![ExecConfig {
        user: Some("root".into()),
        group: Some("no-such-group-7f3a".into()),
        ..sh("x", "true")
    }];
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("exec[0].group = \"no-such-group-7f3a\""), "{e}");
    s.exec = vec![ExecConfig {
        group: Some("root".into()),
        ..sh("x", "true")
    }];
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("exec[0].group needs a user"), "{e}");
}
