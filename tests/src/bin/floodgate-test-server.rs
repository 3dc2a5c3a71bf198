//! The `floodgate` binary, built inside this crate so its integration tests can start real
//! server processes (`CARGO_BIN_EXE_floodgate-test-server`). It runs exactly the same
//! code as `server/src/main.rs`.
fn main() -> std::process::ExitCode {
    floodgate_server::cli::main()
}
