//! The gRPC services, separate from transport setup so tests can call them directly.
//!
//! - [`state`]: what every service shares (store, live config, keys).
//! - [`rate_limiter`]: `floodgate.v1.RateLimiter` (Acquire, Release, Renew, Status).
//! - [`admin`]: `floodgate.v1.Admin` (ResetLimit).
pub mod admin;
pub mod rate_limiter;
pub mod state;
