//! Shared circuit breakers from an application. Owns the [`Breaker`] handle and its
//! [`CallError`]; [`Breaker::call`] checks admission, runs the call, measures and
//! classifies it, and reports the outcome.
//!
//! ```no_run
//! # async fn demo(client: floodgate_client::Client) {
//! let payments = client.breaker("shop", "payments");
//! let answer: Result<u32, floodgate_client::CallError<std::io::Error>> =
//!     payments.call(async { Ok(42) }).await;
//! # }
//! ```
//!
//! A call goes through these steps:
//! 1. **Admission.** With a fresh [`cache`] entry, CLOSED (DISABLED, METRICS_ONLY) admits
//!    with no round trip and OPEN or FORCED_OPEN refuses locally; otherwise the handle asks
//!    with `RateLimiter.Acquire { breakers: [name] }`, within [`DEFAULT_ADMISSION_TIMEOUT`].
//!    A refusal is [`CallError::Open`] and the future is never polled; a server that cannot
//!    be asked is [`CallError::Floodgate`] (the caller decides whether to call anyway).
//! 2. **The call**, timed with `tokio::time::Instant`.
//! 3. **Classification** by the caller's predicate ([`Outcome`]; by default `Err` is a
//!    failure) and **reporting** through the client's [`reporter`] batcher, with the
//!    generation the call was admitted in.
//!
//! Trial permits: a call admitted in HALF_OPEN holds one of the fleet's few permits. Its
//! outcome is reported, or, if it is classified [`Outcome::Ignore`], or its future is
//! dropped while the call runs (cancelled, timed out, panicked), the permit is handed back
//! (`released`) by a guard whose `Drop` records it without waiting. An Acquire abandoned in
//! flight (the caller's future dropped, or the admission timeout) is finished in the
//! background, and a permit it won is handed back too.
//!
//! - [`cache`]: the `Watch`-fed breaker states.
//! - [`reporter`]: the batcher that sends outcomes in a few `Report` calls a second.
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use floodgate_proto::v1 as pb;
use tokio::time::Instant;

use crate::{Client, Error, acquire::duration};

pub mod cache;
pub mod reporter;

pub use cache::{BreakerCache, CachedState};
pub use reporter::{BatchKey, Reporter};

/// How long admission may wait for the server before the call fails with
/// [`CallError::Floodgate`].
pub const DEFAULT_ADMISSION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an abandoned Acquire is still awaited in the background, to hand back a trial
/// permit it may win.
const ABANDONED_ACQUIRE_WAIT: Duration = Duration::from_secs(10);

/// How a finished call counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The dependency worked.
    Success,
    /// The dependency failed.
    Failure,
    /// Neither (e.g. the caller's own bad input): not reported; a trial permit goes back.
    Ignore,
}

/// A breaker's state as the client sees it (the wire enum without UNSPECIFIED).
pub type BreakerState = pb::BreakerState;

/// Why [`Breaker::call`] did not return the call's own value.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The breaker refused: the call was not made.
    Open {
        /// The breaker.
        breaker: String,
        /// Its state (OPEN, FORCED_OPEN, or HALF_OPEN with every trial permit taken).
        state: BreakerState,
        /// When asking again can succeed.
        retry_after: Duration,
    },
    /// The call was made and returned this error.
    Inner(E),
    /// floodgate could not be asked.
    Floodgate(Error),
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Open {
                breaker,
                state,
                retry_after,
            } => write!(
                f,
                "breaker {breaker:?} is {} : retry in {retry_after:?}",
                state.as_str_name()
            ),
            CallError::Inner(e) => write!(f, "{e}"),
            CallError::Floodgate(e) => write!(f, "floodgate: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Inner(e) => Some(e),
            CallError::Floodgate(e) => Some(e),
            CallError::Open { .. } => None,
        }
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
fn by_result<T, E>(r: &Result<T, E>) -> Outcome {
    if r.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

/// A handle on one shared breaker; cheap to clone (clones share the cache entry).
#[derive(Clone)]
pub struct Breaker {
    client: Client,
    namespace: Arc<str>,
    name: Arc<str>,
    /// Whether admission may use the Watch cache.
    use_cache: bool,
    admission_timeout: Duration,
    /// This breaker's cache entry, taken on first use.
    slot: Arc<OnceLock<cache::Slot>>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("use_cache", &self.use_cache)
            .field("admission_timeout", &self.admission_timeout)
            .finish()
    }
}

/// What admission decided.
#[derive(Debug)]
struct Admitted {
    generation: u64,
    /// A half-open trial permit is held and must be reported or handed back.
    permit: bool,
    /// The outcome counts (DISABLED records nothing, so it is not sent).
    record: bool,
}

impl Admitted {
    fn new(state: pb::BreakerState, generation: u64) -> Self {
        Self {
            generation,
            permit: state == pb::BreakerState::HalfOpen,
            record: state != pb::BreakerState::Disabled,
        }
    }
}

/// Hands a held trial permit back if the call never reports (cancelled or panicked).
struct PermitGuard<'a> {
    reporter: &'a Reporter,
    key: BatchKey,
    armed: bool,
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.reporter.release(self.key.clone());
        }
    }
}

type AcquireFuture = Pin<
    Box<dyn Future<Output = Result<tonic::Response<pb::AcquireResponse>, tonic::Status>> + Send>,
>;

/// An Acquire in flight. Dropped before its answer, it finishes in the background and
/// hands back any trial permit it won, so an abandoned ask cannot hold one until it
/// expires.
struct Asking {
    acquire: Option<AcquireFuture>,
    reporter: Reporter,
    namespace: Arc<str>,
}

impl Future for Asking {
    type Output = Result<tonic::Response<pb::AcquireResponse>, tonic::Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(acquire) = self.acquire.as_mut() else {
            return Poll::Ready(Err(tonic::Status::internal("polled after completion")));
        };
        let answer = std::task::ready!(acquire.as_mut().poll(cx));
        self.acquire = None;
        Poll::Ready(answer)
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        let Some(acquire) = self.acquire.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (reporter, namespace) = (self.reporter.clone(), self.namespace.to_string());
        rt.spawn(async move {
            let Ok(Ok(answer)) = tokio::time::timeout(ABANDONED_ACQUIRE_WAIT, acquire).await else {
                return;
            };
            let answer = answer.into_inner();
            for d in answer.breakers {
                if answer.allowed && d.allowed && d.state == pb::BreakerState::HalfOpen as i32 {
                    reporter.release(BatchKey {
                        namespace: namespace.clone(),
                        breaker: d.breaker,
                        generation: d.generation,
                    });
                }
            }
        });
    }
}

impl Breaker {
    pub(crate) fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: name.into(),
            use_cache: true,
            admission_timeout: DEFAULT_ADMISSION_TIMEOUT,
            slot: Arc::default(),
        }
    }

    /// Always ask the server before each call (no Watch cache): one round trip per call.
    pub fn without_cache(mut self) -> Self {
        self.use_cache = false;
        self
    }

    /// How long admission may wait for the server (default
    /// [`DEFAULT_ADMISSION_TIMEOUT`]).
    pub fn admission_timeout(mut self, timeout: Duration) -> Self {
        self.admission_timeout = timeout;
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Runs `call` if the breaker admits it; `Err` outcomes count as failures.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_classified(call, by_result).await
    }

    /// Runs `call` if the breaker admits it, classifying its result with `classify`
    /// (e.g. a 404 is a success for the dependency, a 503 a failure, a caller's own bad
    /// input [`Outcome::Ignore`]).
    pub async fn call_classified<T, E, F, C>(&self, call: F, classify: C) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Outcome,
    {
        let admitted = self.admit().await?;
        let reporter = self.client.reporter();
        let key = BatchKey {
            namespace: self.namespace.to_string(),
            breaker: self.name.to_string(),
            generation: admitted.generation,
        };
        let mut guard = PermitGuard {
            reporter,
            key,
            armed: admitted.permit,
        };
        let started = Instant::now();
        let result = call.await;
        let took = started.elapsed();
        guard.armed = false;
        let key = guard.key.clone();
        match classify(&result) {
            Outcome::Ignore if admitted.permit => reporter.release(key),
            Outcome::Ignore => {}
            _ if !admitted.record => {}
            outcome => reporter.record(key, outcome == Outcome::Success, took),
        }
        result.map_err(CallError::Inner)
    }

    /// Decides locally with a fresh cache, else asks the server.
    async fn admit<E>(&self) -> Result<Admitted, CallError<E>> {
        if self.use_cache {
            let slot = self.slot.get_or_init(|| {
                self.client
                    .breaker_cache()
                    .slot(&self.namespace, &self.name)
            });
            match slot.decide(Instant::now()) {
                CachedState::Admit { state, generation } => {
                    return Ok(Admitted::new(state, generation));
                }
                CachedState::Refuse { state, retry_after } => {
                    return Err(self.open(state, retry_after));
                }
                CachedState::Ask => {}
            }
        }
        self.ask().await
    }

    fn open<E>(&self, state: pb::BreakerState, retry_after: Duration) -> CallError<E> {
        CallError::Open {
            breaker: self.name.to_string(),
            state,
            retry_after,
        }
    }

    async fn ask<E>(&self) -> Result<Admitted, CallError<E>> {
        let mut rl = self.client.rate_limiter();
        let request = pb::AcquireRequest {
            namespace: self.namespace.to_string(),
            breakers: vec![self.name.to_string()],
            ..Default::default()
        };
        let asking = Asking {
            acquire: Some(Box::pin(async move { rl.acquire(request).await })),
            reporter: self.client.reporter().clone(),
            namespace: self.namespace.clone(),
        };
        let response = match tokio::time::timeout(self.admission_timeout, asking).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => return Err(CallError::Floodgate(Error::from(status))),
            Err(_) => {
                return Err(CallError::Floodgate(Error::Status(
                    tonic::Status::deadline_exceeded(format!(
                        "no admission answer for breaker {:?} within {:?}",
                        self.name, self.admission_timeout
                    )),
                )));
            }
        };
        let Some(d) = response.breakers.first() else {
            return Err(CallError::Floodgate(Error::Status(
                tonic::Status::internal("the server answered without a breaker decision"),
            )));
        };
        let state = pb::BreakerState::try_from(d.state).unwrap_or(pb::BreakerState::Unspecified);
        if !d.allowed {
            return Err(self.open(state, duration(d.retry_after)));
        }
        Ok(Admitted::new(state, d.generation))
    }
}
