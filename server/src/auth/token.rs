//! Bearer tokens: the `[[tokens]]` tables of the configuration, validated into [`Tokens`],
//! and the lookup of a presented token by its SHA-256 hash (compared in constant time).
use std::{sync::Arc, time::SystemTime};

use floodgate_core::{Algorithm, Policy, PolicySpec, time::micros};
use ring::rand::SecureRandom;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::Role;
use crate::config::ConfigError;

/// Bytes of a token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// The prefix of every token floodgate makes, so a leaked one is recognisable in logs.
pub const TOKEN_PREFIX: &str = "fgt_";

/// One `[[tokens]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTable {
    /// Who holds it; named in logs, audit entries and refusals.
    pub name: String,
    /// Hex SHA-256 of the token (never the token itself).
    pub sha256: String,
    /// Namespaces it may use: exact names, or prefixes written `team-a.*`; `*` is all.
    pub namespaces: Vec<String>,
    /// `app`, `worker`, `operator` or `admin`.
    pub role: String,
    /// RFC 3339 instant after which it is refused, e.g. "2027-01-01T00:00:00Z".
    pub expires: Option<String>,
    /// Requests it may make, e.g. "1000/s"; absent means unlimited.
    pub rate: Option<String>,
}

/// A namespace grant: one exact name, a prefix (`team-a.*` covers `team-a.x`, not
/// `team-a` itself nor `team-ab`), or everything (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Exactly this namespace.
    Exact(String),
    /// Namespaces starting with this (which ends in `.`).
    Prefix(String),
    /// Every namespace.
    All,
}

impl Grant {
    fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::All);
        }
        let (base, prefix) = match s.strip_suffix(".*") {
            Some(b) => (b, true),
            None => (s, false),
        };
        floodgate_core::names::validate_namespace(base).map_err(|_| {
            format!("{s:?} is not a namespace (1-64 of [A-Za-z0-9_.-]), a prefix like \"team-a.*\" or \"*\"")
        })?;
        Ok(if prefix {
            Self::Prefix(format!("{base}."))
        } else {
            Self::Exact(base.to_owned())
        })
    }

    /// Whether `ns` is covered.
    pub fn covers(&self, ns: &str) -> bool {
        match self {
            Self::Exact(n) => n == ns,
            Self::Prefix(p) => ns.len() > p.len() && ns.starts_with(p.as_str()),
            Self::All => true,
        }
    }
}

/// A validated token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its holder's name.
    pub name: String,
    /// The SHA-256 of the token.
    hash: [u8; 32],
    /// What it may reach.
    pub grants: Vec<Grant>,
    /// What it may call.
    pub role: Role,
    /// When it stops working.
    pub expires: Option<SystemTime>,
    /// Its own request rate, as a token-bucket policy.
    pub rate: Option<Arc<Policy>>,
}

impl Token {
    /// Whether the token may use namespace `ns`.
    pub fn covers(&self, ns: &str) -> bool {
        self.grants.iter().any(|g| g.covers(ns))
    }
}

/// Every configured token; empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// In file order.
    pub tokens: Vec<Arc<Token>>,
}

/// Why a presented token was not accepted (the answer is UNAUTHENTICATED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// No token matches.
    Unknown,
    /// The token named has expired.
    Expired(String),
}

impl Tokens {
    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether `held` (a token accepted earlier) is still configured, unexpired at `now`
    /// and granted `ns`: a long stream (Watch) checks this, so a token removed, expired or
    /// narrowed by a reload does not keep its streams.
    pub fn still_allows(&self, held: &Token, ns: &str, now: SystemTime) -> bool {
        self.tokens
            .iter()
            .any(|t| t.hash == held.hash && t.expires.is_none_or(|e| e > now) && t.covers(ns))
    }

    /// The token whose hash is the hash of `presented`. Every configured hash is compared,
    /// each in constant time, so timing tells nothing about how close a guess was.
    pub fn find(&self, presented: &str, now: SystemTime) -> Result<Arc<Token>, Rejected> {
        let hash = sha256(presented);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&hash)) {
                found = Some(t.clone());
            }
        }
        let t = found.ok_or(Rejected::Unknown)?;
        if t.expires.is_some_and(|e| e <= now) {
            return Err(Rejected::Expired(t.name.clone()));
        }
        Ok(t)
    }

    /// Validates the `[[tokens]]` tables.
    pub fn build(tables: &[TokenTable]) -> Result<Self, ConfigError> {
        let mut tokens: Vec<Arc<Token>> = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            let at = |field: &str, rule: String| {
                ConfigError::Invalid(format!("tokens[{i}].{field}: {rule}"))
            };
            floodgate_core::names::validate_namespace(&t.name)
                .map_err(|_| at("name", "1-64 of [A-Za-z0-9_.-]".into()))?;
            if tokens.iter().any(|o| o.name == t.name) {
                return Err(at("name", format!("{:?} is used by two tokens", t.name)));
            }
            let hash = parse_hash(&t.sha256).ok_or_else(|| {
                at(
                    "sha256",
                    "64 hex digits, the SHA-256 of the token (`floodgate token new` prints it)"
                        .into(),
                )
            })?;
            if tokens.iter().any(|o| o.hash == hash) {
                return Err(at("sha256", "the same hash is configured twice".into()));
            }
            if t.namespaces.is_empty() {
                return Err(at("namespaces", "name at least one namespace".into()));
            }
            let grants = t
                .namespaces
                .iter()
                .map(|n| Grant::parse(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| at("namespaces", e))?;
            let role = Role::from_name(&t.role).ok_or_else(|| {
                at(
                    "role",
                    format!(
                        "must be \"app\", \"worker\", \"operator\" or \"admin\", got {:?}",
                        t.role
                    ),
                )
            })?;
            let expires = t
                .expires
                .as_deref()
                .map(|e| {
                    rfc3339(e).ok_or_else(|| {
                        at(
                            "expires",
                            format!(
                                "{e:?} is not an RFC 3339 time like \"2027-01-01T00:00:00Z\" or \"2027-01-01T02:00:00+02:00\""
                            ),
                        )
                    })
                })
                .transpose()?;
            let rate = t
                .rate
                .as_deref()
                .map(|r| parse_rate(r).map(Arc::new).map_err(|e| at("rate", e)))
                .transpose()?;
            tokens.push(Arc::new(Token {
                name: t.name.clone(),
                hash,
                grants,
                role,
                expires,
                rate,
            }));
        }
        Ok(Self { tokens })
    }
}

/// Parses a rate such as `1000/s`, `60/m` or `5000/h` into a token-bucket policy whose
/// burst is one period's worth. It fails open: a store outage never locks tokens out
/// (whatever `default_fail_mode` says for tenants' limits).
pub fn parse_rate(s: &str) -> Result<Policy, String> {
    let rule = || format!("{s:?} is not a rate like \"1000/s\" (a count per s, m or h)");
    let (n, unit) = s.split_once('/').ok_or_else(rule)?;
    let limit: u64 = n.trim().parse().map_err(|_| rule())?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(rule()),
    };
    Policy::new(PolicySpec {
        algorithm: Algorithm::TokenBucket,
        limit,
        period: micros(std::time::Duration::from_secs(secs)),
        burst: 0,
        fail_mode: Some(floodgate_core::FailMode::Open),
        lease_ttl: None,
        shadow: false,
    })
    .map_err(|e| format!("{s:?}: {e}"))
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

/// The SHA-256 of `token`.
pub fn sha256(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A new random token (256 bits from the operating system) and its hex SHA-256.
pub fn generate() -> anyhow::Result<(String, String)> {
    let mut bytes = [0u8; TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the operating system gave no random bytes"))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hex::encode(sha256(&token));
    Ok((token, hash))
}

/// An RFC 3339 time: UTC (`Z`) or with an offset (`+02:00`, `-05:30`).
fn rfc3339(text: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Some(t);
    }
    let split = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..split)?, text.get(split..)?.as_bytes());
    let sign = offset[0];
    if !matches!(sign, b'+' | b'-') || offset[3] != b':' {
        return None;
    }
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let (h, m) = (num(&offset[1..3])?, num(&offset[4..6])?);
    if h > 23 || m > 59 {
        return None;
    }
    let as_utc = humantime::parse_rfc3339_weak(&format!("{local}Z")).ok()?;
    let shift = std::time::Duration::from_secs((h * 60 + m) * 60);
    // The local time is `shift` ahead of UTC (+) or behind it (-).
    if sign == b'+' {
        as_utc.checked_sub(shift)
    } else {
        as_utc.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ns: &[&str]) -> TokenTable {
        TokenTable {
            name: "a".into(),
            sha256: hex::encode(sha256("secret")),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            role: "app".into(),
            expires: None,
            rate: None,
        }
    }

    #[test]
    fn grants_cover_exact_prefix_and_all() {
        let p = Grant::parse("team-a.*").unwrap();
        assert!(p.covers("team-a.x"));
        assert!(!p.covers("team-a"));
        assert!(!p.covers("team-ab"));
        assert!(!p.covers("team-a."));
        assert!(Grant::parse("team-a").unwrap().covers("team-a"));
        assert!(!Grant::parse("team-a").unwrap().covers("team-a.x"));
        assert!(Grant::parse("*").unwrap().covers("anything"));
        assert!(Grant::parse("a:b").is_err());
        assert!(Grant::parse("*.*").is_err());
    }

    #[test]
    fn finds_by_hash_and_refuses_expired() {
        let mut t = table(&["x"]);
        let tokens = Tokens::build(std::slice::from_ref(&t)).unwrap();
        assert_eq!(tokens.find("secret", SystemTime::now()).unwrap().name, "a");
        assert_eq!(
            tokens.find("other", SystemTime::now()).unwrap_err(),
            Rejected::Unknown
        );
        t.expires = Some("2020-01-01T00:00:00Z".into());
        let tokens = Tokens::build(&[t]).unwrap();
        assert_eq!(
            tokens.find("secret", SystemTime::now()).unwrap_err(),
            Rejected::Expired("a".into())
        );
    }

    #[test]
    fn bad_tables_name_field_and_rule() {
        let mut t = table(&["x"]);
        t.role = "root".into();
        let e = Tokens::build(&[t]).unwrap_err().to_string();
        assert!(e.starts_with("tokens[0].role: must be"), "{e}");
        let mut t = table(&[]);
        t.sha256 = "abc".into();
        let e = Tokens::build(&[t]).unwrap_err().to_string();
        assert!(e.starts_with("tokens[0].sha256:"), "{e}");
        let mut t = table(&["x"]);
        t.rate = Some("fast".into());
        let e = Tokens::build(&[t]).unwrap_err().to_string();
        assert!(e.starts_with("tokens[0].rate:"), "{e}");
        assert!(parse_rate("10/s").is_ok());
    }

    #[test]
    fn generated_tokens_hash_to_their_printed_hash() {
        let (tok, hash) = generate().unwrap();
        assert!(tok.starts_with(TOKEN_PREFIX));
        assert_eq!(tok.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hex::encode(sha256(&tok)), hash);
    }

    #[test]
    fn expiry_takes_utc_or_an_offset() {
        let utc = rfc3339("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(rfc3339("2027-01-01T02:00:00+02:00"), Some(utc));
        assert_eq!(rfc3339("2026-12-31T18:30:00-05:30"), Some(utc));
        for bad in [
            "2027-01-01",
            "2027-01-01T00:00:00+2:00",
            "2027-01-01T00:00:00+24:00",
            "soon",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }
}
