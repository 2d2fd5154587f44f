//! The PostgreSQL server tests use and a database per test: the server
//! `DATABASE_URL` names, or else a throwaway cluster started once per test
//! binary from the local binaries (removed when the binary exits).

use std::sync::OnceLock;
use std::time::Duration;

use opsrunner::config::{Config, DbUrl, Settings};
use opsrunner::testing::TempCluster;

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
    // Leases short enough for quick rescues, with room for the self-fencing
    // rule: 2 x (heartbeat 300 ms + call deadline 1 s) <= 3 s.
    w.lease = Duration::from_secs(3);
    w.heartbeat_interval = Duration::from_millis(300);
    w.rescue_interval = Duration::from_millis(300);
    w.flags_reload_interval = Duration::from_millis(500);
    w.shutdown_timeout = Duration::from_secs(5);
    w.cancel_grace = Duration::from_secs(1);
    w.backoff_base = Duration::from_millis(10);
    w.backoff_max = Duration::from_millis(100);
    s.db.pool_size = 4;
    s.db.call_timeout = Some(Duration::from_secs(1));
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
    opsrunner::db::migrate::migrate(&mut c)
        .await
        .expect("migrate");
    db
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

impl TempDir {
    /// Writes `toml` as `opsrunner.toml` here; returns its path (for
    /// `OPSRUNNER_CONFIG` or `--config`).
    pub fn config(&self, toml: impl AsRef<[u8]>) -> std::path::PathBuf {
        let path = self.join("opsrunner.toml");
        std::fs::write(&path, toml).expect("write opsrunner.toml");
        path
    }
}

/// A [`TempDir`] named after `tag`.
pub fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("opsrunner-{tag}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

/// A free loopback port (bound, then released: a small race, fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A migrated database on a throwaway cluster of the test's own, so that a
/// test never depends on, or disturbs, a shared server (the cluster, its
/// roles and its database go away with it).
pub struct OwnDb {
    db: std::mem::ManuallyDrop<TestDb>,
    /// The cluster, to restart it or read its port.
    pub cluster: std::sync::Arc<TempCluster>,
}

impl std::ops::Deref for OwnDb {
    type Target = TestDb;
    fn deref(&self) -> &TestDb {
        &self.db
    }
}

/// Starts a cluster with `start` (`TempCluster::start`, or
/// `TempCluster::start_password_auth`), creates a database and migrates it.
pub async fn own_db_with(start: fn() -> opsrunner::Result<TempCluster>) -> OwnDb {
    let cluster = tokio::task::spawn_blocking(start)
        .await
        .unwrap()
        .expect("throwaway cluster");
    let admin = connect(&cluster.url("postgres")).await;
    let name = format!("own_{:08x}", rand::random::<u32>());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    // ManuallyDrop: TestDb's Drop would look for this database on the
    // shared server; it dies with the cluster instead.
    let db = std::mem::ManuallyDrop::new(TestDb {
        url: cluster.url(&name),
        name,
    });
    let mut c = db.client().await;
    opsrunner::db::migrate::migrate(&mut c).await.unwrap();
    OwnDb {
        db,
        cluster: std::sync::Arc::new(cluster),
    }
}
