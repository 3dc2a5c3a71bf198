//! [`Client`]: a cheap-to-clone handle on one or several floodgate servers.
use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use floodgate_proto::v1::{
    self as pb, admin_client::AdminClient, circuit_breakers_client::CircuitBreakersClient,
    rate_limiter_client::RateLimiterClient,
};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::{
    AcquireBuilder, AuthChannel, CheckResult, Error, PolicyRef, Tls,
    acquire::duration,
    breaker::{Breaker, BreakerCache, Reporter},
    policy::wire_duration,
};

/// A connection to a floodgate fleet. Clones share the connection, the breaker report
/// batcher and the breaker state cache.
#[derive(Debug, Clone)]
pub struct Client {
    /// One channel; with several endpoints it spreads calls over them. It sends the
    /// token, if one was given ([`Client::with_token`]).
    channel: AuthChannel,
    /// Started on first use (it needs a Tokio runtime).
    breakers: Arc<OnceLock<BreakerParts>>,
}

/// What breaker handles share: one batcher, one state cache, and the signal that stops
/// their tasks (sent on shutdown, or dropped with the last clone of the client).
#[derive(Debug)]
struct BreakerParts {
    reporter: Reporter,
    cache: BreakerCache,
    stop: watch::Sender<bool>,
}

/// The endpoint for `url`; an `https://` URL uses `tls` (or, without it, the system roots).
pub(crate) fn endpoint(url: &str, tls: Option<&Tls>) -> Result<Endpoint, Error> {
    let invalid = |e: &dyn std::fmt::Display| Error::InvalidEndpoint {
        endpoint: url.to_owned(),
        message: e.to_string(),
    };
    let e = Endpoint::from_shared(url.to_owned())
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
        })
        .map_err(|e| invalid(&e))?;
    let https = url.starts_with("https://");
    match (https, tls) {
        (true, tls) => e
            .tls_config(tls.cloned().unwrap_or_default().config())
            .map_err(|e| invalid(&e)),
        (false, Some(_)) => Err(invalid(&"TLS settings need an https:// URL")),
        (false, None) => Ok(e),
    }
}

impl Client {
    /// Connects to one server, e.g. `http://127.0.0.1:50051`.
    /// An `https://` URL verifies the server with the system roots; see
    /// [`Client::connect_tls`] for a CA file or a client certificate.
    pub async fn connect(url: impl AsRef<str>) -> Result<Self, Error> {
        let channel = endpoint(url.as_ref(), None)?.connect().await?;
        Ok(Self::from_channel(channel))
    }

    /// Connects to one `https://` server with these TLS settings, e.g.
    /// `Tls::default().ca_file("ca.pem")?`.
    pub async fn connect_tls(url: impl AsRef<str>, tls: &Tls) -> Result<Self, Error> {
        let channel = endpoint(url.as_ref(), Some(tls))?.connect().await?;
        Ok(Self::from_channel(channel))
    }

    /// Spreads calls over several servers (power of two choices); a server that is down is
    /// skipped. Connects lazily: the first call reports an unreachable fleet.
    pub fn connect_many<I, U>(urls: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let endpoints = urls
            .into_iter()
            .map(|u| endpoint(u.as_ref(), None))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                message: "at least one endpoint is required".into(),
            });
        }
        Ok(Self::from_channel(Channel::balance_list(
            endpoints.into_iter(),
        )))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            channel: AuthChannel::new(channel),
            breakers: Arc::default(),
        }
    }

    /// The same connection, sending `token` as `authorization: Bearer <token>` with every
    /// call (servers with `[[tokens]]` configured require one). Call it before using
    /// breaker handles: the returned client has its own batcher and cache.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), floodgate_client::Error> {
    /// let client = floodgate_client::Client::connect("http://127.0.0.1:50051")
    ///     .await?
    ///     .with_token(&std::env::var("FLOODGATE_TOKEN").unwrap_or_default())?;
    /// # Ok(()) }
    /// ```
    pub fn with_token(self, token: &str) -> Result<Self, Error> {
        Ok(Self {
            channel: self.channel.with_token(token)?,
            breakers: Arc::default(),
        })
    }

    /// The bare channel (it sends no token), for generated clients of any floodgate
    /// service on a server without tokens; see [`Client::transport`] otherwise.
    pub fn channel(&self) -> &Channel {
        self.channel.channel()
    }

    /// The channel that sends this client's token, for generated clients.
    pub fn transport(&self) -> &AuthChannel {
        &self.channel
    }

    /// A handle on breaker `name` of `namespace`: `call` checks it, runs the call, and
    /// reports the outcome (batched). Handles are cheap; they share this client's batcher
    /// and state cache.
    pub fn breaker(&self, namespace: &str, name: &str) -> Breaker {
        Breaker::new(self.clone(), namespace, name)
    }

    /// A handle on dead-letter queue `queue` of `namespace` (publish, list, claim, ...).
    pub fn dead_letters(&self, namespace: &str, queue: &str) -> crate::DeadLetterQueue {
        crate::DeadLetterQueue::new(self.channel.clone(), namespace, queue)
    }

    fn breaker_parts(&self) -> &BreakerParts {
        self.breakers.get_or_init(|| {
            let (stop, stopped) = watch::channel(false);
            let reporter = Reporter::new(self.channel.clone());
            reporter.start(stopped.clone());
            BreakerParts {
                reporter,
                cache: BreakerCache::new(self.channel.clone(), stopped),
                stop,
            }
        })
    }

    /// The breaker report batcher (its counters say how reporting goes).
    pub fn reporter(&self) -> &Reporter {
        &self.breaker_parts().reporter
    }

    /// The Watch-fed breaker state cache: what a call would be decided by locally (the
    /// first lookup of a breaker starts its Watch stream).
    pub fn breaker_cache(&self) -> &BreakerCache {
        &self.breaker_parts().cache
    }

    /// Sends every pending breaker report now; returns once they were answered.
    pub async fn flush(&self) {
        if let Some(parts) = self.breakers.get() {
            parts.reporter.flush().await;
        }
    }

    /// Flushes pending reports (sending once more what fails) and stops the background
    /// tasks (the batcher and the Watch streams). Call it before the process exits. The
    /// client still works afterwards, but breaker calls always ask the server and their
    /// outcomes go out only with [`Client::flush`]. Dropping the last clone of a client
    /// also stops the tasks, after a last flush in the background.
    pub async fn shutdown(&self) {
        if let Some(parts) = self.breakers.get() {
            parts.stop.send_replace(true);
            parts.reporter.flush_final().await;
        }
    }

    /// The generated CircuitBreakers client on this connection.
    pub fn circuit_breakers(&self) -> CircuitBreakersClient<AuthChannel> {
        CircuitBreakersClient::new(self.channel.clone())
    }

    /// One breaker's state.
    pub async fn breaker_info(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<pb::BreakerInfo, Error> {
        Ok(self
            .circuit_breakers()
            .get(pb::GetBreakerRequest {
                namespace: namespace.to_owned(),
                breaker: name.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Every breaker of a namespace.
    pub async fn list_breakers(&self, namespace: &str) -> Result<Vec<pb::BreakerInfo>, Error> {
        Ok(self
            .circuit_breakers()
            .list(pb::ListBreakersRequest {
                namespace: namespace.to_owned(),
            })
            .await?
            .into_inner()
            .breakers)
    }

    /// An operator's override of a breaker's state.
    pub async fn set_breaker_state(
        &self,
        namespace: &str,
        name: &str,
        state: pb::BreakerState,
    ) -> Result<pb::BreakerInfo, Error> {
        Ok(self
            .circuit_breakers()
            .set_state(pb::SetBreakerStateRequest {
                namespace: namespace.to_owned(),
                breaker: name.to_owned(),
                state: state as i32,
            })
            .await?
            .into_inner())
    }

    /// The generated RateLimiter client on this connection, for anything the builder
    /// does not cover.
    pub fn rate_limiter(&self) -> RateLimiterClient<AuthChannel> {
        RateLimiterClient::new(self.channel.clone())
    }

    /// The generated Admin client on this connection.
    pub fn admin(&self) -> AdminClient<AuthChannel> {
        AdminClient::new(self.channel.clone())
    }

    /// Starts an Acquire in `namespace`.
    pub fn acquire(&self, namespace: &str) -> AcquireBuilder {
        AcquireBuilder::new(self.clone(), namespace)
    }

    /// Ends a concurrency lease; false when it had already expired or been released.
    pub async fn release(&self, namespace: &str, key: &str, lease_id: &str) -> Result<bool, Error> {
        let r = self
            .rate_limiter()
            .release(pb::ReleaseRequest {
                namespace: namespace.to_owned(),
                key: key.to_owned(),
                lease_id: lease_id.to_owned(),
            })
            .await?;
        Ok(r.into_inner().released)
    }

    /// Extends a live lease by `ttl` (or its policy's lease_ttl); returns its new lifetime.
    /// An expired lease is [`Error::NotFound`].
    pub async fn renew(
        &self,
        namespace: &str,
        key: &str,
        lease_id: &str,
        ttl: Option<Duration>,
    ) -> Result<Duration, Error> {
        let r = self
            .rate_limiter()
            .renew(pb::RenewRequest {
                namespace: namespace.to_owned(),
                key: key.to_owned(),
                lease_id: lease_id.to_owned(),
                ttl: ttl.map(wire_duration),
            })
            .await?;
        Ok(duration(r.into_inner().expires_in))
    }

    /// Reads a limit without consuming: would `cost` be admitted now, and what is left.
    pub async fn status(
        &self,
        namespace: &str,
        key: &str,
        policy: impl Into<PolicyRef>,
        cost: u64,
    ) -> Result<CheckResult, Error> {
        let r = self
            .rate_limiter()
            .status(pb::StatusRequest {
                namespace: namespace.to_owned(),
                check: Some(pb::LimitCheck {
                    key: key.to_owned(),
                    cost,
                    policy: Some(policy.into().into_proto()),
                }),
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// Clears a limit's state (an operator unblocking a customer); false when it had none.
    pub async fn reset_limit(
        &self,
        namespace: &str,
        key: &str,
        policy: impl Into<PolicyRef>,
    ) -> Result<bool, Error> {
        let r = self
            .admin()
            .reset_limit(pb::ResetLimitRequest {
                namespace: namespace.to_owned(),
                check: Some(pb::LimitCheck {
                    key: key.to_owned(),
                    cost: 1,
                    policy: Some(policy.into().into_proto()),
                }),
            })
            .await?;
        Ok(r.into_inner().existed)
    }
}
