//! `floodgate audit`: prints the audit trail (operator and admin actions and refused
//! attempts at them), newest first, through the Admin `AuditLog` RPC (operator role).
use std::{process::ExitCode, time::UNIX_EPOCH};

use floodgate_proto::v1 as pb;

use super::common::ServerArgs;

/// Arguments of `floodgate audit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
A token sees the entries of the namespaces it is granted; entries that name no namespace
(configuration reloads, refusals before a namespace was read) need a token granted `*`.

Example:
  FLOODGATE_TOKEN=fgt_… floodgate audit --limit 20")]
pub struct AuditArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Entries to show, newest first (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Runs `floodgate audit`.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect().await?;
    let request = pb::AuditLogRequest { limit: args.limit };
    let entries = args
        .server
        .call(&[("limit", "--limit")], async {
            Ok(client
                .admin()
                .audit_log(request)
                .await?
                .into_inner()
                .entries)
        })
        .await?;
    if args.json {
        for e in &entries {
            let line = serde_json::json!({
                "id": e.id, "at": when(e.at_unix_ms), "caller": e.caller, "role": e.role,
                "rpc": e.rpc, "namespace": e.namespace, "outcome": e.outcome, "detail": e.detail,
            });
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no audit entries (that this token may see)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20}  {:<16}  {:<8}  {:<14}  {:<16}  {:<16}  DETAIL",
        "TIME", "CALLER", "ROLE", "RPC", "NAMESPACE", "OUTCOME"
    );
    for e in &entries {
        println!(
            "{:<20}  {:<16}  {:<8}  {:<14}  {:<16}  {:<16}  {}",
            when(e.at_unix_ms),
            e.caller,
            or_dash(&e.role),
            e.rpc,
            or_dash(&e.namespace),
            e.outcome,
            e.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}
