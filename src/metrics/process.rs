//! The standard `process_*` metrics (CPU, memory, descriptors, start time),
//! read from `/proc/self` at each scrape and rendered as text beside the
//! recorder's output: `process_cpu_seconds_total` is a counter of
//! fractional seconds, which the `metrics` crate's integer counters cannot
//! hold. Help texts come from the catalogue.

use std::fmt::Write;

use super::catalog::{self, Kind};

/// What `/proc/self` says now; `None` where it could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    /// User plus system CPU seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size in bytes.
    pub resident_bytes: Option<f64>,
    /// Virtual memory size in bytes.
    pub virtual_bytes: Option<f64>,
    /// Open descriptors.
    pub open_fds: Option<f64>,
    /// The soft RLIMIT_NOFILE.
    pub max_fds: Option<f64>,
    /// Seconds since the epoch when the process started.
    pub start_time_seconds: Option<f64>,
}

/// Reads this process's sample.
pub fn sample() -> Sample {
    // SAFETY: sysconf reads a constant; getrlimit fills the struct we own.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    let mut s = Sample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may
        // hold spaces: the state is field 3, so index 0 here is field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<f64>().ok());
        if ticks > 0.0 {
            s.cpu_seconds = num(14).zip(num(15)).map(|(u, k)| (u + k) / ticks);
            s.start_time_seconds = num(22).zip(boot_time()).map(|(t, b)| b + t / ticks);
        }
        s.virtual_bytes = num(23);
        s.resident_bytes = num(24).map(|p| p * page);
    }
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1) as f64); // less the one read_dir holds
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        s.max_fds = Some(lim.rlim_cur as f64);
    }
    s
}

fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The sample in the Prometheus text format, `# HELP` and `# TYPE` first.
pub fn render(s: &Sample) -> String {
    let mut out = String::new();
    for (name, value) in [
        ("process_cpu_seconds_total", s.cpu_seconds),
        ("process_resident_memory_bytes", s.resident_bytes),
        ("process_virtual_memory_bytes", s.virtual_bytes),
        ("process_open_fds", s.open_fds),
        ("process_max_fds", s.max_fds),
        ("process_start_time_seconds", s.start_time_seconds),
    ] {
        let (Some(m), Some(v)) = (catalog::find(name), value) else {
            continue;
        };
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {}", m.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {v}");
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_sample_and_it_renders_with_help() {
        let s = sample();
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        assert!(s.resident_bytes.is_some_and(|r| r > 1e5), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3.0), "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0 * 365.0),
            "{s:?}"
        );
        let text = render(&s);
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP process_open_fds "), "{text}");
    }
}
