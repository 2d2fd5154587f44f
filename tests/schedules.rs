//! Cron schedules against a real server, as members of the production
//! roles: every slot enqueued exactly once across daemons, crashes and
//! rewinds; catch-up after downtime; flags and pause-all skip slots; the
//! CLI refuses bad definitions with the reason and audits changes.

mod common;

use std::time::Duration;

use common::*;

async fn count(c: &tokio_postgres::Client, sql: &str, name: &str) -> i64 {
    c.query_one(sql, &[&name]).await.unwrap().get(0)
}

const JOBS_OF: &str =
    "SELECT count(*) FROM ops_jobs WHERE idempotency_key LIKE 'schedule:' || $1 || ':%'";

/// Two worker processes, one of them SIGKILLed half-way (a crash and a
/// leader change): a per-second schedule gets one job for every second from
/// its first slot to its last, no gap and no second job for any slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_and_a_crash_enqueue_every_slot_exactly_once() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    cli_ok(
        &operator,
        &[
            "schedules",
            "add",
            "every-second",
            "--cron",
            "* * * * * *",
            "--type",
            "noop",
        ],
    )
    .await;
    let fast = [("OPSRUNNER_WORKER__SCHEDULE_INTERVAL", "100ms")];
    let a = WorkerProcess::start_url(&operator, &fast).await;
    let b = WorkerProcess::start_url(&operator, &fast).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.signal(libc::SIGKILL);
    drop(a);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cli_ok(&operator, &["schedules", "disable", "every-second"]).await;
    drop(b);
    let slots: Vec<(chrono::DateTime<chrono::Utc>, Option<uuid::Uuid>, String)> = c
        .query(
            "SELECT slot, job_id, outcome FROM ops_schedule_slots WHERE schedule = 'every-second' ORDER BY slot",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(slots.len() >= 4, "{slots:?}");
    for w in slots.windows(2) {
        assert_eq!(
            w[1].0 - w[0].0,
            chrono::Duration::seconds(1),
            "a gap or a double: {slots:?}"
        );
    }
    assert!(slots.iter().all(|s| s.2 == "enqueued" && s.1.is_some()));
    let jobs = count(&c, JOBS_OF, "every-second").await;
    assert_eq!(jobs as usize, slots.len(), "one job per slot");
    let distinct: i64 = c
        .query_one(
            "SELECT count(DISTINCT job_id) FROM ops_schedule_slots WHERE schedule = 'every-second'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct as usize, slots.len());
    let listed = cli_ok(
        &operator,
        &[
            "jobs",
            "list",
            "--schedule",
            "every-second",
            "--limit",
            "200",
        ],
    )
    .await;
    assert_eq!(listed.lines().count() - 1, slots.len(), "{listed}");
}

/// Ticks racing from two sessions, and a next_slot moved back by hand (what
/// a crash between an insert and the advance would look like, had they not
/// been one transaction): still one job per slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_ticks_and_a_rewound_schedule_never_double_a_slot() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    cli_ok(
        &operator,
        &[
            "schedules",
            "add",
            "race",
            "--cron",
            "* * * * * *",
            "--type",
            "noop",
        ],
    )
    .await;
    // 20 s of on-time slots are due at once.
    c.execute(
        "UPDATE ops_schedules SET next_slot = date_trunc('second', now()) - interval '20 seconds'",
        &[],
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = operator.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&url).await;
            for _ in 0..5 {
                opsrunner::schedules::tick(&mut s).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = count(&c, JOBS_OF, "race").await;
    assert!(before >= 21, "{before}");
    let slots_before = count(
        &c,
        "SELECT count(*) FROM ops_schedule_slots WHERE schedule = $1",
        "race",
    )
    .await;
    assert_eq!(before, slots_before);
    // Rewind 10 s: those slots are handled again, and find their jobs.
    c.execute(
        "UPDATE ops_schedules SET next_slot = next_slot - interval '10 seconds'",
        &[],
    )
    .await
    .unwrap();
    let mut s = connect(&operator).await;
    let report = opsrunner::schedules::tick(&mut s)
        .await
        .unwrap()
        .expect("no one else ticks");
    let after = count(&c, JOBS_OF, "race").await;
    let new_slots = report.enqueued.len() as i64 - 10;
    assert_eq!(
        after,
        before + new_slots.max(0),
        "a rewound slot got a second job: {report:?}"
    );
    let keys: i64 = c
        .query_one(
            "SELECT count(*) - count(DISTINCT idempotency_key) FROM ops_jobs WHERE idempotency_key LIKE 'schedule:race:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 0);
}

/// Five hours down for an hourly schedule whose slots are half an hour away
/// from now: skip enqueues nothing, latest the most recent slot once, all:3
/// the three most recent; the rest are counted as missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_after_downtime_follows_each_policy() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    let minute: f64 = c
        .query_one("SELECT extract(minute FROM now())::float8", &[])
        .await
        .unwrap()
        .get(0);
    let m = ((minute as u32) + 30) % 60;
    let cron = format!("{m} * * * *");
    for (name, policy) in [
        ("p-skip", "skip"),
        ("p-latest", "latest"),
        ("p-all", "all:3"),
    ] {
        cli_ok(
            &operator,
            &[
                "schedules",
                "add",
                name,
                "--cron",
                &cron,
                "--type",
                "noop",
                "--catch-up",
                policy,
            ],
        )
        .await;
    }
    // Down since five slots ago (the next slot would have been 5 h ago).
    c.execute(
        "UPDATE ops_schedules SET next_slot = next_slot - interval '5 hours'",
        &[],
    )
    .await
    .unwrap();
    let mut s = connect(&operator).await;
    opsrunner::schedules::tick(&mut s)
        .await
        .unwrap()
        .expect("the scheduler lock");
    for (name, jobs, missed) in [("p-skip", 0, 5), ("p-latest", 1, 4), ("p-all", 3, 2)] {
        assert_eq!(count(&c, JOBS_OF, name).await, jobs, "{name}");
        let m: i64 = c
            .query_one(
                "SELECT missed_slots FROM ops_schedules WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(m, missed, "{name}");
    }
    // latest ran the most recent missed slot; the next slot is in the future.
    let (last, next): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = {
        let r = c
            .query_one(
                "SELECT last_slot, next_slot FROM ops_schedules WHERE name = 'p-latest'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(next - last, chrono::Duration::hours(1));
    assert!(next > chrono::Utc::now());
}

/// A schedule whose type's flag is off, or with pause-all on, records its
/// slots as skipped, with the reason, and enqueues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_off_or_pause_all_records_slots_as_skipped_instead_of_piling_up_jobs() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    cli_ok(
        &operator,
        &[
            "schedules",
            "add",
            "off",
            "--cron",
            "* * * * * *",
            "--type",
            "noop",
        ],
    )
    .await;
    c.execute(
        "UPDATE ops_schedules SET next_slot = date_trunc('second', now()) - interval '3 seconds'",
        &[],
    )
    .await
    .unwrap();
    let mut s = connect(&operator).await;
    let r = opsrunner::schedules::tick(&mut s).await.unwrap().unwrap();
    assert!(r.enqueued.is_empty() && r.skipped.len() >= 4, "{r:?}");
    assert!(
        r.skipped
            .iter()
            .all(|(_, _, why)| why == "the noop flag is off"),
        "{r:?}"
    );
    enable(&c, &["noop"]).await;
    cli_ok(&operator, &["flags", "pause", "--reason", "test"]).await;
    c.execute("UPDATE ops_schedules SET next_slot = date_trunc('second', now()) + interval '1 second' - interval '2 seconds'", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = opsrunner::schedules::tick(&mut s).await.unwrap().unwrap();
    assert!(r.enqueued.is_empty() && !r.skipped.is_empty(), "{r:?}");
    assert!(
        r.skipped.iter().all(|(_, _, why)| why == "pause-all is on"),
        "{r:?}"
    );
    assert_eq!(count(&c, JOBS_OF, "off").await, 0);
    let shown = cli_ok(&operator, &["schedules", "show", "off"]).await;
    assert!(
        shown.contains("skipped") && shown.contains("pause-all is on"),
        "{shown}"
    );
}

/// Bad definitions are refused with the reason; run-now enqueues one job and
/// is audited; every change is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_bad_schedules_with_the_reason_and_audits_every_change() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    for (args, why) in [
        (vec!["--cron", "61 * * * *", "--type", "noop"], "is invalid"),
        (
            vec!["--cron", "0 3 * * *", "--type", "noop", "--tz", "Mars/Base"],
            "not an IANA zone",
        ),
        (
            vec!["--cron", "0 3 * * *", "--type", "no-such-type"],
            "unknown to this configuration",
        ),
        (
            vec![
                "--cron",
                "0 3 * * *",
                "--type",
                "sleep",
                "--payload",
                "{\"ms\": \"x\"}",
            ],
            "payload refused by the sleep handler",
        ),
        (
            vec![
                "--cron",
                "0 3 * * *",
                "--type",
                "noop",
                "--catch-up",
                "all:0",
            ],
            "use skip, latest or all:N",
        ),
    ] {
        let mut full = vec!["schedules", "add", "bad"];
        full.extend(args.iter().copied());
        let out = opsrunner_cli(&operator, &full, &[]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM ops_schedules WHERE name = $1",
            "bad"
        )
        .await,
        0
    );
    cli_ok(
        &operator,
        &[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--type",
            "noop",
            "--tz",
            "Europe/Berlin",
        ],
    )
    .await;
    let out = opsrunner_cli(
        &operator,
        &[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "0 4 * * *",
            "--type",
            "noop",
        ],
        &[],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));
    cli_ok(
        &operator,
        &[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "0 4 * * *",
            "--type",
            "noop",
            "--replace",
        ],
    )
    .await;
    let id = cli_ok(&operator, &["schedules", "run-now", "nightly"]).await;
    let id: uuid::Uuid = id.trim().parse().unwrap();
    let key: String = c
        .query_one("SELECT idempotency_key FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(key.starts_with("schedule:nightly:run-now:"), "{key}");
    cli_ok(&operator, &["schedules", "disable", "nightly"]).await;
    cli_ok(&operator, &["schedules", "enable", "nightly"]).await;
    let list = cli_ok(&operator, &["schedules", "list"]).await;
    assert!(
        list.contains("nightly") && list.contains("0 4 * * *"),
        "{list}"
    );
    cli_ok(&operator, &["schedules", "remove", "nightly"]).await;
    let actions: Vec<String> = column(
        &c,
        "SELECT action FROM ops_audit_log WHERE target = 'nightly' ORDER BY id",
    )
    .await;
    assert_eq!(
        actions,
        [
            "schedule.add",
            "schedule.replace",
            "schedule.run_now",
            "schedule.disable",
            "schedule.enable",
            "schedule.remove"
        ]
    );
    // The job run-now made is still there.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM ops_jobs WHERE id::text = $1",
            &id.to_string()
        )
        .await,
        1
    );
}

/// `[[schedule]]` entries of the config file: refused at start-up with the
/// entry named when invalid; applied by the daemon (source config) and kept
/// from the CLI's edits; a SIGHUP without the entry removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_schedules_are_checked_applied_protected_and_removed_on_reload() {
    let db = roles_db().await;
    let operator = db.login("opsrunner_worker").await;
    let c = db.client().await;
    let dir = temp_dir("schedule-config");
    let cfg = dir.config(
        "[[schedule]]\nname = \"cleanup\"\ncron = \"0 4 * * *\"\ntime_zone = \"Nowhere/City\"\njob_type = \"noop\"\n",
    );
    let cfg_env = [("OPSRUNNER_CONFIG", cfg.to_str().unwrap())];
    let out = opsrunner_cli(&operator, &["check"], &cfg_env).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("schedule[0] (cleanup)")
            && err.contains("Nowhere/City"),
        "{err}"
    );

    std::fs::write(
        &cfg,
        "[[schedule]]\nname = \"cleanup\"\ncron = \"0 4 * * *\"\ntime_zone = \"Europe/Berlin\"\njob_type = \"noop\"\ncatch_up = \"skip\"\n",
    )
    .unwrap();
    let w = WorkerProcess::start_url(&operator, &cfg_env).await;
    let source = wait_for(Duration::from_secs(10), "the config schedule", || async {
        c.query_opt(
            "SELECT source, catch_up FROM ops_schedules WHERE name = 'cleanup'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
    })
    .await;
    assert_eq!(source, ("config".to_string(), "skip".to_string()));
    for args in [
        vec!["schedules", "disable", "cleanup"],
        vec!["schedules", "remove", "cleanup"],
        vec![
            "schedules",
            "add",
            "cleanup",
            "--cron",
            "* * * * *",
            "--type",
            "noop",
            "--replace",
        ],
    ] {
        let out = opsrunner_cli(&operator, &args, &[]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("config file"),
            "{args:?}: {err}"
        );
    }
    std::fs::write(&cfg, "").unwrap();
    w.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the schedule removed", || async {
        c.query_opt("SELECT 1 FROM ops_schedules WHERE name = 'cleanup'", &[])
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let audited: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_audit_log WHERE action = 'schedule.config_apply'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 2, "applied, then removed");
}
