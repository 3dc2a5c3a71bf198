//! The gRPC services, separate from transport setup so tests can call them directly.
//!
//! - [`state`]: what every service shares (store, live config, keys).
//! - [`rate_limiter`]: `floodgate.v1.RateLimiter` (Acquire, Release, Renew, Status).
//! - [`circuit_breakers`]: `floodgate.v1.CircuitBreakers` (Report, Get, List, SetState,
//!   Watch, History).
//! - [`dead_letters`]: `floodgate.v1.DeadLetters` (Publish, Get, List, Stats, Claim, Ack,
//!   Nack, Redrive, Archive, Restore, Purge).
//! - [`admin`]: `floodgate.v1.Admin` (ResetLimit).
pub mod admin;
pub mod circuit_breakers;
pub mod dead_letters;
pub mod rate_limiter;
pub mod state;

use tracing::Instrument;

/// Runs one RPC's body in its `rpc` span (fields `rpc`, `namespace`, `policy`; the body
/// fills the last two with [`annotate`]) and counts it by its status code.
pub(crate) async fn observed<T>(
    rpc: &'static str,
    body: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let span = tracing::info_span!(
        "rpc",
        rpc,
        namespace = tracing::field::Empty,
        policy = tracing::field::Empty
    );
    let result = body.instrument(span).await;
    let code = result
        .as_ref()
        .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
    crate::metrics::request(rpc, code);
    result
}

/// Records the request's namespace and, when it has one, its (first) policy or breaker on
/// the current RPC span, so every log line of the call carries them; and checks that the
/// caller's token may use the namespace ([`crate::auth::allow_namespace`]). Every RPC
/// calls this for each namespace it names before touching state.
pub(crate) fn annotate(namespace: &str, policy: Option<&str>) -> Result<(), crate::error::Error> {
    let span = tracing::Span::current();
    span.record("namespace", namespace);
    if let Some(p) = policy {
        span.record("policy", p);
    }
    crate::auth::allow_namespace(namespace)
}
