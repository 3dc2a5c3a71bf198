//! `floodgate bench`: a closed-loop load generator over the public gRPC API. Each task
//! sends one Acquire (or, with `--api rls`, one Envoy `ShouldRateLimit`), waits for the
//! answer, and sends the next, on a random key, until the time is up; then it reports Acquire/s, latency percentiles, and (given the server's
//! pid) the server's CPU time per Acquire.
use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use floodgate_client::AuthChannel;
use floodgate_client::{Client, Error};
use floodgate_proto::{
    envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
        service::ratelimit::v3::{
            RateLimitRequest, rate_limit_response::Code,
            rate_limit_service_client::RateLimitServiceClient,
        },
    },
    v1::{self as pb, limit_check, rate_limiter_client::RateLimiterClient},
};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;

use super::{
    common::{ServerArgs, explain, human_duration},
    policy_args::{AlgorithmArg, InlineSpec, LimitSpec},
};

/// Arguments of `floodgate bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Every task loops: Acquire on a random key among --keys, wait for the answer, repeat.
Latencies are measured after --warmup, for --duration. A concurrency policy's leases are
released right after each admitted Acquire (the Release is not timed). Answers the server
decided without its store (degraded: a store deadline passed and a fail mode answered) are
counted apart: a run with many of them did not measure the store.

With --api rls each task calls Envoy's ShouldRateLimit instead: domain --namespace, one
descriptor [(\"key\", \"bench:N\")]. The server needs a rate limit file for it, e.g.
  domain: bench
  descriptors:
    - key: key
      metadata: {floodgate: {algorithm: token_bucket}}
      rate_limit: {unit: second, requests_per_unit: 1000}
(`floodgate serve --rls-config bench.yaml`); figures are then ShouldRateLimit/s.

Exit status: 0 when every request succeeded (allowed or denied), 1 when any failed.

Examples:
  floodgate bench --duration 3s
  floodgate bench --concurrency 16 --algorithm sliding_log --limit 100/s --json
  floodgate bench --server-pid $(pgrep -n floodgate)
  floodgate bench --api rls --namespace bench --duration 5s
  floodgate bench --attack-watches 1000 --attack-slow-loris 200 --attack-oversize 4
    (the attack's Watch streams need a [breakers.default] table on the server)")]
pub struct BenchArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Threads of the load generator [default: one per core]. On a machine the server
    /// shares, `--threads 1` with `serve --worker-threads 1` gives each process a core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Requests in flight at once (one task each).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// How long to measure, after the warmup.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    duration: Duration,
    /// How long to run unmeasured first (connections open, the store fills with keys).
    #[arg(long, default_value = "1s", value_parser = warmup_duration)]
    warmup: Duration,
    /// Number of distinct keys, chosen uniformly at random.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// HTTP/2 connections to the server; tasks are spread over them.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    connections: u64,
    /// The algorithm of the inline policy [default: token_bucket].
    #[arg(long, value_enum)]
    algorithm: Option<AlgorithmArg>,
    /// The inline policy's limit per key [default: 1000/s, a bare 1000 for concurrency:
    /// mostly allows at any rate one server reaches over 10,000 keys].
    #[arg(long, allow_hyphen_values = true)]
    limit: Option<LimitSpec>,
    /// Token bucket capacity [default: the limit's count].
    #[arg(long)]
    burst: Option<u64>,
    /// Which RPC to drive: floodgate's Acquire, or Envoy's ShouldRateLimit (`rls`).
    #[arg(long, value_enum, default_value = "acquire")]
    api: Api,
    /// Use a configured policy instead of an inline one.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["algorithm", "limit", "burst"])]
    policy: Option<String>,
    /// The namespace the keys live in (bench:0 ... bench:N-1).
    #[arg(long, short = 'n', default_value = "bench")]
    namespace: String,
    /// The server's process id (same machine): report its CPU time per Acquire.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Hostile clients running during the whole bench (compare with a run without them).
    #[command(flatten)]
    attack: super::attack::AttackArgs,
}

/// The RPC a bench drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Api {
    /// `floodgate.v1.RateLimiter/Acquire`.
    Acquire,
    /// `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
    Rls,
}

/// One ShouldRateLimit of the bench: domain `domain`, descriptor `[("key", key)]`.
fn rls_request(domain: &str, key: String) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "key".into(),
                value: key,
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

/// One closed-loop ShouldRateLimit task: returns its latency histogram (microseconds).
async fn rls_task(
    mut rls: RateLimitServiceClient<AuthChannel>,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    seed: u64,
) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut rng = XorShift::new(seed);
    while !counters.stop.load(Ordering::Relaxed) {
        let request = rls_request(&plan.namespace, format!("bench:{}", rng.below(plan.keys)));
        let t0 = Instant::now();
        let answer = tokio::time::timeout(plan.timeout, rls.should_rate_limit(request)).await;
        let t1 = Instant::now();
        if counters.stop.load(Ordering::Relaxed) {
            break;
        }
        if t0 < plan.measure_start {
            continue;
        }
        match answer {
            Ok(Ok(r)) if r.get_ref().overall_code == Code::Ok as i32 => {
                counters.allowed.fetch_add(1, Ordering::Relaxed)
            }
            Ok(Ok(_)) => counters.denied.fetch_add(1, Ordering::Relaxed),
            Ok(Err(status)) => {
                let _ = counters.first_error.set(error_text(status.into()));
                counters.errors.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => {
                let _ = counters.first_error.set(format!(
                    "no answer within {} (--timeout)",
                    human_duration(plan.timeout)
                ));
                counters.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        let us = u64::try_from((t1 - t0).as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(us.max(1));
    }
    hist
}

/// Longest `--duration` or `--warmup`: far beyond any useful run, and far below the point
/// where `Instant + Duration` overflows (which panics).
const MAX_BENCH_TIME: Duration = Duration::from_secs(7 * 24 * 3600);

fn bench_time(s: &str, allow_zero: bool) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() && !allow_zero => Err("must be greater than 0, e.g. 10s".into()),
        Ok(d) if d > MAX_BENCH_TIME => Err("must be at most 7 days".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; expected a duration such as 10s or 500ms")),
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    bench_time(s, false)
}

fn warmup_duration(s: &str) -> Result<Duration, String> {
    bench_time(s, true)
}

/// Server field paths and the bench flags that set them.
const BENCH_FLAGS: &[(&str, &str)] = &[
    ("namespace", "--namespace"),
    ("policy_name", "--policy"),
    ("inline.limit", "--limit"),
    ("inline.period", "--limit (its period)"),
    ("inline.burst", "--burst"),
    ("cost", "--burst or --limit (cost 1 must fit)"),
];

/// Counters shared by the tasks and the progress line.
#[derive(Debug, Default)]
struct Counters {
    /// Set when the measurement ends; tasks stop and drop answers that arrive after it.
    stop: AtomicBool,
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    /// Answers (allowed or denied) the server decided without its store.
    degraded: AtomicU64,
    /// The first error's message, for the report.
    first_error: OnceLock<String>,
}

impl Counters {
    fn total(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
            + self.denied.load(Ordering::Relaxed)
            + self.errors.load(Ordering::Relaxed)
    }
}

/// xorshift64*: a cheap, good-enough generator for picking keys.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for n far below 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// What one task sends.
#[derive(Debug, Clone)]
struct Plan {
    namespace: String,
    policy: limit_check::Policy,
    keys: u64,
    /// Release each lease right after it is granted (concurrency policies).
    release: bool,
    /// Answers started before this are warmup and not recorded.
    measure_start: Instant,
    timeout: Duration,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; the bounds are valid, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn error_text(e: Error) -> String {
    super::common::error_chain(&e)
}

/// One closed-loop task: returns its latency histogram (microseconds).
async fn task(
    mut rl: RateLimiterClient<AuthChannel>,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    seed: u64,
) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut rng = XorShift::new(seed);
    while !counters.stop.load(Ordering::Relaxed) {
        let key = format!("bench:{}", rng.below(plan.keys));
        let request = pb::AcquireRequest {
            namespace: plan.namespace.clone(),
            checks: vec![pb::LimitCheck {
                key: key.clone(),
                cost: 1,
                policy: Some(plan.policy.clone()),
            }],
            ..Default::default()
        };
        let t0 = Instant::now();
        let answer = tokio::time::timeout(plan.timeout, rl.acquire(request)).await;
        let t1 = Instant::now();
        if counters.stop.load(Ordering::Relaxed) {
            break; // answered after the end: not part of the measurement
        }
        let outcome = match answer {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(error_text(status.into())),
            Err(_) => Err(format!(
                "no answer within {} (--timeout)",
                human_duration(plan.timeout)
            )),
        };
        if plan.release
            && let Ok(r) = &outcome
            && let Some(lease) = r.checks.first().map(|c| &c.lease_id)
            && !lease.is_empty()
        {
            let release = pb::ReleaseRequest {
                namespace: plan.namespace.clone(),
                key,
                lease_id: lease.clone(),
            };
            let _ = tokio::time::timeout(plan.timeout, rl.release(release)).await;
        }
        if t0 < plan.measure_start {
            continue;
        }
        if matches!(&outcome, Ok(r) if r.degraded) {
            counters.degraded.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(r) if r.allowed => counters.allowed.fetch_add(1, Ordering::Relaxed),
            Ok(_) => counters.denied.fetch_add(1, Ordering::Relaxed),
            Err(message) => {
                let _ = counters.first_error.set(message);
                counters.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        let us = u64::try_from((t1 - t0).as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(us.max(1));
    }
    hist
}

/// A process's user + system CPU time in clock ticks, from the text of `/proc/PID/stat`
/// (fields 14 and 15; the command name in field 2 may contain spaces and parentheses).
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    stat_ticks(&text).with_context(|| format!("cannot parse {path}"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU microseconds per request from a tick delta.
fn cpu_us_per_request(ticks: u64, ticks_per_second: u64, requests: u64) -> Option<f64> {
    (requests > 0 && ticks_per_second > 0)
        .then(|| ticks as f64 * 1e6 / ticks_per_second as f64 / requests as f64)
}

/// CPU time samples of the server (optional) and of this process.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    server: Option<u64>,
    bench: Option<u64>,
}

fn sample_cpu(server_pid: Option<u32>) -> CpuSample {
    CpuSample {
        server: server_pid.and_then(|p| cpu_ticks(&p.to_string()).ok()),
        bench: cpu_ticks("self").ok(),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in microseconds for people: `850µs`, `1.31ms`, `12.3ms`, `250ms`.
fn latency_text(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..10_000 => format!("{:.2}ms", us as f64 / 1e3),
        10_000..100_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.0}ms", us as f64 / 1e3),
    }
}

/// Builds the policy to send and its description, and checks the flags.
fn plan_policy(args: &BenchArgs) -> anyhow::Result<(limit_check::Policy, String, bool)> {
    if let Some(name) = &args.policy {
        return Ok((
            limit_check::Policy::PolicyName(name.clone()),
            format!("policy {name}"),
            true, // a named concurrency policy's leases are released too
        ));
    }
    let algorithm = args.algorithm.unwrap_or(AlgorithmArg::TokenBucket);
    let limit = args.limit.unwrap_or(LimitSpec {
        count: 1_000,
        period: (algorithm != AlgorithmArg::Concurrency).then_some(Duration::from_secs(1)),
    });
    let spec =
        InlineSpec::new(algorithm, limit, args.burst, None, false).map_err(anyhow::Error::msg)?;
    Ok((
        limit_check::Policy::Inline(spec.policy().into_proto()),
        spec.to_string(),
        algorithm == AlgorithmArg::Concurrency,
    ))
}

/// Runs `floodgate bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (policy, description, release) = plan_policy(&args)?;
    let description = match args.api {
        Api::Acquire => description,
        Api::Rls => "ShouldRateLimit of the descriptor [(\"key\", \"bench:N\")] \
                     (its limit from the server's rate limit file)"
            .to_owned(),
    };
    if let Some(pid) = args.server_pid {
        cpu_ticks(&pid.to_string()).with_context(|| {
            format!("--server-pid {pid}: no such process on this machine (or /proc is missing)")
        })?;
    }
    let url = args.server.url();
    let connections = args.connections.min(args.concurrency);

    // Connect every channel first, then one Acquire, so a wrong flag fails at once.
    let clients =
        futures::future::try_join_all((0..connections).map(|_| args.server.connect())).await?;
    if args.api == Api::Rls {
        let mut probe = RateLimitServiceClient::new(clients[0].transport().clone());
        let request = rls_request(&args.namespace, "bench:0".into());
        match tokio::time::timeout(args.server.timeout, probe.should_rate_limit(request)).await {
            Ok(Ok(r))
                if r.get_ref()
                    .statuses
                    .first()
                    .is_some_and(|s| s.current_limit.is_some()) => {}
            Ok(Ok(_)) => anyhow::bail!(
                "{url}: domain {:?} has no limit for the descriptor [(\"key\", \"bench:0\")]; \
                 give the server a rate limit file with `domain: {}` and a descriptor `key: key` \
                 (see `floodgate bench --help`)",
                args.namespace,
                args.namespace
            ),
            Ok(Err(status)) => return Err(explain(&url, &status.into(), BENCH_FLAGS)),
            Err(_) => anyhow::bail!(
                "{url} did not answer a first ShouldRateLimit within {}",
                human_duration(args.server.timeout)
            ),
        }
    }
    let mut probe = clients[0].rate_limiter();
    let probe_request = pb::AcquireRequest {
        namespace: args.namespace.clone(),
        checks: vec![pb::LimitCheck {
            key: "bench:0".into(),
            cost: 1,
            policy: Some(policy.clone()),
        }],
        ..Default::default()
    };
    let probe_acquire = async {
        if args.api == Api::Rls {
            return None; // probed above
        }
        Some(tokio::time::timeout(args.server.timeout, probe.acquire(probe_request.clone())).await)
    };
    match probe_acquire.await {
        None => {}
        Some(Ok(Ok(r))) => {
            if let Some(c) = r.into_inner().checks.first()
                && !c.lease_id.is_empty()
            {
                let _ = probe
                    .release(pb::ReleaseRequest {
                        namespace: args.namespace.clone(),
                        key: "bench:0".into(),
                        lease_id: c.lease_id.clone(),
                    })
                    .await;
            }
        }
        Some(Ok(Err(status))) => return Err(explain(&url, &status.into(), BENCH_FLAGS)),
        Some(Err(_)) => anyhow::bail!(
            "{url} did not answer a first Acquire within {}\nhint: is the server overloaded? \
             raise --timeout",
            human_duration(args.server.timeout)
        ),
    }

    let attack = if args.attack.any() {
        Some(super::attack::Attack::start(&args.server, &args.namespace, &args.attack).await?)
    } else {
        None
    };
    eprintln!(
        "floodgate bench: {} tasks over {connections} connections to {url}\n  \
         {description} on {} key{} in namespace {}, {} after {} warmup",
        args.concurrency,
        thousands(args.keys),
        if args.keys == 1 { "" } else { "s" },
        args.namespace,
        human_duration(args.duration),
        human_duration(args.warmup),
    );

    let start = Instant::now();
    let measure_start = start + args.warmup;
    let end = measure_start + args.duration;
    let plan = Arc::new(Plan {
        namespace: args.namespace.clone(),
        policy,
        keys: args.keys,
        release,
        measure_start,
        timeout: args.server.timeout,
    });
    let counters = Arc::new(Counters::default());
    let seed_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5EED);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let client: &Client = &clients[(i % connections) as usize];
            let seed = seed_base ^ i.wrapping_mul(0x9E37_79B9);
            match args.api {
                Api::Acquire => tokio::spawn(task(
                    client.rate_limiter(),
                    plan.clone(),
                    counters.clone(),
                    seed,
                )),
                Api::Rls => tokio::spawn(rls_task(
                    RateLimitServiceClient::new(client.transport().clone()),
                    plan.clone(),
                    counters.clone(),
                    seed,
                )),
            }
        })
        .collect();

    let progress = std::io::stderr().is_terminal() && !args.json;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;

    // Warmup.
    if progress && !args.warmup.is_zero() {
        eprint!("\r\x1b[2K  warming up for {}…", human_duration(args.warmup));
    }
    tokio::select! {
        () = tokio::time::sleep_until(measure_start) => {}
        _ = &mut ctrl_c => interrupted = true,
    }
    let cpu_before = sample_cpu(args.server_pid);
    let measured_from = Instant::now();

    // Measurement, with a progress line once per second.
    if !interrupted {
        let mut ticker = tokio::time::interval_at(
            measure_start + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let mut last = 0;
        if progress {
            eprint!("\r\x1b[2K  measuring…");
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                _ = &mut ctrl_c => { interrupted = true; break }
                _ = ticker.tick() => {
                    if progress {
                        let total = counters.total();
                        eprint!(
                            "\r\x1b[2K  {}/{}  {} Acquire/s  allowed {}  denied {}  errors {}",
                            human_duration(measure_start.elapsed()),
                            human_duration(args.duration),
                            thousands(total - last),
                            thousands(counters.allowed.load(Ordering::Relaxed)),
                            thousands(counters.denied.load(Ordering::Relaxed)),
                            thousands(counters.errors.load(Ordering::Relaxed)),
                        );
                        let _ = std::io::stderr().flush();
                        last = total;
                    }
                }
            }
        }
    }
    counters.stop.store(true, Ordering::Relaxed);
    let elapsed = measured_from.elapsed();
    let cpu_after = sample_cpu(args.server_pid);
    if progress {
        eprint!("\r\x1b[2K");
    }
    if interrupted {
        eprintln!("  interrupted: reporting what was measured so far");
    }
    if let Some(a) = attack {
        eprintln!("  {}", a.describe());
    }

    // Every task ends within one request timeout of `stop`; abort any that do not.
    let mut hist = new_histogram();
    let grace = args.server.timeout.saturating_add(Duration::from_secs(1));
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout(grace, t).await {
            Ok(Ok(h)) => {
                let _ = hist.add(h);
            }
            Ok(Err(e)) if e.is_panic() => anyhow::bail!("a bench task panicked: {e}"),
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
    }

    let report = Report::new(
        &counters,
        &hist,
        elapsed,
        cpu_before,
        cpu_after,
        clock_ticks_per_second(),
    );
    if args.json {
        println!("{}", report.json(&args, &url, connections, &description));
    } else {
        let text = report.text(args.server_pid);
        match args.api {
            Api::Acquire => print!("{text}"),
            // The same figures, named for the RPC measured.
            Api::Rls => print!("{}", text.replace("Acquire", "call")),
        }
    }
    if report.errors > 0 {
        eprintln!(
            "error: {} of {} requests failed; the first: {}",
            thousands(report.errors),
            thousands(report.requests),
            counters.first_error.get().map_or("?", String::as_str),
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    seconds: f64,
    requests: u64,
    allowed: u64,
    denied: u64,
    errors: u64,
    degraded: u64,
    per_second: f64,
    /// p50, p90, p99, p99.9, max, mean, in microseconds.
    latency_us: [u64; 6],
    server_cpu_us: Option<f64>,
    bench_cpu_us: Option<f64>,
}

impl Report {
    fn new(
        c: &Counters,
        h: &Histogram<u64>,
        elapsed: Duration,
        before: CpuSample,
        after: CpuSample,
        ticks_per_second: u64,
    ) -> Self {
        let (allowed, denied, errors) = (
            c.allowed.load(Ordering::Relaxed),
            c.denied.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        );
        let requests = allowed + denied + errors;
        let seconds = elapsed.as_secs_f64();
        let answered = allowed + denied;
        let per = |b: Option<u64>, a: Option<u64>| match (b, a) {
            (Some(b), Some(a)) => {
                cpu_us_per_request(a.saturating_sub(b), ticks_per_second, answered)
            }
            _ => None,
        };
        Self {
            seconds,
            requests,
            allowed,
            denied,
            errors,
            degraded: c.degraded.load(Ordering::Relaxed),
            per_second: if seconds > 0.0 {
                answered as f64 / seconds
            } else {
                0.0
            },
            latency_us: [
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.90),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.mean().round() as u64,
            ],
            server_cpu_us: per(before.server, after.server),
            bench_cpu_us: per(before.bench, after.bench),
        }
    }

    fn text(&self, server_pid: Option<u32>) -> String {
        let [p50, p90, p99, p999, max, _] = self.latency_us.map(latency_text);
        let mut out = format!(
            "  Acquire/s   {}\n  requests    {}  (allowed {}, denied {}, errors {}) in {}\n  \
             degraded    {}\n  latency     p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}\n",
            thousands(self.per_second.round() as u64),
            thousands(self.requests),
            thousands(self.allowed),
            thousands(self.denied),
            thousands(self.errors),
            human_duration(Duration::from_secs_f64(self.seconds)),
            if self.degraded == 0 {
                "0".to_owned()
            } else {
                format!(
                    "{} answers decided without the store (fail mode): not real decisions",
                    thousands(self.degraded)
                )
            },
        );
        match (server_pid, self.server_cpu_us) {
            (Some(pid), Some(us)) => out.push_str(&format!(
                "  server CPU  {us:.1}µs per Acquire (pid {pid})\n"
            )),
            (Some(pid), None) => out.push_str(&format!(
                "  server CPU  unknown (pid {pid} could not be read)\n"
            )),
            (None, _) => {}
        }
        if let Some(us) = self.bench_cpu_us {
            out.push_str(&format!(
                "  bench CPU   {us:.1}µs per Acquire (this load generator)\n"
            ));
        }
        out
    }

    fn json(
        &self,
        args: &BenchArgs,
        url: &str,
        connections: u64,
        description: &str,
    ) -> serde_json::Value {
        let [p50, p90, p99, p999, max, mean] = self.latency_us;
        json!({
            "server": url,
            "api": match args.api { Api::Acquire => "acquire", Api::Rls => "rls" },
            "policy": description,
            "namespace": args.namespace,
            "keys": args.keys,
            "concurrency": args.concurrency,
            "connections": connections,
            "warmup_s": args.warmup.as_secs_f64(),
            "duration_s": self.seconds,
            "acquire_per_s": (self.per_second * 10.0).round() / 10.0,
            "requests": self.requests,
            "allowed": self.allowed,
            "denied": self.denied,
            "errors": self.errors,
            "degraded": self.degraded,
            "latency_us": {
                "p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": max, "mean": mean,
            },
            "server_pid": args.server_pid,
            "server_cpu_us_per_acquire": self.server_cpu_us.map(|u| (u * 100.0).round() / 100.0),
            "bench_cpu_us_per_acquire": self.bench_cpu_us.map(|u| (u * 100.0).round() / 100.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_times_are_bounded() {
        assert_eq!(positive_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(positive_duration("0s").is_err());
        assert_eq!(warmup_duration("0s"), Ok(Duration::ZERO));
        // `Instant + Duration` would panic on these.
        assert!(positive_duration("500000000000y").is_err());
        assert!(warmup_duration("500000000000y").is_err());
    }

    #[test]
    fn xorshift_spreads_keys_and_streams_differ() {
        let mut a = XorShift::new(0);
        let mut b = XorShift::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[a.below(10) as usize] += 1;
        }
        // Each bucket within 5% of 10,000.
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_ne!(xs, ys);
        assert_ne!(XorShift::new(0).0, 0);
    }

    #[test]
    fn proc_stat_cpu_ticks() {
        // A command name with spaces and a parenthesis, as the kernel allows.
        let stat = "4242 (flood gate) x) S 1 4242 4242 0 -1 4194560 1043 0 0 0 \
                    731 268 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(stat_ticks(stat), Some(731 + 268));
        assert_eq!(stat_ticks("garbage"), None);
        assert_eq!(stat_ticks("1 (x) S 1 2"), None);
        // This process can read its own.
        assert!(cpu_ticks("self").is_ok());
    }

    #[test]
    fn cpu_per_request() {
        // 150 ticks at 100/s = 1.5 s of CPU over 100,000 requests = 15 µs each.
        assert_eq!(cpu_us_per_request(150, 100, 100_000), Some(15.0));
        assert_eq!(cpu_us_per_request(150, 100, 0), None);
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(latency_text(850), "850µs");
        assert_eq!(latency_text(1_314), "1.31ms");
        assert_eq!(latency_text(12_345), "12.3ms");
        assert_eq!(latency_text(250_400), "250ms");
    }

    #[test]
    fn report_from_counters() {
        let c = Counters::default();
        c.allowed.store(900, Ordering::Relaxed);
        c.denied.store(100, Ordering::Relaxed);
        c.errors.store(5, Ordering::Relaxed);
        c.degraded.store(3, Ordering::Relaxed);
        let mut h = new_histogram();
        for us in 1..=1_000 {
            h.record(us).unwrap();
        }
        let before = CpuSample {
            server: Some(10),
            bench: None,
        };
        let after = CpuSample {
            server: Some(12),
            bench: None,
        };
        let r = Report::new(&c, &h, Duration::from_secs(2), before, after, 100);
        assert_eq!((r.requests, r.errors), (1_005, 5));
        assert_eq!(r.per_second, 500.0);
        // 2 ticks = 20 ms over 1,000 answers.
        assert_eq!(r.server_cpu_us, Some(20.0));
        assert_eq!(r.bench_cpu_us, None);
        assert_eq!(r.latency_us[0], 500);
        let text = r.text(Some(7));
        assert!(text.contains("20.0µs per Acquire (pid 7)"), "{text}");
        assert!(text.contains("degraded    3 answers"), "{text}");
    }
}
