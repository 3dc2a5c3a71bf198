//! What one check decided: the values a `CheckResult` carries on the wire.
use crate::time::Micros;

/// The decision of one limit check, identical whether the core model or a Lua script took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckOutcome {
    /// Whether the request's cost fits now.
    pub allowed: bool,
    /// The limit's capacity (token bucket: burst).
    pub limit: u64,
    /// Whole units left after this request (before it, when denied).
    pub remaining: u64,
    /// Time until the limit is fully available again (0: it already is).
    pub reset_after: Micros,
    /// When denied: the earliest wait after which the same cost can be admitted; 0 when allowed.
    pub retry_after: Micros,
}
