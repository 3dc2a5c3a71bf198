//! The retry options: how many attempts, how long to wait between them ([`Backoff`]),
//! until when, what counts as transient (a predicate on the error and one on the result),
//! which server hint sets the minimum wait, and the [`RetryBudget`].
use std::{fmt, sync::Arc, time::Duration};

use super::{Backoff, RetryBudget};

type ErrorPredicate<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;
type ResultPredicate<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;
type Hint<E> = Arc<dyn Fn(&E) -> Option<Duration> + Send + Sync>;

/// Retry options for calls returning `Result<T, E>`.
///
/// Defaults: 3 attempts, [`Backoff::default`] (100 ms doubling to at most 10 s, full
/// jitter), no deadline of its own, every `Err` transient, no result retried, a local
/// [`RetryBudget::new`] (10% + 1/s).
///
/// ```
/// use std::time::Duration;
/// use floodgate_client::resilience::{Backoff, Retry};
/// #[derive(Debug)]
/// struct HttpError { status: u16, retry_after: Option<Duration> }
/// let retry: Retry<String, HttpError> = Retry::new()
///     .max_attempts(4)
///     .backoff(Backoff::new(Duration::from_millis(50), Duration::from_secs(2)))
///     .deadline(Duration::from_secs(5))
///     .retry_if(|e: &HttpError| e.status >= 500)       // 503 yes, 404 no
///     .retry_after_hint(|e: &HttpError| e.retry_after);
/// ```
pub struct Retry<T, E> {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) deadline: Option<Duration>,
    pub(crate) retry_if: ErrorPredicate<E>,
    pub(crate) retry_on_result: Option<ResultPredicate<T>>,
    pub(crate) hint: Option<Hint<E>>,
    pub(crate) budget: RetryBudget,
}

impl<T, E> Clone for Retry<T, E> {
    fn clone(&self) -> Self {
        Self {
            max_attempts: self.max_attempts,
            backoff: self.backoff.clone(),
            deadline: self.deadline,
            retry_if: self.retry_if.clone(),
            retry_on_result: self.retry_on_result.clone(),
            hint: self.hint.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<T, E> fmt::Debug for Retry<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("deadline", &self.deadline)
            .field("retry_on_result", &self.retry_on_result.is_some())
            .field("hint", &self.hint.is_some())
            .field("budget", &self.budget)
            .finish()
    }
}

impl<T, E> Default for Retry<T, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, E> Retry<T, E> {
    /// The defaults above.
    pub fn new() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default(),
            deadline: None,
            retry_if: Arc::new(|_| true),
            retry_on_result: None,
            hint: None,
            budget: RetryBudget::new(),
        }
    }

    /// Attempts in all, the first included (at least 1; checked by the builder).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The delays between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// No attempt starts later than this after the call began (nor after the overall
    /// timeout, with or without a deadline).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Which errors are transient (retried); the others are permanent.
    pub fn retry_if(mut self, p: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Arc::new(p);
        self
    }

    /// Which successful results are transient failures (e.g. an HTTP 503 response). When
    /// the retries end on such a result, it is returned as the call's value.
    pub fn retry_on_result(mut self, p: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.retry_on_result = Some(Arc::new(p));
        self
    }

    /// A server's hint (e.g. an HTTP `Retry-After`) read from the error: the next wait is
    /// at least this long.
    pub fn retry_after_hint(
        mut self,
        h: impl Fn(&E) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.hint = Some(Arc::new(h));
        self
    }

    /// The retry budget (share it between policies calling the same dependency).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }
}
