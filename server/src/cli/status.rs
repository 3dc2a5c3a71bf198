//! `floodgate status` and `floodgate top`: what an operator asks a server first — what it
//! runs (version, store, schema, policies, breakers), and which keys are denied most.
use std::{process::ExitCode, time::Duration};

use floodgate_client::proto::v1 as pb;
use serde_json::json;

use super::{
    breaker::state_name,
    common::{ServerArgs, human_duration},
};

/// Arguments of `floodgate status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --namespace, breakers are listed with their settings only (their state lives per
namespace); with it, each breaker's state there.

Examples:
  floodgate status
  floodgate status --server http://10.0.0.5:50051 --namespace shop --json")]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Show breaker states in this namespace.
    #[arg(long, short = 'n', env = "FLOODGATE_NAMESPACE")]
    namespace: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `floodgate top`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Counts are kept per minute for 15 minutes; other servers' counts arrive within 5 s.

Example:
  floodgate top --namespace shop --minutes 10 --limit 20")]
pub struct TopArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The namespace.
    #[arg(long, short = 'n', env = "FLOODGATE_NAMESPACE")]
    namespace: String,
    /// Minutes to look back (1-15).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=15))]
    minutes: u32,
    /// Keys to show (1-100).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn duration(d: Option<&prost_types::Duration>) -> Duration {
    d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .unwrap_or_default()
}

fn algorithm_name(v: i32) -> &'static str {
    match pb::Algorithm::try_from(v) {
        Ok(pb::Algorithm::TokenBucket) => "token_bucket",
        Ok(pb::Algorithm::SlidingWindow) => "sliding_window",
        Ok(pb::Algorithm::SlidingLog) => "sliding_log",
        Ok(pb::Algorithm::FixedWindow) => "fixed_window",
        Ok(pb::Algorithm::Concurrency) => "concurrency",
        _ => "unspecified",
    }
}

/// Runs `floodgate status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect().await?;
    let request = pb::ServerStatusRequest {
        namespace: args.namespace.clone().unwrap_or_default(),
    };
    let s = args
        .server
        .call(&[("namespace", "--namespace")], async {
            Ok(client.admin().server_status(request).await?.into_inner())
        })
        .await?;
    if args.json {
        let policies: Vec<_> = s
            .policies
            .iter()
            .map(|p| {
                let policy = p.policy.unwrap_or_default();
                json!({
                    "name": p.name,
                    "algorithm": algorithm_name(policy.algorithm),
                    "limit": policy.limit,
                    "period_ms": duration(policy.period.as_ref()).as_millis() as u64,
                    "burst": policy.burst,
                    "shadow": policy.shadow,
                })
            })
            .collect();
        let breakers: Vec<_> = s
            .breakers
            .iter()
            .map(|b| {
                json!({
                    "breaker": b.breaker,
                    "state": state_name(b.state),
                    "failure_rate": b.failure_rate,
                    "slow_call_rate": b.slow_call_rate,
                    "calls": b.calls,
                    "generation": b.generation,
                    "retry_after_ms": duration(b.retry_after.as_ref()).as_millis() as u64,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "server": args.server.url(),
                "version": s.version,
                "store": s.store,
                "store_ready": s.store_ready,
                "store_error": s.store_error,
                "store_breaker_open": s.store_breaker_open,
                "store_calls_in_flight": s.store_calls_in_flight,
                "store_max_in_flight": s.store_max_in_flight,
                "incomplete": s.incomplete,
                "schema_version": s.schema_version,
                "supported_schema_version": s.supported_schema_version,
                "uptime_s": duration(s.uptime.as_ref()).as_secs(),
                "inline_policies": s.inline_policies,
                "policies": policies,
                "breakers": breakers,
                "rls_config": s.rls_config,
                "rls_domains": s.rls_domains,
                "queues": s.queues.iter().map(|q| json!({
                    "namespace": q.namespace,
                    "queue": q.queue,
                    "count": q.count,
                    "oldest_age_s": duration(q.oldest_age.as_ref()).as_secs(),
                    "over_threshold": q.over_threshold,
                    "archived": q.archived,
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("floodgate {} at {}", s.version, args.server.url());
    match (s.store_ready, s.store_error.is_empty()) {
        (true, _) => println!("  store      {} (ready)", s.store),
        // A server older than the store_error field.
        (false, true) => println!("  store      {} (NOT ready)", s.store),
        (false, false) => println!("  store      {} (NOT ready: {})", s.store, s.store_error),
    }
    // Older servers do not send the guard's fields (the cap is never 0).
    if s.store_max_in_flight > 0 {
        println!(
            "  guard      {}, {} of {} store calls in flight",
            if s.store_breaker_open {
                "OPEN (store failing; calls take their fail mode while a probe reconnects)"
            } else {
                "closed"
            },
            s.store_calls_in_flight,
            s.store_max_in_flight
        );
    }
    if s.supported_schema_version > 0 {
        println!(
            "  schema     {} (this server understands up to {})",
            s.schema_version, s.supported_schema_version
        );
    }
    println!(
        "  uptime     {}",
        human_duration(duration(s.uptime.as_ref()))
    );
    println!(
        "  inline     {}",
        if s.inline_policies {
            "allowed"
        } else {
            "disabled"
        }
    );
    println!("policies ({})", s.policies.len());
    for p in &s.policies {
        let policy = p.policy.unwrap_or_default();
        let period = duration(policy.period.as_ref());
        let mut line = format!(
            "  {:<20} {:<15} {}",
            p.name,
            algorithm_name(policy.algorithm),
            policy.limit
        );
        if !period.is_zero() {
            line.push_str(&format!(" per {}", human_duration(period)));
        }
        if policy.burst > 0 {
            line.push_str(&format!(", burst {}", policy.burst));
        }
        if policy.shadow {
            line.push_str(" (shadow)");
        }
        println!("{line}");
    }
    match &args.namespace {
        Some(ns) => println!("breakers in {ns} ({})", s.breakers.len()),
        None => println!(
            "breakers ({}; pass --namespace for their state)",
            s.breakers.len()
        ),
    }
    for b in &s.breakers {
        if args.namespace.is_some() {
            println!(
                "  {:<20} {:<12} failures {:>5.1}%  slow {:>5.1}%  calls {}",
                b.breaker,
                state_name(b.state),
                b.failure_rate,
                b.slow_call_rate,
                b.calls
            );
        } else {
            println!("  {}", b.breaker);
        }
    }
    if s.rls_config.is_empty() {
        println!("envoy rls   no rate limit files (--rls-config)");
    } else {
        println!(
            "envoy rls   {} domain{} from {}: {}",
            s.rls_domains.len(),
            if s.rls_domains.len() == 1 { "" } else { "s" },
            s.rls_config,
            s.rls_domains.join(", ")
        );
    }
    println!("queues ({})", s.queues.len());
    for q in &s.queues {
        println!(
            "  {:<20} {:<20} {:>8} entries, oldest {}{}{}",
            q.namespace,
            q.queue,
            q.count,
            human_duration(duration(q.oldest_age.as_ref())),
            if q.archived > 0 {
                format!(", {} archived", q.archived)
            } else {
                String::new()
            },
            if q.over_threshold {
                "  OVER THRESHOLD"
            } else {
                ""
            }
        );
    }
    for part in &s.incomplete {
        println!("incomplete  {part}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `floodgate top`.
pub async fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.connect().await?;
    let request = pb::TopKeysRequest {
        namespace: args.namespace.clone(),
        minutes: args.minutes,
        limit: args.limit,
    };
    let keys = args
        .server
        .call(&[("namespace", "--namespace")], async {
            Ok(client.admin().top_keys(request).await?.into_inner().keys)
        })
        .await?;
    if args.json {
        let keys: Vec<_> = keys
            .iter()
            .map(|k| json!({"key": k.key, "policy": k.policy, "denied": k.denied}))
            .collect();
        println!(
            "{}",
            json!({"namespace": args.namespace, "minutes": args.minutes, "keys": keys})
        );
        return Ok(ExitCode::SUCCESS);
    }
    if keys.is_empty() {
        println!(
            "no denials in {} over the last {} minutes",
            args.namespace, args.minutes
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "most denied keys in {}, last {} minutes",
        args.namespace, args.minutes
    );
    println!("  {:>10}  {:<20}  key", "denied", "policy");
    for k in &keys {
        println!("  {:>10}  {:<20}  {}", k.denied, k.policy, k.key);
    }
    Ok(ExitCode::SUCCESS)
}
