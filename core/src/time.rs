//! Time as integer microseconds, and the clocks that provide it.
//!
//! The fleet's clock is Redis `TIME` (read by `lua/prelude.lua`, whose twin is this module); these clocks serve the in-memory store (system clock)
//! and tests (manual clock).
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds: timestamps since the Unix epoch, or lengths of time.
pub type Micros = u64;

/// Microseconds in one second.
pub const SECOND: Micros = 1_000_000;

/// Converts a [`Duration`] to whole microseconds, saturating.
pub fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A source of "now" in microseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Micros;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(micros)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: Micros) -> Self {
        Self(Arc::new(AtomicU64::new(now)))
    }
    /// Moves the clock forward by `by` microseconds.
    pub fn advance(&self, by: Micros) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
    /// Sets the clock to `now`.
    pub fn set(&self, now: Micros) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(10);
        let c2 = c.clone();
        c.advance(5);
        assert_eq!(c2.now(), 15);
        c2.set(3);
        assert_eq!(c.now(), 3);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800 * SECOND);
    }
}
