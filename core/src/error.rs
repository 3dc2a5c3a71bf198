//! Everything that can be wrong with a policy or a request, each naming its field and rule.
use thiserror::Error;

/// A rule broken by a policy or a request. Messages start with the field they are about.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// `algorithm` is unspecified or unknown.
    #[error(
        "algorithm: must be one of token_bucket, sliding_window, sliding_log, fixed_window, concurrency"
    )]
    UnknownAlgorithm,
    /// `limit` out of range.
    #[error("limit: must be between 1 and {max}, got {got}")]
    LimitOutOfRange {
        /// The limit given.
        got: u64,
        /// The largest allowed.
        max: u64,
    },
    /// `period` out of range.
    #[error("period: must be greater than 0 and at most 366 days")]
    PeriodOutOfRange,
    /// A token bucket refilling faster than one token per microsecond.
    #[error(
        "limit: a token bucket refills at most 1 token per microsecond (limit {limit} per {period_us} us)"
    )]
    RateTooHigh {
        /// The limit given.
        limit: u64,
        /// The period in microseconds.
        period_us: u64,
    },
    /// A token bucket whose full bucket would take longer than 100 years to refill.
    #[error("burst: burst x (period / limit) must not exceed 100 years")]
    BurstSpanTooLong,
    /// `burst` given for an algorithm that has none.
    #[error("burst: only token_bucket has a burst; leave it 0")]
    BurstNotApplicable,
    /// `lease_ttl` out of range.
    #[error("lease_ttl: must be between 1ms and 366 days")]
    LeaseTtlOutOfRange,
    /// `local_share` out of range.
    #[error("local_share: must be greater than 0 and at most 1 (e.g. 0.25 for a fleet of four)")]
    LocalShareOutOfRange,
    /// `cost` larger than the limit can ever admit.
    #[error("cost: {cost} exceeds the policy's capacity {capacity}; it could never be admitted")]
    CostAboveCapacity {
        /// The cost asked for.
        cost: u64,
        /// The capacity of the policy.
        capacity: u64,
    },
    /// Namespace rule broken.
    #[error("namespace: must be 1-64 characters of [A-Za-z0-9_.-], got {0:?}")]
    BadNamespace(String),
    /// Key rule broken.
    #[error("key: must be 1-512 bytes of printable text without control characters")]
    BadKey,
    /// Policy name rule broken.
    #[error("policy_name: must be 1-64 characters of [A-Za-z0-9_.-], got {0:?}")]
    BadPolicyName(String),
}
