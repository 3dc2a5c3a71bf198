//! [`RetryPolicy`]: how [`super::DeadLetterQueue::publish`] retries a call that may not
//! have reached Redis.
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;

/// Exponential backoff with jitter, bounded by a deadline for the whole publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait (default 50 ms); each next wait doubles, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest wait (default 2 s).
    pub max_backoff: Duration,
    /// Give up when the next attempt would start after this long from the first (default
    /// 30 s); `Duration::ZERO`: no retries.
    pub deadline: Duration,
    /// The gRPC deadline of one attempt (default 10 s).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn never() -> Self {
        Self {
            deadline: Duration::ZERO,
            ..Self::default()
        }
    }

    /// Retries until `deadline` after the first attempt.
    pub fn with_deadline(deadline: Duration) -> Self {
        Self {
            deadline,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first retry), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Whether a failed call may be retried: it may not have been applied, and applying it
    /// twice is harmless (publish carries an idempotency key).
    pub fn retryable(e: &Error) -> bool {
        match e {
            Error::Unavailable(_) | Error::Connect(_) => true,
            Error::Status(s) => matches!(
                s.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Aborted | tonic::Code::Cancelled
            ),
            _ => false,
        }
    }

    /// Runs `call` until it succeeds, fails for good, or the deadline passes (then the last
    /// error is returned).
    pub(crate) async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let started = Instant::now();
        let mut retry = 0;
        loop {
            match call().await {
                Ok(t) => return Ok(t),
                Err(e) if Self::retryable(&e) => {
                    // Full jitter between half the backoff and the backoff.
                    let b = self.backoff(retry);
                    let wait = b / 2 + b.mul_f64(jitter() / 2.0);
                    if started.elapsed() + wait > self.deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A number in [0, 1).
pub(crate) fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let got: Vec<_> = (0..8).map(|i| p.backoff(i).as_millis()).collect();
        assert_eq!(got, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(2));
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn what_is_retried() {
        assert!(RetryPolicy::retryable(&Error::Unavailable("down".into())));
        assert!(RetryPolicy::retryable(&Error::Status(
            tonic::Status::deadline_exceeded("late")
        )));
        assert!(!RetryPolicy::retryable(&Error::InvalidArgument(
            "payload: too large".into()
        )));
        assert!(!RetryPolicy::retryable(&Error::NotFound("x".into())));
        assert!(!RetryPolicy::retryable(&Error::Status(
            tonic::Status::internal("bug")
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let calls = AtomicU32::new(0);
        let r = RetryPolicy::default()
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(Error::Unavailable("redis down".into()))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_and_not_on_permanent_errors() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let r: Result<(), _> = RetryPolicy::with_deadline(Duration::from_secs(5))
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::Unavailable("down".into())) }
            })
            .await;
        assert!(matches!(r, Err(Error::Unavailable(_))));
        assert!(started.elapsed() <= Duration::from_secs(5));
        assert!(calls.load(Ordering::SeqCst) > 3);

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = RetryPolicy::default()
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::InvalidArgument("no".into())) }
            })
            .await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let _ = RetryPolicy::never()
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Error::Unavailable("down".into())) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
