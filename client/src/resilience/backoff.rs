//! Exponential backoff with jitter, and the random source behind the jitter (seedable, so
//! tests are deterministic).
use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// How a delay is spread so that clients that failed together do not retry together.
///
/// ```
/// use floodgate_client::resilience::Jitter;
/// let j = Jitter::Decorrelated;
/// assert_ne!(j, Jitter::None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly `base * multiplier^(n-1)`, capped at `max_delay`.
    None,
    /// Uniform in `[0, base * multiplier^(n-1)]`, capped (AWS "full jitter"; the default).
    Full,
    /// Uniform in `[base, 3 * previous delay]`, capped (AWS "decorrelated jitter").
    Decorrelated,
}

/// A source of uniform numbers in `[0, 1)` for the jitter.
///
/// ```
/// use floodgate_client::resilience::{JitterSource, SeededJitter};
/// let a = SeededJitter::new(7);
/// let b = SeededJitter::new(7);
/// assert_eq!(a.next_unit(), b.next_unit());
/// ```
pub trait JitterSource: Send + Sync + fmt::Debug {
    /// The next number in `[0, 1)`.
    fn next_unit(&self) -> f64;
}

/// SplitMix64 from a seed: fast, tiny, deterministic for a given seed.
///
/// ```
/// use floodgate_client::resilience::{JitterSource, SeededJitter};
/// let x = SeededJitter::new(1).next_unit();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug)]
pub struct SeededJitter {
    state: AtomicU64,
}

impl SeededJitter {
    /// A source starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A source seeded from the process's random hasher keys.
    pub fn from_entropy() -> Self {
        Self::new(RandomState::new().hash_one(0x5eed_u64))
    }
}

impl JitterSource for SeededJitter {
    fn next_unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Exponential backoff: the delay before retry `n` (1 for the first retry).
///
/// ```
/// use std::time::Duration;
/// use floodgate_client::resilience::{Backoff, Jitter};
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(Jitter::None);
/// assert_eq!(b.delay(1, Duration::ZERO), Duration::from_millis(100));
/// assert_eq!(b.delay(3, Duration::ZERO), Duration::from_millis(400));
/// assert_eq!(b.delay(10, Duration::ZERO), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay (default 100 ms).
    pub(crate) base: Duration,
    /// No delay is longer (default 10 s), except a `retry_after` the server asks for.
    pub(crate) max_delay: Duration,
    /// Growth per retry (default 2).
    pub(crate) multiplier: f64,
    pub(crate) jitter: Jitter,
    pub(crate) source: Arc<dyn JitterSource>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// Starting at `base`, never longer than `max_delay`, doubling, full jitter.
    pub fn new(base: Duration, max_delay: Duration) -> Self {
        Self {
            base,
            max_delay,
            multiplier: 2.0,
            jitter: Jitter::Full,
            source: Arc::new(SeededJitter::from_entropy()),
        }
    }

    /// The growth factor per retry (at least 1; checked by the builder).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// The jitter kind.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The random source (e.g. [`SeededJitter::new`] in tests).
    pub fn jitter_source(mut self, source: impl JitterSource + 'static) -> Self {
        self.source = Arc::new(source);
        self
    }

    /// The delay before retry `n` (from 1); `previous` is the delay before retry `n - 1`
    /// (used by [`Jitter::Decorrelated`]; zero for the first retry).
    pub fn delay(&self, n: u32, previous: Duration) -> Duration {
        let cap = self.max_delay.as_secs_f64();
        let exp = (self.base.as_secs_f64()
            * self.multiplier.powi(n.saturating_sub(1).min(1_000) as i32))
        .min(cap);
        let secs = match self.jitter {
            Jitter::None => exp,
            Jitter::Full => exp * self.source.next_unit(),
            Jitter::Decorrelated => {
                let lo = self.base.as_secs_f64();
                let hi = (previous.as_secs_f64() * 3.0).max(lo);
                (lo + (hi - lo) * self.source.next_unit()).min(cap)
            }
        };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max_delay)
    }
}
