//! `floodgate bench` (being built).
use std::process::ExitCode;

/// Arguments of `floodgate bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs `floodgate bench`.
pub async fn run(_args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("floodgate bench is not available in this build yet")
}
