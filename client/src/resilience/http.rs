//! [`HttpRateLimitLayer`]: rate-limits incoming HTTP requests by a key taken from the
//! request (header, path, peer, or a function), answering 429 with `Retry-After` and the
//! IETF httpapi draft's structured fields (draft-ietf-httpapi-ratelimit-headers):
//! `RateLimit-Policy: "name";q=100;w=60` and `RateLimit: "name";r=42;t=17`. Works with
//! axum (any `http` 1 service whose response body has a `Default`).
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, request::Parts};
use tower::{Layer, Service};

use crate::{Client, Decision, PolicyRef, acquire::duration};

type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// Where the limit's key comes from; a request without one is not limited.
///
/// ```
/// use floodgate_client::resilience::Key;
/// let by_tenant = Key::header("X-Tenant").unwrap();
/// assert!(Key::header("bad header").is_err());
/// let by_route = Key::path();
/// let custom = Key::from_fn(|p| Some(format!("{} {}", p.method, p.uri.path())));
/// ```
#[derive(Clone)]
pub struct Key(KeyFn);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The value of header `name`, any case (a request without it is not limited); a name
    /// that is not a valid header name is an error. A value with bytes outside visible
    /// ASCII is still a key (read lossily), so such a value cannot dodge the limit.
    pub fn header(name: &str) -> Result<Self, http::header::InvalidHeaderName> {
        let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())?;
        Ok(Self(Arc::new(move |p| {
            let v = p.headers.get(&name)?;
            Some(match v.to_str() {
                Ok(s) => s.to_owned(),
                Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
        })))
    }

    /// The request's path.
    pub fn path() -> Self {
        Self(Arc::new(|p| Some(p.uri.path().to_owned())))
    }

    /// The peer's IP, from a `SocketAddr` or `IpAddr` request extension (with axum's
    /// `ConnectInfo`, use [`Key::from_fn`] as `client/examples/http_limit.rs` does).
    pub fn peer() -> Self {
        Self(Arc::new(|p| {
            p.extensions
                .get::<SocketAddr>()
                .map(|a| a.ip())
                .or_else(|| p.extensions.get::<IpAddr>().copied())
                .map(|ip| ip.to_string())
        }))
    }

    /// Any function of the request's head.
    pub fn from_fn(f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

/// The layer's settings, shared by its services.
#[derive(Clone)]
struct Settings {
    client: Client,
    namespace: String,
    policy: PolicyRef,
    key: Key,
    prefix: String,
    name: Option<String>,
    window: Option<Duration>,
    fail_open: bool,
}

/// Rate-limits requests by key through floodgate.
///
/// ```no_run
/// use std::time::Duration;
/// use floodgate_client::{Client, Policy, resilience::{HttpRateLimitLayer, Key}};
/// # async fn demo(client: Client) {
/// let layer = HttpRateLimitLayer::new(&client, "api", Policy::token_bucket(100, Duration::from_secs(60)), Key::header("x-api-key").unwrap())
///     .name("per-key");
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hi" }))
///     .layer(layer);
/// # }
/// ```
#[derive(Clone)]
pub struct HttpRateLimitLayer {
    settings: Arc<Settings>,
}

impl fmt::Debug for HttpRateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("HttpRateLimitLayer")
            .field("namespace", &s.namespace)
            .field("policy", &s.policy)
            .field("prefix", &s.prefix)
            .field("name", &s.name)
            .field("window", &s.window)
            .field("fail_open", &s.fail_open)
            .finish()
    }
}

impl HttpRateLimitLayer {
    /// Each request costs 1 of `key(request)` against `policy` in `namespace`. When
    /// floodgate cannot be asked the request passes (see [`fail_closed`](Self::fail_closed)).
    pub fn new(client: &Client, namespace: &str, policy: impl Into<PolicyRef>, key: Key) -> Self {
        let policy = policy.into();
        let window = match &policy {
            PolicyRef::Inline(p) => p.0.period.map(|d| duration(Some(d))),
            PolicyRef::Named(_) => None,
        };
        Self {
            settings: Arc::new(Settings {
                client: client.clone(),
                namespace: namespace.to_owned(),
                policy,
                key,
                prefix: String::new(),
                name: None,
                window,
                fail_open: true,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.settings));
        self
    }

    /// The policy's name in the headers (default: the server's policy name or fingerprint).
    pub fn name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.edit(|s| s.name = Some(name))
    }

    /// Put before every key (e.g. `http:`).
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.edit(|s| s.prefix = prefix)
    }

    /// The window `w` of `RateLimit-Policy` for a named policy (an inline one's period is
    /// used by default).
    pub fn window(self, window: Duration) -> Self {
        self.edit(|s| s.window = Some(window))
    }

    /// Answer 503 instead of passing requests when floodgate cannot be asked.
    pub fn fail_closed(self) -> Self {
        self.edit(|s| s.fail_open = false)
    }
}

impl<S> Layer<S> for HttpRateLimitLayer {
    type Service = HttpRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpRateLimit {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// A service behind [`HttpRateLimitLayer`] (made by its `layer`).
///
/// ```no_run
/// use std::time::Duration;
/// use floodgate_client::{Client, Policy, resilience::{HttpRateLimitLayer, Key}};
/// # fn demo(client: Client) {
/// let layer = HttpRateLimitLayer::new(&client, "api", Policy::token_bucket(5, Duration::from_secs(1)), Key::path());
/// let svc = tower::Layer::layer(&layer, tower::service_fn(|_: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// }));
/// # }
/// ```
#[derive(Clone)]
pub struct HttpRateLimit<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S: fmt::Debug> fmt::Debug for HttpRateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The largest integer a structured field may carry (RFC 8941 §3.3.1: 15 digits).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// Whole seconds, rounded up, within a structured-field integer (never overflows).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs()
        .saturating_add(u64::from(d.subsec_nanos() > 0))
        .min(SF_INTEGER_MAX)
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

/// Adds `RateLimit-Policy` and `RateLimit` (and `Retry-After` when denied).
fn add_headers(h: &mut HeaderMap, d: &Decision, s: &Settings) {
    let Some(c) = d.checks.first() else { return };
    let name = sf_string(s.name.as_deref().unwrap_or(&c.policy));
    let mut policy = format!("{name};q={}", c.limit.min(SF_INTEGER_MAX));
    if let Some(w) = s.window {
        policy.push_str(&format!(";w={}", ceil_secs(w)));
    }
    let limit = format!(
        "{name};r={};t={}",
        c.remaining.min(SF_INTEGER_MAX),
        ceil_secs(c.reset_after)
    );
    for (k, v) in [("ratelimit-policy", policy), ("ratelimit", limit)] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    if !d.allowed {
        let secs = ceil_secs(d.retry_after).max(1);
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

fn status<B: Default>(code: StatusCode) -> Response<B> {
    let mut r = Response::new(B::default());
    *r.status_mut() = code;
    r
}

impl<S, B, RB> Service<Request<B>> for HttpRateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was driven to ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let s = self.settings.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let key = (s.key.0)(&parts);
            let req = Request::from_parts(parts, body);
            let Some(key) = key else {
                return inner.call(req).await;
            };
            let asked = s
                .client
                .acquire(&s.namespace)
                .check(format!("{}{key}", s.prefix), s.policy.clone())
                .send()
                .await;
            match asked {
                Ok(d) if !d.allowed => {
                    let mut r = status(StatusCode::TOO_MANY_REQUESTS);
                    add_headers(r.headers_mut(), &d, &s);
                    Ok(r)
                }
                Ok(d) => {
                    let mut r = inner.call(req).await?;
                    add_headers(r.headers_mut(), &d, &s);
                    Ok(r)
                }
                Err(e) if s.fail_open => {
                    tracing::warn!(error = %e, "rate limit not checked (floodgate unreachable); request passed");
                    inner.call(req).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate limit not checked (floodgate unreachable); request refused");
                    Ok(status(StatusCode::SERVICE_UNAVAILABLE))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_key_with_non_ascii_bytes_is_still_limited() {
        let key = Key::header("X-Api-Key").unwrap();
        let head = |v: &[u8]| {
            let (parts, ()) = Request::builder()
                .header("x-api-key", HeaderValue::from_bytes(v).unwrap())
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        assert_eq!((key.0)(&head(b"abc")).as_deref(), Some("abc"));
        // Used to be None, i.e. not limited at all: any client could opt out of the limit.
        assert!((key.0)(&head(b"abc\xff")).is_some());
        let (none, ()) = Request::new(()).into_parts();
        assert_eq!((key.0)(&none), None);
    }

    #[test]
    fn seconds_round_up_and_stay_valid_structured_field_integers() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(60)), 60);
        // Duration::MAX used to overflow (a panic in debug builds, 0 in release).
        assert_eq!(ceil_secs(Duration::MAX), SF_INTEGER_MAX);
        assert_eq!(ceil_secs(Duration::from_secs(u64::MAX)), SF_INTEGER_MAX);
    }
}
