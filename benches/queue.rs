//! `cargo bench --bench queue`: the same measurements as `opsrunner bench`
//! (src/bench.rs), driving the real `opsrunner worker` binary. Sizes come
//! from OPSRUNNER_BENCH_JOBS / _WORKERS / _CONCURRENCY (defaults 100000, 2,
//! 100). Needs DATABASE_URL, or the PostgreSQL binaries for a throwaway
//! cluster.

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // and only wants to know it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let opts = opsrunner::cli::bench::BenchOptions {
        jobs: env_or("OPSRUNNER_BENCH_JOBS", 100_000),
        workers: env_or("OPSRUNNER_BENCH_WORKERS", 2),
        concurrency: env_or("OPSRUNNER_BENCH_CONCURRENCY", 100),
        exe: env!("CARGO_BIN_EXE_opsrunner").into(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let admin = opsrunner::config::database_url_from_env().expect("DATABASE_URL");
    match runtime.block_on(opsrunner::cli::bench::run(admin, &opts)) {
        Ok(report) => print!("{}", opsrunner::cli::bench::render(&report)),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
