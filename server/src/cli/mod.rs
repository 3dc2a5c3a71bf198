//! The `floodgate` command line: one module per subcommand.
//!
//! - [`serve`]: run the server.
//! - [`acquire`]: ask a server for a decision, printed for people or as JSON.
//! - [`limit`]: inspect (`show`) or clear (`reset`) one limit.
//! - [`bench`]: closed-loop load generator over the public gRPC API.
//! - [`breaker`]: inspect (`list`, `get`, `history`) or override (`force-open`, `disable`,
//!   `metrics-only`, `reset`) shared circuit breakers.
//! - [`status`]: `status` (what a server runs) and `top` (the keys denied most).
//! - [`dlq`]: dead-letter queues: `stats`, `list`, `show`, `replay`, `redrive`, `archive`,
//!   `restore`, `purge`.
//! - [`token`]: `token new`, a bearer token and its `[[tokens]]` table.
//! - [`audit`]: print the audit trail of operator and admin actions.
//! - [`migrate`]: bring a Redis's floodgate schema up to this binary's (`migrations/`).
//! - [`policy_args`]: the policy flags (`--policy`, `--limit 10/s`, ...) and their parser.
//! - [`attack`]: hostile clients for `bench --attack-*` and the hostile-client tests.
//! - [`common`]: `--server`, connecting, error messages with hints, durations for people.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod acquire;
pub mod attack;
pub mod audit;
pub mod bench;
pub mod breaker;
pub mod common;
pub mod dlq;
pub mod limit;
pub mod migrate;
pub mod policy_args;
pub mod serve;
pub mod status;
pub mod token;

/// floodgate: fleet-wide rate limits, leases and breakers over gRPC.
#[derive(Debug, Parser)]
#[command(name = "floodgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (in-memory store unless a Redis URL is given).
    Serve(serve::ServeArgs),
    /// Ask a server to admit one request and print its decision.
    Acquire(acquire::AcquireArgs),
    /// Inspect or clear one limit.
    Limit(limit::LimitArgs),
    /// Load a server with Acquires and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Inspect or override shared circuit breakers.
    Breaker(breaker::BreakerArgs),
    /// Apply the Redis schema migrations a store lacks (or list them with --dry-run).
    Migrate(migrate::MigrateArgs),
    /// Print what a server runs: version, store, schema, policies, breakers.
    Status(status::StatusArgs),
    /// Print the keys a namespace's limits denied most in the last minutes.
    Top(status::TopArgs),
    /// Inspect, replay, redrive, archive or purge dead-letter queues.
    Dlq(dlq::DlqArgs),
    /// Make bearer tokens for servers with authentication.
    Token(token::TokenArgs),
    /// Print the audit trail: operator and admin actions and refused attempts.
    Audit(audit::AuditArgs),
}

/// `floodgate status | head` ends quietly, as Unix tools do, instead of panicking on the
/// closed pipe: the one-shot commands take SIGPIPE's default action. `serve` and `bench`
/// keep Rust's "ignore", so a peer that hangs up is an error on that socket, never the end
/// of the process.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread is spawned; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses the process arguments and runs the subcommand; errors print as `error: …`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        end_quietly_on_a_closed_pipe();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let threads = match &cli.command {
        Command::Serve(a) => a.worker_threads,
        Command::Bench(a) => a.threads,
        // One-shot commands need no more.
        _ => Some(2),
    };
    if let Some(n) = threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Acquire(a) => acquire::run(a).await,
            Command::Limit(a) => limit::run(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Breaker(a) => breaker::run(a).await,
            Command::Migrate(a) => migrate::run(a).await,
            Command::Status(a) => status::status(a).await,
            Command::Top(a) => status::top(a).await,
            Command::Dlq(a) => dlq::run(a).await,
            Command::Token(a) => token::run(a).await,
            Command::Audit(a) => audit::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
