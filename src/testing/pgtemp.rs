//! A throwaway PostgreSQL cluster from the local binaries (initdb + pg_ctl on
//! a free port, sockets and data in a temporary directory), for `opsrunner
//! dev` and for tests when `DATABASE_URL` is unset.
//!
//! PostgreSQL refuses to run as root; as root the cluster runs as the
//! `postgres` system user. A watcher process stops the cluster and deletes
//! its directory when the owning process exits, however it exits.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A PostgreSQL cluster in a temporary directory, on a free loopback port,
/// stopped and removed on drop (and by a watcher process if this one dies).
pub struct TempCluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::TempCluster(msg.into())
}

/// Finds initdb and pg_ctl: `OPSRUNNER_PG_BINDIR`, then `pg_config --bindir`,
/// then the newest `/usr/lib/postgresql/*/bin`, then PATH.
pub fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("OPSRUNNER_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&d) {
            return Ok(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_initdb(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_initdb(&d) {
                return Ok(d);
            }
        }
    }
    Err(err(
        "no PostgreSQL server binaries (initdb, pg_ctl) found; install PostgreSQL \
         (e.g. `apt-get install postgresql`) or set DATABASE_URL",
    ))
}

/// uid/gid of the `postgres` user, when we are root.
fn postgres_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            let uid = f[2]
                .parse()
                .map_err(|_| err("bad uid for postgres in /etc/passwd"))?;
            let gid = f[3]
                .parse()
                .map_err(|_| err("bad gid for postgres in /etc/passwd"))?;
            return Ok(Some((uid, gid)));
        }
    }
    Err(err(
        "running as root and there is no `postgres` user to run the throwaway cluster as",
    ))
}

/// Runs `script` (with `$1` = this process's pid, `$2` = `path`) in a
/// detached shell of its own process group, so that it outlives this
/// process, a Ctrl-C to our group and a `kill -9` alike.
fn watch_until_exit(script: &str, name: &str, path: &Path) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script, name, &std::process::id().to_string()])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.process_group(0);
    cmd.spawn()
        .map_err(|e| err(format!("cannot start the cleanup watcher: {e}")))?;
    Ok(())
}

/// Removes `path` once this process has exited, however it exits (a
/// detached watcher polls for it every second). For files that must not
/// outlive a `kill -9`, such as `opsrunner dev`'s key file.
pub fn remove_on_exit(path: &Path) -> Result<()> {
    let script = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        rm -rf "$2"
    "#;
    watch_until_exit(script, "opsrunner-cleanup", path)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl TempCluster {
    /// initdb, start, and arrange for cleanup when this process exits. Tuned
    /// for tests: fsync and synchronous_commit off.
    pub fn start() -> Result<Self> {
        Self::start_with(false, false)
    }

    /// Like [`TempCluster::start`], but every role other than `postgres`
    /// must log in with its password (SCRAM): for tests of what the
    /// least-privilege roles of `sql/roles/roles.sql` may do, proven as they
    /// run in production rather than under trust authentication.
    pub fn start_password_auth() -> Result<Self> {
        Self::start_with(false, true)
    }

    /// Like [`TempCluster::start`], with PostgreSQL's default durability
    /// (fsync, synchronous_commit, full_page_writes on): for benchmarks.
    pub fn start_durable() -> Result<Self> {
        Self::start_with(true, false)
    }

    fn start_with(durable: bool, password_auth: bool) -> Result<Self> {
        let bindir = find_bindir()?;
        let run_as = postgres_user()?;
        let base = std::env::temp_dir().join(format!(
            "opsrunner-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&base)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&base, Some(uid), Some(gid))?;
        }
        let mut cluster = Self {
            dir: base,
            bindir,
            port: 0,
            run_as,
        };
        cluster.spawn_watcher()?;
        let data = cluster.dir.join("data");
        cluster.run(
            Command::new(cluster.bindir.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                    "-D",
                ])
                .arg(&data),
            "initdb",
        )?;
        if password_auth {
            // The superuser (the test's admin) stays on trust; every other
            // role proves its password.
            let hba = "local all all trust\n\
                       host all postgres 127.0.0.1/32 trust\n\
                       host all all 127.0.0.1/32 scram-sha-256\n";
            std::fs::write(data.join("pg_hba.conf"), hba)?;
        }
        // A port can be taken between probing and binding; try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let durability = if durable {
                ""
            } else {
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            };
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} {durability}\
                 -c max_connections=300 -c shared_buffers=128MB",
                cluster.dir.display()
            );
            let started = cluster.run(
                Command::new(cluster.bindir.join("pg_ctl"))
                    .args(["-w", "-t", "60", "-D"])
                    .arg(&data)
                    .args(["-l"])
                    .arg(cluster.dir.join("postgres.log"))
                    .args(["-o", &opts, "start"]),
                "pg_ctl start",
            );
            match started {
                Ok(()) => {
                    cluster.port = port;
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| err("could not start")))
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("{what}: {e}")))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(err(format!(
                "{what} failed: {}{}\n{tail}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            )));
        }
        Ok(())
    }

    /// A detached shell that waits for this process to exit, then stops the
    /// server (SIGQUIT: immediate shutdown) and removes the directory.
    fn spawn_watcher(&self) -> Result<()> {
        let script = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null)
            [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null
            for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e "$2/data/postmaster.pid" ] || break; sleep 0.5; done
            rm -rf "$2"
        "#;
        watch_until_exit(script, "opsrunner-pg-watcher", &self.dir)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `db` on this cluster (user postgres, trust auth).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Writes `name` into the data directory, readable by the server's user
    /// only (mode 0600, as PostgreSQL demands of a key file); returns its
    /// path. For tests that give the server certificates.
    pub fn install_file(&self, name: &str, contents: &[u8]) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data_dir().join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        Ok(path)
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server binaries' directory.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Crash-restarts the server (`pg_ctl restart -m immediate`) on the same
    /// port, as a power cut and reboot would: sessions are cut, committed
    /// work survives, crash recovery runs.
    pub fn restart_immediate(&self) -> Result<()> {
        // The new postmaster must log to the file, not to pg_ctl's captured
        // output, or waiting for pg_ctl would wait for the postmaster too.
        let log = self.dir.join("postgres.log");
        let log = log.to_string_lossy();
        self.pg_ctl(&["-m", "immediate", "-w", "-t", "60", "-l", &log, "restart"])
    }

    /// Runs `pg_ctl` with the given arguments against this cluster as the right user.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let data = self.data_dir();
        self.run(
            Command::new(self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(args),
            "pg_ctl",
        )
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
