//! Which configured limit a request descriptor hits, with envoy ratelimit's rules, and the
//! key its state lives under.
//!
//! Matching walks the descriptor's entries in order, one configuration level per entry: at
//! each level an entry with the same key and value wins, then the first wildcard value
//! (`*` matches any run of characters) in file order, then the entry with the key alone. A
//! limit applies only when it sits at the level of the descriptor's last entry (a request
//! with more entries than the configuration is nested deep matches nothing).
//!
//! The state key is the descriptor's entries in order, `key=value|key=value`, with `\`, `=`
//! and `|` escaped by a backslash and control characters written as `\u{..}`, so two
//! different descriptors never share a key. A `share_threshold` wildcard contributes its
//! pattern, marked `\*` (which escaping never produces), instead of the value.
use std::sync::Arc;

use super::config::{DescriptorNode, Descriptors, Rule};

/// A descriptor's entry: (key, value).
pub type Entry<'a> = (&'a str, &'a str);

/// The limit a descriptor hit and the key of its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The configured rule.
    pub rule: Arc<Rule>,
    /// The descriptor's state key (before namespacing).
    pub key: String,
}

/// Whether `value` matches `pattern`, where each `*` matches any run of characters.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if value.len() < first.len() + last.len() || !value.starts_with(first) || !value.ends_with(last)
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Appends `s` escaped: `\` `=` `|` get a backslash, control characters become `\u{hex}`.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' | '=' | '|' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
}

/// The state key of a descriptor; `shared[i]` is the wildcard pattern entry `i` shares.
pub fn state_key(entries: &[Entry<'_>], shared: &[Option<&str>]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        escape_into(&mut out, k);
        out.push('=');
        match shared.get(i).copied().flatten() {
            Some(pattern) => {
                out.push_str("\\*");
                escape_into(&mut out, pattern);
            }
            None => escape_into(&mut out, v),
        }
    }
    out
}

/// The configured descriptor an entry reaches at one level, and the wildcard it matched.
fn step<'c>(
    level: &'c Descriptors,
    key: &str,
    value: &str,
) -> Option<(&'c DescriptorNode, Option<&'c str>)> {
    let at_key = level.by_key.get(key)?;
    if let Some(n) = at_key.exact.get(value) {
        return Some((n, None));
    }
    if let Some((p, n)) = at_key
        .wildcards
        .iter()
        .find(|(p, _)| wildcard_match(p, value))
    {
        return Some((n, Some(p.as_str())));
    }
    at_key.any.as_ref().map(|n| (n, None))
}

/// The limit `entries` hit in a domain's descriptors, if any.
pub fn find(domain: &Descriptors, entries: &[Entry<'_>]) -> Option<Matched> {
    let mut level = domain;
    let mut shared: Vec<Option<&str>> = Vec::with_capacity(entries.len());
    for (i, (k, v)) in entries.iter().enumerate() {
        let (node, wildcard) = step(level, k, v)?;
        shared.push(wildcard.filter(|_| node.share_threshold));
        if i == entries.len() - 1 {
            let rule = node.rule.clone()?;
            return Some(Matched {
                rule,
                key: state_key(entries, &shared),
            });
        }
        if node.children.is_empty() {
            return None;
        }
        level = &node.children;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Caps,
        rls::config::{RlsConfig, add_file},
    };

    fn domain(text: &str) -> Descriptors {
        let mut c = RlsConfig::default();
        let caps = Caps {
            sliding_log: 10_000,
            concurrency: 10_000,
        };
        add_file(&mut c, "t.yaml", text, caps).unwrap();
        c.domains.into_values().next().unwrap()
    }

    fn limit_of(d: &Descriptors, entries: &[Entry<'_>]) -> Option<u32> {
        find(d, entries).map(|m| m.rule.requests_per_unit)
    }

    #[test]
    fn exact_then_wildcard_then_key_only() {
        let d = domain(
            "domain: d\ndescriptors:\n\
             - key: ip\n  rate_limit: {unit: second, requests_per_unit: 10}\n\
             - key: ip\n  value: 50.0.0.5\n  rate_limit: {unit: second, requests_per_unit: 1}\n\
             - key: ip\n  value: \"10.*\"\n  rate_limit: {unit: second, requests_per_unit: 5}\n\
             - key: ip\n  value: \"10.1.*\"\n  rate_limit: {unit: second, requests_per_unit: 7}\n",
        );
        assert_eq!(limit_of(&d, &[("ip", "50.0.0.5")]), Some(1));
        assert_eq!(limit_of(&d, &[("ip", "50.0.0.6")]), Some(10));
        // Wildcards in file order: 10.* comes first.
        assert_eq!(limit_of(&d, &[("ip", "10.1.2.3")]), Some(5));
        assert_eq!(limit_of(&d, &[("other", "x")]), None);
    }

    #[test]
    fn nested_levels_and_depth() {
        let d = domain(
            "domain: d\ndescriptors:\n\
             - key: message_type\n  value: marketing\n  descriptors:\n\
             \x20   - key: to_number\n      rate_limit: {unit: day, requests_per_unit: 5}\n\
             - key: to_number\n  rate_limit: {unit: day, requests_per_unit: 100}\n\
             - key: k\n  value: v\n  rate_limit: {unit: second, requests_per_unit: 300}\n",
        );
        assert_eq!(
            limit_of(&d, &[("message_type", "marketing"), ("to_number", "1")]),
            Some(5)
        );
        assert_eq!(limit_of(&d, &[("to_number", "1")]), Some(100));
        // The placeholder level has no limit of its own.
        assert_eq!(limit_of(&d, &[("message_type", "marketing")]), None);
        assert_eq!(
            limit_of(&d, &[("message_type", "other"), ("to_number", "1")]),
            None
        );
        // Example 4: more entries than levels match nothing.
        assert_eq!(limit_of(&d, &[("k", "v"), ("subkey", "x")]), None);
        // Each value has its own state.
        let a = find(&d, &[("to_number", "1")]).unwrap().key;
        let b = find(&d, &[("to_number", "2")]).unwrap().key;
        assert_ne!(a, b);
    }

    #[test]
    fn share_threshold_shares_one_key() {
        let d = domain(
            "domain: d\ndescriptors:\n\
             - key: path\n  value: \"files/*\"\n  share_threshold: true\n  rate_limit: {unit: second, requests_per_unit: 1}\n\
             - key: user\n  value: \"u*\"\n  rate_limit: {unit: second, requests_per_unit: 1}\n",
        );
        let a = find(&d, &[("path", "files/a.pdf")]).unwrap().key;
        let b = find(&d, &[("path", "files/b.csv")]).unwrap().key;
        assert_eq!(a, b);
        assert_eq!(a, "path=\\*files/*");
        // Without share_threshold each value counts alone.
        let a = find(&d, &[("user", "u1")]).unwrap().key;
        let b = find(&d, &[("user", "u2")]).unwrap().key;
        assert_ne!(a, b);
    }

    #[test]
    fn keys_never_collide() {
        let pairs: [&[Entry<'_>]; 6] = [
            &[("a", "b|c=d")],
            &[("a", "b"), ("c", "d")],
            &[("a=b", "c")],
            &[("a", "b=c")],
            &[("a", "\\*x")],
            &[("a", "\n")],
        ];
        let keys: Vec<String> = pairs.iter().map(|e| state_key(e, &[])).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(keys[1], "a=b|c=d");
        assert_eq!(keys[5], "a=\\u{a}");
        // A shared pattern's marker differs from any escaped value.
        assert_ne!(state_key(&[("a", "*x")], &[Some("*x")]), keys[4]);
        assert!(keys.iter().all(|k| !k.chars().any(char::is_control)));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("a*", "abc"));
        assert!(wildcard_match("a*", "a"));
        assert!(wildcard_match("*c", "abc"));
        assert!(wildcard_match("a*c*e", "abcde"));
        assert!(!wildcard_match("a*c*e", "abde"));
        assert!(!wildcard_match("ab*ba", "aba"));
        assert!(wildcard_match("x", "x"));
    }
}
