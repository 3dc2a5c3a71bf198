//! [`Client`]: a cheap-to-clone handle on one or several floodgate servers.
use std::time::Duration;

use floodgate_proto::v1::{
    self as pb, admin_client::AdminClient, rate_limiter_client::RateLimiterClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::{
    AcquireBuilder, CheckResult, Error, PolicyRef, acquire::duration, policy::wire_duration,
};

/// A connection to a floodgate fleet. Clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// One channel; with several endpoints it spreads calls over them.
    channel: Channel,
}

fn endpoint(url: &str) -> Result<Endpoint, Error> {
    Endpoint::from_shared(url.to_owned())
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
        })
        .map_err(|e| Error::InvalidEndpoint {
            endpoint: url.to_owned(),
            message: e.to_string(),
        })
}

impl Client {
    /// Connects to one server, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(url: impl AsRef<str>) -> Result<Self, Error> {
        let channel = endpoint(url.as_ref())?.connect().await?;
        Ok(Self { channel })
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
            .map(|u| endpoint(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                message: "at least one endpoint is required".into(),
            });
        }
        Ok(Self {
            channel: Channel::balance_list(endpoints.into_iter()),
        })
    }

    /// The generated RateLimiter client on this connection, for anything the builder
    /// does not cover.
    pub fn rate_limiter(&self) -> RateLimiterClient<Channel> {
        RateLimiterClient::new(self.channel.clone())
    }

    /// The underlying channel, for generated clients of other services on the same server
    /// (Envoy's RateLimitService, health).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated Admin client on this connection.
    pub fn admin(&self) -> AdminClient<Channel> {
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
