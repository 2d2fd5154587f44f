//! Records the git commit the binary is built from, for
//! `opsrunner_build_info{commit}` and `opsrunner --version`-style reports:
//! `OPSRUNNER_COMMIT` when the build sets it (a packaging pipeline),
//! otherwise `git rev-parse`, otherwise "unknown" (a source tarball).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=OPSRUNNER_COMMIT");
    // HEAD moves on commit and checkout; the ref it names moves on commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(r) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{r}");
    }
    let commit = std::env::var("OPSRUNNER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric()) && !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OPSRUNNER_COMMIT={commit}");
}
