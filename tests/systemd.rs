//! sd_notify protocol against a real notify socket: READY, STATUS, WATCHDOG
//! only while healthy, RELOADING on SIGHUP, STOPPING on SIGTERM.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn count(msgs: &Arc<Mutex<Vec<String>>>, what: &str) -> usize {
    msgs.lock()
        .unwrap()
        .iter()
        .filter(|m| m.lines().any(|l| l == what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_only_while_healthy_and_lifecycle_is_notified() {
    let db = migrated_db().await;
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let msgs = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = msgs.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf).await {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    });
    let sock_str = sock_path.to_str().unwrap().to_string();
    let mut w = WorkerProcess::start(
        &db,
        &[
            ("NOTIFY_SOCKET", &sock_str),
            ("WATCHDOG_USEC", "600000"),
            ("OPSRUNNER_WORKER__FLAGS_RELOAD_INTERVAL", "300ms"),
        ],
    )
    .await;
    wait_for(
        Duration::from_secs(10),
        "READY=1 and watchdog pings",
        || async {
            (count(&msgs, "READY=1") >= 1 && count(&msgs, "WATCHDOG=1") >= 2).then_some(())
        },
    )
    .await;
    assert!(
        msgs.lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("STATUS=running: 0 jobs; queued: 0")),
        "{:?}",
        msgs.lock().unwrap()
    );

    // Cut the worker off from its database (from another database: Postgres
    // refuses to lock out the current one).
    let admin = connect(&server().admin_url).await;
    admin.batch_execute(&format!(
        "ALTER DATABASE \"{0}\" ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}' AND pid <> pg_backend_pid();",
        db.name
    ))
    .await
    .unwrap();
    wait_for(Duration::from_secs(10), "an unhealthy STATUS", || async {
        msgs.lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("STATUS=unhealthy"))
            .then_some(())
    })
    .await;
    let before = count(&msgs, "WATCHDOG=1");
    tokio::time::sleep(Duration::from_secs(2)).await; // more than three ping periods
    assert_eq!(
        count(&msgs, "WATCHDOG=1"),
        before,
        "pinged the watchdog while the database was gone"
    );

    // Back again: pings resume without a restart.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(20),
        "watchdog pings to resume",
        || async { (count(&msgs, "WATCHDOG=1") > before + 1).then_some(()) },
    )
    .await;

    w.signal(libc::SIGHUP);
    wait_for(
        Duration::from_secs(10),
        "RELOADING=1 then READY=1",
        || async {
            let m = msgs.lock().unwrap();
            let reload = m
                .iter()
                .position(|x| x.lines().any(|l| l == "RELOADING=1"))?;
            m[reload + 1..]
                .iter()
                .any(|x| x.lines().any(|l| l == "READY=1"))
                .then_some(())
        },
    )
    .await;

    w.signal(libc::SIGTERM);
    let code = tokio::time::timeout(Duration::from_secs(20), w.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code.code(), Some(0));
    assert!(count(&msgs, "STOPPING=1") >= 1);
}
