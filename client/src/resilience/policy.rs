//! [`Resilience`]: one composed policy and its call pipeline, outermost first: fallback →
//! overall timeout → retry (with its budget) → per attempt: rate limit → breaker →
//! bulkhead → attempt timeout → the call; a dead letter when the retries end without
//! success.
use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tracing::Instrument;

use super::{
    Bulkhead, BulkheadScope, Event, Fallback, FleetBulkhead, RateLimit, ResilienceBuilder,
    ResilienceError, Retry, RetryStop, Timeout, TimeoutScope, events::Events,
    fleet_bulkhead::Refused,
};
use crate::{Breaker, CallError, DeadLetterQueue, Outcome, dead_letters::Message};

pub(crate) type ErrorClass<E> = Arc<dyn Fn(&E) -> String + Send + Sync>;
type Classify<T, E> = Arc<dyn Fn(Result<&T, &E>) -> Outcome + Send + Sync>;

/// The breaker step: the handle and the caller's classification.
pub(crate) struct BreakerStep<T, E> {
    pub(crate) breaker: Breaker,
    pub(crate) classify: Option<Classify<T, E>>,
}

/// Everything a policy holds.
pub(crate) struct Parts<T, E> {
    pub(crate) name: Arc<str>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) breaker: Option<BreakerStep<T, E>>,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) fleet_bulkhead: Option<FleetBulkhead>,
    pub(crate) retry: Option<Retry<T, E>>,
    pub(crate) timeout: Timeout,
    pub(crate) fallback: Option<Fallback<T, E>>,
    pub(crate) dead_letter: Option<DeadLetterQueue>,
    pub(crate) error_class: Option<ErrorClass<E>>,
    pub(crate) events: Events,
}

impl<T, E> fmt::Debug for Parts<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("name", &self.name)
            .field("rate_limit", &self.rate_limit)
            .field("breaker", &self.breaker.as_ref().map(|b| &b.breaker))
            .field("bulkhead", &self.bulkhead)
            .field("fleet_bulkhead", &self.fleet_bulkhead)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("fallback", &self.fallback)
            .field("dead_letter", &self.dead_letter.as_ref().map(|q| q.queue()))
            .field("listeners", &self.events.listeners.len())
            .finish()
    }
}

/// A call's input as the dead-letter queue stores it, with an optional trace id (a
/// random one is made when none is given).
///
/// ```
/// use floodgate_client::resilience::Input;
/// let input = Input::from(r#"{"order":42}"#).trace_id("4bf92f3577b34da6");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Input {
    payload: Vec<u8>,
    trace_id: Option<String>,
}

impl Input {
    /// An input of `payload`.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            trace_id: None,
        }
    }

    /// The trace id to store with a dead letter and put on the call's span.
    pub fn trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }
}

impl From<Vec<u8>> for Input {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}
impl From<&[u8]> for Input {
    fn from(v: &[u8]) -> Self {
        Self::new(v)
    }
}
impl From<&str> for Input {
    fn from(v: &str) -> Self {
        Self::new(v.as_bytes())
    }
}
impl From<String> for Input {
    fn from(v: String) -> Self {
        Self::new(v.into_bytes())
    }
}

/// One composed policy; cheap to clone (clones share the bulkhead, the budget and the
/// shared handles).
///
/// ```no_run
/// use std::time::Duration;
/// use floodgate_client::{Client, Policy, resilience::*};
/// # async fn demo(client: Client) -> Result<(), Box<dyn std::error::Error>> {
/// let policy = Resilience::<String, std::io::Error>::builder()
///     .name("payments")
///     .rate_limit(RateLimit::new(&client, "shop", "payments", Policy::token_bucket(100, Duration::from_secs(1))))
///     .breaker(client.breaker("shop", "payments"))
///     .retry(Retry::new().max_attempts(3))
///     .timeout(Timeout::new().attempt(Duration::from_millis(500)).overall(Duration::from_secs(2)))
///     .dead_letter(client.dead_letters("shop", "payments"))
///     .fallback(Fallback::value("queued".to_owned()))
///     .build()?;
/// let receipt = policy.call_with_input(r#"{"order":42}"#, || async { Ok("paid".to_owned()) }).await?;
/// # Ok(()) }
/// ```
pub struct Resilience<T, E> {
    pub(crate) parts: Arc<Parts<T, E>>,
}

impl<T, E> Clone for Resilience<T, E> {
    fn clone(&self) -> Self {
        Self {
            parts: self.parts.clone(),
        }
    }
}

impl<T, E> fmt::Debug for Resilience<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts.fmt(f)
    }
}

/// How one attempt ended, as the retry sees it.
enum Verdict<T, E> {
    Done(Result<T, ResilienceError<E>>),
    /// Transient: may be retried after at least `min_wait`.
    Again {
        last: Result<T, ResilienceError<E>>,
        min_wait: Duration,
    },
}

impl<T, E> Resilience<T, E> {
    /// A builder with nothing configured.
    pub fn builder() -> ResilienceBuilder<T, E> {
        ResilienceBuilder::default()
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    fn emit(&self, e: Event) {
        self.parts.events.emit(&self.parts.name, e);
    }
}

impl<T, E> Resilience<T, E>
where
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    /// Runs `f` (called once per attempt) under the policy. A dead letter, when one is
    /// configured, carries an empty payload; see [`call_with_input`](Self::call_with_input).
    pub async fn call<F, Fut>(&self, f: F) -> Result<T, ResilienceError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with_input(Input::default(), f).await
    }

    /// Runs `f` under the policy; a dead letter stores `input`.
    pub async fn call_with_input<F, Fut>(
        &self,
        input: impl Into<Input>,
        mut f: F,
    ) -> Result<T, ResilienceError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let input = input.into();
        let trace_id = input
            .trace_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let span =
            tracing::info_span!("resilience", policy = %self.parts.name, trace_id = %trace_id);
        async {
            let attempts = AtomicU32::new(0);
            let overall_deadline = self
                .parts
                .timeout
                .overall_timeout()
                .and_then(|d| Instant::now().checked_add(d));
            let retrying = self.retrying(&mut f, &attempts, overall_deadline);
            let result = match self.parts.timeout.overall_timeout() {
                None => retrying.await,
                Some(d) => match tokio::time::timeout(d, retrying).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.emit(Event::Timeout { attempt: None });
                        Err(ResilienceError::Timeout {
                            scope: TimeoutScope::Overall,
                            after: d,
                        })
                    }
                },
            };
            let attempts = attempts.load(Ordering::Relaxed);
            let letter = match &result {
                Err(e) => self.dead_letter(e, attempts, input, &trace_id),
                Ok(_) => None,
            };
            if let Some((queue, message, reason)) = letter {
                match queue.publish(message).await {
                    Ok(_) => self.emit(Event::DeadLettered { attempts, reason }),
                    Err(err) => {
                        tracing::warn!(error = %err, "dead letter not published");
                        self.emit(Event::DeadLetterFailed);
                    }
                }
            }
            self.fall_back(result).await
        }
        .instrument(span)
        .await
    }

    async fn fall_back(
        &self,
        result: Result<T, ResilienceError<E>>,
    ) -> Result<T, ResilienceError<E>> {
        let (Err(e), Some(fb)) = (&result, &self.parts.fallback) else {
            return result;
        };
        let Some(reason) = e.fallback_reason() else {
            return result;
        };
        self.emit(Event::Fallback { reason });
        (fb.run)(reason)
            .await
            .map_err(ResilienceError::FallbackFailed)
    }

    /// The dead letter a failed call publishes, if any (built before the publish is
    /// awaited, so the error need not be `Sync`).
    fn dead_letter(
        &self,
        e: &ResilienceError<E>,
        attempts: u32,
        input: Input,
        trace_id: &str,
    ) -> Option<(DeadLetterQueue, Message, &'static str)> {
        let queue = self.parts.dead_letter.as_ref()?;
        let reason = match e {
            ResilienceError::Inner(_) => "permanent_failure",
            ResilienceError::RetriesExhausted { .. } => "retries_exhausted",
            ResilienceError::Timeout {
                scope: TimeoutScope::Overall,
                ..
            } => "deadline_exceeded",
            _ => return None,
        };
        let class = match (e.inner(), &self.parts.error_class) {
            (Some(inner), Some(f)) => f(inner),
            _ => match e {
                ResilienceError::RetriesExhausted { last, .. } => last.kind().to_owned(),
                _ => e.kind().to_owned(),
            },
        };
        let message = Message::new(input.payload)
            .reason(reason)
            .error_class(class)
            .attempts(attempts)
            .trace_id(trace_id)
            .source(self.parts.name.to_string())
            .meta("error", e.to_string());
        Some((queue.clone(), message, reason))
    }

    /// The retry loop.
    async fn retrying<F, Fut>(
        &self,
        f: &mut F,
        attempts: &AtomicU32,
        overall_deadline: Option<Instant>,
    ) -> Result<T, ResilienceError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let retry = self.parts.retry.as_ref();
        let started = Instant::now();
        // A deadline too far to represent is no deadline (never a panic). No attempt starts
        // after the overall deadline either: rather than sleep until the overall timeout
        // cuts a wait that cannot end in an attempt, the retries stop at once with the last
        // failure (and its `retry_after`).
        let deadline = retry
            .and_then(|r| r.deadline)
            .and_then(|d| started.checked_add(d))
            .into_iter()
            .chain(overall_deadline)
            .min();
        let max_attempts = retry.map_or(1, |r| r.max_attempts);
        if let Some(r) = retry {
            r.budget.deposit();
        }
        let mut previous = Duration::ZERO;
        let mut n = 0u32;
        loop {
            n += 1;
            attempts.store(n, Ordering::Relaxed);
            self.emit(Event::Attempt { attempt: n });
            let result = self
                .attempt(f, overall_deadline)
                .instrument(tracing::info_span!("attempt", attempt = n))
                .await;
            let (last, min_wait) = match self.verdict(result, n) {
                Verdict::Done(r) => return r,
                Verdict::Again { last, min_wait } => (last, min_wait),
            };
            let Some(retry) = retry else { return last };
            let delay = retry.backoff.delay(n, previous).max(min_wait);
            let stop = if n >= max_attempts {
                Some(RetryStop::MaxAttempts)
            } else if deadline
                .is_some_and(|d| Instant::now().checked_add(delay).is_none_or(|at| at > d))
            {
                Some(RetryStop::Deadline)
            } else if !retry.budget.try_withdraw().await {
                self.emit(Event::Rejected {
                    by: "retry_budget",
                    retry_after: Duration::ZERO,
                });
                Some(RetryStop::Budget)
            } else {
                None
            };
            if let Some(stop) = stop {
                return match last {
                    Ok(v) => Ok(v),
                    Err(e) => Err(ResilienceError::RetriesExhausted {
                        attempts: n,
                        stop,
                        last: Box::new(e),
                    }),
                };
            }
            self.emit(Event::Retry {
                attempt: n + 1,
                delay,
            });
            tokio::time::sleep(delay).await;
            previous = delay;
        }
    }

    /// Decides whether an attempt's result ends the call.
    fn verdict(&self, result: Result<T, ResilienceError<E>>, n: u32) -> Verdict<T, E> {
        let retry = self.parts.retry.as_ref();
        match result {
            Ok(v) => {
                if retry
                    .and_then(|r| r.retry_on_result.as_ref())
                    .is_some_and(|p| p(&v))
                {
                    self.emit(Event::Failure {
                        attempt: n,
                        kind: "result",
                        transient: true,
                    });
                    return Verdict::Again {
                        last: Ok(v),
                        min_wait: Duration::ZERO,
                    };
                }
                self.emit(Event::Success { attempts: n });
                Verdict::Done(Ok(v))
            }
            Err(e) => {
                if let Some(ev) = Event::rejected(&e) {
                    self.emit(ev);
                }
                if let ResilienceError::Timeout { scope, .. } = &e {
                    let attempt = (*scope == TimeoutScope::Attempt).then_some(n);
                    self.emit(Event::Timeout { attempt });
                }
                let transient = match (&e, retry) {
                    (_, None) => false,
                    (ResilienceError::Inner(inner), Some(r)) => (r.retry_if)(inner),
                    (other, Some(_)) => other.is_transient(),
                };
                self.emit(Event::Failure {
                    attempt: n,
                    kind: e.kind(),
                    transient,
                });
                if !transient {
                    return Verdict::Done(Err(e));
                }
                let hint = match (&e, retry.and_then(|r| r.hint.as_ref())) {
                    (ResilienceError::Inner(inner), Some(h)) => h(inner),
                    _ => None,
                };
                let min_wait = e.retry_after().or(hint).unwrap_or_default();
                Verdict::Again {
                    last: Err(e),
                    min_wait,
                }
            }
        }
    }

    /// One attempt: rate limit → breaker → bulkheads → attempt timeout → the call.
    async fn attempt<F, Fut>(
        &self,
        f: &mut F,
        overall_deadline: Option<Instant>,
    ) -> Result<T, ResilienceError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(rl) = &self.parts.rate_limit {
            match rl.admit().await {
                Ok(d) if d.allowed => {}
                Ok(d) => {
                    return Err(ResilienceError::RateLimited {
                        retry_after: d.retry_after,
                    });
                }
                Err(e) => return Err(ResilienceError::Floodgate(e)),
            }
        }
        let guarded = self.guarded(f, overall_deadline);
        let Some(step) = &self.parts.breaker else {
            return guarded.await;
        };
        let classify = |r: &Result<T, ResilienceError<E>>| match (r, &step.classify) {
            (Ok(v), Some(c)) => c(Ok(v)),
            (Ok(_), None) => Outcome::Success,
            (Err(ResilienceError::Inner(e)), Some(c)) => c(Err(e)),
            (Err(ResilienceError::Inner(_)), None) => Outcome::Failure,
            (Err(ResilienceError::Timeout { .. }), _) => Outcome::Failure,
            (Err(_), _) => Outcome::Ignore,
        };
        match step.breaker.call_classified(guarded, classify).await {
            Ok(v) => Ok(v),
            Err(CallError::Inner(e)) => Err(e),
            Err(CallError::Open {
                breaker,
                retry_after,
                ..
            }) => Err(ResilienceError::BreakerOpen {
                breaker,
                retry_after,
            }),
            Err(CallError::Floodgate(e)) => Err(ResilienceError::Floodgate(e)),
        }
    }

    /// Bulkheads, then the attempt timeout, around the call. `f` is called only here, so
    /// an attempt refused by the rate limit, the breaker or a bulkhead never calls it.
    ///
    /// The call also ends at the overall deadline (as `Timeout { scope: Overall }`), so an
    /// attempt the overall timeout cuts is a timed-out failure for the breaker rather than a
    /// cancelled call it never hears of (a hung dependency behind an overall timeout alone
    /// would otherwise never open it).
    async fn guarded<F, Fut>(
        &self,
        f: &mut F,
        overall_deadline: Option<Instant>,
    ) -> Result<T, ResilienceError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _place = match &self.parts.bulkhead {
            Some(b) => Some(b.enter().await.ok_or(ResilienceError::BulkheadFull {
                scope: BulkheadScope::Local,
                retry_after: Duration::ZERO,
            })?),
            None => None,
        };
        let _lease = match &self.parts.fleet_bulkhead {
            Some(b) => match b.enter().await {
                Ok(lease) => Some(lease),
                Err(Refused::Full(retry_after)) => {
                    return Err(ResilienceError::BulkheadFull {
                        scope: BulkheadScope::Fleet,
                        retry_after,
                    });
                }
                Err(Refused::Floodgate(e)) => return Err(ResilienceError::Floodgate(e)),
            },
            None => None,
        };
        let call = f();
        let attempt = self.parts.timeout.attempt_timeout();
        let overall = self.parts.timeout.overall_timeout();
        let left = overall_deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let (limit, scope, after) = match (attempt, left, overall) {
            (Some(a), Some(left), Some(o)) if left < a => (left, TimeoutScope::Overall, o),
            (Some(a), _, _) => (a, TimeoutScope::Attempt, a),
            (None, Some(left), Some(o)) => (left, TimeoutScope::Overall, o),
            _ => return call.await.map_err(ResilienceError::Inner),
        };
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r.map_err(ResilienceError::Inner),
            Err(_) => Err(ResilienceError::Timeout { scope, after }),
        }
    }
}
