//! Building an Acquire and reading its decision.
use std::time::Duration;

use floodgate_proto::v1 as pb;

use crate::{Client, Error, PolicyRef};

/// The shortest sleep of [`AcquireBuilder::wait_up_to`] between tries (a denial without a
/// `retry_after`, e.g. a full concurrency policy, is asked again after this).
pub const MIN_WAIT_STEP: Duration = Duration::from_millis(10);

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckResult {
    /// What this check decided (for a shadow check: what it would have decided).
    pub allowed: bool,
    /// The limit's capacity (token bucket: burst).
    pub limit: u64,
    /// Whole units left.
    pub remaining: u64,
    /// Time until the limit is fully available again.
    pub reset_after: Duration,
    /// When denied: the earliest retry that can succeed.
    pub retry_after: Duration,
    /// The lease taken by an admitted concurrency check.
    pub lease_id: Option<String>,
    /// The policy only reports, never denies.
    pub shadow: bool,
    /// The policy's name or inline fingerprint.
    pub policy: String,
}

/// What the fleet decided about one Acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Every check admitted (and was consumed); false means nothing was consumed.
    pub allowed: bool,
    /// When denied: how long to wait before retrying.
    pub retry_after: Duration,
    /// Per check, in the order they were added.
    pub checks: Vec<CheckResult>,
    /// The server decided without its store (a fail mode answered).
    pub degraded: bool,
}

impl Decision {
    /// The lease ids taken by admitted concurrency checks.
    pub fn leases(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().filter_map(|c| c.lease_id.as_deref())
    }
}

/// `now + d` on tokio's clock, or a point about 30 years out when that would overflow
/// (`Duration::MAX` from a caller or a server must not panic).
pub(crate) fn instant_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

pub(crate) fn duration(d: Option<floodgate_proto::prost_types::Duration>) -> Duration {
    d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .unwrap_or_default()
}

impl From<pb::CheckResult> for CheckResult {
    fn from(c: pb::CheckResult) -> Self {
        Self {
            allowed: c.allowed,
            limit: c.limit,
            remaining: c.remaining,
            reset_after: duration(c.reset_after),
            retry_after: duration(c.retry_after),
            lease_id: (!c.lease_id.is_empty()).then_some(c.lease_id),
            shadow: c.shadow,
            policy: c.policy,
        }
    }
}

/// Collects the checks of one Acquire; [`AcquireBuilder::send`] sends it.
#[derive(Debug, Clone)]
#[must_use = "an AcquireBuilder does nothing until .send()"]
pub struct AcquireBuilder {
    client: Client,
    request: pb::AcquireRequest,
}

impl AcquireBuilder {
    pub(crate) fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            request: pb::AcquireRequest {
                namespace: namespace.to_owned(),
                ..Default::default()
            },
        }
    }

    /// Adds a check of `key` against `policy` (inline [`crate::Policy`] or a configured
    /// name), costing 1 unless [`AcquireBuilder::cost`] follows.
    pub fn check(mut self, key: impl Into<String>, policy: impl Into<PolicyRef>) -> Self {
        self.request.checks.push(pb::LimitCheck {
            key: key.into(),
            cost: 1,
            policy: Some(policy.into().into_proto()),
        });
        self
    }

    /// Sets the cost of the check added last.
    pub fn cost(mut self, cost: u64) -> Self {
        if let Some(c) = self.request.checks.last_mut() {
            c.cost = cost;
        }
        self
    }

    /// Requires the named breaker to admit the call too.
    pub fn breaker(mut self, name: impl Into<String>) -> Self {
        self.request.breakers.push(name.into());
        self
    }

    /// Makes retries of this Acquire idempotent for 60 s.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request.request_id = id.into();
        self
    }

    /// The wire request built so far.
    pub fn into_request(self) -> pb::AcquireRequest {
        self.request
    }

    /// Sends the Acquire; while it is denied, sleeps for its `retry_after` (at least
    /// [`MIN_WAIT_STEP`]) and sends it again, until it is admitted or the next try would
    /// start after `max` from now. Never sleeps past that deadline: the last denial is
    /// returned instead. A [`request_id`](Self::request_id) gets `#2`, `#3`, ... on the
    /// later tries, so idempotency does not replay the first denial.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use floodgate_client::{Client, Policy};
    /// # async fn demo(client: Client) -> Result<(), floodgate_client::Error> {
    /// let d = client
    ///     .acquire("shop")
    ///     .check("user:42", Policy::token_bucket(5, Duration::from_secs(1)))
    ///     .wait_up_to(Duration::from_millis(500))
    ///     .await?;
    /// println!("admitted: {}", d.allowed);
    /// # Ok(()) }
    /// ```
    pub async fn wait_up_to(self, max: Duration) -> Result<Decision, Error> {
        let deadline = instant_after(max);
        let id = self.request.request_id.clone();
        let mut tries = 1u32;
        loop {
            let mut attempt = self.clone();
            if tries > 1 && !id.is_empty() {
                attempt.request.request_id = format!("{id}#{tries}");
            }
            let d = attempt.send().await?;
            if d.allowed {
                return Ok(d);
            }
            let wake = instant_after(d.retry_after.max(MIN_WAIT_STEP));
            if wake > deadline {
                return Ok(d);
            }
            tokio::time::sleep_until(wake).await;
            tries += 1;
        }
    }

    /// Sends the Acquire.
    pub async fn send(self) -> Result<Decision, Error> {
        let mut rl = self.client.rate_limiter();
        let r = rl.acquire(self.request).await?.into_inner();
        Ok(Decision {
            allowed: r.allowed,
            retry_after: duration(r.retry_after),
            checks: r.checks.into_iter().map(CheckResult::from).collect(),
            degraded: r.degraded,
        })
    }
}
