//! Connections: the pool for short statements and single session connections
//! (LISTEN, migrations). Session limits are set on every connection so that no
//! statement or forgotten transaction can hold locks for long.
//!
//! `queries` holds the text of every statement (one typed function per file
//! under `sql/queries/`), `migrate` the embedded migrations.

pub mod migrate;
pub mod queries;
pub mod tls;

/// NOTIFY channel of the insert trigger: jobs may be waiting.
pub const JOBS_CHANNEL: &str = "ops_jobs";
/// NOTIFY channel of cancellation requests.
pub const CANCEL_CHANNEL: &str = "ops_jobs_cancel";
/// NOTIFY channel of feature-flag changes.
pub const FLAGS_CHANNEL: &str = "ops_flags";

/// `application_name` of the worker's LISTEN connection (and how `bench`
/// finds it in `pg_stat_activity`).
pub const LISTENER_APPLICATION_NAME: &str = "opsrunner-listener";
/// `application_name` of the worker's pool.
pub const WORKER_APPLICATION_NAME: &str = "opsrunner-worker";
/// `application_name` of the shim's pool.
pub const API_APPLICATION_NAME: &str = "opsrunner-api";
/// `application_name` of the operator CLI's connections.
pub const CLI_APPLICATION_NAME: &str = "opsrunner-cli";

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};

use crate::config::{DbConfig, DbUrl};
use crate::error::{Error, Result};

/// The connection settings used for every opsrunner connection.
pub fn session_config(
    url: &DbUrl,
    db: &DbConfig,
    application_name: &str,
) -> tokio_postgres::Config {
    let mut pg = url.pg_config().clone();
    pg.ssl_mode(db.tls_for(url).pg_mode());
    pg.application_name(application_name);
    pg.connect_timeout(db.connect_timeout);
    // A peer that vanished without a FIN or RST (a VM gone, a cable cut) is
    // found by keepalive probes within 5 + 3 x 2 = 11 s, and data that stays
    // unacknowledged for 15 s fails the socket (TCP_USER_TIMEOUT); the
    // kernel defaults took about 12 minutes. Neither catches a peer that
    // acknowledges but never answers (a stalled proxy): the client-side call
    // deadline (`bounded`, `db.call_timeout`) does.
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(5));
    pg.keepalives_interval(Duration::from_secs(2));
    pg.keepalives_retries(3);
    pg.tcp_user_timeout(Duration::from_secs(15));
    // JIT compiles a plan when its estimated cost is high. A generic plan
    // cannot see the claim's LIMIT and estimates a tenth of the table, so on
    // a large queue every claim paid about 20 ms of compiling for a 1 ms
    // statement (measured at 1,000,000 queued jobs). No opsrunner statement
    // runs long enough to gain from JIT.
    pg.options(format!(
        "-c jit=off -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        db.statement_timeout.as_millis(),
        db.idle_in_transaction_timeout.as_millis()
    ));
    pg
}

/// Plans for the worker's pool. Postgres plans a prepared statement with its
/// actual parameters for its first five executions on a connection, and the
/// worker's statements are spread over a pool, so most executions get such a
/// custom plan. For the batched statements that is the risky kind: it sees a
/// 500-element array and, on a small table whose statistics saw no running
/// rows, scanned the table once per array element (a completion took 200-300
/// ms instead of 2 ms, measured). Every daemon statement is written so that
/// its generic plan is index lookups bounded by the batch (claim.sql,
/// complete.sql, heartbeat.sql), so the worker always uses that.
pub enum Plans {
    /// Postgres' default choice between custom and generic plans.
    Default,
    /// Always the generic plan of each prepared statement.
    Generic,
}

/// A connection pool with a name for its metrics (`pool="worker"`, `"api"`):
/// the time each checkout waits is recorded, and its size, idle and waiting
/// counts are published at every scrape ([`publish_pool_gauges`]).
#[derive(Clone)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    label: &'static str,
}

/// Pools alive in this process, weakly held (a dropped pool closes as
/// before and leaves the list at the next scrape).
static POOLS: std::sync::Mutex<Vec<(&'static str, deadpool_postgres::WeakPool)>> =
    std::sync::Mutex::new(Vec::new());

impl Pool {
    fn new(inner: deadpool_postgres::Pool, label: &'static str) -> Self {
        if let Ok(mut pools) = POOLS.lock() {
            pools.push((label, inner.weak()));
        }
        Self { inner, label }
    }

    /// A connection, waiting at most `db.acquire_timeout`; the wait is
    /// recorded in `opsrunner_db_pool_acquire_seconds`.
    pub async fn get(
        &self,
    ) -> std::result::Result<deadpool_postgres::Object, deadpool_postgres::PoolError> {
        let start = std::time::Instant::now();
        let got = self.inner.get().await;
        metrics::histogram!("opsrunner_db_pool_acquire_seconds", "pool" => self.label)
            .record(start.elapsed().as_secs_f64());
        got
    }

    /// Size, idle and waiting counts now.
    pub fn status(&self) -> deadpool_postgres::Status {
        self.inner.status()
    }

    /// Closes the pool: waiting and later checkouts fail, idle connections
    /// are closed.
    pub fn close(&self) {
        self.inner.close();
    }

    /// The `pool` label of its metrics.
    pub fn label(&self) -> &'static str {
        self.label
    }
}

/// Sets the pool gauges of every live pool (called before each scrape).
/// Two pools with one label (tests) add up.
pub fn publish_pool_gauges() {
    let Ok(mut pools) = POOLS.lock() else {
        return;
    };
    pools.retain(|(_, weak)| weak.upgrade().is_some());
    let mut by_label: Vec<(&'static str, [usize; 4])> = Vec::new();
    for (label, weak) in pools.iter() {
        let Some(p) = weak.upgrade() else { continue };
        let s = p.status();
        let row = [s.size, s.max_size, s.available, s.waiting];
        match by_label.iter_mut().find(|(l, _)| l == label) {
            Some((_, sum)) => sum.iter_mut().zip(row).for_each(|(a, b)| *a += b),
            None => by_label.push((label, row)),
        }
    }
    drop(pools);
    for (label, [size, max, available, waiting]) in by_label {
        metrics::gauge!("opsrunner_db_pool_size", "pool" => label).set(size as f64);
        metrics::gauge!("opsrunner_db_pool_max_size", "pool" => label).set(max as f64);
        metrics::gauge!("opsrunner_db_pool_available", "pool" => label).set(available as f64);
        metrics::gauge!("opsrunner_db_pool_waiting", "pool" => label).set(waiting as f64);
    }
}

/// The `pool` label for a pool of `application_name`.
fn pool_label(application_name: &str) -> &'static str {
    match application_name {
        WORKER_APPLICATION_NAME => "worker",
        API_APPLICATION_NAME => "api",
        CLI_APPLICATION_NAME => "cli",
        _ => "other",
    }
}

/// A pool whose connections carry [`session_config`] (and, with
/// [`Plans::Generic`], forced generic plans).
pub fn pool(url: &DbUrl, db: &DbConfig, application_name: &str, plans: Plans) -> Result<Pool> {
    let mut pg = session_config(url, db, application_name);
    if let Plans::Generic = plans {
        let options = pg.get_options().unwrap_or_default().to_string();
        pg.options(format!("{options} -c plan_cache_mode=force_generic_plan"));
    }
    let mgr = Manager::from_config(
        pg,
        db.tls_for(url).connector()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(mgr)
        .max_size(db.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(db.acquire_timeout))
        .create_timeout(Some(db.connect_timeout))
        .recycle_timeout(Some(db.connect_timeout))
        .build()
        .map(|p| Pool::new(p, pool_label(application_name)))
        .map_err(|e| Error::Pool(e.to_string()))
}

/// The worker daemon's pool: generic plans (see [`Plans`]), and a server
/// `statement_timeout` no longer than the client-side `call_timeout`, so that
/// a statement the daemon gave up on does not run on in the server.
pub fn worker_pool(url: &DbUrl, db: &DbConfig, call_timeout: Duration) -> Result<Pool> {
    let mut db = db.clone();
    db.statement_timeout = db.statement_timeout.min(call_timeout);
    pool(url, &db, WORKER_APPLICATION_NAME, Plans::Generic)
}

/// Runs `fut` under the client-side deadline `d`: [`Error::Timeout`] when it
/// takes longer (the future is dropped, and with it any [`Conn`] it held,
/// which is then closed rather than returned to the pool).
pub async fn bounded<T>(d: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(d, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(d)),
    }
}

/// A pooled connection that goes back to the pool only through
/// [`Conn::release`], after a call that finished. Dropped any other way (a
/// call abandoned at its deadline, an error) it is closed: its socket may be
/// stalled mid-statement, and handed to the next caller it would stall that
/// caller too (the pool's recycling check only sees closed connections).
pub struct Conn(Option<deadpool_postgres::Object>);

/// Takes a connection from `pool` (bounded by the pool's own wait, create
/// and recycle timeouts).
pub async fn checkout(pool: &Pool) -> Result<Conn> {
    Ok(Conn(Some(pool.get().await?)))
}

impl Conn {
    /// Returns the connection to the pool.
    pub fn release(mut self) {
        drop(self.0.take());
    }

    /// The connection as a plain client.
    pub fn client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        // Only `release` and `drop` take it, and both consume the Conn.
        self.0
            .as_ref()
            .expect("a Conn holds its connection until consumed")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .as_mut()
            .expect("a Conn holds its connection until consumed")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(o) = self.0.take() {
            // Out of the pool for good: dropping the client closes it.
            drop(deadpool_postgres::Object::take(o));
        }
    }
}

/// Warns when `client`'s connection is plaintext and `url` names a host that
/// is not this machine: passwords and job payloads then cross the network
/// unencrypted (`sslmode=disable`, or `prefer` against a server without TLS).
pub async fn warn_if_plaintext(client: &tokio_postgres::Client, url: &DbUrl) {
    if url.is_local() {
        return;
    }
    if let Ok(false) = queries::session_ssl(client).await {
        tracing::warn!(
            database = %url.describe(),
            "the connection to the database is not encrypted; set sslmode=verify-full \
             (and sslrootcert) in DATABASE_URL or [db] (docs/security.md, \"TLS to PostgreSQL\")"
        );
    }
}

/// One session connection whose driver runs on its own task. Notifications
/// are not delivered through this helper; the listener drives its own.
pub async fn connect(
    url: &DbUrl,
    db: &DbConfig,
    application_name: &str,
) -> Result<tokio_postgres::Client> {
    // `connect_timeout` bounds the socket connect only; the whole start-up
    // (TLS, authentication) gets the same bound here.
    let connecting = async {
        let tls = db.tls_for(url).connector()?;
        Ok(session_config(url, db, application_name)
            .connect(tls)
            .await?)
    };
    let (client, conn) = bounded(db.connect_timeout * 2, connecting).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// A value tokio-postgres could not convert to or from its Rust type (a row
/// that PostgreSQL stores but serde cannot read, say): the data is the
/// problem, not the connection. tokio-postgres exposes no error kind, so
/// this reads its fixed wording.
fn is_codec_error(e: &tokio_postgres::Error) -> bool {
    let msg = e.to_string();
    msg.starts_with("error deserializing") || msg.starts_with("error serializing")
}

/// True when the error means the connection or server is gone, so retrying on a
/// new connection is the right answer (as opposed to a bad statement or data).
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Pool(_) | Error::Io(_) | Error::Timeout(_) => true,
        Error::Db(db) => match db.code() {
            // No SQLSTATE: the connection (closed, I/O, timeout), or a value
            // this side cannot encode or decode, which no retry fixes.
            None => db.is_closed() || !is_codec_error(db),
            Some(code) => {
                let c = code.code();
                // 08: connection exception, 57P: operator intervention
                // (admin shutdown, crash shutdown, cannot connect now),
                // 53: insufficient resources, 40001/40P01: serialization/deadlock.
                c.starts_with("08")
                    || c.starts_with("57P")
                    || c.starts_with("53")
                    || c == "40001"
                    || c == "40P01"
                    || c == "57014"
            }
        },
        _ => false,
    }
}
