//! The resilience kit: retry, timeout, bulkhead, rate limit with waiting and fallback,
//! composed with the fleet's shared limits, breakers and dead-letter queues into one
//! [`Resilience`] policy, run as `policy.call(|| async { … })` or as a tower layer.
//!
//! The order, outermost first:
//!
//! ```text
//! fallback → overall timeout → retry (with its budget)
//!     → for each attempt: rate limit → breaker → bulkhead (local, fleet) → attempt timeout → the call
//! dead letter when the retries end without success (permanent failure, retries exhausted,
//! overall timeout), before the fallback answers
//! ```
//!
//! So every attempt spends rate, the shared breaker sees every attempt (a timed-out one,
//! cut by the attempt or the overall timeout, as a failure, a bulkhead rejection not at all), and a breaker that opens mid-retry stops
//! the retries (its `retry_after` is handed to the caller or the fallback, not hammered).
//! A rate-limit denial, a timeout, a transient floodgate error and an error the retry's
//! predicate calls transient are retried, waiting at least the `retry_after` asked for;
//! a wait that would start the next attempt after the retry's deadline or the overall
//! timeout ends the retries at once instead.
//!
//! ```no_run
//! use std::time::Duration;
//! use floodgate_client::{Client, Policy, resilience::*};
//! # async fn demo(client: Client) -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Resilience::<u32, std::io::Error>::builder()
//!     .name("inventory")
//!     .rate_limit(RateLimit::new(&client, "shop", "inventory", Policy::token_bucket(50, Duration::from_secs(1))))
//!     .breaker(client.breaker("shop", "inventory"))
//!     .retry(Retry::new().max_attempts(3))
//!     .timeout(Timeout::new().attempt(Duration::from_millis(200)))
//!     .fallback(Fallback::value(0))
//!     .build()?;
//! let stock = policy.call(|| async { Ok::<u32, std::io::Error>(12) }).await?;
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`policy`]: [`Resilience`] and its call pipeline; [`builder`]: [`ResilienceBuilder`].
//! - [`retry`]: [`Retry`]; [`backoff`]: [`Backoff`], [`Jitter`]; [`budget`]: [`RetryBudget`].
//! - [`timeout`] holds [`Timeout`].
//! - [`bulkhead`]: [`Bulkhead`]; [`fleet_bulkhead`]: [`FleetBulkhead`] and its [`Lease`].
//! - [`rate_limit`] holds [`RateLimit`].
//! - [`fallback`] holds [`Fallback`].
//! - [`events`]: [`Event`], [`Listener`].
//! - [`layer`]: [`ResilienceLayer`], the policy as a tower layer.
//! - [`http`]: [`HttpRateLimitLayer`], 429 and `RateLimit` headers for HTTP services.
//! - [`error`]: [`ResilienceError`], [`FallbackReason`], [`BuildError`].

pub mod backoff;
pub mod budget;
pub mod builder;
pub mod bulkhead;
pub mod error;
pub mod events;
pub mod fallback;
pub mod fleet_bulkhead;
pub mod http;
pub mod layer;
pub mod policy;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

pub use backoff::{Backoff, Jitter, JitterSource, SeededJitter};
pub use budget::RetryBudget;
pub use builder::ResilienceBuilder;
pub use bulkhead::Bulkhead;
pub use error::{
    BuildError, BulkheadScope, FallbackReason, ResilienceError, RetryStop, TimeoutScope,
};
pub use events::{Event, FnListener, Listener};
pub use fallback::Fallback;
pub use fleet_bulkhead::{FleetBulkhead, Lease};
pub use http::{HttpRateLimitLayer, Key};
pub use layer::ResilienceLayer;
pub use policy::{Input, Resilience};
pub use rate_limit::RateLimit;
pub use retry::Retry;
pub use timeout::Timeout;
