//! `[queues.NAME]` tables (and `[queues.default]`, the template for any other name):
//! parsed, defaulted and validated into [`QueueSettings`].
//!
//! ```toml
//! [queues.orders]
//! retention = "7d"
//! max_len = 100000
//! max_payload = "1MiB"
//! alert_threshold = 1000
//! visibility_timeout = "30s"
//! max_deliveries = 5
//! redrive_targets = ["orders:retry"]
//! durability = "accepted"   # or "replicated"
//! ```
use std::time::Duration;

use floodgate_core::{dead_letters::QueueLimits, names::validate_policy_name, time::micros};
use serde::Deserialize;

use crate::config::ConfigError;

/// The name of the template table.
pub const DEFAULT_QUEUE: &str = "default";
/// Largest `max_payload`: 4 MiB (gRPC's usual receive limit) less 64 KiB for the rest of
/// the message, so a Get or Claim of one entry always fits.
pub const MAX_PAYLOAD_LIMIT: u64 = 4 * 1024 * 1024 - 64 * 1024;
/// Default `max_payload`.
pub const DEFAULT_MAX_PAYLOAD: u64 = 1024 * 1024;
/// Longest retention.
pub const MAX_RETENTION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A byte size written as a number or as text: `1048576`, `"512KiB"`, `"1MiB"`, `"2MB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Bytes.
    Bytes(u64),
    /// Text with a unit.
    Text(String),
}

impl ByteSize {
    /// The size in bytes, or the rule it breaks.
    pub fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            ByteSize::Bytes(n) => return Ok(*n),
            ByteSize::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("{text:?} is not a size; write e.g. 1048576, \"512KiB\" or \"1MiB\"")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "KiB" => 1_024,
            "MB" => 1_000_000,
            "MiB" => 1_048_576,
            other => return Err(format!("unknown unit {other:?}; use B, KB, KiB, MB or MiB")),
        };
        n.checked_mul(mult).ok_or_else(|| "too large".to_owned())
    }
}

/// Whether Publish waits for a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answer once the primary stored the entry.
    Accepted,
    /// Answer once `WAIT` saw at least one replica take it.
    Replicated,
}

/// One `[queues.NAME]` table as written; every key is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueueTable {
    /// Default 7d.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Default 100,000.
    pub max_len: Option<u64>,
    /// Default 1 MiB.
    pub max_payload: Option<ByteSize>,
    /// Default 1,000.
    pub alert_threshold: Option<u64>,
    /// Default 30s.
    #[serde(default, with = "humantime_serde")]
    pub visibility_timeout: Option<Duration>,
    /// Default 5; 0 means no limit.
    pub max_deliveries: Option<u32>,
    /// Streams Redrive may write to; default none.
    #[serde(default)]
    pub redrive_targets: Vec<String>,
    /// `accepted` (default) or `replicated`.
    pub durability: Option<String>,
}

/// A queue's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Retention, max_len and max_deliveries, as the model takes them.
    pub limits: QueueLimits,
    /// Largest payload in bytes.
    pub max_payload: u64,
    /// Stats say over_threshold at this many entries.
    pub alert_threshold: u64,
    /// Default claim visibility (µs).
    pub visibility_timeout: u64,
    /// Streams Redrive may write to.
    pub redrive_targets: Vec<String>,
    /// Whether Publish waits for a replica.
    pub durability: Durability,
}

/// Validates one table; errors start with `queues.NAME.KEY:`. `key_prefix` is the
/// server's: a redrive target may never be a floodgate key.
pub fn build_queue(
    name: &str,
    t: &QueueTable,
    key_prefix: &str,
) -> Result<QueueSettings, ConfigError> {
    let at = |key: &str, rule: &dyn std::fmt::Display| {
        ConfigError::Invalid(format!("queues.{name}.{key}: {rule}"))
    };
    validate_policy_name(name).map_err(|_| {
        ConfigError::Invalid(format!(
            "queues.{name}: names are 1-64 characters of [A-Za-z0-9_.-]"
        ))
    })?;
    let retention = t.retention.unwrap_or(Duration::from_secs(7 * 24 * 3600));
    if retention < Duration::from_secs(1) || retention > MAX_RETENTION {
        return Err(at("retention", &"must be between 1s and 366 days"));
    }
    let max_len = t.max_len.unwrap_or(100_000);
    if max_len == 0 {
        return Err(at("max_len", &"must be at least 1"));
    }
    let max_payload = match &t.max_payload {
        Some(s) => s.bytes().map_err(|e| at("max_payload", &e))?,
        None => DEFAULT_MAX_PAYLOAD,
    };
    if max_payload == 0 || max_payload > MAX_PAYLOAD_LIMIT {
        return Err(at(
            "max_payload",
            &format!("must be between 1 byte and {MAX_PAYLOAD_LIMIT} bytes (4 MiB - 64 KiB)"),
        ));
    }
    let visibility = t.visibility_timeout.unwrap_or(Duration::from_secs(30));
    if visibility < Duration::from_millis(1) || visibility > Duration::from_secs(12 * 3600) {
        return Err(at("visibility_timeout", &"must be between 1ms and 12h"));
    }
    let prefix = format!("{key_prefix}:");
    for (i, target) in t.redrive_targets.iter().enumerate() {
        if target.is_empty()
            || target.len() > 512
            || target.starts_with(&prefix)
            || target.chars().any(char::is_control)
        {
            return Err(at(
                &format!("redrive_targets[{i}]"),
                &format!(
                    "must be 1-512 bytes of printable text naming your application's stream, never a floodgate key ({prefix}...)"
                ),
            ));
        }
    }
    let durability = match t.durability.as_deref() {
        None | Some("accepted") => Durability::Accepted,
        Some("replicated") => Durability::Replicated,
        Some(other) => {
            return Err(at(
                "durability",
                &format!("must be \"accepted\" or \"replicated\", got {other:?}"),
            ));
        }
    };
    Ok(QueueSettings {
        limits: QueueLimits {
            retention: micros(retention),
            max_len,
            max_deliveries: t.max_deliveries.unwrap_or(5),
        },
        max_payload,
        alert_threshold: t.alert_threshold.unwrap_or(1_000),
        visibility_timeout: micros(visibility),
        redrive_targets: t.redrive_targets.clone(),
        durability,
    })
}

/// The stream a `redrive_targets` entry names in `namespace`: `{namespace}` in it stands
/// for the queue's namespace, so one configuration gives each team targets of its own.
pub fn redrive_target(entry: &str, namespace: &str) -> String {
    entry.replace("{namespace}", namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> QueueTable {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_issue_example_parses() {
        let q = build_queue(
            "orders",
            &table(
                r#"
                retention = "7d"
                max_len = 100000
                max_payload = "1MiB"
                alert_threshold = 1000
                visibility_timeout = "30s"
                max_deliveries = 5
                redrive_targets = ["orders:retry"]
                durability = "replicated"
                "#,
            ),
            "fg",
        )
        .unwrap();
        assert_eq!(q.max_payload, 1_048_576);
        assert_eq!(q.durability, Durability::Replicated);
        assert_eq!(q.limits.max_deliveries, 5);
    }

    #[test]
    fn errors_name_table_and_key() {
        let e = |text: &str| {
            build_queue("q", &table(text), "fg")
                .unwrap_err()
                .to_string()
        };
        assert!(e("max_payload = \"5MiB\"").starts_with("queues.q.max_payload:"));
        assert!(e("max_payload = \"1XB\"").starts_with("queues.q.max_payload:"));
        assert!(e("redrive_targets = [\"fg:x\"]").starts_with("queues.q.redrive_targets[0]:"));
        assert!(e("durability = \"sync\"").starts_with("queues.q.durability:"));
        assert!(e("max_len = 0").starts_with("queues.q.max_len:"));
    }
}
