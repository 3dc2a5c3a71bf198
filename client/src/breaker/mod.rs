//! Shared circuit breakers from an application: [`Breaker::call`] checks admission, runs
//! the call, measures and classifies it, and reports the outcome.
//!
//! - [`cache`]: a `Watch`-fed cache of breaker states, so a CLOSED breaker costs no round
//!   trip and an OPEN one refuses locally until its `retry_after`.
//! - [`reporter`]: the batcher that sends outcomes in a few `Report` calls a second.
//!
//! ```no_run
//! # async fn demo(client: floodgate_client::Client) {
//! let payments = client.breaker("shop", "payments");
//! let answer: Result<u32, floodgate_client::CallError<std::io::Error>> =
//!     payments.call(async { Ok(42) }).await;
//! # }
//! ```
use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use floodgate_proto::v1 as pb;

use crate::{Client, Error, acquire::duration};

pub mod cache;
pub mod reporter;

pub use cache::{BreakerCache, CachedState};
pub use reporter::{BatchKey, Reporter};

/// How a finished call counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A handle on one shared breaker; cheap to clone.
#[derive(Clone)]
pub struct Breaker {
    client: Client,
    namespace: Arc<str>,
    name: Arc<str>,
    /// Whether admission may use the Watch cache.
    use_cache: bool,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

/// What admission decided.
struct Admitted {
    generation: u64,
    /// A half-open trial permit is held and must be reported or handed back.
    permit: bool,
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

impl Breaker {
    pub(crate) fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: name.into(),
            use_cache: true,
        }
    }

    /// Always ask the server before each call (no Watch cache): one round trip per call.
    pub fn without_cache(mut self) -> Self {
        self.use_cache = false;
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `call` if the breaker admits it; `Err` outcomes count as failures.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_classified(call, by_result).await
    }

    /// Runs `call` if the breaker admits it, classifying its result with `classify`
    /// (e.g. a 404 is a success for the dependency, a 503 a failure).
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
            key: key.clone(),
            armed: admitted.permit,
        };
        let started = Instant::now();
        let result = call.await;
        let took = started.elapsed();
        guard.armed = false;
        match classify(&result) {
            Outcome::Ignore if admitted.permit => reporter.release(key),
            Outcome::Ignore => {}
            outcome => reporter.record(key, outcome == Outcome::Success, took),
        }
        result.map_err(CallError::Inner)
    }

    /// Asks (or, with a fresh cache, decides locally) whether a call may go ahead.
    async fn admit<E>(&self) -> Result<Admitted, CallError<E>> {
        if self.use_cache {
            let cache = self.client.breaker_cache();
            match cache.lookup(&self.namespace, &self.name, Instant::now()) {
                Some(CachedState::Admit { generation }) => {
                    return Ok(Admitted {
                        generation,
                        permit: false,
                    });
                }
                Some(CachedState::Refuse { state, retry_after }) => {
                    return Err(CallError::Open {
                        breaker: self.name.to_string(),
                        state,
                        retry_after,
                    });
                }
                Some(CachedState::Ask) | None => {}
            }
        }
        let response = self
            .client
            .rate_limiter()
            .acquire(pb::AcquireRequest {
                namespace: self.namespace.to_string(),
                breakers: vec![self.name.to_string()],
                ..Default::default()
            })
            .await
            .map_err(|s| CallError::Floodgate(Error::from(s)))?
            .into_inner();
        let Some(d) = response.breakers.first() else {
            return Err(CallError::Floodgate(Error::Status(
                tonic::Status::internal("the server answered without a breaker decision"),
            )));
        };
        let state = pb::BreakerState::try_from(d.state).unwrap_or(pb::BreakerState::Unspecified);
        if !d.allowed {
            return Err(CallError::Open {
                breaker: self.name.to_string(),
                state,
                retry_after: duration(d.retry_after),
            });
        }
        Ok(Admitted {
            generation: d.generation,
            permit: state == pb::BreakerState::HalfOpen,
        })
    }
}
