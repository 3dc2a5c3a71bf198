//! `[breakers.NAME]` tables (and `[breakers.default]`, the template for any other name):
//! parsed, defaulted and validated into [`BreakerSettings`].
//!
//! ```toml
//! [breakers.payments]
//! window = "count"               # "count" | "time"
//! window_size = 20               # calls, or seconds
//! minimum_calls = 10
//! failure_rate_threshold = 50.0
//! slow_call_rate_threshold = 100.0
//! slow_call_duration = "2s"
//! wait_in_open = "30s"
//! half_open_calls = 3
//! half_open_max_wait = "60s"
//! ```
use std::time::Duration;

use floodgate_core::{
    FailMode,
    breaker::{BreakerConfig, BreakerSpec, WindowKind},
    names::validate_policy_name,
    time::micros,
};
use serde::Deserialize;

use crate::config::ConfigError;

/// The name of the template table.
pub const DEFAULT_BREAKER: &str = "default";

/// One `[breakers.NAME]` table as written; every key is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BreakerTable {
    /// `count` (default) or `time`.
    pub window: Option<String>,
    /// Calls or seconds (default 100).
    pub window_size: Option<u32>,
    /// Default 100.
    pub minimum_calls: Option<u32>,
    /// Percent, default 50.
    pub failure_rate_threshold: Option<f64>,
    /// Percent, default 100.
    pub slow_call_rate_threshold: Option<f64>,
    /// Default 60s.
    #[serde(default, with = "humantime_serde")]
    pub slow_call_duration: Option<Duration>,
    /// Default 60s.
    #[serde(default, with = "humantime_serde")]
    pub wait_in_open: Option<Duration>,
    /// Default 1 (constant wait).
    pub wait_in_open_multiplier: Option<f64>,
    /// Default 10 x wait_in_open.
    #[serde(default, with = "humantime_serde")]
    pub wait_in_open_max: Option<Duration>,
    /// Fraction of the wait added at random, default 0.
    pub wait_in_open_jitter: Option<f64>,
    /// Default 10.
    pub half_open_calls: Option<u32>,
    /// Default 60s.
    #[serde(default, with = "humantime_serde")]
    pub half_open_max_wait: Option<Duration>,
    /// Default 0 (no rule).
    pub minimum_reporters: Option<u32>,
    /// `open` (default: admit while the store is failing) or `closed`.
    pub fail_mode: Option<String>,
}

/// A breaker's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// The state machine's settings.
    pub config: BreakerConfig,
    /// What Acquire answers for this breaker while the store is failing.
    pub fail_mode: FailMode,
}

/// Validates one table; errors start with `breakers.NAME.KEY:`.
pub fn build_breaker(name: &str, t: &BreakerTable) -> Result<BreakerSettings, ConfigError> {
    let at = |key: &str, rule: &dyn std::fmt::Display| {
        ConfigError::Invalid(format!("breakers.{name}.{key}: {rule}"))
    };
    validate_policy_name(name).map_err(|_| {
        ConfigError::Invalid(format!(
            "breakers.{name}: names are 1-64 characters of [A-Za-z0-9_.-]"
        ))
    })?;
    let d = BreakerSpec::default();
    let window = match t.window.as_deref() {
        None | Some("count") => WindowKind::Count,
        Some("time") => WindowKind::Time,
        Some(other) => {
            return Err(at(
                "window",
                &format!("must be \"count\" or \"time\", got {other:?}"),
            ));
        }
    };
    let fail_mode = match t.fail_mode.as_deref() {
        None | Some("open") => FailMode::Open,
        Some("closed") => FailMode::Closed,
        Some(other) => {
            return Err(at(
                "fail_mode",
                &format!("must be \"open\" or \"closed\", got {other:?}"),
            ));
        }
    };
    let us = |v: Option<Duration>, default: u64| v.map(micros).unwrap_or(default);
    let spec = BreakerSpec {
        window,
        window_size: t.window_size.unwrap_or(d.window_size),
        minimum_calls: t.minimum_calls.unwrap_or(d.minimum_calls),
        failure_rate_threshold: t.failure_rate_threshold.unwrap_or(d.failure_rate_threshold),
        slow_call_rate_threshold: t
            .slow_call_rate_threshold
            .unwrap_or(d.slow_call_rate_threshold),
        slow_call_duration: us(t.slow_call_duration, d.slow_call_duration),
        wait_in_open: us(t.wait_in_open, d.wait_in_open),
        wait_in_open_multiplier: t
            .wait_in_open_multiplier
            .unwrap_or(d.wait_in_open_multiplier),
        wait_in_open_max: us(t.wait_in_open_max, 0),
        wait_in_open_jitter: t.wait_in_open_jitter.unwrap_or(d.wait_in_open_jitter),
        half_open_calls: t.half_open_calls.unwrap_or(d.half_open_calls),
        half_open_max_wait: us(t.half_open_max_wait, d.half_open_max_wait),
        minimum_reporters: t.minimum_reporters.unwrap_or(d.minimum_reporters),
    };
    let config = BreakerConfig::new(spec).map_err(|e| at(e.key, &e.rule))?;
    Ok(BreakerSettings { config, fail_mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> BreakerTable {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_issue_example_parses() {
        let b = build_breaker(
            "payments",
            &table(
                r#"
                window = "count"
                window_size = 20
                minimum_calls = 10
                failure_rate_threshold = 50.0
                slow_call_rate_threshold = 100.0
                slow_call_duration = "2s"
                wait_in_open = "30s"
                half_open_calls = 3
                half_open_max_wait = "60s"
                "#,
            ),
        )
        .unwrap();
        assert_eq!(b.config.window_size(), 20);
        assert_eq!(b.config.spec().wait_in_open, 30_000_000);
        assert_eq!(b.fail_mode, FailMode::Open);
    }

    #[test]
    fn errors_name_table_and_key() {
        let e = build_breaker("p", &table("window = \"sliding\"")).unwrap_err();
        assert!(e.to_string().starts_with("breakers.p.window:"), "{e}");
        let e = build_breaker("p", &table("half_open_calls = 0")).unwrap_err();
        assert!(
            e.to_string().starts_with("breakers.p.half_open_calls:"),
            "{e}"
        );
        let e = build_breaker("p", &table("fail_mode = \"local\"")).unwrap_err();
        assert!(e.to_string().starts_with("breakers.p.fail_mode:"), "{e}");
        let e = build_breaker("a:b", &BreakerTable::default()).unwrap_err();
        assert!(e.to_string().starts_with("breakers.a:b:"), "{e}");
    }
}
