//! `floodgate limit` (being built).
use std::process::ExitCode;

/// Arguments of `floodgate limit`.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {}

/// Runs `floodgate limit`.
pub async fn run(_args: LimitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("floodgate limit is not available in this build yet")
}
