//! floodgate-core: the pure algorithms behind floodgate, with no I/O and an explicit `now`.
//!
//! Every algorithm is a function from (state, policy, now, request) to (decision, new state).
//! The in-memory store runs these functions directly; each has a Lua twin under `lua/` with
//! the same name, and property tests require both to decide identically.
//!
//! Layout:
//! - [`time`]: microsecond timestamps and the [`time::Clock`] trait (system and manual clocks).
//! - [`policy`]: [`Policy`], valid by construction from a [`PolicySpec`].
//! - [`names`]: namespace and key rules.
//! - [`outcome`]: [`CheckOutcome`], what one check decided.
//! - [`token_bucket`], [`sliding_window`], [`sliding_log`], [`fixed_window`], [`concurrency`]:
//!   one module per algorithm.
//! - [`breaker`]: the shared circuit breaker's state machine (twin of `breaker.lua`).
//! - [`dead_letters`]: a dead-letter queue as a pure data structure (twin of `dlq*.lua`).
//! - [`acquire`]: all-or-nothing decisions over several checks (twin of `acquire.lua`).
//! - [`refund`]: giving back what a reserved Acquire consumed (twin of `refund.lua`).
//! - [`error`]: [`Error`], everything that can be wrong with a policy or a request.
#![deny(missing_docs, unreachable_pub)]

pub mod acquire;
pub mod breaker;
pub mod concurrency;
pub mod dead_letters;
pub mod error;
pub mod fixed_window;
pub mod names;
pub mod outcome;
pub mod policy;
pub mod refund;
pub mod sliding_log;
pub mod sliding_window;
pub mod time;
pub mod token_bucket;

pub use error::Error;
pub use outcome::CheckOutcome;
pub use policy::{Algorithm, FailMode, Policy, PolicySpec};
pub use time::{Clock, ManualClock, Micros, SystemClock};
