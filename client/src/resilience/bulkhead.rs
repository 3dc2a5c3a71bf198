//! The local bulkhead: at most `max_concurrent` calls in flight in this process, a caller
//! waits at most `max_wait` for a place, then is refused with
//! [`ResilienceError::BulkheadFull`](super::ResilienceError::BulkheadFull). The permit
//! lives in the call's future, so a cancelled or panicking call gives it back.
use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A process-local bulkhead. Cheap to clone; clones share the places.
///
/// ```
/// use std::time::Duration;
/// use floodgate_client::resilience::Bulkhead;
/// let b = Bulkhead::new(10).max_wait(Duration::from_millis(50));
/// assert_eq!(b.available(), 10);
/// ```
#[derive(Debug, Clone)]
pub struct Bulkhead {
    pub(crate) max_concurrent: usize,
    pub(crate) max_wait: Duration,
    places: Arc<Semaphore>,
}

impl Bulkhead {
    /// At most `max_concurrent` calls at once (at least 1; checked by the builder); no
    /// waiting by default.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            max_concurrent,
            max_wait: Duration::ZERO,
            places: Arc::new(Semaphore::new(max_concurrent.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// How long a caller may wait for a place.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Places free now.
    pub fn available(&self) -> usize {
        self.places.available_permits()
    }

    /// A place, or `None` when none freed up within `max_wait`.
    pub async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.places.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.max_wait.is_zero() {
            return None;
        }
        tokio::time::timeout(self.max_wait, self.places.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}
