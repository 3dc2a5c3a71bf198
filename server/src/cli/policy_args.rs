//! The policy flags shared by `acquire` and `limit` (`--policy NAME`, or `--limit 10/s`
//! with `--algorithm`, `--burst`, `--lease-ttl`, `--shadow`), and the `--limit` parser.
use std::{fmt, str::FromStr, time::Duration};

use floodgate_client::{Algorithm, Policy, PolicyRef};

/// The expected forms of `--limit`, quoted in every parse error.
pub const LIMIT_FORMS: &str = "COUNT/PERIOD such as 10/s, 100/m, 1000/h, 5/d, 10/500ms or \
                               10/1m30s (a concurrency limit is a bare COUNT such as 4)";

/// A parsed `--limit`: a count and, for rate limits, the period it is spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    /// Requests per period, or concurrent leases.
    pub count: u64,
    /// None for a bare count (a concurrency limit).
    pub period: Option<Duration>,
}

impl FromStr for LimitSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_limit(s)
    }
}

/// Parses `10/s`, `100/m`, `1000/h`, `5/d`, `10/500ms`, `10/1m30s` or a bare `4`.
/// Counts may use `_` separators (`1_000_000/s`).
pub fn parse_limit(s: &str) -> Result<LimitSpec, String> {
    let s = s.trim();
    let (count, period) = match s.split_once('/') {
        Some((c, p)) => (c.trim(), Some(p.trim())),
        None => (s, None),
    };
    if count.is_empty() {
        return Err(format!("missing the count; expected {LIMIT_FORMS}"));
    }
    if !count.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(format!(
            "{count:?} is not a whole number; expected {LIMIT_FORMS}"
        ));
    }
    let count: u64 = count
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{count:?} is too large; expected {LIMIT_FORMS}"))?;
    if count == 0 {
        return Err("the count must be at least 1".into());
    }
    let period = match period {
        None => None,
        Some("") => {
            return Err(format!(
                "missing the period after '/'; expected {LIMIT_FORMS}"
            ));
        }
        Some(p) => Some(parse_period(p)?),
    };
    Ok(LimitSpec { count, period })
}

/// A period: a unit alone means one of it (`s`, `m`, `min`, `h`, `d`, `sec`, `hour`...),
/// anything else is a humantime duration (`500ms`, `1m30s`).
fn parse_period(p: &str) -> Result<Duration, String> {
    let text = if p.starts_with(|c: char| c.is_ascii_digit()) {
        p.to_owned()
    } else {
        format!("1{p}")
    };
    let d = humantime::parse_duration(&text)
        .map_err(|e| format!("the period {p:?} is not a duration ({e}); expected {LIMIT_FORMS}"))?;
    if d.is_zero() {
        return Err(format!("the period {p:?} must be greater than 0"));
    }
    if d < Duration::from_micros(1) {
        return Err(format!(
            "the period {p:?} is shorter than 1µs, the server's resolution"
        ));
    }
    Ok(d)
}

impl fmt::Display for LimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period {
            None => write!(f, "{}", self.count),
            Some(p) => write!(f, "{}/{}", self.count, period_text(p)),
        }
    }
}

/// `s`, `m`, `h`, `d` for whole units, humantime otherwise (`500ms`, `1m 30s`, no spaces).
fn period_text(p: Duration) -> String {
    match p.as_secs() {
        _ if p.subsec_nanos() != 0 => humantime::format_duration(p).to_string().replace(' ', ""),
        1 => "s".into(),
        60 => "m".into(),
        3_600 => "h".into(),
        86_400 => "d".into(),
        _ => humantime::format_duration(p).to_string().replace(' ', ""),
    }
}

/// `--algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AlgorithmArg {
    /// GCRA: refills COUNT per PERIOD, holds --burst (default COUNT). Exact.
    #[value(alias = "token-bucket", alias = "gcra")]
    TokenBucket,
    /// Weighted two-window counter: O(1) memory, approximate.
    #[value(alias = "sliding-window")]
    SlidingWindow,
    /// Log of arrivals: exact, memory O(COUNT).
    #[value(alias = "sliding-log")]
    SlidingLog,
    /// One counter per window: exact per window, up to 2x across a window edge.
    #[value(alias = "fixed-window")]
    FixedWindow,
    /// At most COUNT leases at once (--limit 4, no period).
    Concurrency,
}

impl AlgorithmArg {
    /// The name on the command line and in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            AlgorithmArg::TokenBucket => "token_bucket",
            AlgorithmArg::SlidingWindow => "sliding_window",
            AlgorithmArg::SlidingLog => "sliding_log",
            AlgorithmArg::FixedWindow => "fixed_window",
            AlgorithmArg::Concurrency => "concurrency",
        }
    }

    fn client(self) -> Algorithm {
        match self {
            AlgorithmArg::TokenBucket => Algorithm::TokenBucket,
            AlgorithmArg::SlidingWindow => Algorithm::SlidingWindow,
            AlgorithmArg::SlidingLog => Algorithm::SlidingLog,
            AlgorithmArg::FixedWindow => Algorithm::FixedWindow,
            AlgorithmArg::Concurrency => Algorithm::Concurrency,
        }
    }
}

/// An inline policy as given on the command line, checked for flag combinations the
/// server would reject, so the error can name the flag.
#[derive(Debug, Clone, PartialEq)]
pub struct InlineSpec {
    /// The algorithm.
    pub algorithm: AlgorithmArg,
    /// `--limit`.
    pub limit: LimitSpec,
    /// `--burst` (token bucket only).
    pub burst: Option<u64>,
    /// `--lease-ttl` (concurrency only).
    pub lease_ttl: Option<Duration>,
    /// `--shadow`.
    pub shadow: bool,
}

impl InlineSpec {
    /// Checks the combination of flags.
    pub fn new(
        algorithm: AlgorithmArg,
        limit: LimitSpec,
        burst: Option<u64>,
        lease_ttl: Option<Duration>,
        shadow: bool,
    ) -> Result<Self, String> {
        let concurrency = algorithm == AlgorithmArg::Concurrency;
        match (concurrency, limit.period) {
            (true, Some(_)) => {
                return Err(format!(
                    "--limit {limit}: a concurrency limit has no period; give a bare count \
                     such as --limit {}",
                    limit.count
                ));
            }
            (false, None) => {
                return Err(format!(
                    "--limit {limit}: a {} limit needs a period, e.g. --limit {}/s \
                     (or pass --algorithm concurrency for at most {} at once)",
                    algorithm.name(),
                    limit.count,
                    limit.count
                ));
            }
            _ => {}
        }
        if burst.is_some() && algorithm != AlgorithmArg::TokenBucket {
            return Err(format!(
                "--burst applies only to --algorithm token_bucket, not {}",
                algorithm.name()
            ));
        }
        if lease_ttl.is_some() && !concurrency {
            return Err("--lease-ttl applies only to --algorithm concurrency".into());
        }
        Ok(Self {
            algorithm,
            limit,
            burst,
            lease_ttl,
            shadow,
        })
    }

    /// The client's inline policy.
    pub fn policy(&self) -> Policy {
        let mut p = match self.limit.period {
            Some(period) => Policy::new(self.algorithm.client(), self.limit.count, period),
            None => Policy::concurrency(self.limit.count),
        };
        if let Some(b) = self.burst {
            p = p.burst(b);
        }
        if let Some(ttl) = self.lease_ttl {
            p = p.lease_ttl(ttl);
        }
        if self.shadow {
            p = p.shadow();
        }
        p
    }
}

impl fmt::Display for InlineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm.name(), self.limit)?;
        if let Some(b) = self.burst {
            write!(f, " burst {b}")?;
        }
        if let Some(t) = self.lease_ttl {
            write!(f, " lease_ttl {}", humantime::format_duration(t))?;
        }
        if self.shadow {
            write!(f, " shadow")?;
        }
        Ok(())
    }
}

/// The policy flags: a configured policy by name, or an inline one.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("policy_source").required(true).multiple(false))]
pub struct PolicyArgs {
    /// A policy from the server's configuration file ([policies.NAME]).
    #[arg(long, value_name = "NAME", group = "policy_source")]
    pub policy: Option<String>,
    /// An inline limit: 10/s, 100/m, 1000/h, 5/d, 10/500ms, 10/1m30s; a bare count such
    /// as 4 with --algorithm concurrency.
    #[arg(long, group = "policy_source", allow_hyphen_values = true)]
    pub limit: Option<LimitSpec>,
    /// The inline limit's algorithm [default: token_bucket].
    #[arg(long, value_enum, conflicts_with = "policy")]
    pub algorithm: Option<AlgorithmArg>,
    /// Token bucket capacity [default: the limit's count].
    #[arg(long, conflicts_with = "policy")]
    pub burst: Option<u64>,
    /// Concurrency lease lifetime unless released or renewed, e.g. "30s" [default: 60s].
    #[arg(long, conflicts_with = "policy", value_parser = humantime::parse_duration)]
    pub lease_ttl: Option<Duration>,
    /// Count and report, never deny.
    #[arg(long, conflicts_with = "policy")]
    pub shadow: bool,
}

impl PolicyArgs {
    /// The inline spec, if the policy is inline.
    pub fn inline(&self) -> anyhow::Result<Option<InlineSpec>> {
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let algorithm = self.algorithm.unwrap_or(AlgorithmArg::TokenBucket);
        InlineSpec::new(algorithm, limit, self.burst, self.lease_ttl, self.shadow)
            .map(Some)
            .map_err(anyhow::Error::msg)
    }

    /// The policy to send, and how to describe it to people.
    pub fn resolve(&self) -> anyhow::Result<(PolicyRef, String)> {
        match (&self.policy, self.inline()?) {
            (Some(name), _) => Ok((PolicyRef::Named(name.clone()), format!("policy {name}"))),
            (None, Some(spec)) => Ok((spec.policy().into(), spec.to_string())),
            (None, None) => anyhow::bail!("give --policy NAME or --limit, e.g. --limit 10/s"),
        }
    }
}

/// Server field paths (suffixes) and the flags that set them, for error hints.
pub const POLICY_FLAGS: &[(&str, &str)] = &[
    ("namespace", "--namespace"),
    ("key", "KEY"),
    ("cost", "--cost"),
    ("request_id", "--request-id"),
    ("policy_name", "--policy"),
    ("inline.limit", "--limit"),
    ("inline.period", "--limit (its period)"),
    ("inline.burst", "--burst"),
    ("inline.lease_ttl", "--lease-ttl"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (u64, Option<Duration>) {
        let l = parse_limit(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (l.count, l.period)
    }
    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn limits_parse() {
        assert_eq!(ok("10/s"), (10, secs(1)));
        assert_eq!(ok("100/m"), (100, secs(60)));
        assert_eq!(ok("100/min"), (100, secs(60)));
        assert_eq!(ok("1000/h"), (1000, secs(3600)));
        assert_eq!(ok("5/d"), (5, secs(86_400)));
        assert_eq!(ok("5/day"), (5, secs(86_400)));
        assert_eq!(ok("10/500ms"), (10, Some(Duration::from_millis(500))));
        assert_eq!(ok("10/1m30s"), (10, secs(90)));
        assert_eq!(ok("10/2s"), (10, secs(2)));
        assert_eq!(ok(" 1_000_000 / s "), (1_000_000, secs(1)));
        assert_eq!(ok("4"), (4, None));
    }

    #[test]
    fn bad_limits_say_what_is_expected() {
        for (s, says) in [
            ("", "missing the count"),
            ("/s", "missing the count"),
            ("10/", "missing the period"),
            ("ten/s", "not a whole number"),
            ("-1/s", "not a whole number"),
            ("1.5/s", "not a whole number"),
            ("0/s", "at least 1"),
            ("0", "at least 1"),
            ("10/x", "not a duration"),
            ("10/0s", "greater than 0"),
            ("10/1ns", "shorter than 1µs"),
            ("99999999999999999999/s", "too large"),
        ] {
            let e = parse_limit(s).expect_err(s);
            assert!(e.contains(says), "{s:?}: {e}");
        }
        assert!(parse_limit("10/x").unwrap_err().contains("10/s, 100/m"));
    }

    #[test]
    fn limits_display_as_typed() {
        for s in [
            "10/s", "100/m", "1000/h", "5/d", "10/500ms", "10/1m30s", "4", "3/2s",
        ] {
            assert_eq!(parse_limit(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn flag_combinations() {
        let rate = parse_limit("10/s").unwrap();
        let bare = parse_limit("4").unwrap();
        let tb = AlgorithmArg::TokenBucket;
        let cc = AlgorithmArg::Concurrency;
        assert!(InlineSpec::new(tb, rate, Some(20), None, false).is_ok());
        assert!(InlineSpec::new(cc, bare, None, Some(Duration::from_secs(5)), false).is_ok());
        let err = |r: Result<InlineSpec, String>| r.unwrap_err();
        assert!(err(InlineSpec::new(cc, rate, None, None, false)).contains("has no period"));
        assert!(err(InlineSpec::new(tb, bare, None, None, false)).contains("needs a period"));
        assert!(
            err(InlineSpec::new(
                AlgorithmArg::FixedWindow,
                rate,
                Some(3),
                None,
                false
            ))
            .contains("--burst applies only")
        );
        assert!(
            err(InlineSpec::new(
                tb,
                rate,
                None,
                Some(Duration::from_secs(1)),
                false
            ))
            .contains("--lease-ttl")
        );
    }

    #[test]
    fn inline_specs_become_wire_policies() {
        let spec = InlineSpec::new(
            AlgorithmArg::TokenBucket,
            parse_limit("10/500ms").unwrap(),
            Some(25),
            None,
            true,
        )
        .unwrap();
        assert_eq!(spec.to_string(), "token_bucket 10/500ms burst 25 shadow");
        let p = spec.policy().into_proto();
        assert_eq!(p.limit, 10);
        assert_eq!(p.burst, 25);
        assert!(p.shadow);
        let period = p.period.unwrap();
        assert_eq!((period.seconds, period.nanos), (0, 500_000_000));

        let c = InlineSpec::new(
            AlgorithmArg::Concurrency,
            parse_limit("4").unwrap(),
            None,
            None,
            false,
        )
        .unwrap()
        .policy()
        .into_proto();
        assert_eq!((c.limit, c.period), (4, None));
    }
}
