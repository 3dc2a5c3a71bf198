//! [`ResilienceBuilder`]: collects the patterns of one policy and refuses contradictions
//! with a typed [`BuildError`].
use std::{fmt, sync::Arc, time::Duration};

use super::{
    BuildError, Bulkhead, Fallback, FleetBulkhead, Listener, RateLimit, Resilience, Retry, Timeout,
    events::Events,
    policy::{BreakerStep, ErrorClass, Parts},
};
use crate::{Breaker, DeadLetterQueue, Outcome};

/// Builds a [`Resilience`] policy; see the [module docs](super) for the order the
/// patterns run in.
///
/// ```
/// use std::time::Duration;
/// use floodgate_client::resilience::{Bulkhead, Resilience, Retry, Timeout};
/// let policy = Resilience::<u32, std::io::Error>::builder()
///     .name("inventory")
///     .retry(Retry::new().max_attempts(3))
///     .timeout(Timeout::new().attempt(Duration::from_millis(300)).overall(Duration::from_secs(1)))
///     .bulkhead(Bulkhead::new(16))
///     .build()
///     .expect("a consistent policy");
/// ```
pub struct ResilienceBuilder<T, E> {
    parts: Parts<T, E>,
}

impl<T, E> fmt::Debug for ResilienceBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceBuilder")
            .field("parts", &self.parts)
            .finish()
    }
}

impl<T, E> Default for ResilienceBuilder<T, E> {
    fn default() -> Self {
        Self {
            parts: Parts {
                name: "default".into(),
                rate_limit: None,
                breaker: None,
                bulkhead: None,
                fleet_bulkhead: None,
                retry: None,
                timeout: Timeout::new(),
                fallback: None,
                dead_letter: None,
                error_class: None,
                events: Events::default(),
            },
        }
    }
}

fn invalid(field: &'static str, rule: &'static str) -> BuildError {
    BuildError::Invalid { field, rule }
}

impl<T, E> ResilienceBuilder<T, E> {
    /// The policy's name, in events, metrics and spans (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.parts.name = name.into().into();
        self
    }

    /// Every attempt spends this fleet-wide rate limit first.
    pub fn rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.parts.rate_limit = Some(rate_limit);
        self
    }

    /// Every attempt passes this shared breaker; `Err` and timed-out attempts count as
    /// failures, rejections by a bulkhead are not counted.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.parts.breaker = Some(BreakerStep {
            breaker,
            classify: None,
        });
        self
    }

    /// As [`breaker`](Self::breaker), with the caller deciding what the dependency's
    /// answers count as (a timed-out attempt is always a failure).
    pub fn breaker_classified(
        mut self,
        breaker: Breaker,
        classify: impl Fn(Result<&T, &E>) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        self.parts.breaker = Some(BreakerStep {
            breaker,
            classify: Some(Arc::new(classify)),
        });
        self
    }

    /// The local bulkhead.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.parts.bulkhead = Some(bulkhead);
        self
    }

    /// The fleet-wide bulkhead (a concurrency lease per attempt).
    pub fn fleet_bulkhead(mut self, bulkhead: FleetBulkhead) -> Self {
        self.parts.fleet_bulkhead = Some(bulkhead);
        self
    }

    /// Retries (none by default: one attempt, its error returned as is).
    pub fn retry(mut self, retry: Retry<T, E>) -> Self {
        self.parts.retry = Some(retry);
        self
    }

    /// Timeouts (none by default).
    pub fn timeout(mut self, timeout: Timeout) -> Self {
        self.parts.timeout = timeout;
        self
    }

    /// The fallback (none by default).
    pub fn fallback(mut self, fallback: Fallback<T, E>) -> Self {
        self.parts.fallback = Some(fallback);
        self
    }

    /// A permanent failure, or retries that end without success, publish the call's input
    /// ([`Resilience::call_with_input`]) to this queue with the reason, error class,
    /// attempts and trace id.
    pub fn dead_letter(mut self, queue: DeadLetterQueue) -> Self {
        self.parts.dead_letter = Some(queue);
        self
    }

    /// The dead letter's error class for an error of the call (default: the kind,
    /// e.g. `inner`, `timeout`).
    pub fn error_class(mut self, f: impl Fn(&E) -> String + Send + Sync + 'static) -> Self {
        let f: ErrorClass<E> = Arc::new(f);
        self.parts.error_class = Some(f);
        self
    }

    /// Adds an event listener.
    pub fn listener(mut self, listener: impl Listener + 'static) -> Self {
        self.parts.events.listeners.push(Arc::new(listener));
        self
    }

    /// Checks the options and builds the policy.
    pub fn build(self) -> Result<Resilience<T, E>, BuildError> {
        let p = &self.parts;
        if p.name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let (attempt, overall) = (p.timeout.attempt_timeout(), p.timeout.overall_timeout());
        if attempt.is_some_and(|d| d.is_zero()) || overall.is_some_and(|d| d.is_zero()) {
            return Err(invalid("timeout", "must be longer than zero"));
        }
        if let (Some(attempt), Some(overall)) = (attempt, overall)
            && attempt > overall
        {
            return Err(BuildError::AttemptTimeoutExceedsOverall { attempt, overall });
        }
        if let Some(r) = &p.retry {
            if r.max_attempts == 0 {
                return Err(invalid("max_attempts", "must be at least 1"));
            }
            let b = &r.backoff;
            if !(b.multiplier >= 1.0 && b.multiplier.is_finite()) {
                return Err(invalid(
                    "backoff.multiplier",
                    "must be a finite number >= 1",
                ));
            }
            if b.base > b.max_delay {
                return Err(invalid("backoff.base", "must not exceed max_delay"));
            }
            if !(0.0..=1.0).contains(&r.budget.ratio) {
                return Err(invalid("budget.ratio", "must be between 0 and 1"));
            }
            if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&r.budget.window) {
                return Err(invalid("budget.window", "must be 1 to 60 seconds"));
            }
            if let (Some(deadline), Some(overall)) = (r.deadline, overall)
                && deadline > overall
            {
                return Err(BuildError::RetryDeadlineExceedsOverall { deadline, overall });
            }
        }
        if p.bulkhead.as_ref().is_some_and(|b| b.max_concurrent == 0) {
            return Err(invalid("bulkhead.max_concurrent", "must be at least 1"));
        }
        if p.fleet_bulkhead
            .as_ref()
            .is_some_and(|b| b.renew_every.is_zero())
        {
            return Err(invalid(
                "fleet_bulkhead.renew_every",
                "must be longer than zero",
            ));
        }
        if p.fleet_bulkhead
            .as_ref()
            .is_some_and(|b| b.lease_ttl().is_some_and(|ttl| b.renew_every >= ttl))
        {
            // The lease would expire between renewals and the call run outside the limit.
            return Err(invalid(
                "fleet_bulkhead.renew_every",
                "must be shorter than the policy's lease_ttl",
            ));
        }
        Ok(Resilience {
            parts: Arc::new(self.parts),
        })
    }
}
