//! Shared circuit breakers: the state machine every server runs on Redis (`lua/breaker.lua`)
//! and the in-memory store runs directly.
//!
//! - [`config`]: [`BreakerConfig`], valid by construction from a [`BreakerSpec`].
//! - [`window`]: the count and time windows of call outcomes.
//! - [`machine`]: states, transitions, admission, reports, overrides and reads.
pub mod config;
pub mod machine;
pub mod window;

pub use config::{BreakerConfig, BreakerConfigError, BreakerSpec, WindowKind};
pub use machine::{
    Admission, Breaker, FIRST_GENERATION, Info, ReportInput, ReportResult, State, Transition,
};
pub use window::{Counts, Window};

#[cfg(test)]
mod tests;
