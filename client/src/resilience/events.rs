//! Events: what a policy reports for every attempt, retry, rejection, timeout, fallback and
//! dead letter, to [`Listener`]s and as `metrics` counters
//! (`floodgate_client_resilience_events_total{policy, event}`).
use std::{fmt, sync::Arc, time::Duration};

use super::{FallbackReason, ResilienceError};

/// One thing that happened in a call.
///
/// ```
/// use floodgate_client::resilience::Event;
/// assert_eq!(Event::Attempt { attempt: 1 }.name(), "attempt");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An attempt starts (1 is the first).
    Attempt {
        /// Its number.
        attempt: u32,
    },
    /// The call succeeded.
    Success {
        /// Attempts it took.
        attempts: u32,
    },
    /// An attempt failed.
    Failure {
        /// Its number.
        attempt: u32,
        /// The failure's kind ([`ResilienceError::kind`]; `result` for a retried result).
        kind: &'static str,
        /// Whether the retry may try again.
        transient: bool,
    },
    /// A retry is scheduled.
    Retry {
        /// The attempt that will follow.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// A rate limit, breaker, bulkhead or the retry budget refused.
    Rejected {
        /// Which (`rate_limited`, `breaker_open`, `bulkhead_full`, `retry_budget`).
        by: &'static str,
        /// Its `retry_after`.
        retry_after: Duration,
    },
    /// A timeout fired.
    Timeout {
        /// The attempt, or `None` for the overall timeout.
        attempt: Option<u32>,
    },
    /// The fallback answered.
    Fallback {
        /// Why.
        reason: FallbackReason,
    },
    /// The input went to the dead-letter queue.
    DeadLettered {
        /// Attempts made.
        attempts: u32,
        /// The reason stored with it.
        reason: &'static str,
    },
    /// Publishing the dead letter failed.
    DeadLetterFailed,
}

impl Event {
    /// A short stable name (the metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Attempt { .. } => "attempt",
            Self::Success { .. } => "success",
            Self::Failure { .. } => "failure",
            Self::Retry { .. } => "retry",
            Self::Rejected { .. } => "rejected",
            Self::Timeout { .. } => "timeout",
            Self::Fallback { .. } => "fallback",
            Self::DeadLettered { .. } => "dead_letter",
            Self::DeadLetterFailed => "dead_letter_failed",
        }
    }

    pub(crate) fn rejected<E>(e: &ResilienceError<E>) -> Option<Self> {
        let by = match e {
            ResilienceError::RateLimited { .. } => "rate_limited",
            ResilienceError::BreakerOpen { .. } => "breaker_open",
            ResilienceError::BulkheadFull { .. } => "bulkhead_full",
            _ => return None,
        };
        Some(Self::Rejected {
            by,
            retry_after: e.retry_after().unwrap_or_default(),
        })
    }
}

/// Receives a policy's events (keep it fast: it runs inline).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use floodgate_client::resilience::{Event, Listener};
/// #[derive(Debug, Default)]
/// struct CountRetries(AtomicU64);
/// impl Listener for CountRetries {
///     fn on_event(&self, _policy: &str, event: &Event) {
///         if matches!(event, Event::Retry { .. }) { self.0.fetch_add(1, Ordering::Relaxed); }
///     }
/// }
/// ```
pub trait Listener: Send + Sync + fmt::Debug {
    /// One event of policy `policy`.
    fn on_event(&self, policy: &str, event: &Event);
}

/// A closure as a [`Listener`].
///
/// ```
/// use floodgate_client::resilience::{FnListener, Listener, Event};
/// let l = FnListener(|policy: &str, e: &Event| println!("{policy}: {e:?}"));
/// l.on_event("payments", &Event::Attempt { attempt: 1 });
/// ```
pub struct FnListener<F>(pub F);

impl<F> fmt::Debug for FnListener<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnListener")
    }
}

impl<F: Fn(&str, &Event) + Send + Sync> Listener for FnListener<F> {
    fn on_event(&self, policy: &str, event: &Event) {
        (self.0)(policy, event)
    }
}

/// The listeners of one policy, and the metrics counter every event increments.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events {
    pub(crate) listeners: Vec<Arc<dyn Listener>>,
}

impl Events {
    pub(crate) fn emit(&self, policy: &Arc<str>, event: Event) {
        metrics::counter!(
            "floodgate_client_resilience_events_total",
            "policy" => policy.to_string(),
            "event" => event.name()
        )
        .increment(1);
        tracing::debug!(policy = %policy, event = ?event, "resilience event");
        for l in &self.listeners {
            l.on_event(policy, &event);
        }
    }
}
