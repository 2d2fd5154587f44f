//! The Prometheus endpoint of a real worker process.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_with_bounded_labels_and_health_endpoints_answer() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop", "sleep"]).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(insert_job(&c, "noop", json!({})).await);
    }
    let bad = insert_job(&c, "sleep", json!({"ms": "x"})).await;
    for id in &ids {
        wait_status(&c, *id, "succeeded", Duration::from_secs(10)).await;
    }
    wait_status(&c, bad, "failed", Duration::from_secs(10)).await;

    let body = wait_for(
        Duration::from_secs(10),
        "completions and queue gauges in /metrics",
        || async {
            let (status, body) = get(port, "/metrics").await;
            let done = sample(
                &body,
                "opsrunner_jobs_completed_total",
                &["job_type=\"noop\"", "outcome=\"succeeded\""],
            );
            (status == 200 && done == Some(3.0) && body.contains("opsrunner_queue_depth"))
                .then_some(body)
        },
    )
    .await;
    assert_eq!(
        sample(
            &body,
            "opsrunner_jobs_completed_total",
            &["job_type=\"sleep\"", "outcome=\"failed\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "opsrunner_jobs_claimed_total",
            &["job_type=\"noop\"", "queue=\"default\""]
        ),
        Some(3.0)
    );
    assert!(
        body.contains("opsrunner_job_duration_seconds_bucket{") && body.contains("le=\"0.005\""),
        "explicit buckets"
    );
    assert!(body.contains("opsrunner_job_queue_wait_seconds_bucket{"));
    assert_eq!(
        sample(&body, "opsrunner_feature_flag_enabled", &["flag=\"noop\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "opsrunner_feature_flag_enabled",
            &["flag=\"pause-all\""]
        ),
        Some(0.0)
    );
    assert!(sample(&body, "opsrunner_notification_queue_usage_ratio", &[]).is_some());
    assert_eq!(sample(&body, "opsrunner_jobs_running", &[]), Some(0.0));
    for t in ["noop", "sleep"] {
        let labels = ["queue=\"default\"", &format!("job_type=\"{t}\"")];
        assert_eq!(
            sample(&body, "opsrunner_queue_depth", &labels),
            Some(0.0),
            "an empty queue reads 0 for every handled type"
        );
    }
    // No job id (or any UUID) in any label.
    for id in ids.iter().chain([&bad]) {
        assert!(!body.contains(&id.to_string()));
    }
    assert!(!body.contains(&db.url) && !body.contains("postgres://"));

    assert_eq!(get(port, "/healthz").await.0, 200);
    let (status, text) = get(port, "/readyz").await;
    assert_eq!((status, text.as_str()), (200, "ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_held_open_elsewhere_is_exported_and_warned_about() {
    let db = migrated_db().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let w = WorkerProcess::start(
        &db,
        &[
            ("OPSRUNNER_METRICS__LISTEN", &listen),
            ("OPSRUNNER_WORKER__SNAPSHOT_WARN_AFTER", "1s"),
        ],
    )
    .await;
    // An idle REPEATABLE READ transaction, as a forgotten psql session leaves.
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ops_jobs;")
        .await
        .unwrap();
    w.wait_log("a snapshot held open elsewhere", Duration::from_secs(10))
        .await;
    let age = wait_for(
        Duration::from_secs(10),
        "the snapshot age gauge",
        || async {
            let (_, body) = get(port, "/metrics").await;
            sample(&body, "opsrunner_oldest_snapshot_age_seconds", &[]).filter(|v| *v >= 1.0)
        },
    )
    .await;
    assert!(age >= 1.0, "{age}");
    holder.batch_execute("COMMIT").await.unwrap();
    wait_for(
        Duration::from_secs(10),
        "the gauge to fall once it ends",
        || async {
            let (_, body) = get(port, "/metrics").await;
            sample(&body, "opsrunner_oldest_snapshot_age_seconds", &[]).filter(|v| *v < 1.0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_of_a_type_nobody_handles_are_logged_at_warn_and_counted() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop", "slep"]).await;
    for _ in 0..3 {
        insert_job(&c, "slep", json!({})).await;
    }
    insert_job(&c, "noop", json!({})).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let w = WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await;
    w.wait_log("no handler for", Duration::from_secs(10)).await;
    let line = w
        .log_text()
        .lines()
        .find(|l| l.contains("no handler for"))
        .unwrap()
        .to_string();
    assert!(line.contains("\"WARN\""), "{line}");
    assert!(line.contains("slep=3"), "{line}");
    assert!(!line.contains("noop"), "{line}");
    wait_for(Duration::from_secs(10), "the unhandled gauge", || async {
        let (_, body) = get(port, "/metrics").await;
        (sample(
            &body,
            "opsrunner_unhandled_queued_jobs",
            &["job_type=\"slep\""],
        ) == Some(3.0))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_nobody_configured_are_one_label_and_add_no_series() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            c.query_one(
                "INSERT INTO ops_jobs (job_type, queue) VALUES ('noop', $1) RETURNING id",
                &[&format!("invented-{i}")],
            )
            .await
            .unwrap()
            .get::<_, uuid::Uuid>(0),
        );
    }
    ids.push(insert_job(&c, "noop", json!({})).await);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await;
    for id in &ids {
        wait_status(&c, *id, "succeeded", Duration::from_secs(10)).await;
    }
    let body = wait_for(Duration::from_secs(10), "the completions", || async {
        let (_, body) = get(port, "/metrics").await;
        (sample(
            &body,
            "opsrunner_jobs_completed_total",
            &[
                "job_type=\"noop\"",
                "queue=\"other\"",
                "outcome=\"succeeded\"",
            ],
        ) == Some(20.0))
        .then_some(body)
    })
    .await;
    assert!(!body.contains("invented-"), "{body}");
    assert_eq!(
        sample(
            &body,
            "opsrunner_jobs_completed_total",
            &[
                "job_type=\"noop\"",
                "queue=\"default\"",
                "outcome=\"succeeded\""
            ]
        ),
        Some(1.0)
    );
}

/// What promtool's `check metrics` checks, and the catalogue's rules, on a
/// scrape: every problem found, empty when it passes.
fn lint_exposition(body: &str) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut problems = Vec::new();
    let mut help: HashMap<String, String> = HashMap::new();
    let mut kind: HashMap<String, String> = HashMap::new();
    let mut series = HashSet::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if text.trim().is_empty() {
                problems.push(format!("{name}: empty HELP"));
            }
            if help.insert(name.into(), text.into()).is_some() {
                problems.push(format!("{name}: HELP twice"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
            if kind.insert(name.into(), t.into()).is_some() {
                problems.push(format!("{name}: TYPE twice"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (id, _value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let name = id.split('{').next().unwrap_or(id);
        if !series.insert(id.to_string()) {
            problems.push(format!("{id}: duplicate series"));
        }
        if !valid_name(name) {
            problems.push(format!("{name}: not a snake_case metric name"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| kind.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        match kind.get(family).map(String::as_str) {
            None => problems.push(format!("{family}: sample before or without TYPE")),
            Some("counter") if !family.ends_with("_total") => {
                problems.push(format!("{family}: a counter not ending in _total"))
            }
            Some(k) if k != "counter" && family.ends_with("_total") => {
                problems.push(format!("{family}: a {k} ending in _total"))
            }
            _ => {}
        }
        if !help.contains_key(family) {
            problems.push(format!("{family}: no HELP"));
        }
        if opsrunner::metrics::catalog::find(family).is_none() {
            problems.push(format!("{family}: not in the catalogue"));
        }
        if let Some(labels) = id.strip_prefix(name).and_then(|l| l.strip_prefix('{')) {
            for pair in labels.trim_end_matches('}').split("\",") {
                let key = pair.split('=').next().unwrap_or_default();
                if !valid_name(key) || key.starts_with("__") {
                    problems.push(format!("{family}: label name {key:?}"));
                }
            }
        }
    }
    for (name, t) in &kind {
        if !["counter", "gauge", "histogram"].contains(&t.as_str()) {
            problems.push(format!("{name}: type {t}"));
        }
    }
    problems
}

/// The catalogued counters `exporter` exports with no labels, and their
/// zero-initialised label sets: all present from start-up.
fn assert_counters_start_at_zero(body: &str, exporter: opsrunner::metrics::catalog::Exporter) {
    use opsrunner::metrics::catalog::{self, CATALOG, Kind};
    for m in CATALOG.iter().filter(|m| {
        m.kind == Kind::Counter
            && m.labels.is_empty()
            && !m.name.starts_with("process_")
            && catalog::exported_by(m, exporter)
    }) {
        assert_eq!(
            sample(body, m.name, &[]),
            Some(0.0),
            "{} at start-up:\n{body}",
            m.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_of_the_worker_and_the_shim_has_help_and_type_and_counters_start_at_zero() {
    use opsrunner::metrics::catalog::Exporter;
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["noop"]).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = WorkerProcess::start(
        &db,
        &[
            ("OPSRUNNER_METRICS__LISTEN", &listen),
            ("OPSRUNNER_WORKER__QUEUES", "[\"default\", \"billing\"]"),
        ],
    )
    .await;
    // Before any job: every counter and known label set reads 0.
    let (_, fresh) = get(port, "/metrics").await;
    assert_counters_start_at_zero(&fresh, Exporter::Worker);
    for reason in ["expired", "reused", "bad_signature", "not_yet_valid"] {
        assert_eq!(
            sample(
                &fresh,
                "opsrunner_policy_token_refusals_total",
                &[&format!("reason=\"{reason}\""), "stage=\"worker\""]
            ),
            Some(0.0),
            "{reason}"
        );
    }
    for outcome in ["succeeded", "retried", "failed", "cancelled", "requeued"] {
        for queue in ["default", "billing"] {
            assert_eq!(
                sample(
                    &fresh,
                    "opsrunner_jobs_completed_total",
                    &[
                        "job_type=\"noop\"",
                        &format!("queue=\"{queue}\""),
                        &format!("outcome=\"{outcome}\"")
                    ]
                ),
                Some(0.0),
                "{outcome} {queue}"
            );
        }
    }
    assert_eq!(
        sample(&fresh, "opsrunner_job_pickups_total", &["source=\"poll\""]),
        Some(0.0)
    );
    // Build, process and pool metrics.
    let build = sample(
        &fresh,
        "opsrunner_build_info",
        &[
            &format!("version=\"{}\"", opsrunner::metrics::VERSION),
            &format!("commit=\"{}\"", opsrunner::metrics::COMMIT),
        ],
    );
    assert_eq!(build, Some(1.0), "{fresh}");
    assert!(sample(&fresh, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 1e6));
    assert!(sample(&fresh, "process_open_fds", &[]).is_some_and(|v| v > 3.0));
    assert!(sample(&fresh, "process_max_fds", &[]).is_some_and(|v| v >= 1024.0));
    assert!(sample(&fresh, "process_start_time_seconds", &[]).is_some_and(|v| v > 1.7e9));
    assert!(
        sample(&fresh, "opsrunner_db_pool_max_size", &["pool=\"worker\""])
            .is_some_and(|v| v >= 1.0),
        "{fresh}"
    );
    assert!(
        sample(
            &fresh,
            "opsrunner_db_pool_acquire_seconds_count",
            &["pool=\"worker\""]
        )
        .is_some_and(|v| v >= 1.0),
        "{fresh}"
    );
    assert!(sample(&fresh, "opsrunner_worker_slots", &[]).is_some_and(|v| v >= 1.0));

    // After work, with histograms and gauges filled in, the whole scrape
    // passes the rules; a noop lands in the lowest duration buckets.
    let id = insert_job(&c, "noop", json!({})).await;
    wait_status(&c, id, "succeeded", Duration::from_secs(10)).await;
    let body = wait_for(
        Duration::from_secs(10),
        "a completion in /metrics",
        || async {
            let (_, b) = get(port, "/metrics").await;
            sample(
                &b,
                "opsrunner_jobs_completed_total",
                &["outcome=\"succeeded\"", "queue=\"default\""],
            )
            .filter(|v| *v >= 1.0)
            .map(|_| b)
        },
    )
    .await;
    let problems = lint_exposition(&body);
    assert!(
        problems.is_empty(),
        "worker /metrics:\n{}\n\n{body}",
        problems.join("\n")
    );
    assert!(body.contains("opsrunner_job_duration_seconds_bucket{job_type=\"noop\",outcome=\"succeeded\",le=\"0.0005\"}"), "{body}");

    let api_port = free_port();
    let api_metrics = format!("127.0.0.1:{api_port}");
    let api = ApiProcess::start(
        &db.url,
        &[
            ("OPS_API_KEY", "metrics-test-master-key-0123456789abcdef"),
            ("OPSRUNNER_API__METRICS_LISTEN", &api_metrics),
        ],
        &[],
    )
    .await;
    let (_, fresh) = get(api_port, "/metrics").await;
    assert_counters_start_at_zero(&fresh, Exporter::Api);
    for reason in [
        "missing",
        "duplicate",
        "unknown",
        "revoked",
        "expired",
        "scope",
    ] {
        assert_eq!(
            sample(
                &fresh,
                "opsrunner_api_auth_failures_total",
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(0.0),
            "{reason}"
        );
    }
    assert_eq!(
        sample(
            &fresh,
            "opsrunner_api_rate_limited_total",
            &["limit=\"ip\""]
        ),
        Some(0.0)
    );
    let r = http_client()
        .get(api.url("/api/ops/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, body) = get(api_port, "/metrics").await;
    let problems = lint_exposition(&body);
    assert!(
        problems.is_empty(),
        "shim /metrics:\n{}\n\n{body}",
        problems.join("\n")
    );
    assert!(
        sample(&body, "opsrunner_db_pool_max_size", &["pool=\"api\""]).is_some(),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "opsrunner_api_auth_failures_total",
            &["reason=\"missing\""]
        ),
        Some(1.0)
    );
}

#[test]
fn docs_metrics_md_lists_exactly_the_catalogue() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let tabled: std::collections::BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_string)
        .collect();
    let catalogue: std::collections::BTreeSet<String> = opsrunner::metrics::catalog::CATALOG
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    let missing: Vec<_> = catalogue.difference(&tabled).collect();
    let unknown: Vec<_> = tabled.difference(&catalogue).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/metrics.md lacks {missing:?} and names unknown {unknown:?}"
    );
}

const NOOP_DEPTH: [&str; 2] = ["queue=\"default\"", "job_type=\"noop\""];

/// Two daemons: one holds the `maintenance` lease and exports the queue
/// gauges, the other exports none (so a sum over both is the queue's
/// depth); when the leader stops, the other takes over within a few ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_exports_the_queue_gauges_and_a_successor_takes_over() {
    let db = migrated_db().await;
    let c = db.client().await;
    // The flags are off: the jobs stay queued and the depth stays 7 noop
    // and 2 sleep jobs, and 3 of types no daemon handles (two names).
    for _ in 0..7 {
        insert_job(&c, "noop", json!({})).await;
    }
    for t in ["sleep", "sleep", "ghost-a", "ghost-b", "ghost-b"] {
        insert_job(&c, t, json!({})).await;
    }
    let ports = [free_port(), free_port()];
    let mut workers = Vec::new();
    for p in ports {
        let listen = format!("127.0.0.1:{p}");
        workers.push(Some(
            WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await,
        ));
    }
    let scrape_both = || async {
        let mut out = Vec::new();
        for p in ports {
            out.push(get(p, "/metrics").await.1);
        }
        out
    };
    let leader = wait_for(
        Duration::from_secs(10),
        "one leader exporting depth 7",
        || async {
            let bodies = scrape_both().await;
            let leads: Vec<f64> = bodies
                .iter()
                .map(|b| sample(b, "opsrunner_maintenance_leader", &[]).unwrap_or(-1.0))
                .collect();
            let depth: f64 = bodies
                .iter()
                .filter_map(|b| sample(b, "opsrunner_queue_depth", &NOOP_DEPTH))
                .sum();
            (leads.iter().filter(|l| **l == 1.0).count() == 1
                && leads.contains(&0.0)
                && depth == 7.0)
                .then(|| leads.iter().position(|l| *l == 1.0).unwrap())
        },
    )
    .await;
    // Stable: a few more ticks change nothing (the follower never exports).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bodies = scrape_both().await;
    assert_eq!(
        sample(&bodies[leader], "opsrunner_maintenance_leader", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&bodies[1 - leader], "opsrunner_queue_depth", &NOOP_DEPTH),
        None
    );
    // Per type; unhandled types add up as "other", never as their names.
    let depth = |t: &str| {
        let t = format!("job_type=\"{t}\"");
        sample(
            &bodies[leader],
            "opsrunner_queue_depth",
            &["queue=\"default\"", &t],
        )
    };
    assert_eq!(
        (depth("noop"), depth("sleep"), depth("other")),
        (Some(7.0), Some(2.0), Some(3.0))
    );
    assert!(
        !bodies[leader]
            .lines()
            .any(|l| l.starts_with("opsrunner_queue_") && l.contains("ghost-"))
    );
    let holder: String = c
        .query_one(
            "SELECT owner FROM ops_leaders WHERE name = 'maintenance'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(holder.contains(':'), "{holder}");

    // The leader stops (SIGTERM: it resigns); the other takes over.
    let w = workers[leader].take().unwrap();
    w.signal(libc::SIGTERM);
    drop(w);
    let other = ports[1 - leader];
    wait_for(
        Duration::from_secs(10),
        "the other daemon to lead",
        || async {
            let b = get(other, "/metrics").await.1;
            (sample(&b, "opsrunner_maintenance_leader", &[]) == Some(1.0)
                && sample(&b, "opsrunner_queue_depth", &NOOP_DEPTH) == Some(7.0))
            .then_some(())
        },
    )
    .await;
}

/// The JSON log lines of `worker` whose message contains `needle`.
fn log_lines(w: &WorkerProcess, needle: &str) -> Vec<serde_json::Value> {
    w.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        })
        .collect()
}

/// A retried attempt is logged at INFO and the final failure at WARN, with
/// the job's id, type, queue, attempt, run time and error as JSON fields
/// and never its payload; a flood of failures logs at most the window's
/// budget, then one summary line with the count of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_outcomes_are_logged_with_their_fields_and_a_flood_is_summarised() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["flaky", "poison"]).await;
    let dir = temp_dir("outcome-log");
    let cfg = dir.config(
        r#"
[worker]
backoff_base = "10ms"
backoff_max = "10ms"

[[exec]]
job_type = "flaky"
command = ["/bin/sh", "-c", "echo 'disk full on /var/backups' >&2; exit 1"]

[[exec]]
job_type = "poison"
command = ["/bin/sh", "-c", "exit 65"]
"#,
    );
    let w = WorkerProcess::start(&db, &[("OPSRUNNER_CONFIG", cfg.to_str().unwrap())]).await;
    let id = JobRow::new("flaky")
        .payload(json!({"secret": "payload-secret-5d1f"}))
        .max_attempts(2)
        .insert(&c)
        .await;
    wait_status(&c, id, "failed", Duration::from_secs(15)).await;
    let id_s = id.to_string();
    let retried = wait_for(Duration::from_secs(5), "the retried line", || async {
        log_lines(&w, "will be retried")
            .into_iter()
            .find(|l| l["fields"]["job_id"] == id_s.as_str())
    })
    .await;
    assert_eq!(retried["level"], "INFO", "{retried}");
    let failed = wait_for(Duration::from_secs(5), "the failed line", || async {
        log_lines(&w, "job failed")
            .into_iter()
            .find(|l| l["fields"]["job_id"] == id_s.as_str())
    })
    .await;
    assert_eq!(failed["level"], "WARN", "{failed}");
    let f = &failed["fields"];
    assert_eq!(f["job_type"], "flaky");
    assert_eq!(f["queue"], "default");
    assert_eq!(f["attempt"], 2);
    assert!(f["duration_ms"].is_u64(), "{failed}");
    assert!(
        f["error"].as_str().unwrap().contains("disk full"),
        "{failed}"
    );
    assert!(
        !w.log_text().contains("payload-secret-5d1f"),
        "a payload reached the log"
    );

    // A poison flood: 200 failures in well under the 10 s window.
    let before = log_lines(&w, "job failed").len();
    c.execute(
        "INSERT INTO ops_jobs (job_type, max_attempts) SELECT 'poison', 1 FROM generate_series(1, 200)",
        &[],
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(30),
        "200 failed poison jobs",
        || async {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM ops_jobs WHERE job_type = 'poison' AND status = 'failed'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (n == 200).then_some(())
        },
    )
    .await;
    let summary = wait_for(Duration::from_secs(25), "the summary line", || async {
        log_lines(&w, "counted, not logged").into_iter().next()
    })
    .await;
    let logged = log_lines(&w, "job failed").len() - before;
    assert!(
        logged <= 50,
        "{logged} failure lines for one window (the budget is 50 lines per 10 s)"
    );
    let suppressed = summary["fields"]["suppressed"].as_u64().unwrap();
    assert!(
        suppressed >= 200 - 50 - 2 && summary["fields"]["failed"].as_u64() == Some(suppressed),
        "{summary}"
    );
    assert_eq!(summary["level"], "WARN");
}

/// The metric names a PromQL text uses: every `opsrunner_…` or `process_…`
/// token, without the histogram suffixes.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices(['o', 'p']) {
        let rest = &text[i..];
        if !(rest.starts_with("opsrunner_") || rest.starts_with("process_"))
            || text[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| opsrunner::metrics::catalog::find(f).is_some())
            .map(str::to_string)
            .unwrap_or(name);
        out.insert(family);
    }
    out
}

#[test]
fn the_dashboard_and_the_alert_rules_use_only_catalogued_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard = std::fs::read_to_string(format!("{root}/docs/grafana/opsrunner.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let alerts = std::fs::read_to_string(format!("{root}/docs/prometheus/alerts.yml")).unwrap();
    let doc = std::fs::read_to_string(format!("{root}/docs/metrics.md")).unwrap();
    assert!(
        doc.contains(&format!("```yaml\n{alerts}```")),
        "docs/metrics.md's rules are not docs/prometheus/alerts.yml"
    );
    for (file, text) in [("opsrunner.json", &dashboard), ("alerts.yml", &alerts)] {
        let names = metric_names(text);
        assert!(names.len() >= 10, "{file}: {names:?}");
        let unknown: Vec<_> = names
            .iter()
            .filter(|n| opsrunner::metrics::catalog::find(n).is_none())
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics not in the catalogue: {unknown:?}"
        );
    }
}

/// `opsrunner_limit_held_jobs` counts the runnable jobs a rule holds back
/// (10 queued minute-long jobs, at most 2 running: 8 held by max_running),
/// and falls to 0 when the limit is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_back_gauge_counts_jobs_a_limit_keeps_queued_and_zeroes_when_it_is_cleared() {
    let db = migrated_db().await;
    let c = db.client().await;
    enable(&c, &["sleep"]).await;
    cli_ok(&db.url, &["limits", "set", "sleep", "--max-running", "2"]).await;
    for _ in 0..10 {
        insert_job(&c, "sleep", json!({"ms": 60_000})).await;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = WorkerProcess::start(&db, &[("OPSRUNNER_METRICS__LISTEN", &listen)]).await;
    let held = r#"job_type="sleep""#;
    wait_for(
        Duration::from_secs(20),
        "8 jobs held by max_running",
        || async {
            let (_, body) = get(port, "/metrics").await;
            let by_max = sample(
                &body,
                "opsrunner_limit_held_jobs",
                &[held, r#"limit="max_running""#],
            );
            let by_rate = sample(
                &body,
                "opsrunner_limit_held_jobs",
                &[held, r#"limit="rate""#],
            );
            (by_max == Some(8.0) && by_rate == Some(0.0)).then_some(())
        },
    )
    .await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM ops_jobs WHERE status = 'running'").await,
        2
    );
    cli_ok(&db.url, &["limits", "clear", "sleep"]).await;
    wait_for(
        Duration::from_secs(20),
        "the gauge to fall to 0",
        || async {
            let (_, body) = get(port, "/metrics").await;
            (sample(
                &body,
                "opsrunner_limit_held_jobs",
                &[held, r#"limit="max_running""#],
            ) == Some(0.0))
            .then_some(())
        },
    )
    .await;
}
