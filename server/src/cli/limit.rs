//! `floodgate limit show|reset`: inspect one limit without consuming it, or clear it (what
//! an operator does to unblock a customer).
use std::process::ExitCode;

use serde_json::json;

use super::{
    acquire::check_json,
    common::{ServerArgs, human_duration, millis},
    policy_args::{POLICY_FLAGS, PolicyArgs},
};

/// Arguments of `floodgate limit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
A limit is (namespace, key, policy): give the same --policy, or the same --limit,
--algorithm and --burst, as the requests that use it.

`show` reads the limit as it is, consuming nothing: what is left, when it is full again,
and whether a request of cost 1 would be admitted now (JSON: next_allowed).

Examples:
  floodgate limit show --namespace shop user:42 --limit 10/s
  floodgate limit reset --namespace shop user:42 --policy api")]
pub struct LimitArgs {
    #[command(subcommand)]
    action: LimitAction,
}

#[derive(Debug, clap::Subcommand)]
enum LimitAction {
    /// Print what is left of a limit and when it is full again, consuming nothing.
    Show(Target),
    /// Clear a limit's state: the key is fully available again.
    Reset(Target),
}

/// The limit to act on.
#[derive(Debug, clap::Args)]
struct Target {
    #[command(flatten)]
    server: ServerArgs,
    /// The namespace (1-64 characters of [A-Za-z0-9_.-]).
    #[arg(long, short = 'n', env = "FLOODGATE_NAMESPACE")]
    namespace: String,
    /// The limited key, e.g. user:42.
    key: String,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `floodgate limit`.
pub async fn run(args: LimitArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        LimitAction::Show(t) => show(t).await,
        LimitAction::Reset(t) => reset(t).await,
    }
}

async fn show(t: Target) -> anyhow::Result<ExitCode> {
    let (policy, description) = t.policy.resolve()?;
    let client = t.server.connect().await?;
    let c = t
        .server
        .call(POLICY_FLAGS, client.status(&t.namespace, &t.key, policy, 1))
        .await?;
    if t.json {
        let mut out = json!({
            "namespace": t.namespace,
            "key": t.key,
            "next_allowed": c.allowed,
            "retry_after_ms": millis(c.retry_after),
        });
        if let (Some(obj), Some(check)) = (out.as_object_mut(), check_json(&c).as_object()) {
            obj.extend(check.clone());
        }
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    // Status reads the limit as it is; `allowed` and `retry_after` answer for cost 1.
    println!("{} in {} ({description})", t.key, t.namespace);
    println!(
        "  remaining  {} of {}, full in {}",
        c.remaining,
        c.limit,
        human_duration(c.reset_after)
    );
    if c.allowed {
        println!("  now        a request of cost 1 would be allowed");
    } else {
        println!(
            "  now        a request of cost 1 would be denied; retry in {}",
            human_duration(c.retry_after)
        );
    }
    println!("  policy     {}", c.policy);
    Ok(ExitCode::SUCCESS)
}

async fn reset(t: Target) -> anyhow::Result<ExitCode> {
    let (policy, description) = t.policy.resolve()?;
    let client = t.server.connect().await?;
    let existed = t
        .server
        .call(
            POLICY_FLAGS,
            client.reset_limit(&t.namespace, &t.key, policy),
        )
        .await?;
    if t.json {
        println!(
            "{}",
            json!({ "namespace": t.namespace, "key": t.key, "cleared": existed })
        );
    } else if existed {
        println!(
            "cleared: {} in {} ({description}) is fully available again",
            t.key, t.namespace
        );
    } else {
        println!(
            "nothing to clear: {} in {} ({description}) had no state; it was already fully \
             available",
            t.key, t.namespace
        );
    }
    Ok(ExitCode::SUCCESS)
}
