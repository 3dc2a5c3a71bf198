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
        "floodgate_rls_decisions_total",
        "ShouldRateLimit descriptors decided against a configured rule, by domain, rule and result"
    );
    describe_counter!(
        "floodgate_degraded_total",
        "Acquires answered by a fail mode because the store failed, by reason"
    );
    describe_counter!(
        "floodgate_store_errors_total",
        "Failed store calls, by operation and kind"
    );
    describe_counter!(
        "floodgate_breaker_decisions_total",
        "Breakers consulted by Acquire, by namespace, breaker and result (allowed, denied)"
    );
    describe_counter!(
        "floodgate_breaker_transitions_total",
        "Breaker transitions made by this server, by namespace, breaker, from and to"
    );
    describe_counter!(
        "floodgate_breaker_reports_total",
        "Breaker reports, by result (accepted, stale: another generation, dropped: the store failed)"
    );
    describe_gauge!(
        "floodgate_store_breaker_open",
        "1 while the server's own store breaker is open (calls take their fail mode at once)"
    );
    describe_counter!(
        "floodgate_store_breaker_opens_total",
        "Times the server's own store breaker opened"
    );
    describe_counter!(
        "floodgate_cluster_refunds_total",
        "Refunds of Cluster slot reservations after a denial, by result (ok, failed)"
    );
    describe_gauge!(
        "floodgate_breaker_state",
        "Each breaker's state as last seen in the fleet's events (1 closed, 2 open, 3 half_open, 4 forced_open, 5 disabled, 6 metrics_only)"
    );
    describe_counter!(
        "floodgate_dlq_published_total",
        "Dead-letter publishes by namespace, queue and result (stored, duplicate)"
    );
    describe_gauge!("floodgate_dlq_size", "Entries in each dead-letter queue");
    describe_gauge!(
        "floodgate_dlq_oldest_age_seconds",
        "Age of each dead-letter queue's oldest entry"
    );
    describe_gauge!(
        "floodgate_dlq_over_threshold",
        "1 when a dead-letter queue holds at least its alert_threshold entries"
    );
    describe_gauge!(
        "floodgate_dlq_archived",
        "Entries in each dead-letter queue's archive"
    );
    describe_gauge!(
        "floodgate_dlq_trimmed",
        "Entries each dead-letter queue lost to retention (by=age) and max_len (by=length), since it was created"
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

/// A call refused by `crate::auth` for `reason` (`malformed`, `unknown`, `expired`,
/// `role`, `namespace` or `rate`).
pub fn auth_refused(reason: &'static str) {
    counter!("floodgate_auth_refused_total", "reason" => reason).increment(1);
}

/// One audit entry that could not be appended to the store's audit stream.
pub fn audit_write_failed() {
    counter!("floodgate_audit_write_failures_total").increment(1);
}

/// The status code's name, without allocating.
pub fn code_name(code: tonic::Code) -> &'static str {
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

/// `value` while `seen` has room for it (or already has it), else `other`.
fn bounded(seen: &RwLock<HashSet<String>>, value: &str) -> String {
    if seen.read().contains(value) {
        return value.to_owned();
    }
    let mut seen = seen.write();
    if seen.len() < MAX_NAMESPACE_LABELS {
        seen.insert(value.to_owned());
        value.to_owned()
    } else if seen.contains(value) {
        value.to_owned()
    } else {
        "other".to_owned()
    }
}

fn namespace_label(ns: &str) -> String {
    static SEEN: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(Default::default);
    bounded(&SEEN, ns)
}

/// The namespace and breaker labels: the first 1,000 breaker names seen keep theirs.
fn breaker_labels(ns: &str, breaker: &str) -> [(&'static str, String); 2] {
    static SEEN: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(Default::default);
    let breaker = bounded(&SEEN, breaker);
    [("namespace", namespace_label(ns)), ("breaker", breaker)]
}

/// One breaker consulted by an Acquire.
pub fn breaker_decision(namespace: &str, breaker: &str, allowed: bool) {
    let [ns, b] = breaker_labels(namespace, breaker);
    let result = if allowed { "allowed" } else { "denied" };
    counter!("floodgate_breaker_decisions_total", ns.0 => ns.1, b.0 => b.1, "result" => result)
        .increment(1);
}

/// One transition made by this server.
pub fn breaker_transition(namespace: &str, t: &crate::store::MadeTransition) {
    let [ns, b] = breaker_labels(namespace, &t.breaker);
    counter!(
        "floodgate_breaker_transitions_total",
        ns.0 => ns.1, b.0 => b.1, "from" => t.from.name(), "to" => t.to.name()
    )
    .increment(1);
}

/// One breaker report: `accepted`, `stale` or `dropped` (the store failed).
pub fn breaker_report(result: &'static str) {
    counter!("floodgate_breaker_reports_total", "result" => result).increment(1);
}

/// One Publish: stored, or answered as a duplicate.
pub fn dlq_published(namespace: &str, queue: &str, duplicate: bool) {
    let [ns, q] = queue_labels(namespace, queue);
    let result = if duplicate { "duplicate" } else { "stored" };
    counter!("floodgate_dlq_published_total", ns.0 => ns.1, q.0 => q.1, "result" => result)
        .increment(1);
}

/// The namespace and queue labels: the first 1,000 queue names seen keep theirs.
fn queue_labels(ns: &str, queue: &str) -> [(&'static str, String); 2] {
    static SEEN: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(Default::default);
    [
        ("namespace", namespace_label(ns)),
        ("queue", bounded(&SEEN, queue)),
    ]
}

/// A queue's numbers, as last read by the background stats task.
pub fn dlq_gauges(
    namespace: &str,
    queue: &str,
    size: u64,
    oldest_age_s: f64,
    over: bool,
    archived: u64,
) {
    let [ns, q] = queue_labels(namespace, queue);
    gauge!("floodgate_dlq_size", ns.0 => ns.1.clone(), q.0 => q.1.clone()).set(size as f64);
    gauge!("floodgate_dlq_oldest_age_seconds", ns.0 => ns.1.clone(), q.0 => q.1.clone())
        .set(oldest_age_s);
    gauge!("floodgate_dlq_over_threshold", ns.0 => ns.1.clone(), q.0 => q.1.clone()).set(if over {
        1.0
    } else {
        0.0
    });
    gauge!("floodgate_dlq_archived", ns.0 => ns.1, q.0 => q.1).set(archived as f64);
}

/// A queue's trims since it was created (a gauge of the stored counters, so every server
/// reports the fleet's total).
pub fn dlq_trimmed(namespace: &str, queue: &str, by_age: u64, by_length: u64) {
    let [ns, q] = queue_labels(namespace, queue);
    gauge!("floodgate_dlq_trimmed", ns.0 => ns.1.clone(), q.0 => q.1.clone(), "by" => "age")
        .set(by_age as f64);
    gauge!("floodgate_dlq_trimmed", ns.0 => ns.1, q.0 => q.1, "by" => "length")
        .set(by_length as f64);
}

/// Keeps `floodgate_breaker_state` current from the fleet's transition events.
pub fn spawn_breaker_state_gauge(
    mut events: tokio::sync::broadcast::Receiver<crate::store::BreakerEvent>,
) {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => breaker_state(&e.namespace, &e.breaker, e.to),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// A breaker's state as seen in the fleet's events.
pub fn breaker_state(namespace: &str, breaker: &str, state: floodgate_core::breaker::State) {
    let [ns, b] = breaker_labels(namespace, breaker);
    let value = f64::from(crate::service::circuit_breakers::wire_state(state) as i32);
    gauge!("floodgate_breaker_state", ns.0 => ns.1, b.0 => b.1).set(value);
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

/// One ShouldRateLimit descriptor decided against a rule (`rule`: the rule's name, else its
/// path in the rate limit file, so bounded by the configuration; the first 1,000 kept).
pub fn rls_descriptor(domain: &str, rule: &str, shadow: bool, allowed: bool) {
    static SEEN: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(Default::default);
    let result = match (allowed, shadow) {
        (true, _) => "ok",
        (false, true) => "shadow_over_limit",
        (false, false) => "over_limit",
    };
    counter!(
        "floodgate_rls_decisions_total",
        "domain" => namespace_label(domain),
        "rule" => bounded(&SEEN, rule),
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

/// The server's store breaker opened (true) or closed (false) (`store::guard`).
pub fn store_guard_open(open: bool) {
    gauge!("floodgate_store_breaker_open").set(if open { 1.0 } else { 0.0 });
    if open {
        counter!("floodgate_store_breaker_opens_total").increment(1);
    }
}

/// One refund of a Cluster Acquire's reserved slot (`store::redis::split`): given back, or
/// failed (the units stay taken until they expire).
pub fn cluster_refund(ok: bool) {
    counter!("floodgate_cluster_refunds_total", "result" => if ok { "ok" } else { "failed" })
        .increment(1);
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
const OPS: [&str; 26] = [
    "acquire",
    "status",
    "release",
    "renew",
    "reset",
    "ping",
    "breaker_report",
    "breaker_get",
    "breaker_set_state",
    "breaker_history",
    "breaker_index",
    "top_read",
    "schema",
    "dlq_publish",
    "dlq_read",
    "dlq_scan",
    "dlq_stats",
    "dlq_claim",
    "dlq_remove",
    "dlq_nack",
    "dlq_archive",
    "dlq_restore",
    "dlq_redrive",
    "queue_index",
    "audit_append",
    "audit_read",
];

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
