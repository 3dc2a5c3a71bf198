//! Policies: what a limit is, valid by construction.
//!
//! A [`PolicySpec`] is what a user wrote (config file or inline in a request); [`Policy::new`]
//! checks it once at the edge and resolves defaults, so everything downstream trusts it.
use crate::{
    Error,
    time::{Micros, SECOND},
};

/// Largest `limit` any policy may have. Keeps every intermediate value of the Lua scripts
/// (which compute in IEEE doubles) an exact integer.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;
/// Longest `period` (and `lease_ttl`): 366 days.
pub const MAX_PERIOD: Micros = 366 * 24 * 3600 * SECOND;
/// Longest time a full token bucket may take to refill: 100 years.
pub const MAX_BUCKET_SPAN: Micros = 100 * 365 * 24 * 3600 * SECOND;
/// Lease lifetime when a concurrency policy names none.
pub const DEFAULT_LEASE_TTL: Micros = 60 * SECOND;
/// Shortest lease lifetime (Redis expiry has millisecond resolution).
pub const MIN_LEASE_TTL: Micros = 1_000;

/// A rate-limit algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// GCRA: `limit` per `period` refill, `burst` capacity. Exact.
    TokenBucket,
    /// Weighted two-window counter: O(1) memory, bounded error.
    SlidingWindow,
    /// Sorted set of arrivals: exact, memory O(limit).
    SlidingLog,
    /// One counter per aligned window: exact per window, up to 2x at window edges.
    FixedWindow,
    /// Leases on a distributed semaphore that expire after `lease_ttl`.
    Concurrency,
}

impl Algorithm {
    /// Every algorithm, in wire order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::TokenBucket,
        Algorithm::SlidingWindow,
        Algorithm::SlidingLog,
        Algorithm::FixedWindow,
        Algorithm::Concurrency,
    ];

    /// The name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::SlidingLog => "sliding_log",
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::Concurrency => "concurrency",
        }
    }

    /// The short code used in Redis keys and script arguments.
    pub fn code(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "tb",
            Algorithm::SlidingWindow => "sw",
            Algorithm::SlidingLog => "sl",
            Algorithm::FixedWindow => "fw",
            Algorithm::Concurrency => "cc",
        }
    }

    /// Parses a configuration name (`token_bucket`, …).
    pub fn from_name(name: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or(Error::UnknownAlgorithm)
    }
}

/// What a check does when the store cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailMode {
    /// Allow, and say `degraded`.
    Open,
    /// Deny, and say `degraded`.
    Closed,
    /// Decide in-process on a share of the limit, and say `degraded`.
    Local,
}

impl FailMode {
    /// Parses a configuration name (`open`, `closed`, `local`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "open" => Some(FailMode::Open),
            "closed" => Some(FailMode::Closed),
            "local" => Some(FailMode::Local),
            _ => None,
        }
    }
}

/// A policy as written by a user, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Requests per period (token bucket: refill rate; concurrency: slots).
    pub limit: u64,
    /// Window or refill period in microseconds (ignored by concurrency).
    pub period: Micros,
    /// Token bucket capacity; 0 means `limit`.
    pub burst: u64,
    /// What to do when the store fails; `None` takes the server's default.
    pub fail_mode: Option<FailMode>,
    /// Concurrency lease lifetime; `None` means 60 s.
    pub lease_ttl: Option<Micros>,
    /// Counted and reported, never denies.
    pub shadow: bool,
}

/// A validated policy. Fields are read through accessors; construct with [`Policy::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    algorithm: Algorithm,
    limit: u64,
    period: Micros,
    capacity: u64,
    fail_mode: Option<FailMode>,
    lease_ttl: Micros,
    shadow: bool,
    /// `FAIL_MODE_LOCAL`'s share of the limit, in millionths; `None` takes the server's
    /// `1 / fleet_size`.
    local_share_ppm: Option<u32>,
}

/// Millionths in a whole share.
const PPM: u64 = 1_000_000;

impl Policy {
    /// Validates a spec. Every error names the field and the rule it broke.
    pub fn new(spec: PolicySpec) -> Result<Self, Error> {
        let PolicySpec {
            algorithm,
            limit,
            period,
            burst,
            fail_mode,
            lease_ttl,
            shadow,
        } = spec;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::LimitOutOfRange {
                got: limit,
                max: MAX_LIMIT,
            });
        }
        let concurrency = algorithm == Algorithm::Concurrency;
        if !concurrency && (period == 0 || period > MAX_PERIOD) {
            return Err(Error::PeriodOutOfRange);
        }
        let capacity = match algorithm {
            Algorithm::TokenBucket => {
                if limit > period {
                    return Err(Error::RateTooHigh {
                        limit,
                        period_us: period,
                    });
                }
                let capacity = if burst == 0 { limit } else { burst };
                let interval = period.div_ceil(limit);
                if capacity > MAX_LIMIT || capacity.saturating_mul(interval) > MAX_BUCKET_SPAN {
                    return Err(Error::BurstSpanTooLong);
                }
                capacity
            }
            _ if burst != 0 => return Err(Error::BurstNotApplicable),
            _ => limit,
        };
        let lease_ttl = lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        if !(MIN_LEASE_TTL..=MAX_PERIOD).contains(&lease_ttl) {
            return Err(Error::LeaseTtlOutOfRange);
        }
        Ok(Self {
            algorithm,
            limit,
            period: if concurrency { 0 } else { period },
            capacity,
            fail_mode,
            lease_ttl,
            shadow,
            local_share_ppm: None,
        })
    }

    /// The policy with `FAIL_MODE_LOCAL` deciding on `share` of the limit (0 < share <= 1)
    /// while the store fails. The share never changes shared state, so it is not part of
    /// the [`fingerprint`](Self::fingerprint).
    pub fn with_local_share(mut self, share: f64) -> Result<Self, Error> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(Error::LocalShareOutOfRange);
        }
        self.local_share_ppm = Some(((share * PPM as f64).round() as u32).max(1));
        Ok(self)
    }

    /// The policy's own local share (0 < share <= 1), if it names one.
    pub fn local_share(&self) -> Option<f64> {
        self.local_share_ppm.map(|p| p as f64 / PPM as f64)
    }

    /// The limit this server enforces alone while the store fails (`FAIL_MODE_LOCAL`):
    /// limit and capacity times `share` (the policy's own share when it names one), rounded
    /// up and at least 1, so a fleet of `1 / share` servers together admits about the
    /// limit. Periods and lease lifetimes stay.
    pub fn local_part(&self, default_share: f64) -> Policy {
        let ppm = self.local_share_ppm.map(u64::from).unwrap_or_else(|| {
            ((default_share.clamp(0.0, 1.0) * PPM as f64).round() as u64).max(1)
        });
        if ppm >= PPM {
            return self.clone();
        }
        let part = |n: u64| {
            (u128::from(n) * u128::from(ppm))
                .div_ceil(u128::from(PPM))
                .max(1) as u64
        };
        let mut p = self.clone();
        p.limit = part(self.limit);
        p.capacity = part(self.capacity);
        p
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// Requests per period (token bucket: the refill rate; concurrency: slots).
    pub fn limit(&self) -> u64 {
        self.limit
    }
    /// The period in microseconds (0 for concurrency).
    pub fn period(&self) -> Micros {
        self.period
    }
    /// The most one request may cost, and what `CheckResult.limit` reports
    /// (the burst for a token bucket, the limit for the others).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    /// The store-failure behaviour, if the policy names one.
    pub fn fail_mode(&self) -> Option<FailMode> {
        self.fail_mode
    }
    /// Lease lifetime for concurrency checks.
    pub fn lease_ttl(&self) -> Micros {
        self.lease_ttl
    }
    /// Whether the policy only reports and never denies.
    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// GCRA emission interval: microseconds per token, rounded up so the bucket never
    /// refills faster than `limit` per `period`.
    pub fn emission_interval(&self) -> Micros {
        self.period.div_ceil(self.limit).max(1)
    }

    /// Checks that `cost` could ever be admitted.
    pub fn check_cost(&self, cost: u64) -> Result<(), Error> {
        if cost > self.capacity {
            Err(Error::CostAboveCapacity {
                cost,
                capacity: self.capacity,
            })
        } else {
            Ok(())
        }
    }

    /// A short, stable name for an inline policy's state: `i-` and 12 hex digits of an
    /// FNV-1a hash over (algorithm, limit, period, capacity). Two requests giving the same
    /// limit inline share state; a per-second and a per-hour limit never do.
    pub fn fingerprint(&self) -> String {
        let canon = format!(
            "{}:{}:{}:{}",
            self.algorithm.code(),
            self.limit,
            self.period,
            self.capacity
        );
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canon.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("i-{:012x}", h >> 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(algorithm: Algorithm, limit: u64, period: Micros) -> PolicySpec {
        PolicySpec {
            algorithm,
            limit,
            period,
            burst: 0,
            fail_mode: None,
            lease_ttl: None,
            shadow: false,
        }
    }

    #[test]
    fn token_bucket_capacity_defaults_to_limit() {
        let p = Policy::new(spec(Algorithm::TokenBucket, 10, SECOND)).unwrap();
        assert_eq!(p.capacity(), 10);
        assert_eq!(p.emission_interval(), 100_000);
        let p = Policy::new(PolicySpec {
            burst: 25,
            ..spec(Algorithm::TokenBucket, 10, SECOND)
        })
        .unwrap();
        assert_eq!(p.capacity(), 25);
    }

    #[test]
    fn emission_interval_rounds_up() {
        let p = Policy::new(spec(Algorithm::TokenBucket, 3, SECOND)).unwrap();
        assert_eq!(p.emission_interval(), 333_334);
    }

    #[test]
    fn rejects_bad_specs_naming_the_field() {
        let cases = [
            (spec(Algorithm::TokenBucket, 0, SECOND), "limit:"),
            (spec(Algorithm::FixedWindow, 1, 0), "period:"),
            (spec(Algorithm::FixedWindow, 1, MAX_PERIOD + 1), "period:"),
            (spec(Algorithm::TokenBucket, 2_000_000, SECOND), "limit:"),
            (
                PolicySpec {
                    burst: 5,
                    ..spec(Algorithm::SlidingLog, 10, SECOND)
                },
                "burst:",
            ),
            (
                PolicySpec {
                    burst: MAX_LIMIT,
                    ..spec(Algorithm::TokenBucket, 1, MAX_PERIOD)
                },
                "burst:",
            ),
            (
                PolicySpec {
                    lease_ttl: Some(10),
                    ..spec(Algorithm::Concurrency, 1, 0)
                },
                "lease_ttl:",
            ),
        ];
        for (s, field) in cases {
            let err = Policy::new(s.clone()).unwrap_err().to_string();
            assert!(err.starts_with(field), "{s:?}: {err}");
        }
    }

    #[test]
    fn concurrency_ignores_period() {
        let p = Policy::new(spec(Algorithm::Concurrency, 4, 0)).unwrap();
        assert_eq!(p.period(), 0);
        assert_eq!(p.lease_ttl(), DEFAULT_LEASE_TTL);
    }

    #[test]
    fn cost_above_capacity_is_never_possible() {
        let p = Policy::new(spec(Algorithm::FixedWindow, 5, SECOND)).unwrap();
        assert!(p.check_cost(5).is_ok());
        assert!(
            p.check_cost(6)
                .unwrap_err()
                .to_string()
                .starts_with("cost:")
        );
    }

    #[test]
    fn fingerprints_separate_periods_and_merge_equal_bursts() {
        let s = Policy::new(spec(Algorithm::TokenBucket, 10, SECOND)).unwrap();
        let h = Policy::new(spec(Algorithm::TokenBucket, 10, 3600 * SECOND)).unwrap();
        assert_ne!(s.fingerprint(), h.fingerprint());
        let explicit = Policy::new(PolicySpec {
            burst: 10,
            ..spec(Algorithm::TokenBucket, 10, SECOND)
        })
        .unwrap();
        assert_eq!(s.fingerprint(), explicit.fingerprint());
        assert_eq!(s.fingerprint().len(), 14);
    }

    #[test]
    fn local_part_scales_limit_and_capacity_rounding_up() {
        let tb = Policy::new(PolicySpec {
            burst: 30,
            ..spec(Algorithm::TokenBucket, 10, 1_000_000)
        })
        .unwrap();
        let part = tb.local_part(0.25);
        assert_eq!(
            (part.limit(), part.capacity(), part.period()),
            (3, 8, 1_000_000)
        );
        // the policy's own share wins over the server's default
        let own = tb.clone().with_local_share(0.5).unwrap();
        assert_eq!(own.local_share(), Some(0.5));
        assert_eq!(own.local_part(0.25).limit(), 5);
        // never below 1, and a whole share is the policy itself
        assert_eq!(tb.local_part(0.000_001).limit(), 1);
        assert_eq!(tb.local_part(1.0), tb);
        // the share never changes the state key
        assert_eq!(own.fingerprint(), tb.fingerprint());
    }

    #[test]
    fn local_share_must_be_a_fraction() {
        let p = Policy::new(spec(Algorithm::FixedWindow, 10, 1_000_000)).unwrap();
        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(
                p.clone().with_local_share(bad),
                Err(Error::LocalShareOutOfRange),
                "{bad}"
            );
        }
    }
}
