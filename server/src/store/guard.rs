//! The server's own protection around its store (DESIGN "Failure"): a cap on store calls in
//! flight and a circuit breaker, so a dead or stalled Redis costs each caller at most one
//! deadline instead of a pile-up, and the process keeps answering from its fail modes.
//!
//! - **In flight.** At most `max_in_flight` store calls run at once; more wait for a slot
//!   within their own deadline, then take their fail mode.
//! - **Breaker.** [`TRIP_AFTER`] infrastructure failures in a row (timeouts, lost
//!   connections, refused writes) open it. While open, store calls fail at once with
//!   [`StoreError::Unavailable`] and a background probe ([`spawn_probe`]) reconnects and
//!   PINGs with backoff ([`PROBE_FIRST`] doubling to [`PROBE_MAX`]); the first PING
//!   answered within the deadline closes it. A script's own error (a bad reply) is not an
//!   infrastructure failure and never trips it.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use super::StoreError;

/// Failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 3;
/// First wait of the probe after the breaker opened.
pub const PROBE_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between probes.
pub const PROBE_MAX: Duration = Duration::from_millis(1000);

/// The in-flight cap and the breaker of one server's store.
#[derive(Debug)]
pub struct StoreGuard {
    /// Slots for store calls in flight.
    slots: Semaphore,
    /// The cap (for status).
    max_in_flight: usize,
    /// Infrastructure failures in a row.
    failures: AtomicU32,
    /// True while the breaker is open.
    open: AtomicBool,
    /// Wakes the probe when the breaker opens.
    opened: Notify,
}

/// Why a guarded call did not reach the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The breaker is open.
    Open,
    /// No slot freed within the deadline.
    Busy,
}

impl StoreGuard {
    /// A closed guard allowing `max_in_flight` calls at once.
    pub fn new(max_in_flight: usize) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Semaphore::new(max_in_flight),
            max_in_flight,
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            opened: Notify::new(),
        }
    }

    /// Whether the breaker is open (the store is being probed, calls fail at once).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The in-flight cap.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Store calls running now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }

    /// Runs `f` when the breaker is closed and a slot frees within `deadline`, and the
    /// whole call within `deadline`; records the outcome.
    pub async fn run<T>(
        &self,
        deadline: Duration,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.is_open() {
            return Err(StoreError::Unavailable(refusal_message(Refusal::Open)));
        }
        let result = tokio::time::timeout(deadline, async {
            let Ok(_slot) = self.slots.acquire().await else {
                return Err(StoreError::Unavailable(refusal_message(Refusal::Busy)));
            };
            f.await
        })
        .await
        .unwrap_or(Err(StoreError::Timeout(deadline)));
        self.record(&result);
        result
    }

    /// Counts an outcome: a success resets the run of failures; the [`TRIP_AFTER`]th
    /// infrastructure failure in a row opens the breaker.
    fn record<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(e) if e.trips_guard() => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= TRIP_AFTER && !self.open.swap(true, Ordering::AcqRel) {
                    warn!(
                        error = %e,
                        failures = n,
                        "store failing: answering from fail modes until it answers a PING again"
                    );
                    crate::metrics::store_guard_open(true);
                    self.opened.notify_one();
                }
            }
            Err(_) => {}
        }
    }

    /// Closes the breaker (the probe saw the store answer).
    fn close(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open.swap(false, Ordering::AcqRel) {
            crate::metrics::store_guard_open(false);
            info!("store answers again: deciding from the store");
        }
    }
}

/// The message of a refused call (the reason a degraded answer is logged with).
fn refusal_message(r: Refusal) -> String {
    match r {
        Refusal::Open => "store breaker open (the store failed repeatedly; probing it)".into(),
        Refusal::Busy => "too many store calls in flight (store_max_in_flight)".into(),
    }
}

/// While the process runs: whenever the guard opens, runs `probe` (reconnect, then PING,
/// within a deadline) with backoff until it succeeds, then closes the guard. Also makes
/// the first connection of a store that started without one.
pub fn spawn_probe<F, Fut>(guard: Arc<StoreGuard>, probe: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    tokio::spawn(async move {
        loop {
            if !guard.is_open() {
                guard.opened.notified().await;
                continue;
            }
            let mut wait = PROBE_FIRST;
            while guard.is_open() {
                tokio::time::sleep(wait).await;
                match probe().await {
                    Ok(()) => guard.close(),
                    Err(e) => tracing::debug!(error = %e, "store probe failed"),
                }
                wait = (wait * 2).min(PROBE_MAX);
            }
        }
    });
}

/// Opens `guard` from the start (a store that could not connect at start-up): calls take
/// their fail modes and the probe makes the connection.
pub fn start_open(guard: &StoreGuard) {
    guard.failures.store(TRIP_AFTER, Ordering::Relaxed);
    if !guard.open.swap(true, Ordering::AcqRel) {
        crate::metrics::store_guard_open(true);
        guard.opened.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> StoreError {
        StoreError::Timeout(Duration::from_millis(1))
    }

    #[tokio::test]
    async fn opens_after_failures_in_a_row_and_refuses_at_once() {
        let g = StoreGuard::new(4);
        for _ in 0..TRIP_AFTER - 1 {
            let r: Result<(), _> = g
                .run(Duration::from_secs(1), async { Err(timeout()) })
                .await;
            assert!(r.is_err());
            assert!(!g.is_open());
        }
        let _ = g
            .run::<()>(Duration::from_secs(1), async { Err(timeout()) })
            .await;
        assert!(g.is_open());
        let ran = AtomicBool::new(false);
        let r = g
            .run(Duration::from_secs(1), async {
                ran.store(true, Ordering::Relaxed);
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(
            !ran.load(Ordering::Relaxed),
            "an open guard must not call the store"
        );
        g.close();
        assert!(
            g.run(Duration::from_secs(1), async { Ok(()) })
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_success_resets_the_run_and_script_errors_never_trip() {
        let g = StoreGuard::new(4);
        for _ in 0..10 {
            let _ = g
                .run::<()>(Duration::from_secs(1), async { Err(timeout()) })
                .await;
            let _ = g
                .run::<()>(Duration::from_secs(1), async { Err(timeout()) })
                .await;
            let _ = g.run(Duration::from_secs(1), async { Ok(()) }).await;
            let _ = g
                .run::<()>(Duration::from_secs(1), async {
                    Err(StoreError::Protocol("x".into()))
                })
                .await;
        }
        assert!(!g.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn excess_calls_wait_for_a_slot_within_their_deadline() {
        let g = Arc::new(StoreGuard::new(1));
        let hold = {
            let g = g.clone();
            tokio::spawn(async move {
                g.run(Duration::from_secs(10), async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(())
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(g.in_flight(), 1);
        // waits 100 ms for the slot, then gives up
        let late = g.run(Duration::from_millis(100), async { Ok(()) }).await;
        assert!(matches!(late, Err(StoreError::Timeout(_))), "{late:?}");
        // waits the 200 ms left and gets in
        let ok = g.run(Duration::from_secs(1), async { Ok(()) }).await;
        assert!(ok.is_ok());
        hold.await.unwrap().unwrap();
    }
}
