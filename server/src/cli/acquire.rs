//! `floodgate acquire`: ask a server to admit one request and print its decision, for
//! people or as one JSON object.
use std::process::ExitCode;

use floodgate_client::{CheckResult, Decision};
use serde_json::json;

use super::{
    common::{ServerArgs, human_duration, millis},
    policy_args::{POLICY_FLAGS, PolicyArgs},
};

/// Arguments of `floodgate acquire`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit status: 0 when the server answered, allowed or denied (read \"allowed\" with --json);
1 when the request failed (unreachable server, bad input, unknown policy); 2 for bad flags.

Examples:
  floodgate acquire --namespace shop user:42 --limit 10/s
  floodgate acquire --namespace shop user:42 --limit 100/m --algorithm sliding_window --cost 5
  floodgate acquire --namespace jobs db --limit 4 --algorithm concurrency --lease-ttl 30s
  floodgate acquire --namespace shop user:42 --policy api --json")]
pub struct AcquireArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The namespace (1-64 characters of [A-Za-z0-9_.-]).
    #[arg(long, short = 'n', env = "FLOODGATE_NAMESPACE")]
    namespace: String,
    /// The key to limit, e.g. user:42.
    key: String,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Units to take (token bucket: at most the burst).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    cost: u64,
    /// Makes a retry with the same id within 60 s return the first answer.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `floodgate acquire`.
pub async fn run(args: AcquireArgs) -> anyhow::Result<ExitCode> {
    let (policy, description) = args.policy.resolve()?;
    let client = args.server.connect().await?;
    let mut builder = client
        .acquire(&args.namespace)
        .check(args.key.clone(), policy)
        .cost(args.cost);
    if let Some(id) = &args.request_id {
        builder = builder.request_id(id.clone());
    }
    let decision = args.server.call(POLICY_FLAGS, builder.send()).await?;
    if args.json {
        println!("{}", to_json(&args, &decision));
    } else {
        print!("{}", to_text(&args, &description, &decision));
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(args: &AcquireArgs, d: &Decision) -> serde_json::Value {
    let mut out = json!({
        "allowed": d.allowed,
        "retry_after_ms": millis(d.retry_after),
        "degraded": d.degraded,
        "namespace": args.namespace,
        "key": args.key,
        "cost": args.cost,
    });
    if let (Some(c), Some(obj)) = (d.checks.first(), out.as_object_mut()) {
        obj.extend(check_json(c).as_object().cloned().unwrap_or_default());
    }
    out
}

/// One check's fields for JSON output (shared with `limit show`).
pub(super) fn check_json(c: &CheckResult) -> serde_json::Value {
    json!({
        "policy": c.policy,
        "limit": c.limit,
        "remaining": c.remaining,
        "reset_after_ms": millis(c.reset_after),
        "lease_id": c.lease_id,
        "shadow": c.shadow,
    })
}

fn to_text(args: &AcquireArgs, description: &str, d: &Decision) -> String {
    let mut out = String::new();
    let verdict = if d.allowed { "allowed" } else { "denied" };
    out.push_str(&format!(
        "{verdict}: {} in {} ({description}",
        args.key, args.namespace
    ));
    if args.cost > 1 {
        out.push_str(&format!(", cost {}", args.cost));
    }
    out.push(')');
    if !d.allowed {
        out.push_str(&format!("; retry in {}", human_duration(d.retry_after)));
    }
    out.push('\n');
    if let Some(c) = d.checks.first() {
        out.push_str(&format!("  remaining  {} of {}\n", c.remaining, c.limit));
        out.push_str(&format!("  full in    {}\n", human_duration(c.reset_after)));
        if let Some(lease) = &c.lease_id {
            out.push_str(&format!(
                "  lease      {lease}  (expires after its lease_ttl unless released)\n"
            ));
        }
        if c.shadow {
            let would = if c.allowed { "allowed" } else { "denied" };
            out.push_str(&format!(
                "  shadow     would have been {would}; a shadow policy never denies\n"
            ));
        }
        out.push_str(&format!("  policy     {}\n", c.policy));
    }
    if d.degraded {
        out.push_str("  degraded   decided without the store: the policy's fail mode answered\n");
    }
    out
}
