//! The fallback: a value or an async function answering when the breaker is open, the
//! limit denies, a bulkhead is full, a timeout fires, floodgate is unreachable or the
//! retries are exhausted; it is told which ([`FallbackReason`]). A permanent error of the
//! call itself is returned, not replaced.
use std::{fmt, future::Future, sync::Arc};

use futures::{FutureExt, future::BoxFuture};

use super::FallbackReason;

type FallbackFn<T, E> =
    Arc<dyn Fn(FallbackReason) -> BoxFuture<'static, Result<T, E>> + Send + Sync>;

/// A fallback for calls returning `Result<T, E>`.
///
/// ```
/// use floodgate_client::resilience::{Fallback, FallbackReason};
/// let cached: Fallback<&str, std::io::Error> = Fallback::value("cached answer");
/// let smart: Fallback<String, std::io::Error> = Fallback::with(|reason: FallbackReason| async move {
///     Ok(format!("degraded ({})", reason.as_str()))
/// });
/// ```
pub struct Fallback<T, E> {
    pub(crate) run: FallbackFn<T, E>,
}

impl<T, E> Clone for Fallback<T, E> {
    fn clone(&self) -> Self {
        Self {
            run: self.run.clone(),
        }
    }
}

impl<T, E> fmt::Debug for Fallback<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback").finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static, E: Send + 'static> Fallback<T, E> {
    /// Always answers `value`.
    pub fn value(value: T) -> Self {
        Self {
            run: Arc::new(move |_| {
                let v = value.clone();
                async move { Ok(v) }.boxed()
            }),
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> Fallback<T, E> {
    /// Answers with `f(reason)`; its `Err` becomes
    /// [`ResilienceError::FallbackFailed`](super::ResilienceError::FallbackFailed).
    pub fn with<F, Fut>(f: F) -> Self
    where
        F: Fn(FallbackReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        Self {
            run: Arc::new(move |r| f(r).boxed()),
        }
    }
}
