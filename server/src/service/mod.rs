//! The gRPC services, separate from transport setup so tests can call them directly.
//!
//! - [`state`]: what every service shares (store, live config, keys).
//! - [`rate_limiter`]: `floodgate.v1.RateLimiter` (Acquire, Release, Renew, Status).
//! - [`circuit_breakers`]: `floodgate.v1.CircuitBreakers` (Report, Get, List, SetState,
//!   Watch, History).
//! - [`admin`]: `floodgate.v1.Admin` (ResetLimit).
pub mod admin;
pub mod circuit_breakers;
pub mod rate_limiter;
pub mod state;

/// Runs one RPC's body and counts it by its status code.
pub(crate) async fn observed<T>(
    rpc: &'static str,
    body: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let result = body.await;
    let code = result
        .as_ref()
        .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
    crate::metrics::request(rpc, code);
    result
}
