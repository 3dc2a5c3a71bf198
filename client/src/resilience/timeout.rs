//! Timeout options: per attempt (inside the breaker, so a timed-out attempt is a failure
//! for it, and transient for the retry) and overall (around the retries).
use std::time::Duration;

/// Timeouts; none by default.
///
/// ```
/// use std::time::Duration;
/// use floodgate_client::resilience::Timeout;
/// let t = Timeout::new().attempt(Duration::from_millis(500)).overall(Duration::from_secs(2));
/// assert_eq!(t.attempt_timeout(), Some(Duration::from_millis(500)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeout {
    attempt: Option<Duration>,
    overall: Option<Duration>,
}

impl Timeout {
    /// No timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each attempt may last this long.
    pub fn attempt(mut self, d: Duration) -> Self {
        self.attempt = Some(d);
        self
    }

    /// The whole call, retries and their waits included, may last this long.
    pub fn overall(mut self, d: Duration) -> Self {
        self.overall = Some(d);
        self
    }

    /// The attempt timeout.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt
    }

    /// The overall timeout.
    pub fn overall_timeout(&self) -> Option<Duration> {
        self.overall
    }
}
