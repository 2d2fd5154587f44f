//! The `opsrunner` command line. This is the binary's edge: errors become
//! `anyhow` here and nowhere else. `run` dispatches each subcommand to its
//! module, which writes to an injected `out` (River's `CommandBase.Out`), so
//! that its output is testable without spawning the binary.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use uuid::Uuid;

pub mod bench;
mod ctx;
mod daemon;
pub mod dev;
mod flags;
mod jobs;
mod keys;
mod limits;
pub mod logging;
mod schedules;
mod schema;
mod tenants;
mod token;
mod top;

pub use ctx::Ctx;

#[derive(Parser, Debug)]
#[command(
    name = "opsrunner",
    version,
    about = "Runs operations jobs out of PostgreSQL",
    long_about = None
)]
/// The command line.
pub struct Cli {
    /// TOML config file (also OPSRUNNER_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the embedded schema migrations (idempotent).
    Migrate {
        /// Wait this long for the database to accept connections (at boot
        /// it may still be starting), retrying with backoff; without it, a
        /// database that does not answer fails at once
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// Run the worker daemon.
    Worker,
    /// Run the HTTP shim: authenticated enqueue that only inserts rows.
    Serve,
    /// Scoped API keys for the HTTP shim.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Policy tokens for action job types.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the HTTP shim's OpenAPI document (docs/openapi.json).
    Openapi,
    /// Measure enqueue and processing throughput and enqueue-to-start
    /// latency, in a database of its own on the DATABASE_URL server (or a
    /// throwaway cluster with default durability when it is unset).
    Bench(BenchArgs),
    /// Check config, connectivity and schema version, then exit.
    Check,
    /// Delete finished jobs and audit rows past their retention now (the
    /// daemons also do this every retention.interval).
    Prune,
    /// Insert one job.
    Enqueue(EnqueueArgs),
    /// Inspect jobs.
    Jobs {
        /// What to do with jobs.
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Feature flags: one per job type; absent means off.
    Flags {
        /// What to do with flags.
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// Which tenant each application login role enqueues for.
    Tenants {
        /// What to do with bindings.
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Per-type concurrency limits across every daemon.
    Limits {
        /// What to do with limits.
        #[command(subcommand)]
        command: LimitsCommand,
    },
    /// Cron schedules: each slot enqueues one job, exactly once, from the
    /// elected daemon.
    Schedules {
        /// What to do with schedules.
        #[command(subcommand)]
        command: SchedulesCommand,
    },
    /// A live view of the queue: per job type and queue, queued, scheduled,
    /// running, finished per minute and the oldest age, and the daemons
    /// holding leases. Refreshes every second; q or Ctrl-C quits. Not on a
    /// terminal (a pipe), it prints one table and exits.
    Top {
        /// Print one table and exit.
        #[arg(long)]
        once: bool,
        /// Between refreshes (slower by itself when a read takes long).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// The numbers `top` shows, once: a table, or JSON for scripts.
    Stats {
        /// One JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// A throwaway local setup: Postgres (when DATABASE_URL is unset),
    /// migrations, a worker and a demo job.
    Dev {
        /// Exit once the demo job has finished.
        #[arg(long)]
        exit_after_demo: bool,
    },
}

/// `opsrunner bench`'s options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Pre-queued noop jobs processed end to end.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Slots per worker process.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Single-row INSERTs timed one after another.
    #[arg(long, default_value_t = 2_000)]
    pub single_inserts: u64,
    /// Rows of the one batched INSERT (and the COPY).
    #[arg(long, default_value_t = 100_000)]
    pub batch_rows: u64,
    /// Enqueue-to-start samples into an idle worker.
    #[arg(long, default_value_t = 500)]
    pub latency_samples: u64,
    /// Also run 10k/100k/1M jobs and 1/2/4 workers (minutes).
    #[arg(long)]
    pub scale: bool,
    /// Also drain 1M queued jobs from a table that holds 9M finished ones
    /// (10M rows; several minutes and about 3 GB of disk)
    #[arg(long)]
    pub big_table: bool,
    /// Also drain the jobs again with delete-on-success (retention.succeeded =
    /// "0s": succeeded jobs deleted, not kept), reported separately
    #[arg(long)]
    pub delete_on_success: bool,
    /// Also drain the jobs again while another session holds a snapshot
    /// open, to measure what an idle transaction costs the claim.
    #[arg(long)]
    pub held_snapshot: bool,
    /// Also run 100 ms sleep jobs through one worker at 500 and 2,000 slots
    /// and report the share of slots kept busy
    #[arg(long)]
    pub long_jobs: bool,
    /// Also measure what per-type limits and fair claiming cost against
    /// the unlimited claim, and run the fairness run (one tenant flooding,
    /// another's queue wait, with and without fair claiming)
    #[arg(long)]
    pub limits: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `opsrunner enqueue`'s options.
#[derive(clap::Args, Debug)]
pub struct EnqueueArgs {
    /// The job type.
    pub job_type: String,
    /// The payload, as JSON.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// The queue.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Lower runs first (-100..100).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i16,
    /// RFC 3339 time, e.g. 2026-11-23T08:00:00Z.
    #[arg(long)]
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job fails (1..100).
    #[arg(long, default_value_t = 3)]
    pub max_attempts: i32,
    /// e.g. 30s, 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Repeating the same key creates no second job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Enqueue even a job type this configuration does not know (one an
    /// embedding program serves, say).
    #[arg(long)]
    pub force: bool,
}

/// `opsrunner jobs …`.
#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Newest first.
    List {
        /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only jobs of this type.
        #[arg(long = "type")]
        job_type: Option<String>,
        /// At most this many (1..200).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only jobs this cron schedule enqueued.
        #[arg(long)]
        schedule: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job with its transition history.
    Show {
        /// The job's id.
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed or cancelled job back into the queue, attempts reset.
    Retry {
        /// The job's id; or, instead, a filter (--status failed|cancelled …)
        /// to retry every matching job in batches.
        id: Option<Uuid>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// Instead of an id: which jobs.
        #[command(flatten)]
        filter: BulkArgs,
    },
    /// Cancel a queued job now, or ask a running job's worker to stop it.
    /// For handlers that cannot stop, cancellation is intent only.
    Cancel {
        /// The job's id; or, instead, a filter (--status queued|running …)
        /// to cancel every matching job in batches.
        id: Option<Uuid>,
        /// Why, for the job's error and the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// Instead of an id: which jobs.
        #[command(flatten)]
        filter: BulkArgs,
    },
}

/// The filter of a bulk `jobs retry` or `jobs cancel`.
#[derive(clap::Args, Debug, Default)]
pub struct BulkArgs {
    /// Every job in this state (retry: failed or cancelled; cancel: queued
    /// or running).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this job type.
    #[arg(long = "type")]
    pub job_type: Option<String>,
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs finished (retry) or created (cancel) this recently, e.g. 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Only count the matching jobs; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `opsrunner keys …`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; it is printed once and never stored.
    Create {
        /// A label for operators, e.g. the calling service.
        #[arg(long)]
        name: String,
        /// Comma-separated: jobs:read, jobs:write, jobs:cancel.
        #[arg(long, default_value = "jobs:read,jobs:write,jobs:cancel")]
        scopes: String,
        /// The tenant whose jobs the key sees and creates.
        #[arg(long)]
        tenant: String,
        /// e.g. 90d; no expiry when omitted.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Every key, by prefix only.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id (from `keys list`).
        id: Uuid,
    },
}

/// `opsrunner tenants …`.
#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Bind an application's login role (a member of opsrunner_app) to a
    /// tenant: every job it inserts belongs to that tenant.
    Bind {
        /// The login role.
        role: String,
        /// The tenant.
        tenant: String,
    },
    /// Every binding.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a binding: the role's inserts are refused until bound again.
    Unbind {
        /// The login role.
        role: String,
    },
}

/// `opsrunner token …`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Sign a policy token with OPS_POLICY_SECRET and print it.
    Sign {
        /// The action job type it permits.
        #[arg(long)]
        action: String,
        /// Who asks (recorded in the audit log).
        #[arg(long)]
        actor: String,
        /// The tenant of the job; omit for jobs without a tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated scopes, e.g. ops:execute.
        #[arg(long, default_value = "ops:execute")]
        scopes: String,
        /// Validity, at most 7 days.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// `opsrunner limits …`.
#[derive(Subcommand, Debug)]
pub enum LimitsCommand {
    /// Set TYPE's limits, across every daemon (in effect within a second
    /// on every daemon; jobs over a limit wait queued, never fail). Options
    /// not given keep their value; `none` removes that rule.
    Set {
        /// The job type.
        job_type: String,
        /// The most that may run at once (1..100000, or none).
        #[arg(long, value_name = "N|none")]
        max_running: Option<String>,
        /// The most started per second or per minute: `20/s`, `600/min`
        /// (1..1000000), or none.
        #[arg(long, value_name = "N/s|N/min|none")]
        rate: Option<String>,
        /// The most that may run at once per tenant (1..100000, or none);
        /// implies --fair.
        #[arg(long, value_name = "N|none")]
        per_tenant_max_running: Option<String>,
        /// Claim round-robin across tenants: one tenant's backlog delays
        /// another's job by at most one claim.
        #[arg(long, conflicts_with = "no_fair")]
        fair: bool,
        /// Stop claiming round-robin (unless a per-tenant limit is set).
        #[arg(long)]
        no_fair: bool,
    },
    /// Every limit's rules, with the type's running jobs now.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every limit of TYPE.
    Clear {
        /// The job type.
        job_type: String,
    },
}

/// `opsrunner schedules …`.
#[derive(Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Create a schedule (or, with --replace, redefine one made by the CLI).
    Add {
        /// Its name.
        name: String,
        /// Five cron fields (minute hour day month weekday), or six with
        /// seconds first, e.g. "0 3 * * *" or "*/10 * * * * *".
        #[arg(long)]
        cron: String,
        /// The job type each slot enqueues.
        #[arg(long = "type")]
        job_type: String,
        /// The jobs' payload, as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// IANA time zone the expression is read in.
        #[arg(long = "tz", default_value = "UTC")]
        time_zone: String,
        /// The jobs' queue.
        #[arg(long, default_value = "default")]
        queue: String,
        /// The jobs' priority (-100..100, lower first).
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        priority: i16,
        /// The jobs' attempts (1..100).
        #[arg(long, default_value_t = 3)]
        max_attempts: i32,
        /// The jobs' timeout, e.g. 30m (default: the worker's).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// After downtime: skip, latest (the most recent missed slot once)
        /// or all:N (the most recent N missed slots).
        #[arg(long, default_value = "latest")]
        catch_up: String,
        /// Redefine an existing CLI-made schedule of this name.
        #[arg(long)]
        replace: bool,
    },
    /// Every schedule: expression, zone, type, next and last slot.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One schedule and its recent slots with the jobs they enqueued.
    Show {
        /// Its name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run again from the next slot after now (missed time is not caught up).
    Enable {
        /// Its name.
        name: String,
    },
    /// Stop enqueueing (slots while disabled are not caught up later).
    Disable {
        /// Its name.
        name: String,
    },
    /// Delete a schedule (its jobs stay).
    Remove {
        /// Its name.
        name: String,
    },
    /// Enqueue one extra job of the schedule now (audited).
    RunNow {
        /// Its name.
        name: String,
    },
}

/// `opsrunner flags …`.
#[derive(Subcommand, Debug)]
pub enum FlagsCommand {
    /// Every flag with its state, who changed it and why.
    List,
    /// Claim jobs of this type again, on every daemon within a second.
    Enable {
        /// The flag (a job type).
        name: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// Enable even a job type this configuration does not know.
        #[arg(long)]
        force: bool,
    },
    /// Stop claiming jobs of this type on every daemon within a second.
    Disable {
        /// The flag (a job type).
        name: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// Also ask running jobs of this type to cancel.
        #[arg(long)]
        cancel_running: bool,
    },
    /// The global switch: no daemon claims anything until `resume`.
    Pause {
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Undo `pause`.
    Resume {
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// The binary's `main`: parses the arguments, runs the command on a tokio
/// runtime, prints the error chain on failure. Output to a closed pipe
/// (`opsrunner jobs list | head -1`) ends quietly with exit 0.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether the reader of our output went away (EPIPE): not an error of ours.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs one parsed command line, writing its output to stdout.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(crate::config::config_path(cli.config));
    let stdout = std::io::stdout();
    let out = &mut stdout.lock();
    match cli.command {
        Command::Openapi => openapi(out),
        Command::Token { command } => token::run(command, &ctx, out),
        Command::Bench(args) => bench::run_cli(args, &ctx, out).await,
        Command::Dev { exit_after_demo } => dev::run_cli(exit_after_demo, &ctx, out).await,
        Command::Migrate { wait } => schema::migrate(&ctx, wait, out).await,
        Command::Check => schema::check(&ctx, out).await,
        Command::Prune => schema::prune(&ctx, out).await,
        Command::Worker => daemon::worker(&ctx).await,
        Command::Serve => daemon::serve(&ctx).await,
        Command::Keys { command } => keys::run(command, &ctx, out).await,
        Command::Enqueue(args) => jobs::enqueue(args, &ctx, out).await,
        Command::Jobs { command } => jobs::run(command, &ctx, out).await,
        Command::Flags { command } => flags::run(command, &ctx, out).await,
        Command::Tenants { command } => tenants::run(command, &ctx, out).await,
        Command::Schedules { command } => schedules::run(command, &ctx, out).await,
        Command::Limits { command } => limits::run(command, &ctx, out).await,
        Command::Top { once, interval } => top::top(&ctx, once, interval, out).await,
        Command::Stats { json } => top::stats(&ctx, json, out).await,
    }
}

/// `opsrunner openapi`: needs no configuration at all.
fn openapi(out: &mut impl Write) -> anyhow::Result<()> {
    crate::cli::logging::init_default();
    write!(out, "{}", crate::api::openapi::json())?;
    Ok(())
}
