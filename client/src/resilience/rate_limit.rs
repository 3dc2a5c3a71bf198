//! The rate-limit step: each attempt spends one Acquire of `key` against a policy, waiting
//! up to `max_wait` for room ([`crate::AcquireBuilder::wait_up_to`]).
use std::{fmt, time::Duration};

use crate::{Client, Decision, Error, PolicyRef};

/// A fleet-wide rate limit for every attempt.
///
/// ```no_run
/// use std::time::Duration;
/// use floodgate_client::{Client, Policy, resilience::RateLimit};
/// # fn demo(client: Client) {
/// let rl = RateLimit::new(&client, "shop", "payments", Policy::token_bucket(100, Duration::from_secs(1)))
///     .max_wait(Duration::from_millis(250));
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimit {
    client: Client,
    namespace: String,
    key: String,
    policy: PolicyRef,
    cost: u64,
    pub(crate) max_wait: Duration,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("namespace", &self.namespace)
            .field("key", &self.key)
            .field("policy", &self.policy)
            .field("cost", &self.cost)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl RateLimit {
    /// Each attempt costs 1 of `key` against `policy`; no waiting by default.
    pub fn new(client: &Client, namespace: &str, key: &str, policy: impl Into<PolicyRef>) -> Self {
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            policy: policy.into(),
            cost: 1,
            max_wait: Duration::ZERO,
        }
    }

    /// The cost of one attempt.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// How long an attempt may wait for room before it is denied.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Asks (and waits up to `max_wait`).
    pub(crate) async fn admit(&self) -> Result<Decision, Error> {
        self.client
            .acquire(&self.namespace)
            .check(self.key.clone(), self.policy.clone())
            .cost(self.cost)
            .wait_up_to(self.max_wait)
            .await
    }
}
