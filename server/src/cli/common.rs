//! What the client subcommands (`acquire`, `limit`, `bench`) share: the `--server` flag,
//! connecting, turning client errors into messages with a hint, and durations for people.
use std::{error::Error as StdError, path::PathBuf, time::Duration};

use floodgate_client::{AuthChannel, Client, Error, Tls};

/// The default server, as `floodgate serve` listens by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Where the server is and how long to wait for it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The floodgate server: a URL such as http://127.0.0.1:50051 (a bare host:port means
    /// http://host:port).
    #[arg(long, env = "FLOODGATE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Give up on a call after this long, e.g. "5s" or "500ms".
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Bearer token for a server with `[[tokens]]` (`floodgate token new` makes one).
    /// Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "FLOODGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificates (PEM) that an https:// server's certificate must chain to
    /// [default: the system roots].
    #[arg(long, env = "FLOODGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require mutual TLS; needs --client-key.
    #[arg(long, env = "FLOODGATE_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "FLOODGATE_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d > Duration::ZERO => Ok(d),
        Ok(_) => Err("must be greater than 0, e.g. 5s".into()),
        Err(e) => Err(format!("{e}; expected a duration such as 5s or 500ms")),
    }
}

impl ServerArgs {
    /// The server URL with a scheme.
    pub fn url(&self) -> String {
        server_url(&self.server)
    }

    /// The TLS settings of the flags; `None` when none is given.
    fn tls(&self) -> Result<Option<Tls>, Error> {
        let mut tls = Tls::default();
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_file(ca)?;
        }
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            tls = tls.identity_files(c, k)?;
        }
        let any = self.ca_file.is_some() || self.client_cert.is_some();
        Ok(any.then_some(tls))
    }

    /// Connects to the server, failing with a message that says how to fix it.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let url = self.url();
        let connect = async {
            match self.tls()? {
                Some(tls) => Client::connect_tls(&url, &tls).await,
                None => Client::connect(&url).await,
            }
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => match &self.token {
                None => Ok(c),
                Some(t) => c.with_token(t).map_err(token_error),
            },
            Ok(Err(e)) => Err(explain(&url, &e, &[])),
            Err(_) => Err(anyhow::anyhow!(
                "cannot connect to {url}: no answer within {}\n{}",
                human_duration(self.timeout),
                CONNECT_HINT
            )),
        }
    }

    /// Connects a bare channel, for the generated clients [`Client`] does not wrap (e.g.
    /// `CircuitBreakersClient`); fails like [`ServerArgs::connect`].
    pub async fn channel(&self) -> anyhow::Result<AuthChannel> {
        Ok(self.connect().await?.transport().clone())
    }

    /// Runs one call with the `--timeout` deadline; `flags` maps the server's field paths
    /// to the flags that set them (for the hint of an INVALID_ARGUMENT).
    pub async fn call<T>(
        &self,
        flags: &[(&str, &str)],
        fut: impl Future<Output = Result<T, Error>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(explain(&self.url(), &e, flags)),
            Err(_) => Err(anyhow::anyhow!(
                "{} did not answer within {}\nhint: the server or its store may be overloaded; \
                 retry, or raise --timeout",
                self.url(),
                human_duration(self.timeout)
            )),
        }
    }
}

fn token_error(e: Error) -> anyhow::Error {
    anyhow::anyhow!(
        "--token: {e}\nhint: pass the token `floodgate token new` printed (fgt_…), e.g. FLOODGATE_TOKEN=fgt_…"
    )
}

const CONNECT_HINT: &str = "hint: is `floodgate serve` running there? Point --server (or \
                            FLOODGATE_SERVER) at it, e.g. --server http://127.0.0.1:50051";

/// `host:port` becomes `http://host:port`; a URL with a scheme is kept.
pub fn server_url(s: &str) -> String {
    let s = s.trim();
    if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    }
}

/// An error with all its causes, each once: `a: b: c`.
pub fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The flag that sets a server field path such as `checks[0].inline.period`, from
/// `flags` (pairs of a field-path suffix and a flag; the longest matching suffix wins).
pub fn flag_for_field<'a>(message: &str, flags: &[(&str, &'a str)]) -> Option<&'a str> {
    let field = message.split(": ").next()?;
    flags
        .iter()
        .filter(|(suffix, _)| field == *suffix || field.ends_with(&format!(".{suffix}")))
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(_, flag)| *flag)
}

/// A client error as one message for people, with a hint how to fix it.
pub fn explain(url: &str, e: &Error, flags: &[(&str, &str)]) -> anyhow::Error {
    let text = match e {
        Error::InvalidEndpoint { endpoint, message } if message.contains("https://") => format!(
            "--server {endpoint:?}: {message}\n\
             hint: --ca-file and --client-cert are for TLS servers; use --server https://HOST:PORT"
        ),
        Error::InvalidEndpoint { endpoint, message } => format!(
            "--server {endpoint:?} is not a usable URL: {message}\n\
             hint: use a URL such as http://127.0.0.1:50051"
        ),
        Error::InvalidTls { message } => {
            format!("{message}\nhint: --ca-file, --client-cert and --client-key take PEM files")
        }
        Error::Connect(t) => {
            let chain = error_chain(t);
            let hint = if chain.contains("certificate") || chain.contains("InvalidCertificate") {
                "hint: the server's certificate is not trusted: pass its CA with --ca-file \
                 (or FLOODGATE_CA_FILE); a server that requires client certificates needs \
                 --client-cert and --client-key"
            } else {
                CONNECT_HINT
            };
            format!(
                "cannot connect to {url}: {}\n{hint}",
                chain.trim_start_matches("transport error: ")
            )
        }
        Error::InvalidArgument(m) => {
            let hint = match flag_for_field(m, flags) {
                Some(flag) => format!("hint: fix {flag}"),
                None => "hint: the message names the field and the rule it broke".into(),
            };
            format!("the server rejected the request: {m}\n{hint}")
        }
        Error::NotFound(m) => format!(
            "not found: {m}\nhint: --policy takes a policy name from the server's configuration \
             ([policies.NAME]); or give the limit inline with --limit, e.g. --limit 10/s"
        ),
        Error::PermissionDenied(m) if m.contains("token") => format!(
            "the server refused: {m}\nhint: the token's role or namespaces do not cover this; \
             ask for a token with the role and namespaces it needs (README \"Security\")"
        ),
        Error::PermissionDenied(m) => format!(
            "the server refused: {m}\nhint: this server has inline_policies = false; name one \
             of its configured policies with --policy NAME instead of --limit"
        ),
        Error::Unauthenticated(m) => format!(
            "{url} requires a valid token: {m}\nhint: pass --token or set FLOODGATE_TOKEN to a \
             token from `floodgate token new` that is in the server's [[tokens]]"
        ),
        Error::Unavailable(m) => format!(
            "{url} is unavailable: {m}\nhint: the server or its store (Redis) is down or \
             overloaded; retry later"
        ),
        other => format!("{url}: {}", error_chain(other)),
    };
    anyhow::anyhow!(text)
}

/// A duration for people: `0s`, `850µs`, `12ms`, `1.2s`, `2m5s`, `1h2m`, `3d4h`.
pub fn human_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        return "0s".into();
    }
    if us < 1_000 {
        return format!("{us}µs");
    }
    if us < 10_000 {
        return trim_decimal(format!("{:.1}", us as f64 / 1_000.0)) + "ms";
    }
    if us < 1_000_000 {
        return format!("{}ms", (us + 500) / 1_000);
    }
    if us < 60_000_000 {
        // One decimal, rounded; 59.96s rounds to 60s rather than showing "1m0s".
        return trim_decimal(format!("{:.1}", us as f64 / 1_000_000.0)) + "s";
    }
    let s = (us + 500_000) / 1_000_000;
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        if h > 0 {
            format!("{d}d{h}h")
        } else {
            format!("{d}d")
        }
    } else if h > 0 {
        if m > 0 {
            format!("{h}h{m}m")
        } else {
            format!("{h}h")
        }
    } else if s > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{m}m")
    }
}

fn trim_decimal(s: String) -> String {
    match s.strip_suffix(".0") {
        Some(t) => t.to_owned(),
        None => s,
    }
}

/// A duration in milliseconds for JSON output (microsecond precision).
pub fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(850), "850µs"),
            (Duration::from_micros(1_250), "1.2ms"),
            (Duration::from_millis(5), "5ms"),
            (Duration::from_millis(12), "12ms"),
            (Duration::from_micros(999_600), "1000ms"),
            (Duration::from_millis(1_200), "1.2s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_secs(125), "2m5s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(3_720), "1h2m"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(3 * 86_400 + 4 * 3_600 + 59), "3d4h"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn server_urls_get_a_scheme() {
        assert_eq!(server_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(server_url(" https://fg:443 "), "https://fg:443");
    }

    #[test]
    fn fields_map_to_flags() {
        let flags = [
            ("namespace", "--namespace"),
            ("key", "KEY"),
            ("inline.limit", "--limit"),
            ("limit", "--other"),
        ];
        let f = |m| flag_for_field(m, &flags);
        assert_eq!(f("namespace: must be 1-64 characters"), Some("--namespace"));
        assert_eq!(f("checks[0].key: must be 1-512 bytes"), Some("KEY"));
        assert_eq!(
            f("checks[0].inline.limit: must be between"),
            Some("--limit")
        );
        assert_eq!(f("request_id: too long"), None);
        assert_eq!(f("no field here"), None);
    }
}
