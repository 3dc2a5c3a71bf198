//! Envoy's global rate limiting: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! on the same listener as `floodgate.v1`, configured with envoyproxy/ratelimit's YAML.
//!
//! - [`yaml`]: a YAML tree that remembers lines, for errors that name them.
//! - [`config`]: the rate limit files (domains, nested descriptors, rules) and the server
//!   settings around them ([`RlsSettings`]).
//! - [`matcher`]: which rule a request descriptor hits, and its state key.
//! - [`headers`]: the optional `RateLimit` / `X-RateLimit-*` response headers.
//! - [`service`]: the RPC: a domain is a namespace, each matched descriptor one check, all
//!   decided in one store call (or each alone when `rls_counting = "independent"`).
pub mod config;
pub mod headers;
pub mod matcher;
pub mod service;
pub mod yaml;

use std::path::PathBuf;

use self::{config::RlsConfig, headers::HeaderMode};

/// How the descriptors of one request are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Counting {
    /// One script call decides every descriptor; if one is over, nothing is counted.
    #[default]
    AllOrNothing,
    /// Each descriptor is decided (and counted) on its own, as envoy ratelimit does: the
    /// others are counted even when one is over.
    Independent,
}

impl Counting {
    /// Parses `all_or_nothing` or `independent`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "all_or_nothing" => Some(Self::AllOrNothing),
            "independent" => Some(Self::Independent),
            _ => None,
        }
    }
}

/// The RLS part of the server configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RlsSettings {
    /// The rate limit file or folder (`rls_config`, `--rls-config`), if any.
    pub path: Option<PathBuf>,
    /// What it configures (empty without a path: every descriptor is OK).
    pub config: RlsConfig,
    /// `rls_allow_limit_override`: honour a descriptor's `limit` (default false: ignored).
    pub allow_limit_override: bool,
    /// `rls_counting`.
    pub counting: Counting,
    /// `rls_headers`.
    pub headers: HeaderMode,
}
