fn main() -> std::process::ExitCode {
    opsrunner::cli::main()
}
