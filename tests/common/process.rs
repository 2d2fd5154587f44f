//! `opsrunner` as separate processes: workers for kill and signal tests,
//! the shim, one-shot CLI commands. None of them binds a default port.

use std::future::Future;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::server::{TestDb, free_port};
use super::wait::wait_for;

/// Spawns `cmd` (stderr piped) and collects its log lines. The future
/// answers true once a line containing `marker` appeared, false when the
/// process ended or 30 s passed first.
fn spawn_logged(
    mut cmd: tokio::process::Command,
    marker: &'static str,
) -> (
    tokio::process::Child,
    Arc<Mutex<Vec<String>>>,
    impl Future<Output = bool>,
) {
    let mut child = cmd.spawn().expect("spawn opsrunner");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sink = log.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut ready_tx = Some(ready_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(marker)
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(true);
            }
            sink.lock().unwrap().push(line);
        }
        if let Some(tx) = ready_tx.take() {
            let _ = tx.send(false);
        }
    });
    let ready = async move {
        matches!(
            tokio::time::timeout(Duration::from_secs(30), ready_rx).await,
            Ok(Ok(true))
        )
    };
    (child, log, ready)
}

/// A worker as a separate `opsrunner worker` process, for kill and signal tests.
pub struct WorkerProcess {
    pub child: tokio::process::Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        Self::start_url(&db.url, env).await
    }

    /// A worker process connecting to `url` (a proxy, say).
    pub async fn start_url(url: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrunner"));
        cmd.arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", url)
            .env("OPSRUNNER_LOG__FORMAT", "json")
            .env("OPSRUNNER_WORKER__POLL_INTERVAL", "500ms")
            .env("OPSRUNNER_WORKER__LEASE", "3s")
            .env("OPSRUNNER_WORKER__HEARTBEAT_INTERVAL", "300ms")
            .env("OPSRUNNER_DB__CALL_TIMEOUT", "1s")
            .env("OPSRUNNER_WORKER__RESCUE_INTERVAL", "300ms")
            .env("OPSRUNNER_WORKER__CANCEL_GRACE", "1s")
            // Tests run workers in parallel: no fixed metrics port unless asked.
            .env("OPSRUNNER_METRICS__LISTEN", "")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let (child, log, ready) = spawn_logged(cmd, "worker ready");
        if !ready.await {
            panic!(
                "worker process did not become ready (exited, or 30 s passed); log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        Self { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running child") as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) {
        wait_for(limit, needle, || async {
            self.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
                .then_some(())
        })
        .await
    }
}

/// An HTTP client for tests (plain HTTP to loopback).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// `opsrunner serve` as a separate process, with its log captured.
pub struct ApiProcess {
    pub child: tokio::process::Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ApiProcess {
    /// Starts the shim against `db_url` with `env` on top of a test
    /// baseline (loopback port, no metrics listener, JSON logs).
    pub async fn start(db_url: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::try_start(db_url, env, args)
            .await
            .unwrap_or_else(|log| panic!("shim did not start; log:\n{log}"))
    }

    pub async fn try_start(
        db_url: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Self, String> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrunner"));
        cmd.args(args)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("OPSRUNNER_LOG__FORMAT", "json")
            .env("OPSRUNNER_LOG__LEVEL", "debug")
            .env("OPSRUNNER_API__LISTEN", &listen)
            .env("OPSRUNNER_API__METRICS_LISTEN", "")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let (child, log, ready) = spawn_logged(cmd, "api listening");
        if !ready.await {
            return Err(log.lock().unwrap().join("\n"));
        }
        Ok(Self {
            child,
            base: format!("http://{listen}"),
            log,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Listeners of a process a test starts: never a default port (9464, 9465,
/// 8080), so that a developer's `opsrunner dev` in another terminal and
/// the test suite never collide. A test that needs a listener passes its
/// own address after these.
pub const NO_DEFAULT_PORTS: [(&str, &str); 3] = [
    ("OPSRUNNER_METRICS__LISTEN", ""),
    ("OPSRUNNER_API__METRICS_LISTEN", ""),
    ("OPSRUNNER_API__LISTEN", "127.0.0.1:0"),
];

/// Takes the default ports, as a running `opsrunner dev` would (a port
/// already taken is left as it is: that is the same situation). Held until
/// the returned listeners are dropped.
pub fn hold_default_ports() -> Vec<std::net::TcpListener> {
    [9464, 9465, 8080]
        .into_iter()
        .filter_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
        .collect()
}

/// Runs the `opsrunner` binary to completion.
pub async fn opsrunner_cli(
    db_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrunner"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("OPSRUNNER_LOG__FORMAT", "json")
        .envs(NO_DEFAULT_PORTS)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run opsrunner")
}

/// Runs the `opsrunner` binary against `db_url`, expecting success; its
/// stdout.
pub async fn cli_ok(db_url: &str, args: &[&str]) -> String {
    let out = opsrunner_cli(db_url, args, &[]).await;
    assert!(
        out.status.success(),
        "opsrunner {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Creates a scoped key with the CLI and returns it.
pub async fn create_key(db_url: &str, name: &str, tenant: &str, scopes: &str) -> String {
    let out = opsrunner_cli(
        db_url,
        &[
            "keys", "create", "--name", name, "--tenant", tenant, "--scopes", scopes,
        ],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}
