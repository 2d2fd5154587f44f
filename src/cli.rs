//! The `opsrunner` command line. This is the binary's edge: errors become
//! `anyhow` here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, Settings, config_path};
use crate::handlers::Registry;
use crate::jobs::NewJob;
use crate::worker::Worker;

#[derive(Parser, Debug)]
#[command(
    name = "opsrunner",
    version,
    about = "Runs operations jobs out of PostgreSQL"
)]
pub struct Cli {
    /// TOML config file (also OPSRUNNER_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the embedded schema migrations (idempotent).
    Migrate,
    /// Run the worker daemon.
    Worker,
    /// Run the HTTP shim: authenticated enqueue that only inserts rows.
    Serve,
    /// Scoped API keys for the HTTP shim.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Policy tokens for action job types.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the HTTP shim's OpenAPI document (docs/openapi.json).
    Openapi,
    /// Measure enqueue and processing throughput and enqueue-to-start
    /// latency, in a database of its own on the DATABASE_URL server (or a
    /// throwaway cluster with default durability when it is unset).
    Bench {
        /// Pre-queued noop jobs processed end to end.
        #[arg(long, default_value_t = 100_000)]
        jobs: u64,
        /// Worker processes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Slots per worker process.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        #[arg(long, default_value_t = 2_000)]
        single_inserts: u64,
        #[arg(long, default_value_t = 100_000)]
        batch_rows: u64,
        #[arg(long, default_value_t = 500)]
        latency_samples: u64,
        /// Also run 10k/100k/1M jobs and 1/2/4 workers (minutes).
        #[arg(long)]
        scale: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check config, connectivity and schema version, then exit.
    Check,
    /// Delete finished jobs and audit rows past their retention now (the
    /// daemons also do this every retention.interval).
    Prune,
    /// Insert one job.
    Enqueue {
        job_type: String,
        /// The payload, as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(long, default_value = "default")]
        queue: String,
        /// Lower runs first (-100..100).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i16,
        /// RFC 3339 time, e.g. 2026-11-23T08:00:00Z.
        #[arg(long)]
        run_at: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 3)]
        max_attempts: i32,
        /// e.g. 30s, 5m.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Inspect jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Feature flags: one per job type; absent means off.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// A throwaway local setup: Postgres (when DATABASE_URL is unset),
    /// migrations, a worker and a demo job.
    Dev {
        /// Exit once the demo job has finished.
        #[arg(long)]
        exit_after_demo: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long = "type")]
        job_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One job with its transition history.
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Put a failed or cancelled job back into the queue, attempts reset.
    Retry {
        id: Uuid,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel a queued job now, or ask a running job's worker to stop it.
    /// For handlers that cannot stop, cancellation is intent only.
    Cancel {
        id: Uuid,
        #[arg(long)]
        reason: Option<String>,
    },
}

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
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: Uuid },
}

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

#[derive(Subcommand, Debug)]
pub enum FlagsCommand {
    List,
    Enable {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop claiming jobs of this type on every daemon within a second.
    Disable {
        name: String,
        #[arg(long)]
        reason: Option<String>,
        /// Also ask running jobs of this type to cancel.
        #[arg(long)]
        cancel_running: bool,
    },
    /// The global switch: no daemon claims anything until `resume`.
    Pause {
        #[arg(long)]
        reason: Option<String>,
    },
    Resume {
        #[arg(long)]
        reason: Option<String>,
    },
}

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
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cancels the returned token on the first SIGTERM or SIGINT; a second one
/// exits at once (leases recover whatever was running).
fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("signal received: stopping gracefully (send again to exit at once)");
                t.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}

/// SIGHUP: re-read the config file and apply it without dropping running
/// jobs. A file that does not load is reported and the old config kept.
fn reload_on_sighup(
    reloader: crate::worker::Reloader,
    path: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let result = Settings::load(path.as_deref()).and_then(|s| {
                let registry = Registry::from_settings(&s)?;
                reloader.apply(&s, registry)
            });
            match result {
                Ok(restart) if restart.is_empty() => {}
                Ok(restart) => {
                    tracing::warn!(settings = ?restart, "these changes need a restart and were not applied")
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration")
                }
            }
        }
    });
    Ok(())
}

async fn set_flag(
    client: &tokio_postgres::Client,
    name: &str,
    enabled: bool,
    reason: Option<String>,
    cancel_running: bool,
) -> anyhow::Result<i64> {
    let by = crate::flags::operator_identity();
    Ok(crate::flags::set(
        client,
        name,
        enabled,
        reason.as_deref(),
        &by,
        cancel_running,
    )
    .await?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let path = config_path(cli.config.clone());
    let settings = Settings::load(path.as_deref())?;
    crate::logging::init(settings.log.format, settings.log.level.as_deref());

    if let Command::Openapi = cli.command {
        print!("{}", crate::api::openapi::json());
        return Ok(());
    }
    if let Command::Token { command } = cli.command {
        return sign_token(command);
    }
    if let Command::Bench {
        jobs,
        workers,
        concurrency,
        single_inserts,
        batch_rows,
        latency_samples,
        scale,
        json,
    } = cli.command
    {
        let opts = crate::bench::BenchOptions {
            jobs,
            workers,
            concurrency,
            single_inserts,
            batch_rows,
            latency_samples,
            scale,
            progress: !json,
            exe: std::env::current_exe().context("locating the opsrunner binary")?,
        };
        let report = crate::bench::run(crate::config::database_url_from_env()?, &opts).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", crate::bench::render(&report));
        }
        return Ok(());
    }
    if let Command::Dev { exit_after_demo } = cli.command {
        let shutdown = shutdown_on_signals()?;
        crate::dev::run(
            settings,
            crate::dev::DevOptions { exit_after_demo },
            shutdown,
        )
        .await?;
        return Ok(());
    }

    let config = Config::with_url(
        settings.clone(),
        crate::config::database_url_from_env()?.ok_or_else(|| {
            anyhow::anyhow!("configuration error: DATABASE_URL is not set; set it (or DATABASE_URL_FILE) to a postgres:// URL")
        })?,
    )?;
    let connect = || crate::db::connect(&config.database_url, &config.settings.db, "opsrunner-cli");

    match cli.command {
        Command::Dev { .. } | Command::Openapi | Command::Token { .. } | Command::Bench { .. } => {
            unreachable!("handled above")
        }
        Command::Serve => {
            let env = crate::api::AppEnv::from_env()?;
            let master = crate::api::master_key_from_env(env)?;
            if master.is_none() {
                tracing::warn!(
                    "APP_ENV is development and OPS_API_KEY is unset: only scoped keys from `opsrunner keys create` authenticate"
                );
            }
            let state = crate::api::ApiState::new(
                &config,
                master,
                Registry::from_settings(&config.settings)?,
                config.policy()?,
            )?;
            let shutdown = shutdown_on_signals()?;
            // The shim's metrics listen apart from a worker's on the same VM.
            let mut metrics_settings = config.settings.clone();
            metrics_settings.metrics.listen = config.settings.api.metrics_listen.clone();
            crate::metrics::start(
                &metrics_settings,
                std::sync::Arc::new(|| None),
                shutdown.clone(),
            )
            .await?;
            crate::api::serve(state, shutdown).await?;
        }
        Command::Keys { command } => {
            let client = connect().await?;
            crate::migrate::check_schema(&client).await?;
            let by = crate::flags::operator_identity();
            match command {
                KeysCommand::Create {
                    name,
                    scopes,
                    tenant,
                    expires_in,
                } => {
                    let scopes = crate::keys::parse_scopes(&scopes)?;
                    let expires_at = expires_in
                        .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
                        .transpose()
                        .context("--expires-in is too long")?;
                    let (id, key) =
                        crate::keys::create(&client, &name, &scopes, &tenant, expires_at, &by)
                            .await?;
                    eprintln!(
                        "key {id} created for tenant {tenant} with scopes {}; it is shown once, store it now:",
                        scopes.join(",")
                    );
                    println!("{key}");
                }
                KeysCommand::List { json } => {
                    let keys = crate::keys::list(&client).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&keys)?);
                    } else {
                        println!(
                            "{:<36}  {:<20} {:<12} {:<16} {:<34} state",
                            "id", "name", "prefix", "tenant", "scopes"
                        );
                        let now = Utc::now();
                        for k in keys {
                            let state = if k.revoked_at.is_some() {
                                "revoked"
                            } else if k.expires_at.is_some_and(|e| e <= now) {
                                "expired"
                            } else {
                                "active"
                            };
                            println!(
                                "{:<36}  {:<20} {:<12} {:<16} {:<34} {state}",
                                k.id,
                                k.name,
                                k.prefix,
                                k.tenant,
                                k.scopes.join(",")
                            );
                        }
                    }
                }
                KeysCommand::Revoke { id } => {
                    if !crate::keys::revoke(&client, id, &by).await? {
                        bail!("no active key {id}");
                    }
                    println!("{id}: revoked");
                }
            }
        }
        Command::Migrate => {
            let mut client = connect().await?;
            let applied = crate::migrate::migrate(&mut client).await?;
            if applied.is_empty() {
                println!(
                    "schema is up to date (version {})",
                    crate::migrate::latest_version()
                );
            } else {
                println!(
                    "applied migrations {applied:?}; schema is at version {}",
                    crate::migrate::latest_version()
                );
            }
        }
        Command::Prune => {
            let client = connect().await?;
            crate::migrate::check_schema(&client).await?;
            let c = crate::maintenance::prune_all(&client, &config.settings.retention).await?;
            println!(
                "deleted {} finished jobs ({} events) and {} audit rows",
                c.jobs_deleted, c.events_deleted, c.audit_deleted
            );
        }
        Command::Check => {
            let client = connect().await?;
            crate::migrate::check_schema(&client).await?;
            println!(
                "ok: config valid, {} reachable, schema at version {}",
                config.database_url.describe(),
                crate::migrate::latest_version()
            );
        }
        Command::Worker => {
            let shutdown = shutdown_on_signals()?;
            let worker = Worker::new(&config, Registry::from_settings(&config.settings)?)?;
            reload_on_sighup(worker.reloader(), path.clone())?;
            crate::metrics::start(&config.settings, worker.ready_check(), shutdown.clone()).await?;
            let mut ready = worker.ready();
            tokio::spawn(async move {
                if ready.wait_for(|r| *r).await.is_ok() {
                    tracing::info!("worker ready");
                }
            });
            worker.run(shutdown).await?;
        }
        Command::Enqueue {
            job_type,
            payload,
            queue,
            priority,
            run_at,
            max_attempts,
            timeout,
        } => {
            let payload: serde_json::Value =
                serde_json::from_str(&payload).context("--payload is not valid JSON")?;
            let job = NewJob {
                job_type,
                queue,
                priority,
                payload,
                max_attempts,
                run_at,
                timeout,
            };
            let client = connect().await?;
            let id = crate::jobs::enqueue(&client, &job).await?;
            println!("{id}");
        }
        Command::Jobs { command } => {
            let client = connect().await?;
            match command {
                JobsCommand::List {
                    status,
                    job_type,
                    limit,
                    json,
                } => {
                    let jobs =
                        crate::jobs::list(&client, status.as_deref(), job_type.as_deref(), limit)
                            .await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&jobs)?);
                    } else {
                        println!(
                            "{:<36}  {:<16} {:<10} {:<9} {:>7}  created",
                            "id", "type", "queue", "status", "attempt"
                        );
                        for j in jobs {
                            println!(
                                "{:<36}  {:<16} {:<10} {:<9} {:>3}/{:<3}  {}",
                                j.id,
                                j.job_type,
                                j.queue,
                                j.status,
                                j.attempt,
                                j.max_attempts,
                                j.created_at.format("%Y-%m-%d %H:%M:%S%.3f")
                            );
                        }
                    }
                }
                JobsCommand::Retry { id, reason } => {
                    let by = crate::flags::operator_identity();
                    if !crate::jobs::retry(&client, id, reason.as_deref(), &by).await? {
                        bail!("no failed or cancelled job {id}");
                    }
                    println!("{id}: queued again");
                }
                JobsCommand::Cancel { id, reason } => {
                    let by = crate::flags::operator_identity();
                    match crate::jobs::cancel(&client, id, reason.as_deref(), &by, None, "cli")
                        .await?
                    {
                        Some(s) if s == "cancelled" => println!("{id}: cancelled"),
                        Some(_) => {
                            println!("{id}: cancellation intent recorded; its worker will stop it")
                        }
                        None => bail!("no unfinished job {id}"),
                    }
                }
                JobsCommand::Show { id, json } => {
                    let Some(job) = crate::jobs::show(&client, id).await? else {
                        bail!("no job {id}");
                    };
                    if json {
                        println!("{}", serde_json::to_string_pretty(&job)?);
                    } else {
                        let s = &job.summary;
                        println!("id:           {}", s.id);
                        println!("type/queue:   {} / {}", s.job_type, s.queue);
                        println!(
                            "status:       {} (attempt {}/{})",
                            s.status, s.attempt, s.max_attempts
                        );
                        println!("payload:      {}", job.payload);
                        if let Some(r) = &job.result {
                            println!("result:       {r}");
                        }
                        if let Some(e) = &job.error {
                            println!("error:        {e}");
                        }
                        println!("created:      {}", s.created_at);
                        println!("history:");
                        for ev in job.events {
                            println!(
                                "  {}  {} -> {}  attempt {}  {}{}",
                                ev.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                                ev.from_status.unwrap_or_default(),
                                ev.to_status,
                                ev.attempt,
                                ev.worker.unwrap_or_default(),
                                ev.detail.map(|d| format!("  ({d})")).unwrap_or_default()
                            );
                        }
                    }
                }
            }
        }
        Command::Flags { command } => {
            let client = connect().await?;
            match command {
                FlagsCommand::List => {
                    for f in crate::flags::list(&client).await? {
                        println!(
                            "{:<24} {:<8} {}  {}  {}",
                            f.name,
                            if f.enabled { "on" } else { "off" },
                            f.updated_at.format("%Y-%m-%d %H:%M:%S"),
                            f.updated_by.unwrap_or_default(),
                            f.reason.unwrap_or_default()
                        );
                    }
                }
                FlagsCommand::Enable { name, reason } => {
                    set_flag(&client, &name, true, reason, false).await?;
                    println!("{name}: on");
                }
                FlagsCommand::Disable {
                    name,
                    reason,
                    cancel_running,
                } => {
                    let n = set_flag(&client, &name, false, reason, cancel_running).await?;
                    if cancel_running {
                        println!("{name}: off; cancellation requested for {n} running job(s)");
                    } else {
                        println!(
                            "{name}: off (queued jobs of this type wait; running ones finish)"
                        );
                    }
                }
                FlagsCommand::Pause { reason } => {
                    set_flag(&client, crate::flags::PAUSE_FLAG, true, reason, false).await?;
                    println!(
                        "paused: no daemon claims new jobs (running jobs finish); `opsrunner flags resume` undoes it"
                    );
                }
                FlagsCommand::Resume { reason } => {
                    set_flag(&client, crate::flags::PAUSE_FLAG, false, reason, false).await?;
                    println!("resumed");
                }
            }
        }
    }
    Ok(())
}

fn sign_token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Sign {
        action,
        actor,
        tenant,
        scopes,
        ttl,
    } = command;
    let secret = crate::policy::secret_from_env()?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} (or {}_FILE) is not set",
            crate::policy::SECRET_VAR,
            crate::policy::SECRET_VAR
        )
    })?;
    if secret.len() < crate::policy::MIN_SECRET_LEN {
        bail!(
            "{} must be at least {} bytes long",
            crate::policy::SECRET_VAR,
            crate::policy::MIN_SECRET_LEN
        );
    }
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    if !(1..=crate::policy::MAX_TTL_SECS).contains(&ttl) {
        bail!("--ttl must be between 1s and 7 days");
    }
    let claims = crate::policy::Claims {
        tenant,
        actor,
        action,
        scopes: scopes
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        exp: Utc::now().timestamp() + ttl,
    };
    println!("{}", crate::policy::sign(&secret, &claims)?);
    Ok(())
}
