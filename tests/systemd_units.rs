//! The shipped systemd units: the directives the daemon relies on, and a
//! `systemd-analyze security` exposure of at most 2.0 where the tool exists.

use std::path::Path;
use std::process::Command;

const UNITS: &[&str] = &[
    "opsrunner-worker.service",
    "opsrunner-api.service",
    "opsrunner-migrate.service",
];

fn unit(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(name),
    )
    .unwrap()
}

#[test]
fn the_worker_unit_is_type_notify_with_watchdog_reload_and_a_stop_timeout_above_the_drain() {
    let u = unit("opsrunner-worker.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "Restart=on-failure",
        "DynamicUser=yes",
        "LimitNOFILE=65536",
    ] {
        assert!(u.lines().any(|l| l == line), "missing {line}");
    }
    assert!(
        u.contains("LoadCredential=database-url:"),
        "the URL must come from a credential"
    );
    assert!(!u.contains("postgres://"), "no secret in the unit");
    let secs = |key: &str| -> u64 {
        u.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key}"))
    };
    let defaults = opsrunner::config::Settings::default();
    let drain = (defaults.worker.shutdown_timeout + defaults.worker.cancel_grace).as_secs();
    assert!(
        secs("TimeoutStopSec=") > drain,
        "TimeoutStopSec must exceed the drain time {drain}s"
    );
    assert!(secs("WatchdogSec=") >= 30);
}

#[test]
fn the_api_unit_is_type_notify_production_with_its_key_from_a_credential() {
    let u = unit("opsrunner-api.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/opsrunner serve --config /etc/opsrunner/opsrunner.toml",
        "Restart=on-failure",
        "DynamicUser=yes",
        "Environment=APP_ENV=production",
        "Environment=OPS_API_KEY_FILE=%d/api-key",
        "NoNewPrivileges=yes",
        "LimitNOFILE=65536",
    ] {
        assert!(u.lines().any(|l| l == line), "missing {line}");
    }
    assert!(u.lines().any(|l| l.starts_with("LoadCredential=api-key:")));
    assert!(u.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(
        !u.contains("postgres://") && !u.contains("OPS_API_KEY="),
        "no secret in the unit"
    );
}

#[test]
fn each_unit_scores_at_most_2_0_with_systemd_analyze_security() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        eprintln!("systemd-analyze not installed: exposure scores not checked on this machine");
        return;
    }
    for name in UNITS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(name);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no score for {name}:\n{text}"));
        assert!(score <= 2.0, "{name} exposure {score} > 2.0");
    }
}

#[test]
fn migrate_waits_for_the_database_and_a_failed_migration_does_not_block_the_worker() {
    let m = unit("opsrunner-migrate.service");
    assert!(
        m.lines()
            .any(|l| l.starts_with("ExecStart=") && l.contains("migrate --wait ")),
        "migrate waits for the database"
    );
    let w = unit("opsrunner-worker.service");
    assert!(w.lines().any(|l| l == "Wants=opsrunner-migrate.service"));
    assert!(
        !w.lines()
            .any(|l| l.starts_with("Requires=opsrunner-migrate"))
    );
}
