//! `opsrunner bench`: measures the queue against a real PostgreSQL, in a
//! database of its own that it creates and drops.
//!
//! - enqueue throughput: single-row INSERTs (one commit each) and one batched
//!   INSERT of N rows;
//! - end-to-end throughput: N pre-queued `noop` jobs drained by W worker
//!   processes (`opsrunner worker`, the real daemon) at concurrency C, timed
//!   by the server's clock from the flag being switched on to the last
//!   `finished_at`;
//! - enqueue-to-start latency: jobs inserted one at a time into an idle
//!   worker, `started_at - created_at` percentiles, again by the server's
//!   clock.
//!
//! With `DATABASE_URL` unset it starts a throwaway cluster with PostgreSQL's
//! default durability (fsync and synchronous_commit on). The report includes
//! the server's durability settings, since they decide the numbers.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::DbUrl;
use crate::error::{Error, Result};

/// What `opsrunner bench` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Pre-queued jobs for the end-to-end run.
    pub jobs: u64,
    /// Worker processes for the end-to-end run.
    pub workers: usize,
    /// Slots per worker process.
    pub concurrency: usize,
    /// Single-row INSERTs timed.
    pub single_inserts: u64,
    /// Rows in the one batched INSERT.
    pub batch_rows: u64,
    /// Jobs inserted one at a time for the latency run.
    pub latency_samples: u64,
    /// Also measure how cost grows: 10k/100k/1M jobs at `workers`, and
    /// 1/2/4 workers at `jobs`.
    pub scale: bool,
    /// Also drain [`BIG_TABLE_QUEUED`] jobs from a table that already holds
    /// [`BIG_TABLE_FINISHED`] finished ones: what a table kept for its
    /// retention costs each job.
    pub big_table: bool,
    /// Also drain `jobs` again with delete-on-success (`retention.succeeded =
    /// "0s"`), reported beside the default drain.
    pub delete_on_success: bool,
    /// Also drain `jobs` again while another session holds a REPEATABLE READ
    /// snapshot open, to show what a forgotten transaction costs the claim.
    pub held_snapshot: bool,
    /// Also run 100 ms `sleep` jobs through one worker at 500 and 2,000 slots
    /// and report how busy its slots stay.
    pub long_jobs: bool,
    /// Also drain `jobs` under a never-reached max-running limit and with
    /// fair claiming over 10 tenants, beside an unlimited drain, and run the
    /// fairness run.
    pub limits: bool,
    /// Progress on stderr (only on a terminal).
    pub progress: bool,
    /// The `opsrunner` binary to run workers from.
    pub exe: PathBuf,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            jobs: 100_000,
            workers: 2,
            concurrency: 100,
            single_inserts: 2_000,
            batch_rows: 100_000,
            latency_samples: 500,
            scale: false,
            big_table: false,
            delete_on_success: false,
            held_snapshot: false,
            long_jobs: false,
            limits: false,
            progress: true,
            exe: PathBuf::from("opsrunner"),
        }
    }
}

/// The server the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// `server_version`.
    pub version: String,
    /// `synchronous_commit`.
    pub synchronous_commit: String,
    /// `fsync`.
    pub fsync: String,
    /// `shared_buffers`.
    pub shared_buffers: String,
    /// Cores of this machine.
    pub cpus: usize,
    /// Whether the bench started its own cluster.
    pub throwaway_cluster: bool,
}

/// An enqueue measurement.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueResult {
    /// Rows inserted.
    pub rows: u64,
    /// Wall time.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_second: f64,
}

impl EnqueueResult {
    fn new(rows: u64, seconds: f64) -> Self {
        Self {
            rows,
            seconds,
            rows_per_second: rate(rows, seconds),
        }
    }
}

/// The end-to-end processing measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessResult {
    /// Jobs drained.
    pub jobs: u64,
    /// Worker processes.
    pub workers: usize,
    /// Slots per worker.
    pub concurrency: usize,
    /// From the flag turned on to the last `finished_at` (server clock);
    /// with delete-on-success, which leaves no `finished_at`, from just
    /// before the flag to the first probe that found nothing left (the
    /// bench's clock, 20 ms steps).
    pub seconds: f64,
    /// Jobs per second.
    pub jobs_per_second: f64,
    /// CPU seconds used by the worker processes, and by the whole machine
    /// (every core), over the run.
    pub worker_cpu_seconds: f64,
    /// CPU seconds the whole machine spent meanwhile.
    pub machine_cpu_seconds: f64,
    /// Wall seconds times cores: the CPU time there was.
    pub wall_cpu_capacity_seconds: f64,
    /// Transactions committed in the benchmark database per job processed
    /// (claims, completions, heartbeats, maintenance; from pg_stat_database,
    /// which lags by up to a second).
    pub commits_per_job: f64,
}

/// Enqueue-to-start latency into an idle worker (server clock).
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// Jobs measured.
    pub samples: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Every sample over [`SLOW_SAMPLE_MS`], with where its time went.
    pub slow: Vec<SlowSample>,
}

/// The latency target's bound on any one sample: a slower one is reported
/// with what it waited for.
pub const SLOW_SAMPLE_MS: f64 = 25.0;

/// One enqueue-to-start sample over [`SLOW_SAMPLE_MS`].
#[derive(Debug, Clone, Serialize)]
pub struct SlowSample {
    /// `started_at - created_at`, ms (the database's clock).
    pub total_ms: f64,
    /// The enqueueing INSERT's round trip as the bench saw it, commit
    /// included: the job is invisible (and its NOTIFY unsent) until then.
    pub insert_commit_ms: f64,
    /// The rest: the wake-up's delivery and the worker's claim until the
    /// claim statement began.
    pub pickup_ms: f64,
}

/// Everything `opsrunner bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where.
    pub server: ServerInfo,
    /// Single-row INSERTs, one commit each.
    pub enqueue_single: EnqueueResult,
    /// One batched INSERT.
    pub enqueue_batch: EnqueueResult,
    /// The same rows through `COPY ... FROM STDIN`, the bulk path for apps
    /// that can use it.
    pub enqueue_copy: EnqueueResult,
    /// End-to-end processing.
    pub process: ProcessResult,
    /// Enqueue-to-start latency.
    pub latency: LatencyResult,
    /// Only with `scale`.
    pub scale: Vec<ProcessResult>,
    /// Only with `big_table`: [`BIG_TABLE_QUEUED`] jobs drained beside
    /// [`BIG_TABLE_FINISHED`] finished rows.
    pub big_table: Option<BigTableResult>,
    /// Only with `held_snapshot`: the same drain as `process`, with a
    /// snapshot held open elsewhere in the database from its start.
    pub held_snapshot: Option<ProcessResult>,
    /// Only with `delete_on_success`: the same drain as `process` with
    /// `retention.succeeded = "0s"` (succeeded jobs deleted, not kept).
    pub delete_on_success: Option<ProcessResult>,
    /// Only with `long_jobs`: slot occupancy at 500 and 2,000 slots.
    pub long_jobs: Vec<LongJobsResult>,
    /// Only with `limits`: unlimited, limited and fair drains.
    pub limit_cost: Vec<LimitCostResult>,
    /// Only with `limits`: the fairness run without and with fair claiming.
    pub fairness: Vec<FairnessResult>,
}

/// One worker process with `slots` slots draining 100 ms `sleep` jobs.
#[derive(Debug, Clone, Serialize)]
pub struct LongJobsResult {
    /// Slots of the one worker.
    pub slots: usize,
    /// Jobs drained (50 per slot).
    pub jobs: u64,
    /// Jobs started per second while every slot could be busy (from the
    /// moment the first `slots` jobs had started to the last start), divided
    /// by the most a full set of slots can start (`slots / 0.1 s`).
    pub busy_ratio: f64,
    /// The worker's CPU, seconds.
    pub worker_cpu_seconds: f64,
}

/// The big-table drain.
#[derive(Debug, Clone, Serialize)]
pub struct BigTableResult {
    /// Finished rows in the table before the drain began.
    pub finished_rows: u64,
    /// The drain of the queued ones.
    pub process: ProcessResult,
}

/// Rows of the big-table run: ten million in all, as the per-job-cost
/// issue asked (a busy deployment keeping a week of finished jobs).
pub const BIG_TABLE_FINISHED: u64 = 9_000_000;
/// Queued jobs of the big-table run.
pub const BIG_TABLE_QUEUED: u64 = 1_000_000;

/// One drain of the limits comparison.
#[derive(Debug, Clone, Serialize)]
pub struct LimitCostResult {
    /// `unlimited`, `max_running` (a limit never reached: the limited
    /// claim's own cost) or `fair` (round-robin over 10 tenants).
    pub claim: String,
    /// The drain.
    pub process: ProcessResult,
}

/// The fairness run: tenant `flood` queues 40,000 50 ms `sleep` jobs at a
/// better priority, then tenant `other` enqueues one job every 50 ms; one
/// worker of `concurrency` slots.
#[derive(Debug, Clone, Serialize)]
pub struct FairnessResult {
    /// Whether the type was claimed fairly.
    pub fair: bool,
    /// The other tenant's jobs.
    pub jobs: u64,
    /// Their queue wait (`started_at - created_at`; an unstarted job counts
    /// until the run ended), ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// How many of them had not started when the run ended (60 s at most).
    pub unstarted: u64,
}

/// How long each job of the long-jobs run sleeps.
const LONG_JOB_MS: u64 = 100;

/// Runs every measurement against a fresh database on the server that
/// `admin` names (or a throwaway cluster when `None`), then drops it.
/// The `opsrunner bench` command: runs [`run`] and prints the report (JSON
/// with `--json`).
pub async fn run_cli(
    args: super::BenchArgs,
    ctx: &super::Ctx,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    ctx.settings()?;
    let opts = BenchOptions {
        jobs: args.jobs,
        workers: args.workers,
        concurrency: args.concurrency,
        single_inserts: args.single_inserts,
        batch_rows: args.batch_rows,
        latency_samples: args.latency_samples,
        scale: args.scale,
        big_table: args.big_table,
        delete_on_success: args.delete_on_success,
        held_snapshot: args.held_snapshot,
        long_jobs: args.long_jobs,
        limits: args.limits,
        progress: !args.json,
        exe: std::env::current_exe()?,
    };
    let report = run(crate::config::env::database_url()?, &opts).await?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    Ok(())
}

/// Measures everything in `opts` against the server `admin` names (or a
/// throwaway cluster), in a database it creates and drops.
pub async fn run(admin: Option<DbUrl>, opts: &BenchOptions) -> Result<Report> {
    let (_cluster, admin_raw) = match admin {
        Some(u) => (None, u.expose().to_string()),
        None => {
            progress_line(opts, "starting a throwaway PostgreSQL (durable settings)…");
            let c = tokio::task::spawn_blocking(crate::testing::TempCluster::start_durable)
                .await
                .map_err(|e| Error::TempCluster(e.to_string()))??;
            let url = c.url("postgres");
            (Some(c), url)
        }
    };
    let throwaway = _cluster.is_some();
    let name = format!("opsrunner_bench_{:08x}", rand::random::<u32>());
    let admin_url = DbUrl::parse(&admin_raw, "DATABASE_URL")?;
    let admin_client = plain_connect(&admin_url).await?;
    admin_client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    let mut pg = admin_url.pg_config().clone();
    pg.dbname(&name);
    let bench_url = with_dbname(&admin_raw, &name)?;
    let result = async {
        let (mut client, conn) = pg.connect(admin_url.tls().connector()?).await?;
        tokio::spawn(conn);
        crate::db::migrate::migrate(&mut client).await?;
        let server = server_info(&client, throwaway).await?;
        progress_line(opts, "enqueue: single-row INSERTs…");
        let enqueue_single = enqueue_single(&client, opts.single_inserts).await?;
        progress_line(opts, "enqueue: one batched INSERT…");
        let enqueue_batch = enqueue_batch(&client, opts.batch_rows).await?;
        progress_line(opts, "enqueue: COPY…");
        let enqueue_copy = enqueue_copy(&client, opts.batch_rows).await?;
        let process = drain(&client, &bench_url, opts, &Drain::new(opts.jobs, opts.workers)).await?;
        progress_line(opts, "latency: one job at a time into an idle worker…");
        let latency = latency(&client, &bench_url, opts).await?;
        let mut scale = Vec::new();
        if opts.scale {
            for jobs in [10_000, 100_000, 1_000_000] {
                scale.push(drain(&client, &bench_url, opts, &Drain::new(jobs, opts.workers)).await?);
            }
            for workers in [1, 2, 4] {
                scale.push(drain(&client, &bench_url, opts, &Drain::new(opts.jobs, workers)).await?);
            }
        }
        let big_table = if opts.big_table {
            progress_line(
                opts,
                &format!("big table: {BIG_TABLE_FINISHED} finished rows, then the queued ones…"),
            );
            // Finished two days ago, so that the drain's own rows decide
            // max(finished_at); written by the server, not sent.
            let fill = format!(
                "INSERT INTO ops_jobs (job_type, status, attempt, run_at, created_at, started_at, finished_at)
                 SELECT 'noop', 'succeeded', 1, t, t, t, t
                 FROM (SELECT now() - interval '2 days' AS t) AS s,
                      generate_series(1, {BIG_TABLE_FINISHED})"
            );
            let d = Drain {
                setup: &fill,
                ..Drain::new(BIG_TABLE_QUEUED, opts.workers)
            };
            let process = drain(&client, &bench_url, opts, &d).await?;
            Some(BigTableResult {
                finished_rows: BIG_TABLE_FINISHED,
                process,
            })
        } else {
            None
        };
        let held_snapshot = if opts.held_snapshot {
            let holder = plain_connect(&DbUrl::parse(&bench_url, "DATABASE_URL")?).await?;
            let d = Drain {
                hold_snapshot_on: Some(&holder),
                ..Drain::new(opts.jobs, opts.workers)
            };
            Some(drain(&client, &bench_url, opts, &d).await?)
        } else {
            None
        };
        let delete_on_success = if opts.delete_on_success {
            let d = Drain {
                delete_on_success: true,
                ..Drain::new(opts.jobs, opts.workers)
            };
            Some(drain(&client, &bench_url, opts, &d).await?)
        } else {
            None
        };
        let mut long_jobs = Vec::new();
        if opts.long_jobs {
            for slots in [500, 2_000] {
                long_jobs.push(long_jobs_run(&client, &bench_url, opts, slots).await?);
            }
        }
        let mut limit_cost = Vec::new();
        let mut fairness = Vec::new();
        if opts.limits {
            for (claim, setup) in LIMIT_SETUPS {
                let d = Drain {
                    setup,
                    ..Drain::new(opts.jobs, opts.workers)
                };
                let process = drain(&client, &bench_url, opts, &d).await?;
                limit_cost.push(LimitCostResult {
                    claim: claim.to_string(),
                    process,
                });
            }
            for fair in [false, true] {
                fairness.push(fairness_run(&client, &bench_url, opts, fair).await?);
            }
        }
        Ok::<_, Error>(Report {
            limit_cost,
            fairness,
            long_jobs,
            server,
            enqueue_single,
            enqueue_batch,
            enqueue_copy,
            process,
            latency,
            scale,
            big_table,
            held_snapshot,
            delete_on_success,
        })
    }
    .await;
    let _ = admin_client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await;
    if opts.progress && std::io::stderr().is_terminal() {
        eprintln!();
    }
    result
}

async fn plain_connect(url: &DbUrl) -> Result<Client> {
    let (c, conn) = url.pg_config().connect(url.tls().connector()?).await?;
    tokio::spawn(conn);
    Ok(c)
}

/// The admin URL with another database name, for the worker processes.
fn with_dbname(raw: &str, name: &str) -> Result<String> {
    if let Ok(mut u) = url::Url::parse(raw)
        && matches!(u.scheme(), "postgres" | "postgresql")
    {
        u.set_path(&format!("/{name}"));
        return Ok(u.to_string());
    }
    // key=value form
    let mut parts: Vec<String> = raw
        .split_whitespace()
        .filter(|p| !p.starts_with("dbname="))
        .map(String::from)
        .collect();
    parts.push(format!("dbname={name}"));
    Ok(parts.join(" "))
}

async fn server_info(c: &Client, throwaway: bool) -> Result<ServerInfo> {
    let show = |name: &'static str| async move {
        c.query_one(&format!("SHOW {name}"), &[])
            .await
            .map(|r| r.get::<_, String>(0))
    };
    Ok(ServerInfo {
        version: show("server_version").await?,
        synchronous_commit: show("synchronous_commit").await?,
        fsync: show("fsync").await?,
        shared_buffers: show("shared_buffers").await?,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        throwaway_cluster: throwaway,
    })
}

async fn reset(c: &Client) -> Result<()> {
    c.batch_execute(
        "TRUNCATE ops_jobs, ops_job_events;
         DELETE FROM ops_feature_flags;
         DELETE FROM ops_type_limits;",
    )
    .await?;
    Ok(())
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

async fn enqueue_single(c: &Client, n: u64) -> Result<EnqueueResult> {
    reset(c).await?;
    let stmt = c
        .prepare("INSERT INTO ops_jobs (job_type, payload) VALUES ('noop', $1)")
        .await?;
    let start = Instant::now();
    for i in 0..n {
        c.execute(&stmt, &[&serde_json::json!({ "n": i })]).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(EnqueueResult::new(n, secs))
}

/// One INSERT of `n` rows whose payloads come from the client (not
/// generate_series on the server), as an app's bulk enqueue would.
async fn bulk_insert(c: &Client, n: u64) -> Result<()> {
    let payloads: Vec<serde_json::Value> = (0..n).map(|i| serde_json::json!({ "n": i })).collect();
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload) SELECT 'noop', p FROM unnest($1::jsonb[]) p",
        &[&payloads],
    )
    .await?;
    Ok(())
}

async fn enqueue_batch(c: &Client, n: u64) -> Result<EnqueueResult> {
    reset(c).await?;
    let start = Instant::now();
    bulk_insert(c, n).await?;
    let secs = start.elapsed().as_secs_f64();
    Ok(EnqueueResult::new(n, secs))
}

/// The same `n` rows as `bulk_insert`, through COPY (CSV, payload quoted).
async fn enqueue_copy(c: &Client, n: u64) -> Result<EnqueueResult> {
    use futures_util::SinkExt;
    reset(c).await?;
    let start = Instant::now();
    let mut data = String::with_capacity(n as usize * 24);
    for i in 0..n {
        let payload = serde_json::json!({ "n": i })
            .to_string()
            .replace('"', "\"\"");
        data.push_str("noop,\"");
        data.push_str(&payload);
        data.push_str("\"\n");
    }
    let sink = c
        .copy_in("COPY ops_jobs (job_type, payload) FROM STDIN (FORMAT csv)")
        .await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    let written = sink.as_mut().finish().await?;
    let secs = start.elapsed().as_secs_f64();
    if written != n {
        return Err(Error::Invalid(format!(
            "COPY wrote {written} rows, not {n}"
        )));
    }
    Ok(EnqueueResult::new(n, secs))
}

struct Workers {
    children: Vec<tokio::process::Child>,
}

impl Workers {
    async fn start(
        exe: &PathBuf,
        url: &str,
        n: usize,
        concurrency: usize,
        c: &Client,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut children = Vec::new();
        for _ in 0..n {
            let child = tokio::process::Command::new(exe)
                .arg("worker")
                .envs(env.iter().copied())
                .env("DATABASE_URL", url)
                .env("OPSRUNNER_WORKER__CONCURRENCY", concurrency.to_string())
                .env("OPSRUNNER_METRICS__LISTEN", "")
                .env("OPSRUNNER_LOG__FORMAT", "json")
                .env("OPSRUNNER_LOG__LEVEL", "warn")
                .env_remove("OPSRUNNER_CONFIG")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::Invalid(format!("cannot start {}: {e}", exe.display())))?;
            children.push(child);
        }
        let w = Self { children };
        // Ready once every worker holds its LISTEN connection.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listening: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name = $1",
                    &[&crate::db::LISTENER_APPLICATION_NAME],
                )
                .await?
                .get(0);
            if listening as usize >= n {
                return Ok(w);
            }
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "only {listening} of {n} workers connected within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    async fn stop(mut self) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
        }
    }
}

/// utime + stime of a process, in seconds.
fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Busy CPU seconds of the whole machine so far (all cores).
fn machine_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, x)| x)
        .sum();
    busy / clock_ticks()
}

/// The limits comparison's drains: the claim, and the SQL that sets it up
/// once the jobs are queued.
const LIMIT_SETUPS: [(&str, &str); 3] = [
    ("unlimited", ""),
    (
        "max_running",
        "INSERT INTO ops_type_limits (job_type, max_running) VALUES ('noop', 100000)",
    ),
    (
        "fair",
        "SELECT ops_ensure_fair_index();
         UPDATE ops_jobs SET tenant_id = 'tenant-' || (abs(hashtext(id::text)) % 10);
         INSERT INTO ops_type_limits (job_type, fair) VALUES ('noop', true)",
    ),
];

/// One drain: `jobs` pre-queued noop jobs through `workers` processes.
struct Drain<'a> {
    jobs: u64,
    workers: usize,
    /// Holds a snapshot open on this session meanwhile.
    hold_snapshot_on: Option<&'a Client>,
    /// SQL run once the jobs are queued.
    setup: &'a str,
    /// The workers delete succeeded jobs (`retention.succeeded = "0s"`).
    delete_on_success: bool,
}

impl Drain<'_> {
    fn new(jobs: u64, workers: usize) -> Self {
        Self {
            jobs,
            workers,
            hold_snapshot_on: None,
            setup: "",
            delete_on_success: false,
        }
    }
}

async fn drain(c: &Client, url: &str, opts: &BenchOptions, d: &Drain<'_>) -> Result<ProcessResult> {
    let Drain {
        jobs,
        workers,
        hold_snapshot_on,
        setup,
        delete_on_success,
    } = *d;
    reset(c).await?;
    progress_line(opts, &format!("process: queueing {jobs} noop jobs…"));
    let mut left = jobs;
    while left > 0 {
        let n = left.min(100_000);
        bulk_insert(c, n).await?;
        left -= n;
    }
    if !setup.is_empty() {
        c.batch_execute(setup).await?;
    }
    c.batch_execute("VACUUM ANALYZE ops_jobs").await?;
    if let Some(h) = hold_snapshot_on {
        // An idle REPEATABLE READ transaction, as a forgotten psql session or
        // a long report would leave: no row version the drain makes dead can
        // be pruned while it lives.
        h.batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ops_feature_flags;",
        )
        .await?;
    }
    let env: &[(&str, &str)] = if delete_on_success {
        &[("OPSRUNNER_RETENTION__SUCCEEDED", "0s")]
    } else {
        &[]
    };
    let w = Workers::start(&opts.exe, url, workers, opts.concurrency, c, env).await?;
    let pids = w.pids();
    let cpu0: f64 = pids.iter().map(|p| process_cpu(*p)).sum();
    let commits0 = commits(c).await?;
    let machine0 = machine_cpu();
    let wall = Instant::now();
    // The switch: every worker sees the flag within milliseconds (NOTIFY).
    c.batch_execute(
        "INSERT INTO ops_feature_flags (name, enabled, reason, updated_by)
         VALUES ('noop', true, 'bench', 'opsrunner bench')",
    )
    .await?;
    let label = format!(
        "process {jobs} jobs, {workers} workers x {}",
        opts.concurrency
    );
    // Deleted jobs leave no finished_at to time the drain by: then the
    // drain ends when the bench first sees none left, asked every 20 ms
    // (under 1 % of a 100,000-job drain) with a probe that stops at the
    // first unfinished row. Counting them that often took a core of its own
    // and made the drain it timed 20 % slower.
    let poll = Duration::from_millis(if delete_on_success { 20 } else { 1000 });
    let mut last_count = Instant::now();
    let drained_after = loop {
        tokio::time::sleep(poll).await;
        if delete_on_success && last_count.elapsed() < Duration::from_secs(1) {
            if !any_unfinished(c).await? {
                break wall.elapsed().as_secs_f64();
            }
            continue;
        }
        last_count = Instant::now();
        let remaining = unfinished(c).await?;
        let done = jobs.saturating_sub(remaining as u64);
        progress(opts, &label, done, jobs, wall.elapsed());
        if remaining == 0 {
            break wall.elapsed().as_secs_f64();
        }
        if wall.elapsed() > Duration::from_secs(3600) {
            w.stop().await;
            return Err(Error::Invalid("jobs not processed within an hour".into()));
        }
    };
    let cpu1: f64 = pids.iter().map(|p| process_cpu(*p)).sum();
    // Before the wait below: sampled after it, the machine's CPU and the
    // capacity took in 1.1 s of an idle machine, and a drain that kept both
    // cores 90 % busy read as 60 %.
    let machine1 = machine_cpu();
    let elapsed_wall = wall.elapsed().as_secs_f64();
    // pg_stat_database is flushed by backends about once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let commits1 = commits(c).await?;
    let row = c
        .query_one(
            "SELECT extract(epoch FROM max(j.finished_at) - min(f.updated_at))::float8,
                    count(*) FILTER (WHERE j.status <> 'succeeded')
             FROM ops_jobs j, ops_feature_flags f WHERE f.name = 'noop'",
            &[],
        )
        .await?;
    w.stop().await;
    if let Some(h) = hold_snapshot_on {
        h.batch_execute("COMMIT").await?;
    }
    let secs: f64 = if delete_on_success {
        drained_after
    } else {
        row.try_get::<_, Option<f64>>(0)?.unwrap_or(drained_after)
    };
    let not_ok: i64 = row.get(1);
    if not_ok > 0 {
        return Err(Error::Invalid(format!(
            "{not_ok} jobs did not succeed during the benchmark"
        )));
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Ok(ProcessResult {
        jobs,
        workers,
        concurrency: opts.concurrency,
        seconds: secs,
        jobs_per_second: rate(jobs, secs),
        worker_cpu_seconds: cpu1 - cpu0,
        machine_cpu_seconds: machine1 - machine0,
        wall_cpu_capacity_seconds: elapsed_wall * cpus as f64,
        commits_per_job: (commits1 - commits0) as f64 / jobs.max(1) as f64,
    })
}

/// Jobs not yet in a terminal state.
/// 50 jobs per slot of 100 ms `sleep` into one worker process, all queued
/// before the flag goes on.
async fn long_jobs_run(
    c: &Client,
    url: &str,
    opts: &BenchOptions,
    slots: usize,
) -> Result<LongJobsResult> {
    reset(c).await?;
    let jobs = slots as u64 * 50;
    progress_line(
        opts,
        &format!("long jobs: {jobs} x {LONG_JOB_MS} ms, {slots} slots…"),
    );
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload)
         SELECT 'sleep', jsonb_build_object('ms', $2::int) FROM generate_series(1, $1)",
        &[&(jobs as i32), &(LONG_JOB_MS as i32)],
    )
    .await?;
    c.batch_execute("VACUUM ANALYZE ops_jobs").await?;
    let w = Workers::start(&opts.exe, url, 1, slots, c, &[]).await?;
    let pids = w.pids();
    let cpu0: f64 = pids.iter().map(|p| process_cpu(*p)).sum();
    c.batch_execute(
        "INSERT INTO ops_feature_flags (name, enabled, reason, updated_by)
         VALUES ('sleep', true, 'bench', 'opsrunner bench')",
    )
    .await?;
    let wall = Instant::now();
    while unfinished(c).await? > 0 {
        if wall.elapsed() > Duration::from_secs(600) {
            w.stop().await;
            return Err(Error::Invalid("long jobs not drained within 600 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu: f64 = pids.iter().map(|p| process_cpu(*p)).sum::<f64>() - cpu0;
    w.stop().await;
    // The window in which the queue could keep every slot busy: from the
    // start of the `slots`-th job to the last start.
    let row = c
        .query_one(
            "WITH s AS (SELECT started_at, row_number() OVER (ORDER BY started_at) AS n FROM ops_jobs)
             SELECT count(*) FILTER (WHERE n > $1)::float8,
                    extract(epoch FROM max(started_at) - max(started_at) FILTER (WHERE n = $1))::float8
             FROM s",
            &[&(slots as i64)],
        )
        .await?;
    let (started, secs): (f64, Option<f64>) = (row.get(0), row.get(1));
    let most = secs.unwrap_or(0.0) * slots as f64 / (LONG_JOB_MS as f64 / 1000.0);
    Ok(LongJobsResult {
        slots,
        jobs,
        busy_ratio: if most > 0.0 { started / most } else { 0.0 },
        worker_cpu_seconds: cpu,
    })
}

/// See [`FairnessResult`].
async fn fairness_run(
    c: &Client,
    url: &str,
    opts: &BenchOptions,
    fair: bool,
) -> Result<FairnessResult> {
    const FLOOD: i32 = 40_000;
    const OTHER: u64 = 200;
    reset(c).await?;
    progress_line(
        opts,
        &format!(
            "fairness ({}): one tenant floods, another enqueues one job per 50 ms…",
            if fair { "fair claiming" } else { "plain claim" }
        ),
    );
    c.execute(
        "INSERT INTO ops_jobs (job_type, payload, priority, tenant_id)
         SELECT 'sleep', '{\"ms\": 50}', -10, 'flood' FROM generate_series(1, $1)",
        &[&FLOOD],
    )
    .await?;
    if fair {
        c.batch_execute(
            "SELECT ops_ensure_fair_index();
             INSERT INTO ops_type_limits (job_type, fair) VALUES ('sleep', true)",
        )
        .await?;
    }
    c.batch_execute("VACUUM ANALYZE ops_jobs").await?;
    let w = Workers::start(&opts.exe, url, 1, opts.concurrency, c, &[]).await?;
    c.batch_execute(
        "INSERT INTO ops_feature_flags (name, enabled, reason, updated_by)
         VALUES ('sleep', true, 'bench', 'opsrunner bench')",
    )
    .await?;
    // Every slot busy with the flood first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let insert = c
        .prepare(
            "INSERT INTO ops_jobs (job_type, payload, tenant_id)
             VALUES ('sleep', '{\"ms\": 1}', 'other')",
        )
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..OTHER {
        tick.tick().await;
        c.execute(&insert, &[]).await?;
    }
    let wall = Instant::now();
    let unstarted = loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM ops_jobs WHERE tenant_id = 'other' AND started_at IS NULL",
                &[],
            )
            .await?
            .get(0);
        if n == 0 || wall.elapsed() > Duration::from_secs(60) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut waits: Vec<f64> = c
        .query(
            "SELECT extract(epoch FROM coalesce(started_at, clock_timestamp()) - created_at)::float8 * 1000
             FROM ops_jobs WHERE tenant_id = 'other'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    w.stop().await;
    waits.sort_by(f64::total_cmp);
    Ok(FairnessResult {
        fair,
        jobs: OTHER,
        p50_ms: percentile(&waits, 0.5),
        p99_ms: percentile(&waits, 0.99),
        max_ms: waits.last().copied().unwrap_or(0.0),
        unstarted: unstarted as u64,
    })
}

/// Whether any job is not yet in a terminal state.
async fn any_unfinished(c: &Client) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM ops_jobs WHERE status IN ('queued', 'running'))",
        &[],
    )
    .await?
    .get(0))
}

async fn unfinished(c: &Client) -> Result<i64> {
    Ok(c.query_one(
        "SELECT count(*) FROM ops_jobs WHERE status IN ('queued', 'running')",
        &[],
    )
    .await?
    .get(0))
}

async fn commits(c: &Client) -> Result<i64> {
    c.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    Ok(c.query_one(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )
    .await?
    .get(0))
}

async fn latency(c: &Client, url: &str, opts: &BenchOptions) -> Result<LatencyResult> {
    reset(c).await?;
    c.batch_execute(
        "INSERT INTO ops_feature_flags (name, enabled, reason, updated_by)
         VALUES ('noop', true, 'bench', 'opsrunner bench')",
    )
    .await?;
    let w = Workers::start(&opts.exe, url, 1, opts.concurrency, c, &[]).await?;
    // Let the worker settle into idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stmt = c
        .prepare("INSERT INTO ops_jobs (job_type) VALUES ('noop') RETURNING id")
        .await?;
    let start = Instant::now();
    let mut insert_ms = std::collections::HashMap::new();
    for i in 0..opts.latency_samples {
        let sent = Instant::now();
        let id: uuid::Uuid = c.query_one(&stmt, &[]).await?.get(0);
        insert_ms.insert(id, sent.elapsed().as_secs_f64() * 1000.0);
        progress(
            opts,
            "latency samples",
            i + 1,
            opts.latency_samples,
            start.elapsed(),
        );
        // Idle between jobs: each one finds the worker waiting.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let remaining = unfinished(c).await?;
        if remaining == 0 {
            break;
        }
        if Instant::now() > deadline {
            w.stop().await;
            return Err(Error::Invalid(
                "latency jobs not processed within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.stop().await;
    let rows = c
        .query(
            "SELECT id, extract(epoch FROM started_at - created_at)::float8 * 1000 FROM ops_jobs",
            &[],
        )
        .await?;
    let mut all: Vec<f64> = Vec::with_capacity(rows.len());
    let mut slow = Vec::new();
    for r in &rows {
        let (id, total_ms): (uuid::Uuid, f64) = (r.get(0), r.get(1));
        all.push(total_ms);
        if total_ms > SLOW_SAMPLE_MS {
            let insert_commit_ms = insert_ms.get(&id).copied().unwrap_or(f64::NAN);
            slow.push(SlowSample {
                total_ms,
                insert_commit_ms,
                pickup_ms: (total_ms - insert_commit_ms).max(0.0),
            });
        }
    }
    all.sort_by(f64::total_cmp);
    slow.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    Ok(LatencyResult {
        samples: opts.latency_samples,
        p50_ms: percentile(&all, 0.50),
        p95_ms: percentile(&all, 0.95),
        p99_ms: percentile(&all, 0.99),
        p999_ms: percentile(&all, 0.999),
        max_ms: all.last().copied().unwrap_or(0.0),
        slow,
    })
}

/// Linear interpolation between closest ranks, as `percentile_cont` does.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn progress_line(opts: &BenchOptions, msg: &str) {
    if opts.progress && std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K{msg}");
        let _ = std::io::stderr().flush();
    }
}

fn progress(opts: &BenchOptions, label: &str, done: u64, total: u64, elapsed: Duration) {
    if !(opts.progress && std::io::stderr().is_terminal()) {
        return;
    }
    let width = 30usize;
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((frac * width as f64) as usize).min(width);
    eprint!(
        "\r\x1b[2K{label} [{}{}] {done}/{total} {:.0}/s",
        "#".repeat(filled),
        " ".repeat(width - filled),
        rate(done, elapsed.as_secs_f64())
    );
    let _ = std::io::stderr().flush();
}

/// One drain's line of the report, after `label`.
fn drain_line(label: &str, p: &ProcessResult) -> String {
    format!(
        "{label:<30}{:>9.0} jobs/s  ({} jobs, {} workers x {} slots, {:.2} s; \
         worker CPU {:.1} s, machine CPU {:.1} of {:.1} s, {:.3} commits/job)\n",
        p.jobs_per_second,
        p.jobs,
        p.workers,
        p.concurrency,
        p.seconds,
        p.worker_cpu_seconds,
        p.machine_cpu_seconds,
        p.wall_cpu_capacity_seconds,
        p.commits_per_job
    )
}

/// The report as the table the CLI prints.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let srv = &r.server;
    s.push_str(&format!(
        "PostgreSQL {} (synchronous_commit={}, fsync={}, shared_buffers={}){}, {} CPUs\n",
        srv.version,
        srv.synchronous_commit,
        srv.fsync,
        srv.shared_buffers,
        if srv.throwaway_cluster {
            ", throwaway cluster"
        } else {
            ""
        },
        srv.cpus
    ));
    s.push_str(&format!(
        "enqueue, single-row INSERTs:  {:>9.0} rows/s  ({} rows in {:.2} s)\n",
        r.enqueue_single.rows_per_second, r.enqueue_single.rows, r.enqueue_single.seconds
    ));
    s.push_str(&format!(
        "enqueue, one batched INSERT:  {:>9.0} rows/s  ({} rows in {:.2} s)\n",
        r.enqueue_batch.rows_per_second, r.enqueue_batch.rows, r.enqueue_batch.seconds
    ));
    s.push_str(&format!(
        "enqueue, COPY:                {:>9.0} rows/s  ({} rows in {:.2} s)\n",
        r.enqueue_copy.rows_per_second, r.enqueue_copy.rows, r.enqueue_copy.seconds
    ));
    if let Some(h) = &r.held_snapshot {
        s.push_str(&format!(
            "with a snapshot held open:    {:>9.0} jobs/s  ({} jobs; {:.0} jobs/s without)\n",
            h.jobs_per_second, h.jobs, r.process.jobs_per_second
        ));
    }
    for p in std::iter::once(&r.process).chain(r.scale.iter()) {
        s.push_str(&drain_line("processed noop jobs:", p));
    }
    if let Some(p) = &r.delete_on_success {
        s.push_str(&drain_line("delete-on-success:", p));
    }
    if let Some(bt) = &r.big_table {
        let label = format!("beside {} finished rows:", bt.finished_rows);
        s.push_str(&drain_line(&label, &bt.process));
    }
    let l = &r.latency;
    s.push_str(&format!(
        "enqueue-to-start, idle worker: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} jobs)\n",
        l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
    ));
    for lj in &r.long_jobs {
        s.push_str(&format!(
            "long jobs ({LONG_JOB_MS} ms sleep), 1 worker x {} slots: {:.1} % of slots busy  ({} jobs; worker CPU {:.1} s)\n",
            lj.slots,
            lj.busy_ratio * 100.0,
            lj.jobs,
            lj.worker_cpu_seconds
        ));
    }
    for lc in &r.limit_cost {
        let p = &lc.process;
        s.push_str(&format!(
            "claim {:<12}               {:>9.0} jobs/s  ({} jobs, {} workers x {} slots; machine CPU {:.1} s)\n",
            lc.claim, p.jobs_per_second, p.jobs, p.workers, p.concurrency, p.machine_cpu_seconds
        ));
    }
    for f in &r.fairness {
        s.push_str(&format!(
            "fairness, {:<13} the other tenant's queue wait p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} jobs, {} unstarted)\n",
            if f.fair { "fair claim:" } else { "plain claim:" },
            f.p50_ms, f.p99_ms, f.max_ms, f.jobs, f.unstarted
        ));
    }
    for slow in &l.slow {
        s.push_str(&format!(
            "  over {SLOW_SAMPLE_MS} ms: {:.1} ms = {:.1} ms for the INSERT to commit (the job is invisible until then) + {:.1} ms wake-up and claim\n",
            slow.total_ms, slow.insert_commit_ms, slow.pickup_ms
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_interpolate_between_ranks_as_percentile_cont_does() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 500.5);
        assert!((percentile(&v, 0.999) - 999.001).abs() < 1e-9);
        assert_eq!(percentile(&v, 1.0), 1000.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }
}
