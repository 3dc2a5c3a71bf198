//! Metric names and the one place they are recorded. Every family starts with
//! `floodgate_`; labels are bounded (RPC names, status codes, configured policy names —
//! inline policies count as `inline` —, the first 1,000 namespaces seen — later ones count
//! as `other`), never user keys.
use std::{
    collections::HashSet,
    fmt::Write as _,
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use parking_lot::RwLock;

use metrics::{Counter, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::StoreError;

/// Installs the Prometheus recorder for this process and describes every family.
/// Returns the handle `/metrics` renders, or `None` when a recorder was already installed
/// (a second server in one process, as in unit tests).
pub fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder().ok()?;
    describe_counter!(
        "floodgate_requests_total",
        "gRPC calls by rpc and status code"
    );
    describe_counter!(
        "floodgate_decisions_total",
        "Limit checks decided, by namespace, policy (name, or `inline`) and result"
    );
    describe_counter!(
        "floodgate_degraded_total",
        "Acquires answered by a fail mode because the store failed, by reason"
    );
    describe_counter!(
        "floodgate_store_errors_total",
        "Failed store calls, by operation and kind"
    );
    describe_gauge!("floodgate_build_info", "Always 1; the version is a label");
    gauge!("floodgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Some(handle)
}

/// Drains the recorder's histogram samples into their buckets every few seconds; without
/// it samples pile up between scrapes (`install_recorder` leaves upkeep to the caller).
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The hot path's request series, resolved once (a lookup by labels costs more than the
/// increment itself).
static ACQUIRE_OK: LazyLock<Counter> =
    LazyLock::new(|| counter!("floodgate_requests_total", "rpc" => "Acquire", "code" => "Ok"));

/// One gRPC call answered with `code` (`OK`, `InvalidArgument`, …).
pub fn request(rpc: &'static str, code: tonic::Code) {
    if rpc == "Acquire" && code == tonic::Code::Ok {
        ACQUIRE_OK.increment(1);
        return;
    }
    counter!("floodgate_requests_total", "rpc" => rpc, "code" => code_name(code)).increment(1);
}

/// The status code's name, without allocating.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Most namespaces given their own label; later ones count as `other`, so a client minting
/// namespaces cannot grow the metrics without bound.
pub const MAX_NAMESPACE_LABELS: usize = 1_000;

fn namespace_label(ns: &str) -> String {
    static SEEN: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(Default::default);
    if SEEN.read().contains(ns) {
        return ns.to_owned();
    }
    let mut seen = SEEN.write();
    if seen.len() < MAX_NAMESPACE_LABELS {
        seen.insert(ns.to_owned());
        ns.to_owned()
    } else if seen.contains(ns) {
        ns.to_owned()
    } else {
        "other".to_owned()
    }
}

/// One limit check decided.
pub fn decision(namespace: &str, policy: &str, result: &'static str) {
    counter!(
        "floodgate_decisions_total",
        "namespace" => namespace_label(namespace),
        "policy" => policy.to_owned(),
        "result" => result
    )
    .increment(1);
}

/// One store call and how it ended.
pub fn store_call(op: &'static str, took: Duration, error: Option<&StoreError>) {
    STORE_LATENCY.record(op, took);
    if let Some(e) = error {
        let kind = match e {
            StoreError::Timeout(_) => "timeout",
            StoreError::Redis(_) => "redis",
            StoreError::Pool(_) => "pool",
            _ => "protocol",
        };
        counter!("floodgate_store_errors_total", "op" => op, "kind" => kind).increment(1);
    }
}

/// One Acquire answered without the store.
pub fn degraded(reason: &'static str) {
    counter!("floodgate_degraded_total", "reason" => reason).increment(1);
}

/// Upper bounds of the store latency buckets, in microseconds.
const BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// The store operations, in the order their histograms are kept.
const OPS: [&str; 6] = ["acquire", "status", "release", "renew", "reset", "ping"];

/// One fixed-bucket histogram: atomics only, so recording never allocates or waits (the
/// exporter's own histograms keep every sample until drained).
struct Buckets {
    counts: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// `floodgate_store_call_duration_seconds`, one histogram per operation.
struct StoreLatency([Buckets; OPS.len()]);

static STORE_LATENCY: StoreLatency = StoreLatency(
    [const {
        Buckets {
            counts: [const { AtomicU64::new(0) }; BUCKETS_US.len()],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }; OPS.len()],
);

impl StoreLatency {
    fn record(&self, op: &str, took: Duration) {
        let Some(i) = OPS.iter().position(|o| *o == op) else {
            return;
        };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let h = &self.0[i];
        if let Some(b) = BUCKETS_US.iter().position(|&le| us <= le) {
            h.counts[b].fetch_add(1, Relaxed);
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "floodgate_store_call_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Store calls' latency, by operation");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (op, h) in OPS.iter().zip(&self.0) {
            let mut cumulative = 0;
            for (le, c) in BUCKETS_US.iter().zip(&h.counts) {
                cumulative += c.load(Relaxed);
                let le = *le as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"{le}\"}} {cumulative}");
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"+Inf\"}} {count}");
            let sum = h.sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{op=\"{op}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {count}");
        }
    }
}

/// The whole `/metrics` page: the recorder's families and the store latency histograms.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    STORE_LATENCY.render(&mut out);
    out
}
