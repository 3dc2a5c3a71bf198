//! What a [`Resilience`](super::Resilience) call returns when it does not return the
//! call's value: [`ResilienceError`], the kinds a fallback is told about
//! ([`FallbackReason`]), and the builder's [`BuildError`].
use std::{fmt, time::Duration};

use crate::Error;

/// Which bulkhead refused a call.
///
/// ```
/// use floodgate_client::resilience::{BulkheadScope, ResilienceError};
/// let e = ResilienceError::<std::io::Error>::BulkheadFull {
///     scope: BulkheadScope::Local,
///     retry_after: std::time::Duration::ZERO,
/// };
/// assert_eq!(e.kind(), "bulkhead_full");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkheadScope {
    /// The process-local bulkhead ([`Bulkhead`](super::Bulkhead)).
    Local,
    /// The fleet-wide one over a floodgate concurrency lease
    /// ([`FleetBulkhead`](super::FleetBulkhead)).
    Fleet,
}

/// Which timeout fired.
///
/// ```
/// use floodgate_client::resilience::{ResilienceError, TimeoutScope};
/// let e = ResilienceError::<std::io::Error>::Timeout {
///     scope: TimeoutScope::Attempt,
///     after: std::time::Duration::from_millis(300),
/// };
/// assert!(e.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutScope {
    /// One attempt took too long (transient: the retry may try again).
    Attempt,
    /// The whole call, retries included, took too long (not transient).
    Overall,
}

/// Why the retries stopped.
///
/// ```
/// use floodgate_client::resilience::{ResilienceError, RetryStop};
/// let e = ResilienceError::<std::io::Error>::RetriesExhausted {
///     attempts: 3,
///     stop: RetryStop::Budget,
///     last: Box::new(ResilienceError::RateLimited { retry_after: std::time::Duration::from_secs(1) }),
/// };
/// assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryStop {
    /// `max_attempts` were made.
    MaxAttempts,
    /// The next attempt would start after the deadline.
    Deadline,
    /// The retry budget (local or fleet-wide) had no room.
    Budget,
}

/// Why a [`Resilience`](super::Resilience) call failed.
///
/// ```
/// use floodgate_client::resilience::ResilienceError;
/// let e: ResilienceError<std::io::Error> =
///     ResilienceError::RateLimited { retry_after: std::time::Duration::from_secs(1) };
/// assert!(e.is_transient());
/// assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(1)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ResilienceError<E> {
    /// The call returned this error (a permanent one, or the last one without a retry).
    Inner(E),
    /// The rate limit denied the attempt.
    RateLimited {
        /// When asking again can succeed.
        retry_after: Duration,
    },
    /// The shared circuit breaker refused: the call was not made.
    BreakerOpen {
        /// The breaker's name.
        breaker: String,
        /// When asking again can succeed.
        retry_after: Duration,
    },
    /// A bulkhead was full.
    BulkheadFull {
        /// Which one.
        scope: BulkheadScope,
        /// When the fleet-wide one may have room (zero when unknown).
        retry_after: Duration,
    },
    /// A timeout fired.
    Timeout {
        /// Which one.
        scope: TimeoutScope,
        /// Its length.
        after: Duration,
    },
    /// The retries ended without success.
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// Why they stopped.
        stop: RetryStop,
        /// The last attempt's failure.
        last: Box<ResilienceError<E>>,
    },
    /// floodgate could not be asked (rate limit, breaker or fleet bulkhead).
    Floodgate(Error),
    /// The fallback ran and failed with this error.
    FallbackFailed(E),
}

impl<E> ResilienceError<E> {
    /// Whether another attempt may succeed (the retry's view of rejections and
    /// timeouts; the caller's predicate decides for [`ResilienceError::Inner`], which is
    /// reported `false` here). The overall timeout is not: no time is left for one.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Timeout {
                scope: TimeoutScope::Attempt,
                ..
            } => true,
            Self::Floodgate(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The wait a rejection asks for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after }
            | Self::BreakerOpen { retry_after, .. }
            | Self::BulkheadFull { retry_after, .. } => Some(*retry_after),
            Self::RetriesExhausted { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// A short stable name of the kind (`inner`, `rate_limited`, `breaker_open`,
    /// `bulkhead_full`, `timeout`, `retries_exhausted`, `floodgate`, `fallback_failed`),
    /// used as the dead letter's error class and as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Inner(_) => "inner",
            Self::RateLimited { .. } => "rate_limited",
            Self::BreakerOpen { .. } => "breaker_open",
            Self::BulkheadFull { .. } => "bulkhead_full",
            Self::Timeout { .. } => "timeout",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::Floodgate(_) => "floodgate",
            Self::FallbackFailed(_) => "fallback_failed",
        }
    }

    /// The innermost error of the call, if the last failure was one.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) | Self::FallbackFailed(e) => Some(e),
            Self::RetriesExhausted { last, .. } => last.inner(),
            _ => None,
        }
    }

    /// What a fallback is told, or `None` when no fallback applies (a permanent error
    /// of the call itself, or a failed fallback).
    pub fn fallback_reason(&self) -> Option<FallbackReason> {
        Some(match self {
            Self::RateLimited { .. } => FallbackReason::RateLimited,
            Self::BreakerOpen { .. } => FallbackReason::BreakerOpen,
            Self::BulkheadFull { .. } => FallbackReason::BulkheadFull,
            Self::Timeout { .. } => FallbackReason::Timeout,
            Self::RetriesExhausted { .. } => FallbackReason::RetriesExhausted,
            Self::Floodgate(_) => FallbackReason::FloodgateUnavailable,
            Self::Inner(_) | Self::FallbackFailed(_) => return None,
        })
    }
}

impl<E: fmt::Display> fmt::Display for ResilienceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inner(e) => write!(f, "{e}"),
            Self::RateLimited { retry_after } => {
                write!(f, "rate limited: retry in {retry_after:?}")
            }
            Self::BreakerOpen {
                breaker,
                retry_after,
            } => write!(f, "breaker {breaker:?} is open: retry in {retry_after:?}"),
            Self::BulkheadFull { scope, .. } => write!(f, "{scope:?} bulkhead full"),
            Self::Timeout { scope, after } => write!(f, "{scope:?} timeout after {after:?}"),
            Self::RetriesExhausted {
                attempts,
                stop,
                last,
            } => write!(f, "gave up after {attempts} attempts ({stop:?}): {last}"),
            Self::Floodgate(e) => write!(f, "floodgate: {e}"),
            Self::FallbackFailed(e) => write!(f, "fallback failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ResilienceError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Inner(e) | Self::FallbackFailed(e) => Some(e),
            Self::Floodgate(e) => Some(e),
            Self::RetriesExhausted { last, .. } => Some(last.as_ref()),
            _ => None,
        }
    }
}

/// What happened when a fallback answers.
///
/// ```
/// use floodgate_client::resilience::FallbackReason;
/// assert_eq!(FallbackReason::BreakerOpen.as_str(), "breaker_open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The shared breaker refused.
    BreakerOpen,
    /// The rate limit denied (and no retry could wait it out).
    RateLimited,
    /// A bulkhead was full.
    BulkheadFull,
    /// The retries ended without success.
    RetriesExhausted,
    /// A timeout fired (the overall one, or the attempt one without a retry).
    Timeout,
    /// floodgate could not be asked.
    FloodgateUnavailable,
}

impl FallbackReason {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BreakerOpen => "breaker_open",
            Self::RateLimited => "rate_limited",
            Self::BulkheadFull => "bulkhead_full",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Timeout => "timeout",
            Self::FloodgateUnavailable => "floodgate_unavailable",
        }
    }
}

/// A policy the builder refuses.
///
/// ```
/// use std::time::Duration;
/// use floodgate_client::resilience::{BuildError, Resilience, Timeout};
/// let err = Resilience::<u32, std::io::Error>::builder()
///     .timeout(Timeout::new().attempt(Duration::from_secs(5)).overall(Duration::from_secs(1)))
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, BuildError::AttemptTimeoutExceedsOverall { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An attempt may not last longer than the whole call.
    #[error("attempt timeout {attempt:?} is longer than the overall timeout {overall:?}")]
    AttemptTimeoutExceedsOverall {
        /// The attempt timeout.
        attempt: Duration,
        /// The overall timeout.
        overall: Duration,
    },
    /// The retry's deadline outlives the overall timeout, which would cut it.
    #[error("retry deadline {deadline:?} is longer than the overall timeout {overall:?}")]
    RetryDeadlineExceedsOverall {
        /// The retry deadline.
        deadline: Duration,
        /// The overall timeout.
        overall: Duration,
    },
    /// A value outside its range; the message names it and the rule.
    #[error("invalid {field}: {rule}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// What it must be.
        rule: &'static str,
    },
}
