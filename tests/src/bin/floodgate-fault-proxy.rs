//! `floodgate-fault-proxy`: the test harness's fault proxy (`floodgate_tests::fault_proxy`)
//! as a command, for the fault benchmark in the README ("When Redis fails"): it forwards
//! to a Redis, then after a while turns into a blackhole (or resets or delays).
//!
//! ```text
//! floodgate-fault-proxy --upstream 127.0.0.1:6399 [--after 3s] [--then blackhole|reset|delay=20ms|pass]
//! ```
//! It prints `listening on 127.0.0.1:PORT` and runs until killed.
use std::{net::SocketAddr, process::ExitCode, time::Duration};

use floodgate_tests::fault_proxy::{FaultMode, FaultProxy};

const USAGE: &str = "usage: floodgate-fault-proxy --upstream HOST:PORT [--after 3s] [--then blackhole|reset|delay=20ms|pass]";

fn parse_duration(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    s.strip_suffix('s')?.parse().ok().map(Duration::from_secs)
}

fn parse_mode(s: &str) -> Option<FaultMode> {
    match s {
        "pass" => Some(FaultMode::Pass),
        "blackhole" => Some(FaultMode::Blackhole),
        "reset" => Some(FaultMode::Reset),
        other => parse_duration(other.strip_prefix("delay=")?).map(FaultMode::Delay),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut upstream, mut after, mut then) = (None, Duration::from_secs(3), FaultMode::Blackhole);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next();
        let ok = match (flag.as_str(), value) {
            ("--upstream", Some(v)) => v.parse::<SocketAddr>().map(|a| upstream = Some(a)).is_ok(),
            ("--after", Some(v)) => parse_duration(v).map(|d| after = d).is_some(),
            ("--then", Some(v)) => parse_mode(v).map(|m| then = m).is_some(),
            _ => false,
        };
        if !ok {
            eprintln!(
                "floodgate-fault-proxy: cannot use {flag} {}\n{USAGE}",
                value.map_or("", |v| v)
            );
            return ExitCode::from(2);
        }
    }
    let Some(upstream) = upstream else {
        eprintln!("floodgate-fault-proxy: --upstream is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let proxy = FaultProxy::start(upstream).await;
    println!("listening on {}", proxy.addr());
    tokio::time::sleep(after).await;
    proxy.set(then);
    eprintln!("floodgate-fault-proxy: now {then:?}");
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
