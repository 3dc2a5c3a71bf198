//! Turns wire requests into store plans, checking every rule once at the edge.
//!
//! Errors name the field path (`checks[2].inline.limit`) and the rule broken.
use std::{collections::HashSet, sync::Arc};

use floodgate_core::{
    Algorithm, FailMode, Micros, Policy, PolicySpec, concurrency,
    names::{validate_key, validate_namespace, validate_policy_name},
};
use floodgate_proto::v1::{self as pb, limit_check};

use crate::{
    config::Config,
    error::Error,
    keys::Keys,
    store::{AcquirePlan, PlannedBreaker, PlannedCheck},
};

/// Most checks in one Acquire.
pub const MAX_CHECKS: usize = 16;
/// Most breakers one Acquire may name.
pub const MAX_BREAKERS: usize = 16;
/// Longest `request_id`, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

fn invalid(field: &str, rule: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{field}: {rule}"))
}

/// A `google.protobuf.Duration` as microseconds; negative or malformed is an error.
pub fn duration(field: &str, d: Option<&prost_types::Duration>) -> Result<Option<Micros>, Error> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(invalid(
            field,
            "must be a non-negative duration with 0 <= nanos < 1e9",
        ));
    }
    let us = (d.seconds as u64)
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(d.nanos as u64 / 1_000))
        .ok_or_else(|| invalid(field, "is too long"))?;
    Ok(Some(us))
}

/// Microseconds as a wire duration.
pub fn to_duration(us: Micros) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1_000) as i32,
    }
}

/// Checks the namespace rule (1-64 characters of `[A-Za-z0-9_.-]`).
pub fn namespace_rule(ns: &str) -> Result<(), Error> {
    namespace(ns)
}

fn namespace(ns: &str) -> Result<(), Error> {
    validate_namespace(ns).map_err(|e| Error::Invalid(e.to_string()))
}

fn key(field: &str, key: &str) -> Result<(), Error> {
    validate_key(key).map_err(|_| {
        invalid(
            field,
            "must be 1-512 bytes of printable text without control characters",
        )
    })
}

fn inline_policy(field: &str, p: &pb::Policy, config: &Config) -> Result<Policy, Error> {
    let algorithm = match pb::Algorithm::try_from(p.algorithm) {
        Ok(pb::Algorithm::TokenBucket) => Algorithm::TokenBucket,
        Ok(pb::Algorithm::SlidingWindow) => Algorithm::SlidingWindow,
        Ok(pb::Algorithm::SlidingLog) => Algorithm::SlidingLog,
        Ok(pb::Algorithm::FixedWindow) => Algorithm::FixedWindow,
        Ok(pb::Algorithm::Concurrency) => Algorithm::Concurrency,
        Ok(pb::Algorithm::Unspecified) | Err(_) => {
            return Err(invalid(
                &format!("{field}.algorithm"),
                "must be set to a known ALGORITHM_* value",
            ));
        }
    };
    let fail_mode = match pb::FailMode::try_from(p.fail_mode) {
        Ok(pb::FailMode::Unspecified) => None,
        Ok(pb::FailMode::Open) => Some(FailMode::Open),
        Ok(pb::FailMode::Closed) => Some(FailMode::Closed),
        Ok(pb::FailMode::Local) => Some(FailMode::Local),
        Err(_) => {
            return Err(invalid(
                &format!("{field}.fail_mode"),
                "unknown FAIL_MODE_* value",
            ));
        }
    };
    let period = duration(&format!("{field}.period"), p.period.as_ref())?.unwrap_or(0);
    let lease_ttl = duration(&format!("{field}.lease_ttl"), p.lease_ttl.as_ref())?;
    let policy = Policy::new(PolicySpec {
        algorithm,
        limit: p.limit,
        period,
        burst: p.burst,
        fail_mode,
        lease_ttl,
        shadow: p.shadow,
    })
    .and_then(|policy| {
        if p.local_share == 0.0 {
            Ok(policy)
        } else {
            policy.with_local_share(p.local_share)
        }
    })
    .map_err(|e| Error::Invalid(format!("{field}.{e}")))?;
    config
        .caps
        .check(&policy)
        .map_err(|e| Error::Invalid(format!("{field}.{e}")))?;
    Ok(policy)
}

/// Resolves a check's policy: a configured one by name, or a validated inline one.
/// Returns the policy and its reference (name or fingerprint).
pub fn resolve_policy(
    field: &str,
    policy: Option<&limit_check::Policy>,
    config: &Config,
) -> Result<(Arc<Policy>, String), Error> {
    match policy {
        Some(limit_check::Policy::PolicyName(name)) => {
            validate_policy_name(name).map_err(|e| Error::Invalid(format!("{field}.{e}")))?;
            let p = config
                .policies
                .get(name)
                .ok_or_else(|| Error::PolicyNotFound {
                    field: format!("{field}.policy_name"),
                    name: name.clone(),
                })?;
            Ok((p.clone(), name.clone()))
        }
        Some(limit_check::Policy::Inline(p)) => {
            if !config.inline_policies {
                return Err(Error::InlineDisabled(format!("{field}.inline")));
            }
            let p = inline_policy(&format!("{field}.inline"), p, config)?;
            let fingerprint = p.fingerprint();
            Ok((Arc::new(p), fingerprint))
        }
        None => Err(invalid(
            field,
            "a policy is required: set policy_name or inline",
        )),
    }
}

/// Builds one check of a plan; `consume` decides whether a lease member is made.
fn planned_check(
    field: &str,
    ns: &str,
    c: &pb::LimitCheck,
    config: &Config,
    keys: &Keys,
    consume: bool,
) -> Result<PlannedCheck, Error> {
    key(&format!("{field}.key"), &c.key)?;
    let (policy, policy_ref) = resolve_policy(field, c.policy.as_ref(), config)?;
    let cost = c.cost.max(1);
    policy
        .check_cost(cost)
        .map_err(|e| Error::Invalid(format!("{field}.{e}")))?;
    let lease_member = (consume && policy.algorithm() == Algorithm::Concurrency)
        .then(|| concurrency::member(cost, &uuid::Uuid::new_v4().simple().to_string()));
    Ok(PlannedCheck {
        key: keys.limit(ns, &c.key, policy.algorithm(), &policy_ref),
        policy,
        policy_ref,
        cost,
        lease_member,
    })
}

/// Validates an Acquire and plans it.
pub fn acquire_plan(
    req: &pb::AcquireRequest,
    config: &Config,
    keys: &Keys,
) -> Result<AcquirePlan, Error> {
    namespace(&req.namespace)?;
    if req.checks.is_empty() && req.breakers.is_empty() {
        return Err(invalid(
            "checks",
            "at least one check or breaker is required",
        ));
    }
    if req.checks.len() > MAX_CHECKS {
        return Err(invalid(
            "checks",
            format!(
                "at most {MAX_CHECKS} checks per Acquire, got {}",
                req.checks.len()
            ),
        ));
    }
    // No '}': the record key `<prefix>:{<ns>:<key>}:req:<id>` must never equal a limit key
    // `<prefix>:{<ns>:<key'>}:<code>:<policy>` of a key that itself contains '}'.
    if req.request_id.len() > MAX_REQUEST_ID_LEN
        || req.request_id.chars().any(|c| c.is_control() || c == '}')
    {
        return Err(invalid(
            "request_id",
            format!(
                "must be at most {MAX_REQUEST_ID_LEN} bytes without control characters or '}}'"
            ),
        ));
    }
    let mut checks = Vec::with_capacity(req.checks.len());
    let mut seen = HashSet::with_capacity(req.checks.len());
    for (i, c) in req.checks.iter().enumerate() {
        let field = format!("checks[{i}]");
        let planned = planned_check(&field, &req.namespace, c, config, keys, true)?;
        if !seen.insert(planned.key.clone()) {
            return Err(invalid(
                &field,
                "repeats an earlier check's key and policy; add the costs into one check instead",
            ));
        }
        checks.push(planned);
    }
    if req.breakers.len() > MAX_BREAKERS {
        return Err(invalid(
            "breakers",
            format!(
                "at most {MAX_BREAKERS} breakers per Acquire, got {}",
                req.breakers.len()
            ),
        ));
    }
    let mut breakers = Vec::with_capacity(req.breakers.len());
    for (i, name) in req.breakers.iter().enumerate() {
        let field = format!("breakers[{i}]");
        if req.breakers[..i].contains(name) {
            return Err(invalid(&field, "names a breaker twice"));
        }
        breakers.push(planned_breaker(&field, &req.namespace, name, config, keys)?);
    }
    let request_record = match req.checks.first() {
        Some(first) if !req.request_id.is_empty() => Some(keys.request(
            &req.namespace,
            &first.key,
            &req.request_id,
            &request_fingerprint(&checks, &breakers),
        )),
        _ => None,
    };
    Ok(AcquirePlan {
        checks,
        request_record,
        breakers,
        consume: true,
        now: None,
    })
}

/// Resolves breaker `name` of `namespace` (named at `field`) against the configuration.
pub fn planned_breaker(
    field: &str,
    namespace: &str,
    name: &str,
    config: &Config,
    keys: &Keys,
) -> Result<PlannedBreaker, Error> {
    validate_policy_name(name)
        .map_err(|_| invalid(field, "must be 1-64 characters of [A-Za-z0-9_.-]"))?;
    let settings = config
        .breaker(name)
        .ok_or_else(|| Error::BreakerNotFound {
            field: field.to_owned(),
            name: name.to_owned(),
        })?
        .clone();
    Ok(PlannedBreaker {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        keys: keys.breaker(namespace, name),
        settings,
        channel: keys.breaker_channel(),
    })
}

/// 16 hex digits of FNV-1a over every check's state key and cost and every breaker's state
/// key: what makes an Acquire "the same request" for `request_id` replay.
fn request_fingerprint(checks: &[PlannedCheck], breakers: &[PlannedBreaker]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &mut dyn Iterator<Item = u8>| {
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for c in checks {
        eat(&mut c.key.bytes().chain([0]).chain(c.cost.to_le_bytes()));
    }
    for b in breakers {
        eat(&mut [1].into_iter().chain(b.keys[0].bytes()));
    }
    format!("{h:016x}")
}

/// Validates a Status (or reset) request and plans a single non-consuming check.
pub fn status_plan(
    ns: &str,
    check: Option<&pb::LimitCheck>,
    config: &Config,
    keys: &Keys,
) -> Result<AcquirePlan, Error> {
    namespace(ns)?;
    let c = check.ok_or_else(|| invalid("check", "is required"))?;
    let planned = planned_check("check", ns, c, config, keys, false)?;
    Ok(AcquirePlan {
        checks: vec![planned],
        request_record: None,
        breakers: Vec::new(),
        consume: false,
        now: None,
    })
}

/// Whether a policy reference is an inline policy's fingerprint (`i-` + 12 hex digits)
/// rather than a configured name.
pub fn is_inline_ref(policy_ref: &str) -> bool {
    policy_ref.len() == 14
        && policy_ref.starts_with("i-")
        && policy_ref[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The lease id an admitted concurrency check hands out: `<policy>~<ttl_ms>~<member>`,
/// where the member is `<cost>~<id>`. The policy part finds the lease set from namespace
/// and key alone; the TTL lets `Renew` without a ttl grant the lease's own lifetime, also
/// for inline policies.
pub fn lease_id(policy_ref: &str, lease_ttl: Micros, member: &str) -> String {
    format!("{policy_ref}~{}~{member}", lease_ttl / 1_000)
}

/// A parsed lease id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTarget {
    /// The lease set's key.
    pub key: String,
    /// The member `<cost>~<id>`.
    pub member: String,
    /// The lifetime the lease was granted with, microseconds.
    pub ttl: Micros,
}

fn digits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a lease id into (policy reference, lease TTL in µs, member).
pub fn parse_lease_id(lease_id: &str) -> Result<(&str, Micros, &str), Error> {
    let bad = || {
        invalid(
            "lease_id",
            "is not a lease id returned by Acquire (<policy>~<ttl_ms>~<cost>~<id>)",
        )
    };
    let mut parts = lease_id.splitn(3, '~');
    let (Some(policy_ref), Some(ttl_ms), Some(member)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    validate_policy_name(policy_ref).map_err(|_| bad())?;
    let (cost, id) = member.split_once('~').ok_or_else(bad)?;
    let ok_id = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !digits(ttl_ms, 11) || !digits(cost, 13) || !ok_id {
        return Err(bad());
    }
    let ttl = ttl_ms.parse::<Micros>().map_err(|_| bad())? * 1_000;
    Ok((policy_ref, ttl, member))
}

/// Validates the namespace, key and lease id of a Release or Renew.
pub fn lease_target(
    ns: &str,
    key_: &str,
    lease_id: &str,
    keys: &Keys,
) -> Result<LeaseTarget, Error> {
    namespace(ns)?;
    key("key", key_)?;
    let (policy_ref, ttl, member) = parse_lease_id(lease_id)?;
    Ok(LeaseTarget {
        key: keys.limit(ns, key_, Algorithm::Concurrency, policy_ref),
        member: member.to_owned(),
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn config() -> Config {
        let f = Config::parse_file(
            "t",
            "[policies.api]\nalgorithm = \"fixed_window\"\nlimit = 5\nperiod = \"1s\"\n",
        )
        .unwrap();
        Config::from_file(f, Overrides::default()).unwrap()
    }

    fn inline(algorithm: pb::Algorithm, limit: u64, secs: i64) -> Option<limit_check::Policy> {
        Some(limit_check::Policy::Inline(pb::Policy {
            algorithm: algorithm as i32,
            limit,
            period: Some(prost_types::Duration {
                seconds: secs,
                nanos: 0,
            }),
            ..Default::default()
        }))
    }

    fn req(checks: Vec<pb::LimitCheck>) -> pb::AcquireRequest {
        pb::AcquireRequest {
            namespace: "ns".into(),
            checks,
            ..Default::default()
        }
    }

    fn err(r: &pb::AcquireRequest) -> String {
        acquire_plan(r, &config(), &Keys::new("fg"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_field_and_rule() {
        let ok = pb::LimitCheck {
            key: "k".into(),
            cost: 0,
            policy: inline(pb::Algorithm::TokenBucket, 10, 1),
        };
        let mut r = req(vec![ok.clone()]);
        assert!(acquire_plan(&r, &config(), &Keys::new("fg")).is_ok());
        r.namespace = "a:b".into();
        assert!(err(&r).starts_with("namespace:"));
        let mut bad = ok.clone();
        bad.policy = inline(pb::Algorithm::Unspecified, 10, 1);
        assert!(err(&req(vec![bad])).starts_with("checks[0].inline.algorithm:"));
        let mut bad = ok.clone();
        bad.policy = inline(pb::Algorithm::FixedWindow, 0, 1);
        assert!(err(&req(vec![bad])).starts_with("checks[0].inline.limit:"));
        let mut bad = ok.clone();
        bad.policy = inline(pb::Algorithm::FixedWindow, 1, 0);
        assert!(err(&req(vec![bad])).starts_with("checks[0].inline.period:"));
        let mut bad = ok.clone();
        bad.cost = 11;
        assert!(err(&req(vec![bad])).starts_with("checks[0].cost:"));
        let mut bad = ok.clone();
        bad.key = "a\u{0}".into();
        assert!(err(&req(vec![ok.clone(), bad])).starts_with("checks[1].key:"));
        assert!(err(&req(vec![ok.clone(), ok.clone()])).starts_with("checks[1]:"));
        assert!(err(&req(vec![ok.clone(); 17])).starts_with("checks:"));
        assert!(err(&req(vec![])).starts_with("checks:"));
        // A request id with '}' could name a limit's key ("x}:tb:P" under key "a" is the
        // token bucket P of key "a}:req:x") and break that limit.
        let mut r = req(vec![ok.clone()]);
        r.request_id = "x}:tb:api".into();
        assert!(err(&r).starts_with("request_id:"));
        let mut bad = ok.clone();
        bad.policy = Some(limit_check::Policy::PolicyName("nope".into()));
        assert!(err(&req(vec![bad])).contains("no policy named"));
    }

    #[test]
    fn lease_ids_round_trip() {
        let id = lease_id("api", 30_000_000, "2~0123abcd");
        assert_eq!(id, "api~30000~2~0123abcd");
        assert_eq!(
            parse_lease_id(&id).unwrap(),
            ("api", 30_000_000, "2~0123abcd")
        );
        for bad in [
            "",
            "api",
            "api~1~x~y",
            "a:b~1~1~x",
            "api~1~1~",
            "api~1~1~a b",
            "api~x~1~ab",
            "api~1~ab",
        ] {
            assert!(parse_lease_id(bad).is_err(), "{bad}");
        }
    }
}
