//! `floodgate acquire` (being built).
use std::process::ExitCode;

/// Arguments of `floodgate acquire`.
#[derive(Debug, clap::Args)]
pub struct AcquireArgs {}

/// Runs `floodgate acquire`.
pub async fn run(_args: AcquireArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("floodgate acquire is not available in this build yet")
}
