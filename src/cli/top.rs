//! `opsrunner top` and `opsrunner stats`: the overview ([`crate::overview`])
//! live on a terminal, once on a pipe, or as JSON.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::Ctx;
use crate::overview;

/// `opsrunner stats [--json]`.
pub async fn stats(ctx: &Ctx, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ctx.connect(true).await?;
    let o = overview::take(&client).await?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &o)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", overview::render(&o, lease(ctx)))?;
    }
    Ok(())
}

/// The worker lease this configuration sets (for "last heartbeat").
fn lease(ctx: &Ctx) -> Duration {
    ctx.config()
        .map(|c| c.settings.worker.lease)
        .unwrap_or(Duration::from_secs(30))
}

/// `opsrunner top [--once] [--interval D]`.
pub async fn top(
    ctx: &Ctx,
    once: bool,
    interval: Duration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let client = ctx.connect(true).await?;
    let lease = lease(ctx);
    let live = !once && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !live {
        let o = overview::take(&client).await?;
        write!(out, "{}", overview::render(&o, lease))?;
        return Ok(());
    }
    let _raw = RawInput::enable();
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel::<()>(1);
    // A plain thread: reading stdin blocks, and the runtime must not wait
    // for it at exit (the process ends with `top`).
    std::thread::spawn(move || {
        use std::io::Read;
        let mut byte = [0u8; 1];
        while let Ok(1) = std::io::stdin().read(&mut byte) {
            if matches!(byte[0], b'q' | b'Q' | 3) {
                let _ = quit_tx.blocking_send(());
                return;
            }
        }
    });
    loop {
        let started = std::time::Instant::now();
        let screen = match overview::take(&client).await {
            Ok(o) => overview::render(&o, lease),
            Err(e) => format!("cannot read the overview: {e}\n"),
        };
        let took = started.elapsed();
        // Clear, home, then the table; the footer says how to leave.
        write!(
            out,
            "\x1b[2J\x1b[H{}\nopsrunner top: every {:?} (q or Ctrl-C quits)\n",
            screen,
            overview::next_refresh(interval, took)
        )?;
        out.flush()?;
        tokio::select! {
            _ = tokio::time::sleep(overview::next_refresh(interval, took)) => {}
            _ = quit_rx.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    writeln!(out)?;
    Ok(())
}

/// The terminal without line buffering or echo while `top` runs (so that
/// `q` quits without Enter), restored when dropped.
struct RawInput(Option<libc::termios>);

impl RawInput {
    fn enable() -> Self {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Self(None);
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Self(None);
            }
            Self(Some(saved))
        }
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `enable`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}
