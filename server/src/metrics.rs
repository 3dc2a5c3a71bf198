//! Metric names and the one place they are recorded. Every family starts with
//! `floodgate_`; labels are bounded (RPC names, status codes, configured policy names —
//! inline policies count as `inline` —, the first 1,000 namespaces seen — later ones count
//! as `other`), never user keys.
use std::{collections::HashSet, sync::LazyLock, time::Duration};

use parking_lot::RwLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::StoreError;

/// Installs the Prometheus recorder for this process and describes every family.
/// Returns the handle `/metrics` renders, or `None` when a recorder was already installed
/// (a second server in one process, as in unit tests).
pub fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ])
        .ok()?
        .install_recorder()
        .ok()?;
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
    describe_histogram!(
        "floodgate_store_call_duration_seconds",
        "Store calls' latency, by operation"
    );
    describe_counter!(
        "floodgate_store_errors_total",
        "Failed store calls, by operation and kind"
    );
    describe_gauge!("floodgate_build_info", "Always 1; the version is a label");
    gauge!("floodgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Some(handle)
}

/// One gRPC call answered with `code` (`OK`, `InvalidArgument`, …).
pub fn request(rpc: &'static str, code: tonic::Code) {
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
    histogram!("floodgate_store_call_duration_seconds", "op" => op).record(took.as_secs_f64());
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
