//! Inline policies and references to configured ones.
use std::time::Duration;

use floodgate_proto::v1 as pb;

/// A rate-limit algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// GCRA token bucket: exact; `limit` per `period` refill, `burst` capacity.
    TokenBucket,
    /// Weighted two-window counter: O(1) memory, bounded error.
    SlidingWindow,
    /// Log of arrivals: exact, memory O(limit).
    SlidingLog,
    /// One counter per window: exact per window, up to 2x across a window edge.
    FixedWindow,
    /// Leases on a distributed semaphore.
    Concurrency,
}

impl Algorithm {
    fn wire(self) -> pb::Algorithm {
        match self {
            Algorithm::TokenBucket => pb::Algorithm::TokenBucket,
            Algorithm::SlidingWindow => pb::Algorithm::SlidingWindow,
            Algorithm::SlidingLog => pb::Algorithm::SlidingLog,
            Algorithm::FixedWindow => pb::Algorithm::FixedWindow,
            Algorithm::Concurrency => pb::Algorithm::Concurrency,
        }
    }
}

/// What the server does with a check when its store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailMode {
    /// Allow (degraded).
    Open,
    /// Deny (degraded).
    Closed,
    /// Decide in the server's process on a share of the limit (degraded).
    Local,
}

/// A limit given inline with the request. The server validates it and keeps its state
/// under a fingerprint of (algorithm, limit, period, burst).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy(pub(crate) pb::Policy);

pub(crate) fn wire_duration(d: Duration) -> floodgate_proto::prost_types::Duration {
    floodgate_proto::prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

impl Policy {
    /// `limit` requests per `period` with an algorithm of your choice.
    pub fn new(algorithm: Algorithm, limit: u64, period: Duration) -> Self {
        Self(pb::Policy {
            algorithm: algorithm.wire() as i32,
            limit,
            period: Some(wire_duration(period)),
            ..Default::default()
        })
    }
    /// Token bucket: refills `limit` per `period`, holds `limit` (see [`Policy::burst`]).
    pub fn token_bucket(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::TokenBucket, limit, period)
    }
    /// Sliding window (approximate, O(1) memory).
    pub fn sliding_window(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::SlidingWindow, limit, period)
    }
    /// Sliding log (exact, memory O(limit)).
    pub fn sliding_log(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::SlidingLog, limit, period)
    }
    /// Fixed window (exact per window).
    pub fn fixed_window(limit: u64, period: Duration) -> Self {
        Self::new(Algorithm::FixedWindow, limit, period)
    }
    /// At most `limit` concurrent leases, each living 60 s unless renewed or released.
    pub fn concurrency(limit: u64) -> Self {
        Self(pb::Policy {
            algorithm: pb::Algorithm::Concurrency as i32,
            limit,
            ..Default::default()
        })
    }
    /// Token bucket capacity (default: `limit`).
    pub fn burst(mut self, burst: u64) -> Self {
        self.0.burst = burst;
        self
    }
    /// Lease lifetime of a concurrency policy.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.0.lease_ttl = Some(wire_duration(ttl));
        self
    }
    /// Count and report, never deny.
    pub fn shadow(mut self) -> Self {
        self.0.shadow = true;
        self
    }
    /// What the server does when its store fails.
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.0.fail_mode = match mode {
            FailMode::Open => pb::FailMode::Open,
            FailMode::Closed => pb::FailMode::Closed,
            FailMode::Local => pb::FailMode::Local,
        } as i32;
        self
    }
    /// With [`FailMode::Local`]: the share of the limit one server enforces alone while its
    /// store fails (0 < share <= 1; the server refuses anything else). Unset, the server
    /// uses `1 / fleet_size`.
    pub fn local_share(mut self, share: f64) -> Self {
        self.0.local_share = share;
        self
    }
    /// The wire form.
    pub fn into_proto(self) -> pb::Policy {
        self.0
    }
}

/// A policy by name (from the server's configuration) or inline.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PolicyRef {
    /// A configured policy.
    Named(String),
    /// An inline policy.
    Inline(Policy),
}

impl PolicyRef {
    pub(crate) fn into_proto(self) -> pb::limit_check::Policy {
        match self {
            PolicyRef::Named(n) => pb::limit_check::Policy::PolicyName(n),
            PolicyRef::Inline(p) => pb::limit_check::Policy::Inline(p.0),
        }
    }
}

impl From<Policy> for PolicyRef {
    fn from(p: Policy) -> Self {
        PolicyRef::Inline(p)
    }
}
impl From<&str> for PolicyRef {
    fn from(n: &str) -> Self {
        PolicyRef::Named(n.to_owned())
    }
}
impl From<String> for PolicyRef {
    fn from(n: String) -> Self {
        PolicyRef::Named(n)
    }
}
