//! [`BreakerConfig`]: one breaker's settings, valid by construction from a [`BreakerSpec`].
use crate::time::{Micros, SECOND};

/// Largest count window (calls): each report writes one byte per call it adds.
pub const MAX_COUNT_WINDOW: u32 = 10_000;
/// Largest time window (seconds): one bucket per second.
pub const MAX_TIME_WINDOW: u32 = 3_600;
/// Largest number of half-open trial permits.
pub const MAX_HALF_OPEN_CALLS: u32 = 1_000;
/// Largest `minimum_reporters`.
pub const MAX_MINIMUM_REPORTERS: u32 = 100;
/// Failing reporters remembered per breaker; the oldest leave first.
pub const MAX_TRACKED_REPORTERS: usize = 256;
/// Longest wait in open (and longest half-open permit lifetime).
pub const MAX_WAIT: Micros = 366 * 24 * 3600 * SECOND;

/// How the breaker's window counts calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// The last `window_size` calls.
    Count,
    /// The calls of the last `window_size` seconds, in one-second buckets.
    Time,
}

impl WindowKind {
    /// The name used in configuration and in Lua (`count`, `time`).
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Count => "count",
            WindowKind::Time => "time",
        }
    }
}

/// A breaker's settings as written; [`BreakerConfig::new`] checks every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSpec {
    /// Count or time window.
    pub window: WindowKind,
    /// Calls (count) or seconds (time).
    pub window_size: u32,
    /// Calls the window must hold before its rates can open the breaker.
    pub minimum_calls: u32,
    /// Failure rate (percent) at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Slow-call rate (percent) at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// A call at least this long is slow.
    pub slow_call_duration: Micros,
    /// Time in OPEN before trial calls are let through.
    pub wait_in_open: Micros,
    /// Each consecutive open waits this many times longer (1 = constant).
    pub wait_in_open_multiplier: f64,
    /// Upper bound of the growing wait; 0 means 10 x `wait_in_open`.
    pub wait_in_open_max: Micros,
    /// Up to this fraction (0..=1) of the wait is added at random, so a fleet's retries
    /// after an open are spread out.
    pub wait_in_open_jitter: f64,
    /// Trial calls let through in HALF_OPEN, fleet-wide.
    pub half_open_calls: u32,
    /// A trial permit whose outcome is not reported within this time is granted again.
    pub half_open_max_wait: Micros,
    /// Distinct reporters of failures or slow calls needed to open (0 or 1: no rule).
    pub minimum_reporters: u32,
}

impl Default for BreakerSpec {
    /// resilience4j's defaults where it has one.
    fn default() -> Self {
        Self {
            window: WindowKind::Count,
            window_size: 100,
            minimum_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: 60 * SECOND,
            wait_in_open: 60 * SECOND,
            wait_in_open_multiplier: 1.0,
            wait_in_open_max: 0,
            wait_in_open_jitter: 0.0,
            half_open_calls: 10,
            half_open_max_wait: 60 * SECOND,
            minimum_reporters: 0,
        }
    }
}

/// A rule broken by a breaker's settings; the message starts with the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {rule}")]
pub struct BreakerConfigError {
    /// The setting.
    pub key: &'static str,
    /// What it must be.
    pub rule: String,
}

fn err(key: &'static str, rule: impl Into<String>) -> BreakerConfigError {
    BreakerConfigError {
        key,
        rule: rule.into(),
    }
}

/// A breaker's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    spec: BreakerSpec,
}

impl BreakerConfig {
    /// Checks every rule of `spec`.
    pub fn new(mut spec: BreakerSpec) -> Result<Self, BreakerConfigError> {
        let max_window = match spec.window {
            WindowKind::Count => MAX_COUNT_WINDOW,
            WindowKind::Time => MAX_TIME_WINDOW,
        };
        if !(1..=max_window).contains(&spec.window_size) {
            return Err(err(
                "window_size",
                format!(
                    "must be between 1 and {max_window} for a {} window",
                    spec.window.name()
                ),
            ));
        }
        if spec.minimum_calls == 0 {
            return Err(err("minimum_calls", "must be at least 1"));
        }
        for (key, v) in [
            ("failure_rate_threshold", spec.failure_rate_threshold),
            ("slow_call_rate_threshold", spec.slow_call_rate_threshold),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return Err(err(key, "must be a percentage above 0 and at most 100"));
            }
        }
        if spec.slow_call_duration == 0 || spec.slow_call_duration > MAX_WAIT {
            return Err(err(
                "slow_call_duration",
                "must be above 0 and at most 366 days",
            ));
        }
        if !(1_000..=MAX_WAIT).contains(&spec.wait_in_open) {
            return Err(err("wait_in_open", "must be between 1ms and 366 days"));
        }
        if !(1.0..=100.0).contains(&spec.wait_in_open_multiplier) {
            return Err(err("wait_in_open_multiplier", "must be between 1 and 100"));
        }
        if spec.wait_in_open_max == 0 {
            spec.wait_in_open_max = spec.wait_in_open.saturating_mul(10).min(MAX_WAIT);
        }
        if spec.wait_in_open_max < spec.wait_in_open || spec.wait_in_open_max > MAX_WAIT {
            return Err(err(
                "wait_in_open_max",
                "must be at least wait_in_open and at most 366 days",
            ));
        }
        if !(0.0..=1.0).contains(&spec.wait_in_open_jitter) {
            return Err(err("wait_in_open_jitter", "must be between 0 and 1"));
        }
        if !(1..=MAX_HALF_OPEN_CALLS).contains(&spec.half_open_calls) {
            return Err(err(
                "half_open_calls",
                format!("must be between 1 and {MAX_HALF_OPEN_CALLS}"),
            ));
        }
        if !(1_000..=MAX_WAIT).contains(&spec.half_open_max_wait) {
            return Err(err(
                "half_open_max_wait",
                "must be between 1ms and 366 days",
            ));
        }
        if spec.minimum_reporters > MAX_MINIMUM_REPORTERS {
            return Err(err(
                "minimum_reporters",
                format!("must be at most {MAX_MINIMUM_REPORTERS}"),
            ));
        }
        Ok(Self { spec })
    }

    /// The settings (with `wait_in_open_max` filled in).
    pub fn spec(&self) -> &BreakerSpec {
        &self.spec
    }

    /// Count or time window.
    pub fn window(&self) -> WindowKind {
        self.spec.window
    }

    /// Calls or seconds.
    pub fn window_size(&self) -> u32 {
        self.spec.window_size
    }

    /// Whether a call of `duration` is slow.
    pub fn is_slow(&self, duration: Micros) -> bool {
        duration >= self.spec.slow_call_duration
    }

    /// The wait of the `opens`-th consecutive open (1-based) before jitter:
    /// `wait_in_open x multiplier^(opens-1)`, at most `wait_in_open_max`.
    pub fn base_wait(&self, opens: u32) -> Micros {
        let s = &self.spec;
        let grown =
            s.wait_in_open as f64 * s.wait_in_open_multiplier.powf(opens.max(1) as f64 - 1.0);
        if grown >= s.wait_in_open_max as f64 {
            s.wait_in_open_max
        } else {
            grown.floor() as Micros
        }
    }

    /// The wait with jitter: `draw` is uniform in 0..1_000_000 (the server's random number;
    /// tests give it explicitly), adding `floor(wait x jitter x draw / 1e6)`.
    pub fn wait(&self, opens: u32, draw: u32) -> Micros {
        let base = self.base_wait(opens);
        let extra = (base as f64 * self.spec.wait_in_open_jitter * f64::from(draw) / 1e6).floor();
        base + extra as Micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fill_the_max_wait() {
        let c = BreakerConfig::new(BreakerSpec::default()).unwrap();
        assert_eq!(c.spec().wait_in_open_max, 600 * SECOND);
    }

    #[test]
    fn rules_name_their_key() {
        let bad = |f: fn(&mut BreakerSpec)| {
            let mut s = BreakerSpec::default();
            f(&mut s);
            BreakerConfig::new(s).unwrap_err().key
        };
        assert_eq!(bad(|s| s.window_size = 0), "window_size");
        assert_eq!(
            bad(|s| {
                s.window = WindowKind::Time;
                s.window_size = 3_601
            }),
            "window_size"
        );
        assert_eq!(bad(|s| s.minimum_calls = 0), "minimum_calls");
        assert_eq!(
            bad(|s| s.failure_rate_threshold = 0.0),
            "failure_rate_threshold"
        );
        assert_eq!(
            bad(|s| s.slow_call_rate_threshold = f64::NAN),
            "slow_call_rate_threshold"
        );
        assert_eq!(bad(|s| s.wait_in_open = 10), "wait_in_open");
        assert_eq!(
            bad(|s| s.wait_in_open_multiplier = 0.5),
            "wait_in_open_multiplier"
        );
        assert_eq!(bad(|s| s.wait_in_open_max = 1_000), "wait_in_open_max");
        assert_eq!(bad(|s| s.wait_in_open_jitter = 1.5), "wait_in_open_jitter");
        assert_eq!(bad(|s| s.half_open_calls = 0), "half_open_calls");
        assert_eq!(bad(|s| s.half_open_max_wait = 0), "half_open_max_wait");
        assert_eq!(bad(|s| s.minimum_reporters = 101), "minimum_reporters");
    }

    #[test]
    fn wait_grows_to_its_max_and_jitter_adds_a_share() {
        let c = BreakerConfig::new(BreakerSpec {
            wait_in_open: SECOND,
            wait_in_open_multiplier: 2.0,
            wait_in_open_max: 5 * SECOND,
            wait_in_open_jitter: 0.5,
            ..BreakerSpec::default()
        })
        .unwrap();
        assert_eq!(c.base_wait(1), SECOND);
        assert_eq!(c.base_wait(2), 2 * SECOND);
        assert_eq!(c.base_wait(3), 4 * SECOND);
        assert_eq!(c.base_wait(4), 5 * SECOND);
        assert_eq!(c.base_wait(400), 5 * SECOND);
        assert_eq!(c.wait(1, 0), SECOND);
        assert_eq!(c.wait(1, 500_000), SECOND + SECOND / 4);
    }
}
