//! `response_headers_to_add` of a ShouldRateLimit answer, when the server is configured to
//! send them (`rls_headers`), so Envoy passes them on to the client:
//! - `draft`: the IETF httpapi draft fields, one list member per limited descriptor:
//!   `RateLimit-Policy: "name";q=100;w=60` (quota and window in seconds) and
//!   `RateLimit: "name";r=42;t=17` (remaining and seconds until reset);
//! - `x-ratelimit`: the older trio envoy ratelimit sends, for the descriptor closest to its
//!   limit (an over-limit one first): `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
//!   `X-RateLimit-Reset` (seconds);
//! - `both`, or `off` (the default).
use floodgate_proto::envoy::config::core::v3::HeaderValue;

/// Which headers to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderMode {
    /// None.
    #[default]
    Off,
    /// `RateLimit` and `RateLimit-Policy`.
    Draft,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    XRateLimit,
    /// All five.
    Both,
}

impl HeaderMode {
    /// Parses `off`, `draft`, `x-ratelimit` or `both`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "draft" => Some(Self::Draft),
            "x-ratelimit" => Some(Self::XRateLimit),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

/// One limited descriptor's figures for the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitFigures {
    /// The policy's name in the draft fields (the rule's `name`, else its path).
    pub name: String,
    /// `requests_per_unit`.
    pub quota: u64,
    /// The unit in seconds.
    pub window: u64,
    /// Requests left.
    pub remaining: u64,
    /// Whole seconds until the limit resets (rounded up).
    pub reset: u64,
    /// Whether this descriptor is over its limit.
    pub over: bool,
}

/// A structured-field string: printable ASCII, `"` and `\` escaped, anything else `?`.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value,
        raw_value: Vec::new(),
    }
}

/// The headers `mode` asks for, from the limited descriptors in request order.
pub fn build(mode: HeaderMode, limits: &[LimitFigures]) -> Vec<HeaderValue> {
    let mut out = Vec::new();
    if limits.is_empty() || mode == HeaderMode::Off {
        return out;
    }
    if matches!(mode, HeaderMode::Draft | HeaderMode::Both) {
        let policy: Vec<String> = limits
            .iter()
            .map(|l| format!("{};q={};w={}", sf_string(&l.name), l.quota, l.window))
            .collect();
        let current: Vec<String> = limits
            .iter()
            .map(|l| format!("{};r={};t={}", sf_string(&l.name), l.remaining, l.reset))
            .collect();
        out.push(header("RateLimit-Policy", policy.join(", ")));
        out.push(header("RateLimit", current.join(", ")));
    }
    if matches!(mode, HeaderMode::XRateLimit | HeaderMode::Both) {
        // The first over-limit descriptor, else the one with the least remaining.
        let closest = limits
            .iter()
            .find(|l| l.over)
            .or_else(|| limits.iter().min_by_key(|l| l.remaining));
        if let Some(l) = closest {
            let remaining = if l.over { 0 } else { l.remaining };
            out.push(header("X-RateLimit-Limit", l.quota.to_string()));
            out.push(header("X-RateLimit-Remaining", remaining.to_string()));
            out.push(header("X-RateLimit-Reset", l.reset.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(name: &str, remaining: u64, over: bool) -> LimitFigures {
        LimitFigures {
            name: name.into(),
            quota: 10,
            window: 60,
            remaining,
            reset: 17,
            over,
        }
    }

    #[test]
    fn draft_fields_list_every_limit() {
        let h = build(
            HeaderMode::Draft,
            &[figures("per-user", 4, false), figures("a\"b", 9, false)],
        );
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].key, "RateLimit-Policy");
        assert_eq!(h[0].value, "\"per-user\";q=10;w=60, \"a\\\"b\";q=10;w=60");
        assert_eq!(h[1].key, "RateLimit");
        assert_eq!(h[1].value, "\"per-user\";r=4;t=17, \"a\\\"b\";r=9;t=17");
    }

    #[test]
    fn x_ratelimit_trio_takes_the_closest_limit() {
        let h = build(
            HeaderMode::XRateLimit,
            &[figures("a", 4, false), figures("b", 2, false)],
        );
        let kv: Vec<(&str, &str)> = h.iter().map(|h| (&*h.key, &*h.value)).collect();
        assert_eq!(
            kv,
            [
                ("X-RateLimit-Limit", "10"),
                ("X-RateLimit-Remaining", "2"),
                ("X-RateLimit-Reset", "17")
            ]
        );
        let h = build(
            HeaderMode::Both,
            &[figures("a", 4, false), figures("b", 6, true)],
        );
        assert_eq!(h.len(), 5);
        assert_eq!(h[3].value, "0");
        assert!(build(HeaderMode::Off, &[figures("a", 1, false)]).is_empty());
        assert!(build(HeaderMode::Both, &[]).is_empty());
    }
}
