//! envoyproxy/ratelimit's YAML configuration, read as it is: one file, or every `*.yaml` /
//! `*.yml` file of a folder, each with a `domain` and nested `descriptors` (`key`, `value`,
//! `rate_limit { unit, requests_per_unit, unlimited, name, replaces }`, `shadow_mode`,
//! `detailed_metric`, …). The algorithm is chosen per limit in the descriptor's `metadata`
//! (`metadata: { floodgate: { algorithm: token_bucket } }`), a map envoy ratelimit accepts
//! and does not interpret; without it a limit is a fixed window aligned to its unit, as there.
//!
//! Every error names the file, the line and column, the path of the rule and what is wrong:
//! `limits.yaml:7:9: descriptors[0].rate_limit.unit: must be one of second, minute, …`.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use floodgate_core::{
    Algorithm, FailMode, Policy, PolicySpec, names::validate_namespace, time::SECOND,
};

use super::yaml::{self, Node, Pos};
use crate::config::{Caps, ConfigError};

/// A rate limit unit, as envoy ratelimit names them (any letter case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds.
    Day,
    /// 7 days.
    Week,
    /// 30 days (as envoy ratelimit).
    Month,
    /// 365 days (as envoy ratelimit).
    Year,
}

impl Unit {
    /// Every unit.
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// Parses a name in any letter case.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|u| u.name().eq_ignore_ascii_case(s))
    }

    /// Its length in seconds (a month is 30 days and a year 365, as in envoy ratelimit).
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }
}

/// What a matched rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `unlimited: true`: OK without a store call.
    Unlimited,
    /// `requests_per_unit: 0`: always over the limit, without a store call.
    Blocked,
    /// A real limit decided by the store.
    Limit {
        /// The validated policy (shadow when `shadow_mode`).
        policy: Arc<Policy>,
        /// The policy part of its state key: `rls@<unit>` (never a configured policy name,
        /// which cannot contain `@`).
        policy_ref: String,
    },
}

/// One `rate_limit` block, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's place for logs and metrics: `domain.key_value.key` as envoy ratelimit
    /// names its stats.
    pub path: String,
    /// `rate_limit.name` (empty: none).
    pub name: String,
    /// `rate_limit.replaces[*].name`.
    pub replaces: Vec<String>,
    /// `requests_per_unit` (0 for unlimited).
    pub requests_per_unit: u32,
    /// The unit (`None` for unlimited).
    pub unit: Option<Unit>,
    /// `shadow_mode`: counted and reported, never denies.
    pub shadow: bool,
    /// `detailed_metric` (read for compatibility; floodgate's metrics label by rule).
    pub detailed_metric: bool,
    /// What it does.
    pub action: Action,
}

/// The state key's policy part for a limit of `unit`.
pub fn policy_ref(unit: Unit) -> String {
    format!("rls@{}", unit.name())
}

impl Rule {
    /// A rule from a number and a unit (configured or a request's override).
    pub fn build(
        path: String,
        requests_per_unit: u32,
        unit: Unit,
        algorithm: Algorithm,
        shadow: bool,
        fail_mode: Option<FailMode>,
    ) -> Result<Self, String> {
        let action = if requests_per_unit == 0 {
            Action::Blocked
        } else {
            let policy = Policy::new(PolicySpec {
                algorithm,
                limit: u64::from(requests_per_unit),
                period: unit.seconds() * SECOND,
                burst: 0,
                fail_mode,
                lease_ttl: None,
                shadow,
            })
            .map_err(|e| e.to_string())?;
            Action::Limit {
                policy: Arc::new(policy),
                policy_ref: policy_ref(unit),
            }
        };
        Ok(Self {
            path,
            name: String::new(),
            replaces: Vec::new(),
            requests_per_unit,
            unit: Some(unit),
            shadow,
            detailed_metric: false,
            action,
        })
    }
}

/// One configured descriptor: its rule (if any) and the descriptors nested under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescriptorNode {
    /// The limit at this level.
    pub rule: Option<Arc<Rule>>,
    /// `share_threshold`: every value matching this wildcard shares one counter.
    pub share_threshold: bool,
    /// Nested descriptors.
    pub children: Descriptors,
}

/// The descriptors of one level, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptors {
    /// Entries by descriptor key.
    pub by_key: HashMap<String, KeyLevel>,
}

/// Everything configured for one descriptor key at one level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLevel {
    /// `value: X` entries, matched first.
    pub exact: HashMap<String, DescriptorNode>,
    /// Values containing `*` (each `*` matches any run of characters), in file order, matched
    /// next.
    pub wildcards: Vec<(String, DescriptorNode)>,
    /// The entry without a value: matches any value, last.
    pub any: Option<DescriptorNode>,
}

impl Descriptors {
    /// Whether nothing is configured here.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The whole RLS configuration: domains and the files they came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RlsConfig {
    /// Top-level descriptors by domain.
    pub domains: HashMap<String, Descriptors>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Algorithms a rate limit file may choose (concurrency has no meaning for a request rate).
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::FixedWindow,
    Algorithm::TokenBucket,
    Algorithm::SlidingWindow,
    Algorithm::SlidingLog,
];

/// Reads one file or every `*.yaml` / `*.yml` file of a folder (sorted by name).
pub fn load(path: &Path, caps: Caps) -> Result<RlsConfig, ConfigError> {
    let read_err = |p: &Path, source| ConfigError::Read {
        path: p.display().to_string(),
        source,
    };
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| read_err(path, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut config = RlsConfig::default();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| read_err(f, e))?;
        add_file(&mut config, &f.display().to_string(), &text, caps)?;
        config.files.push(f.clone());
    }
    Ok(config)
}

/// An error at `pos` of `file`: `file:line:col: path: rule`.
fn at(file: &str, pos: Pos, path: &str, rule: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(if path.is_empty() {
        format!("{file}:{pos}: {rule}")
    } else {
        format!("{file}:{pos}: {path}: {rule}")
    })
}

/// Reads one file's text into `config`; `file` names it in errors.
pub fn add_file(
    config: &mut RlsConfig,
    file: &str,
    text: &str,
    caps: Caps,
) -> Result<(), ConfigError> {
    let doc = yaml::parse(text).map_err(|e| at(file, e.pos, "", e.message))?;
    let r = Reader { file, caps };
    let root = r.map(&doc, "", &["domain", "descriptors"])?;
    let domain_node = root
        .get("domain")
        .ok_or_else(|| at(file, doc.pos(), "domain", "is required"))?;
    let domain = r.string(domain_node, "domain")?;
    if domain.is_empty() {
        return Err(at(file, domain_node.pos(), "domain", "must not be empty"));
    }
    validate_namespace(&domain).map_err(|_| {
        at(
            file,
            domain_node.pos(),
            "domain",
            format!(
                "{domain:?} must be 1-64 characters of [A-Za-z0-9_.-] (it becomes the floodgate \
                 namespace); rename the domain here and in Envoy's rate limit filter"
            ),
        )
    })?;
    if config.domains.contains_key(&domain) {
        return Err(at(
            file,
            domain_node.pos(),
            "domain",
            format!("duplicate domain {domain:?} (another file already defines it)"),
        ));
    }
    let descriptors = match root.get("descriptors") {
        Some(n) => r.descriptors(n, "descriptors", &domain)?,
        None => Descriptors::default(),
    };
    config.domains.insert(domain, descriptors);
    Ok(())
}

/// Reads nodes of one file, naming it in errors.
struct Reader<'a> {
    file: &'a str,
    caps: Caps,
}

/// A mapping's entries by key (keys checked against the allowed set).
type Fields<'n> = HashMap<&'n str, &'n Node>;

impl Reader<'_> {
    fn err(&self, node: &Node, path: &str, rule: impl std::fmt::Display) -> ConfigError {
        at(self.file, node.pos(), path, rule)
    }

    fn map<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<Fields<'n>, ConfigError> {
        let Node::Map(entries, _) = node else {
            return Err(self.err(
                node,
                path,
                format!("must be a mapping, got {}", node.kind()),
            ));
        };
        let mut out = HashMap::new();
        for (k, v) in entries {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    v,
                    &here,
                    format!("unknown key {k:?} (allowed here: {})", allowed.join(", ")),
                ));
            }
            if out.insert(k.as_str(), v).is_some() {
                return Err(self.err(v, &here, "is given twice"));
            }
        }
        Ok(out)
    }

    fn string(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        match node {
            n if n.is_null() => Ok(String::new()),
            Node::Scalar { text, .. } => Ok(text.clone()),
            other => Err(self.err(
                other,
                path,
                format!("must be a string, got {}", other.kind()),
            )),
        }
    }

    fn boolean(&self, node: Option<&&Node>, path: &str) -> Result<bool, ConfigError> {
        let Some(node) = node else { return Ok(false) };
        if node.is_null() {
            return Ok(false);
        }
        // YAML 1.1 booleans, as envoy ratelimit's YAML library reads them.
        match self.string(node, path)?.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Ok(true),
            "false" | "no" | "off" | "n" => Ok(false),
            other => Err(self.err(node, path, format!("must be true or false, got {other:?}"))),
        }
    }

    fn list<'n>(&self, node: &'n Node, path: &str) -> Result<&'n [Node], ConfigError> {
        match node {
            n if n.is_null() => Ok(&[]),
            Node::Seq(items, _) => Ok(items),
            other => Err(self.err(other, path, format!("must be a list, got {}", other.kind()))),
        }
    }

    /// One level of `descriptors`; `stat` is the stats-style path of the parent.
    fn descriptors(&self, node: &Node, path: &str, stat: &str) -> Result<Descriptors, ConfigError> {
        let mut out = Descriptors::default();
        let mut seen = HashSet::new();
        for (i, item) in self.list(node, path)?.iter().enumerate() {
            let here = format!("{path}[{i}]");
            let (key, value, desc) = self.descriptor(item, &here, stat)?;
            let composite = if value.is_empty() {
                key.clone()
            } else {
                format!("{key}_{value}")
            };
            if !seen.insert((key.clone(), value.clone())) {
                return Err(self.err(
                    item,
                    &here,
                    format!("duplicate descriptor composite key '{stat}.{composite}'"),
                ));
            }
            let level = out.by_key.entry(key).or_default();
            if value.is_empty() {
                level.any = Some(desc);
            } else if value.contains('*') {
                level.wildcards.push((value, desc));
            } else {
                level.exact.insert(value, desc);
            }
        }
        Ok(out)
    }

    fn descriptor(
        &self,
        node: &Node,
        path: &str,
        stat: &str,
    ) -> Result<(String, String, DescriptorNode), ConfigError> {
        let f = self.map(
            node,
            path,
            &[
                "key",
                "value",
                "rate_limit",
                "descriptors",
                "shadow_mode",
                "quota_mode",
                "detailed_metric",
                "value_to_metric",
                "share_threshold",
                "metadata",
            ],
        )?;
        let key = match f.get("key") {
            Some(n) => self.string(n, &format!("{path}.key"))?,
            None => String::new(),
        };
        if key.is_empty() {
            return Err(self.err(node, &format!("{path}.key"), "descriptor has empty key"));
        }
        let value = match f.get("value") {
            Some(n) => self.string(n, &format!("{path}.value"))?,
            None => String::new(),
        };
        let composite = if value.is_empty() {
            key.clone()
        } else {
            format!("{key}_{value}")
        };
        let stat = format!("{stat}.{composite}");
        let shadow = self.boolean(f.get("shadow_mode"), &format!("{path}.shadow_mode"))?;
        if self.boolean(f.get("quota_mode"), &format!("{path}.quota_mode"))? {
            return Err(self.err(
                f["quota_mode"],
                &format!("{path}.quota_mode"),
                "quota_mode is not supported by floodgate; remove it (or set it to false)",
            ));
        }
        let detailed_metric =
            self.boolean(f.get("detailed_metric"), &format!("{path}.detailed_metric"))?;
        self.boolean(f.get("value_to_metric"), &format!("{path}.value_to_metric"))?;
        let share_threshold =
            self.boolean(f.get("share_threshold"), &format!("{path}.share_threshold"))?;
        if share_threshold && !value.contains('*') {
            return Err(self.err(
                f["share_threshold"],
                &format!("{path}.share_threshold"),
                format!(
                    "share_threshold can only be used with wildcard values (containing '*'), but found key '{composite}'"
                ),
            ));
        }
        let (algorithm, fail_mode, meta_node) = match f.get("metadata") {
            Some(m) => {
                let (a, fm) = self.metadata(m, &format!("{path}.metadata"))?;
                (a, fm, Some(*m))
            }
            None => (None, None, None),
        };
        let rule = match f.get("rate_limit") {
            Some(n) if !n.is_null() => Some(Arc::new(self.rate_limit(
                n,
                &format!("{path}.rate_limit"),
                stat.clone(),
                shadow,
                detailed_metric,
                algorithm.unwrap_or(Algorithm::FixedWindow),
                fail_mode,
            )?)),
            _ => None,
        };
        if rule.is_none()
            && (algorithm.is_some() || fail_mode.is_some())
            && let Some(m) = meta_node
        {
            return Err(self.err(
                m,
                &format!("{path}.metadata.floodgate"),
                "chooses an algorithm or fail mode, but this descriptor has no rate_limit",
            ));
        }
        let children = match f.get("descriptors") {
            Some(n) => self.descriptors(n, &format!("{path}.descriptors"), &stat)?,
            None => Descriptors::default(),
        };
        Ok((
            key,
            value,
            DescriptorNode {
                rule,
                share_threshold,
                children,
            },
        ))
    }

    /// `metadata`: free-form for envoy ratelimit; floodgate reads only its `floodgate` map.
    fn metadata(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<(Option<Algorithm>, Option<FailMode>), ConfigError> {
        let Node::Map(entries, _) = node else {
            return Err(self.err(
                node,
                path,
                format!("must be a mapping, got {}", node.kind()),
            ));
        };
        let Some((_, fg)) = entries.iter().find(|(k, _)| k == "floodgate") else {
            return Ok((None, None));
        };
        let path = format!("{path}.floodgate");
        let f = self.map(fg, &path, &["algorithm", "fail_mode"])?;
        let algorithm = match f.get("algorithm") {
            Some(n) => {
                let name = self.string(n, &format!("{path}.algorithm"))?;
                let a = ALGORITHMS
                    .into_iter()
                    .find(|a| a.name() == name)
                    .ok_or_else(|| {
                        self.err(
                            n,
                            &format!("{path}.algorithm"),
                            format!(
                                "must be fixed_window, token_bucket, sliding_window or sliding_log, got {name:?}"
                            ),
                        )
                    })?;
                Some(a)
            }
            None => None,
        };
        let fail_mode = match f.get("fail_mode") {
            Some(n) => {
                let name = self.string(n, &format!("{path}.fail_mode"))?;
                Some(FailMode::from_name(&name).ok_or_else(|| {
                    self.err(
                        n,
                        &format!("{path}.fail_mode"),
                        format!("must be open, closed or local, got {name:?}"),
                    )
                })?)
            }
            None => None,
        };
        Ok((algorithm, fail_mode))
    }

    #[allow(clippy::too_many_arguments)]
    fn rate_limit(
        &self,
        node: &Node,
        path: &str,
        stat: String,
        shadow: bool,
        detailed_metric: bool,
        algorithm: Algorithm,
        fail_mode: Option<FailMode>,
    ) -> Result<Rule, ConfigError> {
        let f = self.map(
            node,
            path,
            &["unit", "requests_per_unit", "unlimited", "name", "replaces"],
        )?;
        let unlimited = self.boolean(f.get("unlimited"), &format!("{path}.unlimited"))?;
        let unit_text = match f.get("unit") {
            Some(n) => self.string(n, &format!("{path}.unit"))?,
            None => String::new(),
        };
        let unit = Unit::from_name(&unit_text);
        let name = match f.get("name") {
            Some(n) => self.string(n, &format!("{path}.name"))?,
            None => String::new(),
        };
        let mut replaces = Vec::new();
        if let Some(n) = f.get("replaces") {
            for (i, item) in self
                .list(n, &format!("{path}.replaces"))?
                .iter()
                .enumerate()
            {
                let here = format!("{path}.replaces[{i}]");
                let r = self.map(item, &here, &["name"])?;
                let replaced = match r.get("name") {
                    Some(n) => self.string(n, &format!("{here}.name"))?,
                    None => String::new(),
                };
                if replaced.is_empty() {
                    return Err(self.err(item, &here, "should not have an empty replaces entry"));
                }
                if replaced == name {
                    return Err(self.err(
                        item,
                        &here,
                        "replaces should not contain name of same descriptor",
                    ));
                }
                replaces.push(replaced);
            }
        }
        let mut rule = if unlimited {
            if unit.is_some() {
                return Err(self.err(
                    f["unit"],
                    &format!("{path}.unit"),
                    "should not specify rate limit unit when unlimited",
                ));
            }
            Rule {
                path: stat,
                name: String::new(),
                replaces: Vec::new(),
                requests_per_unit: 0,
                unit: None,
                shadow,
                detailed_metric,
                action: Action::Unlimited,
            }
        } else {
            let Some(unit) = unit else {
                let place = f.get("unit").copied().unwrap_or(node);
                return Err(self.err(
                    place,
                    &format!("{path}.unit"),
                    format!(
                        "invalid rate limit unit '{unit_text}' (second, minute, hour, day, week, month or year)"
                    ),
                ));
            };
            let rpu_node = f.get("requests_per_unit");
            let rpu = match rpu_node {
                Some(n) => {
                    let t = self.string(n, &format!("{path}.requests_per_unit"))?;
                    t.parse::<u32>().map_err(|_| {
                        self.err(
                            n,
                            &format!("{path}.requests_per_unit"),
                            format!("must be a whole number from 0 to 4294967295, got {t:?}"),
                        )
                    })?
                }
                None => 0,
            };
            let mut rule = Rule::build(stat, rpu, unit, algorithm, shadow, fail_mode)
                .map_err(|e| self.err(rpu_node.copied().unwrap_or(node), path, e))?;
            rule.detailed_metric = detailed_metric;
            if let Action::Limit { policy, .. } = &rule.action {
                self.caps
                    .check(policy)
                    .map_err(|e| self.err(node, path, e))?;
            }
            rule
        };
        rule.name = name;
        rule.replaces = replaces;
        Ok(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Caps {
        Caps {
            sliding_log: 10_000,
            concurrency: 10_000,
        }
    }

    fn parse(text: &str) -> Result<RlsConfig, String> {
        let mut c = RlsConfig::default();
        add_file(&mut c, "t.yaml", text, caps()).map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn reads_envoy_ratelimit_examples() {
        let c = parse(
            "domain: messaging\n\
             descriptors:\n\
             \x20 # Only allow 5 marketing messages a day\n\
             \x20 - key: message_type\n\
             \x20   value: marketing\n\
             \x20   descriptors:\n\
             \x20     - key: to_number\n\
             \x20       rate_limit:\n\
             \x20         unit: day\n\
             \x20         requests_per_unit: 5\n\
             \x20 - key: to_number\n\
             \x20   rate_limit:\n\
             \x20     unit: DAY\n\
             \x20     requests_per_unit: 100\n",
        )
        .unwrap();
        let d = &c.domains["messaging"];
        let to_number = d.by_key["to_number"].any.as_ref().unwrap();
        let rule = to_number.rule.as_ref().unwrap();
        assert_eq!((rule.requests_per_unit, rule.unit), (100, Some(Unit::Day)));
        assert_eq!(rule.path, "messaging.to_number");
        let marketing = &d.by_key["message_type"].exact["marketing"];
        assert!(marketing.rule.is_none());
        let nested = marketing.children.by_key["to_number"].any.as_ref().unwrap();
        let Action::Limit { policy, policy_ref } = &nested.rule.as_ref().unwrap().action else {
            panic!("not a limit")
        };
        assert_eq!(policy.algorithm(), Algorithm::FixedWindow);
        assert_eq!(policy_ref, "rls@day");
    }

    #[test]
    fn unlimited_blocked_algorithm_and_replaces() {
        let c = parse(
            "domain: d\n\
             descriptors:\n\
             \x20 - key: ldap\n\
             \x20   rate_limit: {unlimited: true}\n\
             \x20 - key: ip\n\
             \x20   value: 50.0.0.5\n\
             \x20   rate_limit: {unit: second, requests_per_unit: 0}\n\
             \x20 - key: user\n\
             \x20   value: \"a*\"\n\
             \x20   share_threshold: true\n\
             \x20   shadow_mode: true\n\
             \x20   metadata: {floodgate: {algorithm: token_bucket, fail_mode: closed}, other: 1}\n\
             \x20   rate_limit:\n\
             \x20     name: specific\n\
             \x20     replaces: [{name: general}]\n\
             \x20     unit: minute\n\
             \x20     requests_per_unit: 10\n",
        )
        .unwrap();
        let d = &c.domains["d"];
        let ldap = d.by_key["ldap"].any.as_ref().unwrap();
        assert_eq!(ldap.rule.as_ref().unwrap().action, Action::Unlimited);
        let ip = &d.by_key["ip"].exact["50.0.0.5"];
        assert_eq!(ip.rule.as_ref().unwrap().action, Action::Blocked);
        let (pattern, user) = &d.by_key["user"].wildcards[0];
        assert_eq!(pattern, "a*");
        assert!(user.share_threshold);
        let rule = user.rule.as_ref().unwrap();
        assert_eq!((rule.name.as_str(), rule.shadow), ("specific", true));
        assert_eq!(rule.replaces, ["general"]);
        let Action::Limit { policy, .. } = &rule.action else {
            panic!("not a limit")
        };
        assert_eq!(policy.algorithm(), Algorithm::TokenBucket);
        assert!(policy.shadow());
        assert_eq!(policy.fail_mode(), Some(FailMode::Closed));
    }

    #[test]
    fn errors_name_file_line_and_rule() {
        let cases = [
            ("descriptors: []\n", "t.yaml:1:1: domain: is required"),
            (
                "domain: a:b\n",
                "t.yaml:1:9: domain: \"a:b\" must be 1-64 characters",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n",
                "t.yaml:5:13: descriptors[0].rate_limit.unit: invalid rate limit unit 'fortnight'",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: -1\n",
                "t.yaml:6:26: descriptors[0].rate_limit.requests_per_unit: must be a whole number",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limt: {}\n",
                "t.yaml:4:16: descriptors[0].rate_limt: unknown key \"rate_limt\"",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n  - key: k\n",
                "t.yaml:4:5: descriptors[1]: duplicate descriptor composite key 'd.k'",
            ),
            (
                "domain: d\ndescriptors:\n  - value: v\n",
                "t.yaml:3:5: descriptors[0].key: descriptor has empty key",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n",
                "descriptors[0].rate_limit.unit: should not specify rate limit unit when unlimited",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    metadata: {floodgate: {algorithm: concurrency}}\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
                "descriptors[0].metadata.floodgate.algorithm: must be fixed_window",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
                "share_threshold can only be used with wildcard values",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {name: a, replaces: [{name: a}], unit: second, requests_per_unit: 1}\n",
                "replaces should not contain name of same descriptor",
            ),
            ("domain: [d\n", "t.yaml:"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}\n  got: {e}\n want: {want}");
        }
    }

    #[test]
    fn two_files_may_not_share_a_domain() {
        let mut c = RlsConfig::default();
        add_file(&mut c, "a.yaml", "domain: d\n", caps()).unwrap();
        let e = add_file(&mut c, "b.yaml", "domain: d\n", caps())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("b.yaml:1:9: domain: duplicate domain"), "{e}");
    }

    #[test]
    fn a_folder_reads_every_yaml_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "domain: a\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "domain: b\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
        let c = load(dir.path(), caps()).unwrap();
        assert_eq!(c.files.len(), 2);
        assert!(c.domains.contains_key("a") && c.domains.contains_key("b"));
        let e = load(&dir.path().join("missing.yaml"), caps()).unwrap_err();
        assert!(e.to_string().contains("missing.yaml"), "{e}");
    }

    /// envoy ratelimit's own loader (`validateYamlKeys`) accepts only these keys anywhere
    /// outside `metadata`; every fixture must pass it, so the files run unchanged there.
    const ENVOY_VALID_KEYS: [&str; 16] = [
        "domain",
        "key",
        "value",
        "descriptors",
        "rate_limit",
        "unit",
        "requests_per_unit",
        "unlimited",
        "shadow_mode",
        "quota_mode",
        "name",
        "replaces",
        "detailed_metric",
        "value_to_metric",
        "share_threshold",
        "metadata",
    ];

    fn envoy_accepts(node: &Node, file: &str) {
        match node {
            Node::Map(entries, pos) => {
                for (k, v) in entries {
                    assert!(
                        ENVOY_VALID_KEYS.contains(&k.as_str()),
                        "{file}:{pos}: envoy ratelimit rejects key {k:?}"
                    );
                    if k != "metadata" {
                        envoy_accepts(v, file);
                    }
                }
            }
            Node::Seq(items, pos) => {
                for item in items {
                    assert!(
                        matches!(item, Node::Map(..)),
                        "{file}:{pos}: envoy ratelimit accepts only lists of mappings"
                    );
                    envoy_accepts(item, file);
                }
            }
            Node::Scalar { .. } => {}
        }
    }

    #[test]
    fn fixtures_load_here_and_pass_envoy_ratelimits_key_check() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rls");
        let c = load(&dir, caps()).unwrap();
        assert!(c.files.len() >= 6, "{:?}", c.files);
        for f in &c.files {
            let text = std::fs::read_to_string(f).unwrap();
            envoy_accepts(&yaml::parse(&text).unwrap(), &f.display().to_string());
        }
    }
}
