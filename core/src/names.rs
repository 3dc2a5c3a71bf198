//! Namespace, key and policy-name rules, so that `(namespace, key, policy)` maps to exactly
//! one Redis key and no tenant can reach another's.
use crate::Error;

/// Longest namespace, in characters.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAMESPACE_LEN && s.chars().all(is_name_char)
}

/// Checks a namespace: 1-64 characters of `[A-Za-z0-9_.-]` (no `:`, `{`, `}`).
pub fn validate_namespace(ns: &str) -> Result<(), Error> {
    if is_name(ns) {
        Ok(())
    } else {
        Err(Error::BadNamespace(ns.chars().take(80).collect()))
    }
}

/// Checks a key: 1-512 bytes of printable text (any Unicode but control characters).
pub fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        Err(Error::BadKey)
    } else {
        Ok(())
    }
}

/// Checks a configured policy's name: 1-64 characters of `[A-Za-z0-9_.-]`.
pub fn validate_policy_name(name: &str) -> Result<(), Error> {
    if is_name(name) {
        Ok(())
    } else {
        Err(Error::BadPolicyName(name.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(validate_namespace("team-a.prod_1").is_ok());
        for bad in ["", "a:b", "{x}", "with space", &"n".repeat(65)] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
        assert!(validate_namespace(&"n".repeat(64)).is_ok());
    }

    #[test]
    fn keys() {
        assert!(validate_key("user:42").is_ok());
        assert!(validate_key("ключ {x}").is_ok());
        assert!(validate_key(&"k".repeat(512)).is_ok());
        for bad in ["", "a\nb", "tab\t", "\u{7f}"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"k".repeat(513)).is_err());
    }
}
