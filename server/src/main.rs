//! The `floodgate` binary: parses the command line and runs it (see `cli`).
fn main() -> std::process::ExitCode {
    floodgate_server::cli::main()
}
