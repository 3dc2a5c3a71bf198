//! `floodgate breaker list|get|history|force-open|disable|metrics-only|reset`: what an
//! operator does with a shared circuit breaker: look at it, read its audit trail, and
//! override it for the whole fleet.
use std::{
    process::ExitCode,
    time::{Duration, SystemTime},
};

use floodgate_client::AuthChannel;
use floodgate_client::{
    Error,
    proto::v1::{self as pb, BreakerState, circuit_breakers_client::CircuitBreakersClient},
};
use serde_json::json;

use super::common::{ServerArgs, human_duration, millis};

/// Arguments of `floodgate breaker`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Breakers are configured on the server ([breakers.NAME], or [breakers.default] as the
template for any other name) and have their state per namespace. An override applies to
every server of the fleet at once:
  force-open    refuse every call until changed (FORCED_OPEN)
  disable       admit every call and record nothing (DISABLED)
  metrics-only  admit every call but keep counting (METRICS_ONLY)
  reset         back to CLOSED with an empty window

Exit status: 0 when the server answered; 1 when the request failed (unreachable server,
bad input, unknown breaker); 2 for bad flags.

Examples:
  floodgate breaker list --namespace shop
  floodgate breaker get --namespace shop payments --json
  floodgate breaker history --namespace shop payments --limit 20
  floodgate breaker force-open --namespace shop payments
  floodgate breaker reset --namespace shop payments")]
pub struct BreakerArgs {
    #[command(subcommand)]
    action: BreakerAction,
}

#[derive(Debug, clap::Subcommand)]
enum BreakerAction {
    /// List the namespace's breakers (the configured ones and those with state).
    List(ListArgs),
    /// Print one breaker's state and window.
    Get(Target),
    /// Print a breaker's recent transitions, newest first.
    History(HistoryArgs),
    /// Refuse every call through the breaker until it is changed (FORCED_OPEN).
    ForceOpen(Target),
    /// Admit every call and record nothing until it is changed (DISABLED).
    Disable(Target),
    /// Admit every call but keep counting outcomes until it is changed (METRICS_ONLY).
    MetricsOnly(Target),
    /// Close the breaker and empty its window (CLOSED).
    Reset(Target),
}

/// Where the namespace is and how to print.
#[derive(Debug, clap::Args)]
struct Scope {
    #[command(flatten)]
    server: ServerArgs,
    /// The namespace (1-64 characters of [A-Za-z0-9_.-]).
    #[arg(long, short = 'n', env = "FLOODGATE_NAMESPACE")]
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    scope: Scope,
}

/// The breaker to act on.
#[derive(Debug, clap::Args)]
struct Target {
    #[command(flatten)]
    scope: Scope,
    /// The breaker, e.g. payments.
    #[arg(value_name = "NAME")]
    name: String,
}

#[derive(Debug, clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    target: Target,
    /// At most this many transitions (1-1000; default 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: Option<u32>,
}

/// The server's field paths and the flags that set them.
const FLAGS: &[(&str, &str)] = &[
    ("namespace", "--namespace"),
    ("breaker", "NAME"),
    ("limit", "--limit"),
];

/// Runs `floodgate breaker`.
pub async fn run(args: BreakerArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        BreakerAction::List(a) => list(a.scope).await,
        BreakerAction::Get(t) => get(t).await,
        BreakerAction::History(h) => history(h).await,
        BreakerAction::ForceOpen(t) => set_state(t, BreakerState::ForcedOpen).await,
        BreakerAction::Disable(t) => set_state(t, BreakerState::Disabled).await,
        BreakerAction::MetricsOnly(t) => set_state(t, BreakerState::MetricsOnly).await,
        BreakerAction::Reset(t) => set_state(t, BreakerState::Closed).await,
    }
}

async fn client(server: &ServerArgs) -> anyhow::Result<CircuitBreakersClient<AuthChannel>> {
    Ok(CircuitBreakersClient::new(server.channel().await?))
}

/// Runs one RPC about breaker `name` (if any) with the `--timeout` deadline; NOT_FOUND says
/// how to configure the breaker, other errors get the common hints.
async fn call<T>(
    server: &ServerArgs,
    name: Option<&str>,
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    let answer = server
        .call(FLAGS, async {
            match rpc.await {
                Ok(r) => Ok(Ok(r.into_inner())),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(Err(s.message().to_owned())),
                Err(s) => Err(Error::from(s)),
            }
        })
        .await?;
    answer.map_err(|message| not_found(name.unwrap_or("NAME"), &message))
}

/// The message for a breaker the server has no configuration for.
fn not_found(name: &str, message: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "not found: {message}\n\
         hint: the server has no breaker {name:?}: add a [breakers.{name}] table, or a \
         [breakers.default] template for any name, to its configuration file; \
         `floodgate breaker list` shows the configured ones"
    )
}

/// A state's name as in the API, without the `BREAKER_STATE_` prefix.
pub fn state_name(v: i32) -> &'static str {
    match BreakerState::try_from(v) {
        Ok(BreakerState::Closed) => "CLOSED",
        Ok(BreakerState::Open) => "OPEN",
        Ok(BreakerState::HalfOpen) => "HALF_OPEN",
        Ok(BreakerState::ForcedOpen) => "FORCED_OPEN",
        Ok(BreakerState::Disabled) => "DISABLED",
        Ok(BreakerState::MetricsOnly) => "METRICS_ONLY",
        _ => "UNSPECIFIED",
    }
}

fn duration(d: Option<&prost_types::Duration>) -> Duration {
    d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .unwrap_or_default()
}

/// A timestamp as RFC 3339 in UTC with milliseconds, e.g. `2025-01-02T03:04:05.678Z`.
fn rfc3339(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let at = SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    humantime::format_rfc3339_millis(at).to_string()
}

fn percent(v: f64) -> String {
    format!("{v:.1}%")
}

fn info_json(namespace: &str, b: &pb::BreakerInfo) -> serde_json::Value {
    json!({
        "namespace": namespace,
        "breaker": b.breaker,
        "state": state_name(b.state),
        "exists": b.exists,
        "failure_rate": b.failure_rate,
        "slow_call_rate": b.slow_call_rate,
        "calls": b.calls,
        "failures": b.failures,
        "slow_calls": b.slow_calls,
        "retry_after_ms": millis(duration(b.retry_after.as_ref())),
        "generation": b.generation,
        "trial_permits_in_flight": b.trial_permits_in_flight,
        "half_open_calls": b.half_open_calls,
        "consecutive_opens": b.consecutive_opens,
        "failing_reporters": b.failing_reporters,
        "slow_call_duration_ms": millis(duration(b.slow_call_duration.as_ref())),
    })
}

fn event_json(e: &pb::BreakerEvent) -> serde_json::Value {
    json!({
        "at": rfc3339(e.at.as_ref()),
        "from": state_name(e.from),
        "to": state_name(e.to),
        "reason": e.reason,
        "generation": e.generation,
        "retry_after_ms": millis(duration(e.retry_after.as_ref())),
    })
}

/// Every field of one breaker, for people.
fn info_text(namespace: &str, b: &pb::BreakerInfo) -> String {
    let mut out = format!(
        "{} in {namespace}: {} (generation {})\n",
        b.breaker,
        state_name(b.state),
        b.generation
    );
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<19}{value}\n"));
    line(
        "failure rate",
        format!(
            "{} ({} of {} calls)",
            percent(b.failure_rate),
            b.failures,
            b.calls
        ),
    );
    line(
        "slow call rate",
        format!(
            "{} ({} of {} calls slower than {})",
            percent(b.slow_call_rate),
            b.slow_calls,
            b.calls,
            human_duration(duration(b.slow_call_duration.as_ref()))
        ),
    );
    line("calls", b.calls.to_string());
    line(
        "retry after",
        human_duration(duration(b.retry_after.as_ref())),
    );
    line(
        "trial permits",
        format!(
            "{} of {} in flight",
            b.trial_permits_in_flight, b.half_open_calls
        ),
    );
    line("consecutive opens", b.consecutive_opens.to_string());
    line("failing reporters", b.failing_reporters.to_string());
    line(
        "has state",
        if b.exists {
            "yes".into()
        } else {
            "no: never reported to; reads as CLOSED".into()
        },
    );
    out
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn list(s: Scope) -> anyhow::Result<ExitCode> {
    let mut c = client(&s.server).await?;
    let request = pb::ListBreakersRequest {
        namespace: s.namespace.clone(),
    };
    let breakers = call(&s.server, None, c.list(request)).await?.breakers;
    if s.json {
        let all: Vec<_> = breakers
            .iter()
            .map(|b| info_json(&s.namespace, b))
            .collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    if breakers.is_empty() {
        println!(
            "no breakers in {}: the server configures none\nhint: add [breakers.NAME] tables \
             (or a [breakers.default] template) to the server's configuration file",
            s.namespace
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = breakers
        .iter()
        .map(|b| {
            vec![
                b.breaker.clone(),
                state_name(b.state).to_owned(),
                percent(b.failure_rate),
                percent(b.slow_call_rate),
                b.calls.to_string(),
                human_duration(duration(b.retry_after.as_ref())),
                b.generation.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "BREAKER",
                "STATE",
                "FAILURE RATE",
                "SLOW RATE",
                "CALLS",
                "RETRY AFTER",
                "GENERATION",
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

async fn get(t: Target) -> anyhow::Result<ExitCode> {
    let mut c = client(&t.scope.server).await?;
    let request = pb::GetBreakerRequest {
        namespace: t.scope.namespace.clone(),
        breaker: t.name.clone(),
    };
    let info = call(&t.scope.server, Some(&t.name), c.get(request)).await?;
    if t.scope.json {
        println!("{}", info_json(&t.scope.namespace, &info));
    } else {
        print!("{}", info_text(&t.scope.namespace, &info));
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(h: HistoryArgs) -> anyhow::Result<ExitCode> {
    let t = h.target;
    let mut c = client(&t.scope.server).await?;
    let request = pb::BreakerHistoryRequest {
        namespace: t.scope.namespace.clone(),
        breaker: t.name.clone(),
        limit: h.limit.unwrap_or(0),
    };
    let events = call(&t.scope.server, Some(&t.name), c.history(request))
        .await?
        .events;
    if t.scope.json {
        let all: Vec<_> = events.iter().map(event_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        println!(
            "no transitions of {} in {} yet (it has stayed CLOSED)",
            t.name, t.scope.namespace
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                rfc3339(e.at.as_ref()),
                format!("{} → {}", state_name(e.from), state_name(e.to)),
                e.reason.clone(),
                e.generation.to_string(),
                human_duration(duration(e.retry_after.as_ref())),
            ]
        })
        .collect();
    println!(
        "{} in {}: {} transitions, newest first",
        t.name,
        t.scope.namespace,
        events.len()
    );
    print!(
        "{}",
        table(
            &[
                "TIME (UTC)",
                "TRANSITION",
                "REASON",
                "GENERATION",
                "RETRY AFTER"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

async fn set_state(t: Target, state: BreakerState) -> anyhow::Result<ExitCode> {
    let mut c = client(&t.scope.server).await?;
    let request = pb::SetBreakerStateRequest {
        namespace: t.scope.namespace.clone(),
        breaker: t.name.clone(),
        state: state as i32,
    };
    let info = call(&t.scope.server, Some(&t.name), c.set_state(request)).await?;
    if t.scope.json {
        println!("{}", info_json(&t.scope.namespace, &info));
        return Ok(ExitCode::SUCCESS);
    }
    let what = match state {
        BreakerState::ForcedOpen => "refuses every call until changed",
        BreakerState::Disabled => "admits every call and records nothing until changed",
        BreakerState::MetricsOnly => "admits every call and keeps counting until changed",
        _ => "admits calls again; its window is empty",
    };
    println!(
        "{} in {} is now {} (generation {}): {what}",
        info.breaker,
        t.scope.namespace,
        state_name(info.state),
        info.generation
    );
    println!(
        "  calls {}, failure rate {}, slow call rate {}",
        info.calls,
        percent(info.failure_rate),
        percent(info.slow_call_rate)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_000_000,
        };
        assert_eq!(rfc3339(Some(&t)), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(None), "-");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONG HEADER"],
            &[vec!["wide cell".into(), "x".into()]],
        );
        assert_eq!(t, "A          LONG HEADER\nwide cell  x\n");
    }

    #[test]
    fn not_found_names_the_breaker_and_the_config() {
        let e = not_found("pay", "breaker: no [breakers.pay]").to_string();
        assert!(e.contains("\"pay\"") && e.contains("[breakers.pay]"), "{e}");
        assert!(e.contains("[breakers.default]"), "{e}");
    }
}
