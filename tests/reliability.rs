//! The reliability battery: real worker processes, SIGKILLs, a PostgreSQL
//! crash-restart, and the books checked afterwards. The quick version runs in
//! `cargo test`; `OPSRUNNER_SOAK=1 cargo test --release --test reliability --
//! --nocapture` runs the full one (20,000 jobs, 4 workers, a minute of kills).
//! Both print their numbers.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use uuid::Uuid;

/// A migrated database on a throwaway cluster of the test's own (fsync off).
async fn own_db() -> OwnDb {
    own_db_with(opsrunner::testing::TempCluster::start).await
}

fn soak() -> bool {
    std::env::var("OPSRUNNER_SOAK").is_ok_and(|v| v == "1")
}

/// An exec handler that records every execution (job, attempt, worker pid)
/// and behaves as its payload says: fast, slow, flaky (fails on attempt 1)
/// or fail (always).
fn storm_config(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = dir.join("executions.log");
    let script = dir.join("job.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
read -r payload || true
echo "$OPSRUNNER_JOB_ID $OPSRUNNER_ATTEMPT $PPID" >> "$EXEC_LOG"
case "$payload" in
  *slow*) sleep 0.3 ;;
  *flaky*) [ "$OPSRUNNER_ATTEMPT" -ge 2 ] || { echo "flaky first attempt" >&2; exit 1; } ;;
  *fail*) echo "always fails" >&2; exit 1 ;;
esac
echo '{"ok": true}'
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.config(format!(
        r#"
[[exec]]
job_type = "storm"
command = ["{}"]
env = {{ EXEC_LOG = "{}" }}
"#,
        script.display(),
        log.display()
    ));
    (cfg, log)
}

const MODES: [(&str, i32); 4] = [("fast", 5), ("slow", 5), ("flaky", 5), ("fail", 2)];

async fn insert_mix(c: &tokio_postgres::Client, n: usize, offset: usize) {
    let mut payloads = Vec::new();
    let mut attempts = Vec::new();
    for i in offset..offset + n {
        // 40 % fast, 20 % each of the rest.
        let (mode, max) = match i % 5 {
            0 | 1 => MODES[0],
            2 => MODES[1],
            3 => MODES[2],
            _ => MODES[3],
        };
        payloads.push(serde_json::json!({ "mode": mode, "i": i }));
        attempts.push(max);
    }
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload, max_attempts)
         SELECT 'storm', p, m FROM unnest($1::jsonb[], $2::int[]) AS t(p, m)",
        &[&payloads, &attempts],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_storm_loses_no_job_and_repeats_only_work_that_killed_workers_had_in_flight() {
    let (jobs, workers, storm_for) = if soak() {
        (20_000usize, 4usize, Duration::from_secs(60))
    } else {
        (1_500, 3, Duration::from_secs(8))
    };
    let db = own_db().await;
    let c = db.client().await;
    enable(&c, &["storm"]).await;
    let dir = temp_dir("storm");
    let (cfg, log) = storm_config(&dir);
    let cfg_s = cfg.to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("OPSRUNNER_CONFIG", cfg_s.as_str()),
        ("OPSRUNNER_WORKER__CONCURRENCY", "16"),
        ("OPSRUNNER_WORKER__BACKOFF_BASE", "10ms"),
        ("OPSRUNNER_WORKER__BACKOFF_MAX", "100ms"),
        ("OPSRUNNER_DB__POOL_SIZE", "4"),
    ];
    insert_mix(&c, jobs / 2, 0).await;
    let mut procs = Vec::new();
    for _ in 0..workers {
        procs.push(WorkerProcess::start(&db, &env).await);
    }
    let mut killed: HashSet<i32> = HashSet::new();
    let mut max_idle_in_tx = 0.0f64;
    let mut max_conns = 0i64;
    let started = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_millis(1500);
    let mut inserted_rest = false;
    while started.elapsed() < storm_for {
        if !inserted_rest && started.elapsed() > storm_for / 3 {
            insert_mix(&c, jobs - jobs / 2, jobs / 2).await;
            inserted_rest = true;
        }
        if Instant::now() >= next_kill {
            let victim = rand::random_range(0..procs.len());
            let pid = procs[victim].pid();
            procs[victim].signal(libc::SIGKILL);
            let _ = procs[victim].child.wait().await;
            killed.insert(pid);
            procs[victim] = WorkerProcess::start(&db, &env).await;
            next_kill = Instant::now() + Duration::from_millis(1500);
        }
        let row = c
            .query_one(
                "SELECT coalesce(max(extract(epoch FROM now() - state_change))
                                 FILTER (WHERE state LIKE 'idle in transaction%'), 0)::float8,
                        count(*)
                 FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name LIKE 'opsrunner%'",
                &[],
            )
            .await
            .unwrap();
        max_idle_in_tx = max_idle_in_tx.max(row.get(0));
        max_conns = max_conns.max(row.get(1));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !inserted_rest {
        insert_mix(&c, jobs - jobs / 2, jobs / 2).await;
    }
    // Let the survivors finish everything.
    let limit = Duration::from_secs(if soak() { 600 } else { 90 });
    wait_all_finished(&c, limit, "after the kill storm").await;
    let elapsed = started.elapsed();
    // An execution is the survivors' when its recorded parent is one of
    // them. Anything else ran under a killed worker: its own pid, or, when
    // the SIGKILL landed between the worker's fork and the shell's start,
    // the reaper that adopted the orphan ($PPID read 1 in one CI run, and
    // that run blamed a survivor for a killed worker's attempt).
    let survivors: HashSet<i32> = procs.iter().map(|p| p.pid()).collect();
    for p in &procs {
        p.signal(libc::SIGTERM);
    }

    // The books.
    let mut executions: HashMap<Uuid, Vec<(i32, i32)>> = HashMap::new();
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(id), Some(attempt), Some(pid)) = (f.next(), f.next(), f.next()) else {
            panic!("bad execution line {line:?}");
        };
        executions
            .entry(id.parse().unwrap())
            .or_default()
            .push((attempt.parse().unwrap(), pid.parse().unwrap()));
    }
    let rows = c
        .query(
            "SELECT id, payload->>'mode', status::text, attempt, coalesce(error, ''),
                    (SELECT count(*) FROM ops_job_events e WHERE e.job_id = j.id AND e.from_status = 'succeeded')
             FROM ops_jobs j",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), jobs, "every job is still there");
    let (mut lost, mut repeats, mut repeats_explained, mut by_kill_failures) = (0, 0, 0, 0);
    for r in &rows {
        let id: Uuid = r.get(0);
        let mode: String = r.get(1);
        let status: String = r.get(2);
        let attempt: i32 = r.get(3);
        let error: String = r.get(4);
        // Events that left `succeeded`: a second success would need one
        // (only queued jobs are claimed), and every such change is stored.
        let left_success: i64 = r.get(5);
        if status == "queued" || status == "running" {
            lost += 1;
            continue;
        }
        let ex = executions.get(&id).cloned().unwrap_or_default();
        // Each attempt ran at most once: no two workers ever held one claim.
        let attempts: HashSet<i32> = ex.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            attempts.len(),
            ex.len(),
            "job {id}: an attempt ran twice: {ex:?}"
        );
        // No stale completion: one success at most, and the row's attempt is
        // the newest one anybody ran (or a later, rescued one).
        assert_eq!(
            left_success, 0,
            "job {id} left success: it could succeed twice"
        );
        if let Some(newest) = attempts.iter().max() {
            assert!(
                attempt >= *newest,
                "job {id}: row attempt {attempt} < executed {newest}"
            );
        }
        let expected_runs = match mode.as_str() {
            "flaky" => 2,
            "fail" => 2,
            _ => 1,
        };
        let by_killed = ex
            .iter()
            .filter(|(_, pid)| !survivors.contains(pid))
            .count();
        let extra = ex.len().saturating_sub(expected_runs);
        if extra > 0 {
            repeats += extra;
            // Every repeat is explained by a killed worker's execution.
            assert!(
                by_killed >= extra,
                "job {id} ({mode}) ran {} times, {by_killed} on killed workers: {ex:?}",
                ex.len()
            );
            repeats_explained += extra;
        }
        let want = if mode == "fail" {
            "failed"
        } else {
            "succeeded"
        };
        if status != want {
            // Only kills may change an outcome: the attempts ran out on
            // expired leases.
            assert!(
                status == "failed" && error.contains("lease expired") && by_killed > 0,
                "job {id} ({mode}) ended {status}: {error}"
            );
            by_kill_failures += 1;
        }
    }
    println!(
        "kill storm: {jobs} jobs, {workers} workers, {} SIGKILLs in {:.0?}, all terminal after {:.1?}: \
         lost {lost}, repeated executions {repeats} (all {repeats_explained} on killed workers), \
         outcomes changed by kills {by_kill_failures}, max idle-in-transaction {max_idle_in_tx:.2} s, \
         max opsrunner connections {max_conns}",
        killed.len(),
        storm_for,
        elapsed
    );
    assert_eq!(lost, 0);
    assert!(!killed.is_empty());
    assert!(
        max_idle_in_tx < 5.0,
        "a session idled in a transaction for {max_idle_in_tx} s"
    );
    // Each live worker: pool (4) + LISTEN (1); killed ones' sessions close
    // with their sockets, and a restart overlaps its victim's for a moment.
    assert!(
        max_conns <= (workers as i64 + 1) * 5,
        "{max_conns} connections for {workers} workers"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_a_postgres_crash_restart_and_write_every_result() {
    let db = own_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    let jobs: i32 = 400;
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload) SELECT 'sleep', '{\"ms\": 300}' FROM generate_series(1, $1)",
        &[&jobs],
    )
    .await
    .unwrap();
    let env = [("OPSRUNNER_WORKER__CONCURRENCY", "20")];
    let w1 = WorkerProcess::start(&db, &env).await;
    let w2 = WorkerProcess::start(&db, &env).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(c);
    let restarted = Instant::now();
    let cl2 = db.cluster.clone();
    tokio::task::spawn_blocking(move || cl2.restart_immediate())
        .await
        .unwrap()
        .expect("pg_ctl restart");
    let outage = restarted.elapsed();
    let c = db.client().await;
    wait_all_finished(&c, Duration::from_secs(60), "after the restart").await;
    let succeeded = count(
        &c,
        "SELECT count(*) FROM ops_jobs WHERE status = 'succeeded'",
    )
    .await;
    let mut w1 = w1;
    let mut w2 = w2;
    assert!(w1.child.try_wait().unwrap().is_none(), "worker 1 exited");
    assert!(w2.child.try_wait().unwrap().is_none(), "worker 2 exited");
    let logs = w1.log_text() + &w2.log_text();
    let reconnects = logs.matches("LISTEN connection lost").count();
    println!(
        "postgres crash-restart: outage {outage:.1?}, {succeeded}/{jobs} jobs succeeded, \
         {reconnects} LISTEN reconnects"
    );
    assert_eq!(succeeded, jobs as i64);
    assert!(reconnects >= 2, "both listeners reconnect:\n{logs}");
    w1.signal(libc::SIGTERM);
    w2.signal(libc::SIGTERM);
    let s1 = tokio::time::timeout(Duration::from_secs(30), w1.child.wait()).await;
    let s2 = tokio::time::timeout(Duration::from_secs(30), w2.child.wait()).await;
    assert!(s1.unwrap().unwrap().success() && s2.unwrap().unwrap().success());
}

#[tokio::test]
async fn bad_input_ends_each_job_with_a_bounded_error_and_the_daemon_keeps_running() {
    let db = own_db().await;
    let c = db.client().await;
    enable(
        &c,
        &["sleep", "noop", "boom", "huge", "nobody-handles-this"],
    )
    .await;
    let mut registry = opsrunner::Registry::with_builtins();
    // Panics (with a 5,000-character message) on its object payload.
    registry.register("boom", |job: opsrunner::JobContext| async move {
        assert!(job.payload.is_null(), "{}", "x".repeat(5_000));
        Ok(serde_json::json!(null))
    });
    registry.register("huge", |_job: opsrunner::JobContext| async move {
        Ok(serde_json::json!({ "blob": "y".repeat(50_000) }))
    });
    let w = start_worker(&db.config(|_| {}), registry).await;
    // The handler's panics print their messages on stderr: that is expected.
    let mut ids = Vec::new();
    for payload in [
        serde_json::json!([1, 2, 3]),
        serde_json::json!({ "ms": "soon" }),
        serde_json::json!({ "ms": -5 }),
        serde_json::json!({ "ms": 1e300 }),
        serde_json::json!("just a string"),
    ] {
        ids.push((insert_job(&c, "sleep", payload).await, "failed"));
    }
    ids.push((
        insert_job(&c, "boom", serde_json::json!({})).await,
        "failed",
    ));
    ids.push((
        insert_job(&c, "huge", serde_json::json!({})).await,
        "succeeded",
    ));
    // No handler here: never claimed, so it waits (recoverable) instead of
    // failing on a daemon that merely lacks the handler.
    let orphan = insert_job(&c, "nobody-handles-this", serde_json::json!({})).await;
    for (id, want) in &ids {
        wait_status(&c, *id, want, Duration::from_secs(20)).await;
    }
    let rows = c
        .query(
            "SELECT job_type, coalesce(char_length(error), 0), coalesce(octet_length(result::text), 0)
             FROM ops_jobs WHERE status <> 'queued'",
            &[],
        )
        .await
        .unwrap();
    for r in &rows {
        let (t, err_len, res_len): (String, i32, i32) = (r.get(0), r.get(1), r.get(2));
        assert!(err_len <= 500, "{t}: error of {err_len} chars");
        assert!(res_len <= 20_480, "{t}: result of {res_len} bytes");
    }
    let huge: serde_json::Value = c
        .query_one("SELECT result FROM ops_jobs WHERE job_type = 'huge'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(huge["truncated"], true);
    // Still alive and working.
    let after = insert_job(&c, "noop", serde_json::json!({})).await;
    wait_status(&c, after, "succeeded", Duration::from_secs(10)).await;
    assert_eq!(status(&c, orphan).await, "queued");
    println!(
        "bad input: {} jobs ended with bounded errors or results; the daemon kept running",
        rows.len()
    );
    w.shutdown().await;
}

/// A job type `hold` that runs `secs` seconds and records, with the time,
/// when each execution started, ended, or was stopped (SIGTERM): lines
/// `start|end|stop <job> <attempt> <worker pid> <unix time>`.
fn ledger_config(dir: &TempDir, secs: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = dir.join("ledger.log");
    let script = dir.join("hold.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
rec() { echo "$1 $OPSRUNNER_JOB_ID $OPSRUNNER_ATTEMPT $PPID $(date +%s.%N)" >> "$EXEC_LOG"; }
rec start
trap 'rec stop; exit 143' TERM
sleep "$SECS" & wait $!
rec end
echo '{"ok": true}'
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.join("hold.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[exec]]\njob_type = \"hold\"\ncommand = [\"{}\"]\nenv = {{ EXEC_LOG = \"{}\", SECS = \"{secs}\" }}\n",
            script.display(),
            log.display()
        ),
    )
    .unwrap();
    (cfg, log)
}

/// (kind, attempt, worker pid, unix time) per ledger line.
fn ledger(log: &std::path::Path) -> Vec<(String, i32, i32, f64)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

/// Executions that overlapped: one's start before another's end or stop.
fn overlapping(l: &[(String, i32, i32, f64)]) -> Vec<String> {
    let starts: Vec<_> = l.iter().filter(|e| e.0 == "start").collect();
    let close = |attempt: i32| {
        l.iter()
            .find(|e| e.1 == attempt && e.0 != "start")
            .map(|e| e.3)
    };
    let mut out = Vec::new();
    for a in &starts {
        for b in &starts {
            if a.1 < b.1 {
                // a began first; it must be over before b began.
                match close(a.1) {
                    Some(end) if end <= b.3 => {}
                    end => out.push(format!(
                        "attempt {} (ended {end:?}) overlaps attempt {} (started {})",
                        a.1, b.1, b.3
                    )),
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_that_claims_its_rescued_job_again_stops_the_old_attempt_first() {
    let db = own_db().await;
    let c = db.client().await;
    enable(&c, &["hold"]).await;
    let dir = temp_dir("paused");
    let (cfg, log) = ledger_config(&dir, 6);
    let cfg = cfg.to_string_lossy().into_owned();
    let a = WorkerProcess::start(&db, &[("OPSRUNNER_CONFIG", &cfg)]).await;
    // The only other daemon cannot run `hold`; its rescuer requeues the job.
    let b = WorkerProcess::start(&db, &[]).await;
    let id = JobRow::new("hold").max_attempts(4).insert(&c).await;
    wait_for(Duration::from_secs(10), "the job to start on a", || async {
        (!ledger(&log).is_empty()).then_some(())
    })
    .await;
    // Paused past its 3 s lease: the rescuer requeues the job meanwhile.
    a.signal(libc::SIGSTOP);
    wait_for(Duration::from_secs(15), "the rescue", || async {
        (status(&c, id).await == "queued").then_some(())
    })
    .await;
    a.signal(libc::SIGCONT);
    wait_status(&c, id, "succeeded", Duration::from_secs(30)).await;
    let l = ledger(&log);
    let attempt: i32 = c
        .query_one("SELECT attempt FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    println!("paused worker: ledger {l:?}, final attempt {attempt}");
    assert_eq!(attempt, 2, "the re-claimed attempt kept its lease: {l:?}");
    assert!(
        l.iter().any(|e| e.0 == "stop" && e.1 == 1),
        "attempt 1 was stopped when its job was claimed again: {l:?}"
    );
    // The old attempt is stopped as the new one is claimed; the two may
    // overlap by the SIGTERM's delivery (milliseconds), no more.
    let at = |kind: &str, attempt: i32| {
        l.iter()
            .find(|e| e.0 == kind && e.1 == attempt)
            .map(|e| e.3)
            .unwrap_or(f64::MAX)
    };
    assert!(
        at("stop", 1) < at("start", 2) + 0.5,
        "attempt 1 ran on after attempt 2 started: {l:?}"
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_a_stalled_network_stops_its_job_before_another_starts_it() {
    let db = own_db().await;
    let c = db.client().await;
    enable(&c, &["hold"]).await;
    let dir = temp_dir("stalled");
    let (cfg, log) = ledger_config(&dir, 8);
    let cfg = cfg.to_string_lossy().into_owned();
    let proxy = StallProxy::start(server_addr(&db.url)).await;
    let env = [("OPSRUNNER_CONFIG", cfg.as_str())];
    let a = WorkerProcess::start_url(&proxy.url_for(&db.url), &env).await;
    let id = JobRow::new("hold").max_attempts(4).insert(&c).await;
    wait_for(Duration::from_secs(10), "the job to start on a", || async {
        (!ledger(&log).is_empty()).then_some(())
    })
    .await;
    let b = WorkerProcess::start(&db, &env).await;
    proxy.stall(true);
    wait_status(&c, id, "succeeded", Duration::from_secs(40)).await;
    let l = ledger(&log);
    println!("stalled network: ledger {l:?}");
    let pids: std::collections::HashSet<i32> = l.iter().map(|e| e.2).collect();
    assert!(pids.len() >= 2, "b ran the job after a lost it: {l:?}");
    assert!(overlapping(&l).is_empty(), "{:?} in {l:?}", overlapping(&l));
    proxy.stall(false);
    drop((a, b));
}
