//! Configuration: one TOML file, overridden by environment variables and flags.
//!
//! ```toml
//! key_prefix = "fg"
//! inline_policies = true
//! default_fail_mode = "open"
//! store_timeout = "50ms"
//!
//! [policies.api]
//! algorithm = "token_bucket"
//! limit = 100
//! period = "1m"
//! burst = 20
//! ```
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use floodgate_core::{
    Algorithm, FailMode, Policy, PolicySpec, names::validate_policy_name, time::micros,
};
use serde::Deserialize;

use crate::{
    breaker_config::{BreakerSettings, BreakerTable, DEFAULT_BREAKER, build_breaker},
    queue_config::{DEFAULT_QUEUE, QueueSettings, QueueTable, build_queue},
    rls::{Counting, RlsSettings, headers::HeaderMode},
    store::redis::ConnectionMode,
};

/// Largest sliding-log limit by default (its memory is O(limit)).
pub const DEFAULT_MAX_SLIDING_LOG_LIMIT: u64 = 10_000;
/// Largest concurrency limit by default (each decision reads every live lease).
pub const DEFAULT_MAX_CONCURRENCY_LIMIT: u64 = 10_000;

/// The largest limits of the algorithms whose work per decision grows with the limit, so
/// that no tenant's script can hold Redis for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `max_sliding_log_limit`.
    pub sliding_log: u64,
    /// `max_concurrency_limit`.
    pub concurrency: u64,
}

impl Caps {
    /// Checks `policy` against the caps; the error text starts with "limit:".
    pub fn check(&self, policy: &Policy) -> Result<(), String> {
        let (cap, key) = match policy.algorithm() {
            Algorithm::SlidingLog => (self.sliding_log, "max_sliding_log_limit"),
            Algorithm::Concurrency => (self.concurrency, "max_concurrency_limit"),
            _ => return Ok(()),
        };
        if policy.limit() > cap {
            return Err(format!(
                "limit: a {} limit is at most {cap} on this server ({key})",
                policy.algorithm().name()
            ));
        }
        Ok(())
    }
}

/// Default cap on store calls in flight: far above what one Redis connection needs to
/// stay busy, low enough that a stalled Redis cannot pile up unbounded work.
pub const DEFAULT_STORE_MAX_IN_FLIGHT: usize = 1024;

/// The file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// gRPC listen address.
    pub listen: Option<SocketAddr>,
    /// Redis URL; none means the in-memory store.
    pub redis_url: Option<String>,
    /// HTTP side port (metrics, health).
    pub http_listen: Option<SocketAddr>,
    /// First segment of every Redis key.
    pub key_prefix: Option<String>,
    /// Whether requests may carry inline policies.
    pub inline_policies: Option<bool>,
    /// Fail mode of policies that name none.
    pub default_fail_mode: Option<String>,
    /// Deadline of every store call.
    #[serde(default, with = "humantime_serde")]
    pub store_timeout: Option<Duration>,
    /// Largest limit of a sliding_log policy.
    pub max_sliding_log_limit: Option<u64>,
    /// Largest limit of a concurrency policy.
    pub max_concurrency_limit: Option<u64>,
    /// `multiplexed` (default) or `pool`.
    pub redis_connection: Option<ConnectionMode>,
    /// Connections in the pool when `redis_connection = "pool"`.
    pub redis_pool_size: Option<usize>,
    /// Servers sharing one store: `local` fail modes decide on `1 / fleet_size` of a limit.
    pub fleet_size: Option<u32>,
    /// Most store calls in flight at once; more wait within their deadline.
    pub store_max_in_flight: Option<usize>,
    /// Named policies.
    #[serde(default)]
    pub policies: HashMap<String, PolicyConfig>,
    /// Circuit breakers by name (`default`: the template for any other name).
    #[serde(default)]
    pub breakers: HashMap<String, BreakerTable>,
    /// envoyproxy/ratelimit YAML file or folder for ShouldRateLimit (relative to this file).
    pub rls_config: Option<PathBuf>,
    /// Whether a ShouldRateLimit descriptor's `limit` override is honoured.
    pub rls_allow_limit_override: Option<bool>,
    /// `all_or_nothing` (default) or `independent`.
    pub rls_counting: Option<String>,
    /// `off` (default), `draft`, `x-ratelimit` or `both`.
    pub rls_headers: Option<String>,
    /// Dead-letter queues by name (`default`: the template for any other name).
    #[serde(default)]
    pub queues: HashMap<String, QueueTable>,
    /// Bearer tokens (`crate::auth`); none means authentication is off.
    #[serde(default)]
    pub tokens: Vec<crate::auth::token::TokenTable>,
    /// `[tls]`: certificate files of the gRPC server and of Redis (`crate::tls`).
    pub tls: Option<crate::tls::TlsTable>,
    /// `[limits]`: limits on clients (`crate::limits`).
    pub limits: Option<crate::limits::LimitsTable>,
}

/// One `[policies.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `token_bucket`, `sliding_window`, `sliding_log`, `fixed_window` or `concurrency`.
    pub algorithm: String,
    /// Requests per period (concurrency: slots).
    pub limit: u64,
    /// Window or refill period, e.g. "1s", "1m", "1h".
    #[serde(default, with = "humantime_serde")]
    pub period: Option<Duration>,
    /// Token bucket capacity; 0 or absent means `limit`.
    #[serde(default)]
    pub burst: u64,
    /// `open`, `closed` or `local`.
    pub fail_mode: Option<String>,
    /// Concurrency lease lifetime.
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    /// Counted and reported, never denies.
    #[serde(default)]
    pub shadow: bool,
    /// `local` fail mode: the share of the limit this server enforces alone while the
    /// store fails (0 < share <= 1); absent means `1 / fleet_size`.
    pub local_share: Option<f64>,
}

/// Settings that flags and environment variables override.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `FLOODGATE_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--redis` / `FLOODGATE_REDIS_URL`.
    pub redis_url: Option<String>,
    /// `--http-listen` / `FLOODGATE_HTTP_LISTEN`.
    pub http_listen: Option<SocketAddr>,
    /// `--store-timeout` / `FLOODGATE_STORE_TIMEOUT`.
    pub store_timeout: Option<Duration>,
    /// `--redis-connection`.
    pub redis_connection: Option<ConnectionMode>,
    /// `--rls-config` / `FLOODGATE_RLS_CONFIG`.
    pub rls_config: Option<PathBuf>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC listen address (default 127.0.0.1:50051).
    pub listen: SocketAddr,
    /// Redis URL; `None` serves from memory.
    pub redis_url: Option<String>,
    /// HTTP side port for /metrics, /healthz, /readyz (default 127.0.0.1:8080).
    pub http_listen: SocketAddr,
    /// Key prefix (default `fg`).
    pub key_prefix: String,
    /// Whether inline policies are accepted (default true).
    pub inline_policies: bool,
    /// Fail mode for policies naming none (default open).
    pub default_fail_mode: FailMode,
    /// Store call deadline (default 50 ms).
    pub store_timeout: Duration,
    /// Caps on sliding-log and concurrency limits (default 10,000 each).
    pub caps: Caps,
    /// Redis connection mode (default multiplexed).
    pub redis_connection: ConnectionMode,
    /// Pool size for the pool mode (default 32).
    pub redis_pool_size: usize,
    /// Servers sharing the store (default 1): the default `local_share` is its inverse.
    pub fleet_size: u32,
    /// Most store calls in flight at once (default 1024).
    pub store_max_in_flight: usize,
    /// Named policies, validated.
    pub policies: HashMap<String, Arc<Policy>>,
    /// Circuit breakers by name, validated (`default` is the template).
    pub breakers: HashMap<String, Arc<BreakerSettings>>,
    /// Envoy RLS: the rate limit files and their settings.
    pub rls: Arc<RlsSettings>,
    /// Dead-letter queues by name, validated (`default` is the template).
    pub queues: HashMap<String, Arc<QueueSettings>>,
    /// Bearer tokens, validated; empty means authentication is off.
    pub tokens: Arc<crate::auth::Tokens>,
    /// `[tls]` as written (flags are applied over it at start; read only at start).
    pub tls: crate::tls::TlsTable,
    /// Limits on clients (read at start).
    pub limits: crate::limits::Limits,
}

impl Config {
    /// The settings of breaker `name`: its own table, else the `default` template.
    pub fn breaker(&self, name: &str) -> Option<&Arc<BreakerSettings>> {
        self.breakers
            .get(name)
            .or_else(|| self.breakers.get(DEFAULT_BREAKER))
    }

    /// The settings of queue `name`: its own table, else the `default` template.
    pub fn queue(&self, name: &str) -> Option<&Arc<QueueSettings>> {
        self.queues
            .get(name)
            .or_else(|| self.queues.get(DEFAULT_QUEUE))
    }
}

/// A configuration that cannot be used, with the place and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

/// Parses a fail mode name.
pub fn parse_fail_mode(field: &str, s: &str) -> Result<FailMode, ConfigError> {
    FailMode::from_name(s).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "{field}: must be \"open\", \"closed\" or \"local\", got {s:?}"
        ))
    })
}

/// Turns one `[policies.NAME]` table into a validated policy.
pub fn build_policy(name: &str, p: &PolicyConfig, caps: Caps) -> Result<Policy, ConfigError> {
    let at = |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("policies.{name}.{e}"));
    validate_policy_name(name)
        .map_err(|e| ConfigError::Invalid(format!("policies.{name}: {e}")))?;
    if crate::validate::is_inline_ref(name) {
        return Err(ConfigError::Invalid(format!(
            "policies.{name}: names of the form i-<12 hex digits> are reserved for inline policies"
        )));
    }
    let algorithm = Algorithm::from_name(&p.algorithm).map_err(|e| at(&e))?;
    let fail_mode = p
        .fail_mode
        .as_deref()
        .map(|m| parse_fail_mode(&format!("policies.{name}.fail_mode"), m))
        .transpose()?;
    if algorithm != Algorithm::Concurrency && p.period.is_none() {
        return Err(ConfigError::Invalid(format!(
            "policies.{name}.period: required for {}, e.g. period = \"1m\"",
            p.algorithm
        )));
    }
    let policy = Policy::new(PolicySpec {
        algorithm,
        limit: p.limit,
        period: p.period.map(micros).unwrap_or(0),
        burst: p.burst,
        fail_mode,
        lease_ttl: p.lease_ttl.map(micros),
        shadow: p.shadow,
    })
    .and_then(|policy| match p.local_share {
        Some(share) => policy.with_local_share(share),
        None => Ok(policy),
    })
    .map_err(|e| at(&e))?;
    caps.check(&policy)
        .map_err(|e| ConfigError::Invalid(format!("policies.{name}.{e}")))?;
    Ok(policy)
}

impl Config {
    /// Reads `path` (if any) and applies `overrides` on top.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let origin = p.display().to_string();
                let mut file = Self::parse_file(&origin, &text)?;
                if let (Some(rls), Some(dir)) = (&file.rls_config, p.parent())
                    && rls.is_relative()
                {
                    file.rls_config = Some(dir.join(rls));
                }
                return Self::from_file(file, overrides).map_err(|e| match e {
                    ConfigError::Invalid(m) => ConfigError::Invalid(format!("{origin}: {m}")),
                    other => other,
                });
            }
            None => FileConfig::default(),
        };
        Self::from_file(file, overrides)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse_file(origin: &str, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Combines a parsed file with overrides and defaults, validating every policy.
    pub fn from_file(file: FileConfig, o: Overrides) -> Result<Self, ConfigError> {
        let caps = Caps {
            sliding_log: file
                .max_sliding_log_limit
                .unwrap_or(DEFAULT_MAX_SLIDING_LOG_LIMIT),
            concurrency: file
                .max_concurrency_limit
                .unwrap_or(DEFAULT_MAX_CONCURRENCY_LIMIT),
        };
        let mut policies = HashMap::new();
        for (name, p) in &file.policies {
            policies.insert(name.clone(), Arc::new(build_policy(name, p, caps)?));
        }
        let mut breakers = HashMap::new();
        for (name, t) in &file.breakers {
            breakers.insert(name.clone(), Arc::new(build_breaker(name, t)?));
        }
        let rls = rls_settings(&file, &o, caps)?;
        let tokens = Arc::new(crate::auth::Tokens::build(&file.tokens)?);
        let prefix_for_queues = file.key_prefix.clone().unwrap_or_else(|| "fg".to_owned());
        let mut queues = HashMap::new();
        for (name, t) in &file.queues {
            queues.insert(
                name.clone(),
                Arc::new(build_queue(name, t, &prefix_for_queues)?),
            );
        }
        let default_fail_mode = match &file.default_fail_mode {
            Some(m) => parse_fail_mode("default_fail_mode", m)?,
            None => FailMode::Open,
        };
        let key_prefix = file.key_prefix.unwrap_or_else(|| "fg".to_owned());
        if key_prefix.is_empty() || key_prefix.contains(['{', '}', ':']) {
            return Err(ConfigError::Invalid(
                "key_prefix: must be non-empty and contain no ':', '{' or '}'".into(),
            ));
        }
        let store_timeout = o
            .store_timeout
            .or(file.store_timeout)
            .unwrap_or(Duration::from_millis(50));
        if store_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "store_timeout: must be greater than 0".into(),
            ));
        }
        let fleet_size = file.fleet_size.unwrap_or(1);
        if fleet_size == 0 {
            return Err(ConfigError::Invalid(
                "fleet_size: must be at least 1 (the number of servers sharing the store)".into(),
            ));
        }
        let store_max_in_flight = file
            .store_max_in_flight
            .unwrap_or(DEFAULT_STORE_MAX_IN_FLIGHT);
        if store_max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "store_max_in_flight: must be at least 1".into(),
            ));
        }
        let limits = file
            .limits
            .clone()
            .unwrap_or_default()
            .build()
            .map_err(ConfigError::Invalid)?;
        Ok(Self {
            listen: o
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051))),
            redis_url: o.redis_url.or(file.redis_url).filter(|u| !u.is_empty()),
            http_listen: o
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            key_prefix,
            inline_policies: file.inline_policies.unwrap_or(true),
            default_fail_mode,
            store_timeout,
            caps,
            redis_connection: o
                .redis_connection
                .or(file.redis_connection)
                .unwrap_or_default(),
            redis_pool_size: file.redis_pool_size.unwrap_or(32),
            fleet_size,
            store_max_in_flight,
            policies,
            breakers,
            rls: Arc::new(rls),
            queues,
            tokens,
            tls: file.tls.unwrap_or_default(),
            limits,
        })
    }
}

/// The RLS settings: the rate limit files (`--rls-config` wins over `rls_config`) and the
/// `rls_*` keys.
fn rls_settings(file: &FileConfig, o: &Overrides, caps: Caps) -> Result<RlsSettings, ConfigError> {
    let path = o.rls_config.clone().or_else(|| file.rls_config.clone());
    let config = match &path {
        Some(p) => crate::rls::config::load(p, caps)?,
        None => Default::default(),
    };
    let counting = match file.rls_counting.as_deref() {
        None => Counting::default(),
        Some(s) => Counting::from_name(s).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "rls_counting: must be \"all_or_nothing\" or \"independent\", got {s:?}"
            ))
        })?,
    };
    let headers = match file.rls_headers.as_deref() {
        None => HeaderMode::default(),
        Some(s) => HeaderMode::from_name(s).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "rls_headers: must be \"off\", \"draft\", \"x-ratelimit\" or \"both\", got {s:?}"
            ))
        })?,
    };
    Ok(RlsSettings {
        path,
        config,
        allow_limit_override: file.rls_allow_limit_override.unwrap_or(false),
        counting,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies_and_defaults() {
        let f = Config::parse_file(
            "t.toml",
            r#"
            inline_policies = false
            [policies.api]
            algorithm = "token_bucket"
            limit = 100
            period = "1m"
            burst = 20
            [policies.jobs]
            algorithm = "concurrency"
            limit = 4
            lease_ttl = "30s"
            "#,
        )
        .unwrap();
        let c = Config::from_file(f, Overrides::default()).unwrap();
        assert!(!c.inline_policies);
        assert_eq!(c.policies["api"].capacity(), 20);
        assert_eq!(c.policies["jobs"].lease_ttl(), 30_000_000);
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.store_timeout, Duration::from_millis(50));
    }

    #[test]
    fn errors_name_the_place() {
        let f = Config::parse_file(
            "t.toml",
            "[policies.api]\nalgorithm = \"token_bucket\"\nlimit = 0\nperiod = \"1s\"\n",
        )
        .unwrap();
        let e = Config::from_file(f, Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("policies.api.limit:"), "{e}");
        let e = Config::parse_file("t.toml", "[policies.api]\nalgoritm = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("algoritm"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let f = Config::parse_file("t.toml", "redis_url = \"redis://a\"\n").unwrap();
        let c = Config::from_file(
            f,
            Overrides {
                redis_url: Some("redis://b".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://b"));
    }

    #[test]
    fn rls_settings_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rls")).unwrap();
        std::fs::write(dir.path().join("rls/a.yaml"), "domain: a\n").unwrap();
        let toml = dir.path().join("floodgate.toml");
        std::fs::write(
            &toml,
            "rls_config = \"rls\"\nrls_counting = \"independent\"\nrls_headers = \"both\"\nrls_allow_limit_override = true\n",
        )
        .unwrap();
        let c = Config::load(Some(&toml), Overrides::default()).unwrap();
        assert_eq!(
            c.rls.path.as_deref(),
            Some(dir.path().join("rls").as_path())
        );
        assert!(c.rls.config.domains.contains_key("a"));
        assert_eq!(c.rls.counting, Counting::Independent);
        assert_eq!(c.rls.headers, HeaderMode::Both);
        assert!(c.rls.allow_limit_override);
        // Defaults: no files, all-or-nothing, no override, no headers.
        let c = Config::from_file(FileConfig::default(), Overrides::default()).unwrap();
        assert!(c.rls.config.domains.is_empty());
        assert_eq!(c.rls.counting, Counting::AllOrNothing);
        assert!(!c.rls.allow_limit_override);
        assert_eq!(c.rls.headers, HeaderMode::Off);
        for (text, want) in [
            ("rls_counting = \"some\"\n", "rls_counting:"),
            ("rls_headers = \"all\"\n", "rls_headers:"),
        ] {
            let f = Config::parse_file("t.toml", text).unwrap();
            let e = Config::from_file(f, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}");
        }
        // The flag wins over the file; a missing path names itself.
        let f = Config::parse_file("t.toml", "rls_config = \"/nonexistent/x.yaml\"\n").unwrap();
        let o = Overrides {
            rls_config: Some(dir.path().join("rls/a.yaml")),
            ..Default::default()
        };
        assert!(Config::from_file(f.clone(), o).is_ok());
        let e = Config::from_file(f, Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.yaml"), "{e}");
    }
}
