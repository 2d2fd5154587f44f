//! `exec`: runs a command line fixed in the config file (never taken from the
//! payload). The payload goes to stdin as JSON; stdout (at most 10 KB, JSON,
//! or else wrapped as `{"output": "..."}`) is the result; the tail of stderr is
//! the error. The child gets a clean environment and its own process group,
//! so that timeout or cancel can stop the whole tree: SIGTERM to the group,
//! SIGKILL after a grace period. Exit codes: 0 succeeds; 64 (EX_USAGE) and
//! 65 (EX_DATAERR) fail at once; anything else is retried.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{HandlerError, HandlerFuture, JobContext};
use crate::jobs::{MAX_ERROR_CHARS, MAX_RESULT_BYTES};

/// The PATH the child sees; its own environment is otherwise empty.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One `[[exec]]` entry: a job type run as a fixed command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The job type this command serves (its feature flag has the same name).
    pub job_type: String,
    /// Program (absolute path) and arguments.
    pub command: Vec<String>,
    /// Extra environment variables, fixed here.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; `/` by default.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Run the command as this user (a name or a numeric uid) instead of the
    /// worker's own: its primary group unless `group` says otherwise, no
    /// supplementary groups, `HOME`, `USER` and `LOGNAME` set to it. The
    /// worker then needs CAP_SETUID and CAP_SETGID (docs/operations.md,
    /// "exec as another user"); start-up refuses the entry without them.
    #[serde(default)]
    pub user: Option<String>,
    /// The group to run as (a name or a numeric gid); only with `user`.
    #[serde(default)]
    pub group: Option<String>,
}

/// Who an `[[exec]]` command runs as, resolved from its `user` and `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's id.
    pub uid: u32,
    /// The group's id.
    pub gid: u32,
    /// The user's name (for `USER` and `LOGNAME`).
    pub name: String,
    /// The user's home directory (for `HOME`).
    pub home: PathBuf,
}

impl ExecConfig {
    /// Checks the entry (`idx` names it in messages).
    pub fn validate(&self, idx: usize) -> Result<(), String> {
        let at = format!("exec[{idx}]");
        super::check_configured_job_type(&at, &self.job_type)?;
        match self.command.first() {
            None => return Err(format!("{at}.command must name a program")),
            Some(p) if !p.starts_with('/') => {
                return Err(format!("{at}.command[0] must be an absolute path"));
            }
            _ => {}
        }
        if self
            .env
            .keys()
            .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(format!("{at}.env has an invalid variable name"));
        }
        if let Some(run_as) = self.run_as().map_err(|e| format!("{at}.{e}"))?
            && (run_as.uid != current_uid() || run_as.gid != current_gid())
            && !can_switch_user()
        {
            return Err(format!(
                "{at}.user = {:?}: the worker (uid {}) cannot switch to uid {}, gid {}: \
                 it needs CAP_SETUID and CAP_SETGID (docs/operations.md, \"exec as another user\")",
                self.user.as_deref().unwrap_or_default(),
                current_uid(),
                run_as.uid,
                run_as.gid
            ));
        }
        Ok(())
    }

    /// The user and group the command runs as; `None` without `user`.
    /// Errors name the setting (`user` or `group`) and why.
    pub fn run_as(&self) -> Result<Option<RunAs>, String> {
        let Some(user) = &self.user else {
            return match &self.group {
                Some(_) => Err("group needs a user".into()),
                None => Ok(None),
            };
        };
        let pw = lookup_user(user)
            .ok_or_else(|| format!("user = {user:?}: no such user on this host"))?;
        let gid = match &self.group {
            None => pw.gid,
            Some(g) => lookup_group(g)
                .ok_or_else(|| format!("group = {g:?}: no such group on this host"))?,
        };
        Ok(Some(RunAs { gid, ..pw }))
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

fn current_gid() -> u32 {
    // SAFETY: getegid(2) cannot fail and touches no memory.
    unsafe { libc::getegid() }
}

/// Whether this process may set another uid and gid: root, or both
/// CAP_SETUID (bit 7) and CAP_SETGID (bit 6) in its effective set.
fn can_switch_user() -> bool {
    if current_uid() == 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 7) != 0 && caps & (1 << 6) != 0)
}

/// A user by name, or by number when the name is all digits.
fn lookup_user(user: &str) -> Option<RunAs> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = user.parse::<u32>() {
        // SAFETY: every pointer is to a live local of the size given.
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) }
    } else {
        let name = std::ffi::CString::new(user).ok()?;
        // SAFETY: as above; `name` is NUL-terminated.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        }
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success pw_name and pw_dir point into `buf`, NUL-terminated.
    let (name, home) = unsafe {
        (
            std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned(),
            std::ffi::CStr::from_ptr(pw.pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    };
    Some(RunAs {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        name,
        home: PathBuf::from(home),
    })
}

/// A group id by name, or by number when the name is all digits.
fn lookup_group(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    let name = std::ffi::CString::new(group).ok()?;
    // SAFETY: every pointer is to a live local of the size given.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(gr.gr_gid)
}

/// The `exec` handler of one configured job type.
pub struct ExecHandler {
    cfg: ExecConfig,
    /// Between SIGTERM and SIGKILL.
    kill_grace: Duration,
}

impl ExecHandler {
    /// A handler for `cfg`; a stopped child gets `kill_grace` between SIGTERM and SIGKILL.
    pub fn new(cfg: ExecConfig, kill_grace: Duration) -> Self {
        Self { cfg, kill_grace }
    }
}

impl super::Handler for ExecHandler {
    fn run(&self, job: JobContext) -> HandlerFuture {
        let cfg = self.cfg.clone();
        let grace = self.kill_grace;
        Box::pin(async move { run(cfg, grace, job).await })
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we made
    // for this child; at worst the group is gone and it returns ESRCH.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// After the command exits, how long its stdout and stderr may stay open.
/// A process that left the group (`setsid`, a daemonizing script) can hold
/// them open for ever; the job ends on the command's own exit status, with
/// the output read so far. 1 s: a pipe drains in microseconds once the
/// writer is gone, so only an escaped holder waits this long.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Output read so far (at most the kept bytes) and whether more was cut.
type Captured = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// Reads everything, keeping at most `keep` bytes (the head, or the tail)
/// in `into`, so that what was read is there even if reading never ends.
async fn read_bounded(mut r: impl AsyncRead + Unpin, keep: usize, tail: bool, into: Captured) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let Ok(mut guard) = into.lock() else { break };
                let (kept, overflow) = &mut *guard;
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > keep {
                    *overflow = true;
                    if tail {
                        let cut = kept.len() - keep;
                        kept.drain(..cut);
                    } else {
                        kept.truncate(keep);
                    }
                }
            }
        }
    }
}

fn take(c: &Captured) -> (Vec<u8>, bool) {
    c.lock()
        .map(|mut g| std::mem::take(&mut *g))
        .unwrap_or_default()
}

async fn run(cfg: ExecConfig, grace: Duration, job: JobContext) -> Result<Value, HandlerError> {
    // Resolved per job (a passwd lookup, microseconds next to a fork): a
    // user removed since start-up fails the job with the reason instead of
    // running the command as the worker.
    let run_as = cfg.run_as().map_err(HandlerError::Permanent)?;
    let mut cmd = Command::new(&cfg.command[0]);
    cmd.args(&cfg.command[1..])
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LANG", "C.UTF-8")
        .envs(&cfg.env)
        .env("OPSRUNNER_JOB_ID", job.id.to_string())
        .env("OPSRUNNER_JOB_TYPE", &job.job_type)
        .env("OPSRUNNER_ATTEMPT", job.attempt.to_string())
        .current_dir(cfg.workdir.clone().unwrap_or_else(|| PathBuf::from("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(r) = &run_as {
        // std drops the supplementary groups (setgroups(0)) when a uid is set.
        cmd.uid(r.uid)
            .gid(r.gid)
            .env("HOME", &r.home)
            .env("USER", &r.name)
            .env("LOGNAME", &r.name);
    }
    let worker_pid = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe system calls (prctl, getppid). It clears the
    // ambient capabilities, so that a worker given CAP_SETUID/CAP_SETGID for
    // `user =` (ambient, in its unit) never hands them to a command it runs.
    //
    // It also asks for SIGKILL when the worker dies: a worker killed outside
    // systemd (whose unit kills the whole cgroup) must not leave its command
    // running while the lease expires and another worker runs the job again.
    // std has switched uid and gid before this runs, which matters: a
    // credential change clears the parent-death signal. The signal follows
    // the thread that forked, not the process; jobs are spawned from the
    // runtime's worker threads, which live as long as the worker (nothing in
    // opsrunner calls block_in_place, which could retire one). Only the
    // command itself is covered: a process it starts has no such signal and
    // is orphaned if the worker dies (systemd's KillMode=mixed covers those).
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker died between fork and prctl: nothing would kill us.
            if libc::getppid() != worker_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| HandlerError::Retryable(format!("cannot start {}: {e}", cfg.command[0])))?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);

    let input = serde_json::to_vec(&job.payload).unwrap_or_default();
    let mut stdin = child.stdin.take();
    let feed = async move {
        if let Some(s) = stdin.as_mut() {
            // A child that does not read its stdin is fine: ignore EPIPE.
            let _ = s.write_all(&input).await;
        }
        drop(stdin);
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (out_buf, err_buf) = (Captured::default(), Captured::default());
    let (o, e) = (out_buf.clone(), err_buf.clone());
    let out = async move {
        if let Some(s) = stdout {
            read_bounded(s, MAX_RESULT_BYTES, false, o).await;
        }
    };
    let err = async move {
        if let Some(s) = stderr {
            read_bounded(s, MAX_ERROR_CHARS * 4, true, e).await;
        }
    };
    // Driven concurrently with the wait: a child that reads all of stdin or
    // writes more than a pipe buffer would otherwise deadlock against us.
    let mut io = tokio::spawn(async move { tokio::join!(feed, out, err) });

    let status = tokio::select! {
        s = child.wait() => s,
        _ = job.cancel.cancelled() => {
            signal_group(pgid, libc::SIGTERM);
            let s = match tokio::time::timeout(grace, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    signal_group(pgid, libc::SIGKILL);
                    child.wait().await
                }
            };
            signal_group(pgid, libc::SIGKILL); // stragglers in the group
            let _ = s;
            io.abort();
            return Err(HandlerError::Retryable("command stopped: job cancelled or timed out".into()));
        }
    };
    // The leader is gone; nothing it left behind in its group may outlive the job.
    signal_group(pgid, libc::SIGKILL);
    if tokio::time::timeout(OUTPUT_GRACE, &mut io).await.is_err() {
        io.abort();
        tracing::warn!(job_id = %job.id, job_type = %job.job_type,
            "the command exited but a process outside its group keeps its output open; \
             ending the job on the command's exit status (that process is not killed)");
    }
    let (stdout, too_big) = take(&out_buf);
    let (stderr, _) = take(&err_buf);
    let status =
        status.map_err(|e| HandlerError::Retryable(format!("waiting for the command: {e}")))?;
    let stderr_tail = String::from_utf8_lossy(&stderr).trim().to_string();
    if status.success() {
        if too_big {
            return Ok(json!({ "error": "Result too large", "truncated": true }));
        }
        let text = String::from_utf8_lossy(&stdout);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(json!({}));
        }
        return Ok(serde_json::from_str(trimmed).unwrap_or_else(|_| json!({ "output": trimmed })));
    }
    let tail: String = {
        let chars: Vec<char> = stderr_tail.chars().collect();
        chars[chars.len().saturating_sub(400)..].iter().collect()
    };
    let what = match status.code() {
        Some(code) => format!("exit code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("killed by signal {}", status.signal().unwrap_or(0))
        }
    };
    let msg = if tail.is_empty() {
        what
    } else {
        format!("{what}: {tail}")
    };
    match status.code() {
        Some(64) | Some(65) => Err(HandlerError::Permanent(msg)),
        _ => Err(HandlerError::Retryable(msg)),
    }
}
