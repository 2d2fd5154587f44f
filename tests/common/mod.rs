//! Test harness: every test gets its own database on a real PostgreSQL
//! server: the one `DATABASE_URL` names, or else a throwaway cluster started
//! once per test binary from the local binaries (removed when the binary exits).
#![allow(dead_code)]

use std::future::Future;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opsrunner::config::{Config, DbUrl, Settings};
use opsrunner::testing::TempCluster;
use opsrunner::{Registry, Stats, Worker};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub admin_url: String,
    /// Only for a throwaway cluster: test databases die with it.
    cluster: Option<TempCluster>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

pub fn server() -> &'static Server {
    let s = SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(Server {
            admin_url: url,
            cluster: None,
        }),
        _ => TempCluster::start()
            .map(|c| Server {
                admin_url: c.url("postgres"),
                cluster: Some(c),
            })
            .map_err(|e| e.to_string()),
    });
    match s {
        Ok(s) => s,
        Err(e) => panic!("no PostgreSQL for tests: {e}"),
    }
}

impl Server {
    pub fn cluster(&self) -> Option<&TempCluster> {
        self.cluster.as_ref()
    }
}

pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    pub fn db_url(&self) -> DbUrl {
        DbUrl::parse(&self.url, "DATABASE_URL").expect("test URL parses")
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// A worker config with short intervals so that tests finish quickly.
    pub fn config(&self, tweak: impl FnOnce(&mut Settings)) -> Config {
        let mut s = fast_settings();
        tweak(&mut s);
        Config::with_url(s, self.db_url()).expect("config")
    }
}

pub fn fast_settings() -> Settings {
    let mut s = Settings::default();
    let w = &mut s.worker;
    w.poll_interval = Duration::from_millis(500);
    w.lease = Duration::from_secs(2);
    w.heartbeat_interval = Duration::from_millis(400);
    w.rescue_interval = Duration::from_millis(300);
    w.flags_reload_interval = Duration::from_millis(500);
    w.shutdown_timeout = Duration::from_secs(5);
    w.cancel_grace = Duration::from_secs(1);
    w.backoff_base = Duration::from_millis(10);
    w.backoff_max = Duration::from_millis(100);
    s.db.pool_size = 4;
    s
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if server().cluster.is_some() {
            return; // the cluster goes away with the process
        }
        let admin = server().admin_url.clone();
        let name = self.name.clone();
        // Drop cannot be async; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// An empty database.
pub async fn fresh_db() -> TestDb {
    let srv = server();
    let name = format!("opsrunner_t_{:016x}", rand::random::<u64>());
    let admin = connect(&srv.admin_url).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create test database");
    let mut url =
        url::Url::parse(&srv.admin_url).expect("DATABASE_URL must be a URL for the tests");
    url.set_path(&format!("/{name}"));
    TestDb {
        url: url.to_string(),
        name,
    }
}

/// A database with the schema applied.
pub async fn migrated_db() -> TestDb {
    let db = fresh_db().await;
    let mut c = db.client().await;
    opsrunner::db::migrate::migrate(&mut c).await.expect("migrate");
    db
}

pub async fn enable(client: &tokio_postgres::Client, flags: &[&str]) {
    for f in flags {
        opsrunner::flags::set(client, &opsrunner::flags::FlagChange { name: f, enabled: true, reason: Some("test"), by: "tests", cancel_running: false })
            .await
            .expect("enable flag");
    }
}

/// A worker running in this process.
pub struct RunningWorker {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<opsrunner::Result<()>>,
    pub stats: Arc<Stats>,
    pub owner: String,
}

impl RunningWorker {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task")
            .expect("worker run");
    }
}

pub async fn start_worker(config: &Config, registry: Registry) -> RunningWorker {
    let worker = Worker::new(config, registry).expect("worker");
    let mut ready = worker.ready();
    let stats = worker.stats();
    let owner = worker.owner().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
        .await
        .expect("worker ready within 30 s")
        .expect("ready channel");
    RunningWorker {
        stop,
        task,
        stats,
        owner,
    }
}

/// Polls `check` until it returns `Some`, or panics after `limit` with `what`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The single bigint that `sql` (a `SELECT count(*) …`) returns.
pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .expect("count query")
        .get(0)
}

pub async fn status(client: &tokio_postgres::Client, id: uuid::Uuid) -> String {
    client
        .query_one("SELECT status::text FROM ops_jobs WHERE id = $1", &[&id])
        .await
        .expect("job row")
        .get(0)
}

/// Waits until job `id` has status `want`; on timeout, says what it had.
/// The statuses a job moved to, in order (its `ops_job_events` trail).
pub async fn transitions(client: &tokio_postgres::Client, id: uuid::Uuid) -> Vec<String> {
    client
        .query(
            "SELECT to_status::text FROM ops_job_events WHERE job_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// (status, attempt, lease cleared) of a job: what a hand-back must leave.
pub async fn status_attempt_lease_cleared(
    client: &tokio_postgres::Client,
    id: uuid::Uuid,
) -> (String, i32, bool) {
    let row = client
        .query_one(
            "SELECT status::text, attempt, lease_expires_at IS NULL FROM ops_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

pub async fn wait_status(
    client: &tokio_postgres::Client,
    id: uuid::Uuid,
    want: &str,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = status(client, id).await;
        if now == want {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("job {id} is {now}, not {want}, after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn insert_job(
    client: &tokio_postgres::Client,
    job_type: &str,
    payload: serde_json::Value,
) -> uuid::Uuid {
    client
        .query_one(
            "INSERT INTO ops_jobs (job_type, payload) VALUES ($1, $2) RETURNING id",
            &[&job_type, &payload],
        )
        .await
        .expect("insert job")
        .get(0)
}

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

/// Waits until no job is queued or running, or panics after `limit` saying
/// how many are left.
pub async fn wait_all_finished(client: &tokio_postgres::Client, limit: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM ops_jobs WHERE status IN ('queued', 'running')",
                &[],
            )
            .await
            .expect("count unfinished jobs")
            .get(0);
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} jobs not finished after {limit:?} ({what})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh directory under the system temp dir, with a random name (a
/// running `opsrunner dev` or another test run never shares it), removed
/// when dropped, also when the test fails.
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A [`TempDir`] named after `tag`.
pub fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("opsrunner-{tag}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

/// A worker as a separate `opsrunner worker` process, for kill and signal tests.
pub struct WorkerProcess {
    pub child: tokio::process::Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrunner"));
        cmd.arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("OPSRUNNER_LOG__FORMAT", "json")
            .env("OPSRUNNER_WORKER__POLL_INTERVAL", "500ms")
            .env("OPSRUNNER_WORKER__LEASE", "2s")
            .env("OPSRUNNER_WORKER__HEARTBEAT_INTERVAL", "400ms")
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

/// A free loopback port (bound, then released: a small race, fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
