//! Connections that one call holds alone, for commands that block their connection (`WAIT`
//! after a replicated dead-letter publish): on a shared connection every call queued behind
//! such a command would wait with it.
//!
//! Opened on demand up to a cap. A call hands its connection back only when it finished
//! cleanly ([`Held::release`]); a call that failed or was cancelled (by its deadline, say,
//! in the middle of a `WAIT`) drops it, so no later call finds it still blocked.
use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::store::StoreError;

/// Opens one more connection.
type Open<C> = Box<dyn Fn() -> BoxFuture<'static, Result<C, StoreError>> + Send + Sync>;

/// Up to `cap` connections of type `C`, each held by one call at a time.
pub struct Exclusive<C> {
    open: Open<C>,
    idle: Mutex<Vec<C>>,
    permits: Semaphore,
    cap: usize,
}

impl<C: Send + 'static> Exclusive<C> {
    /// A pool of at most `cap` connections, opened by `open` when needed.
    pub fn new(cap: usize, open: Open<C>) -> Arc<Self> {
        let cap = cap.max(1);
        Arc::new(Self {
            open,
            idle: Mutex::new(Vec::with_capacity(cap)),
            permits: Semaphore::new(cap),
            cap,
        })
    }

    /// A connection for this call alone, waiting at most `within` for one to be free.
    /// All of them busy past that is [`StoreError::Unavailable`]: the store is fine, this
    /// kind of call is just over its share (it does not count toward the store breaker).
    pub async fn hold(&self, within: Duration) -> Result<Held<'_, C>, StoreError> {
        let permit = tokio::time::timeout(within, self.permits.acquire())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "all {} exclusive connections were busy for {within:?}",
                    self.cap
                ))
            })?
            .map_err(|_| StoreError::Unavailable("exclusive connections closed".into()))?;
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(c) => c,
            None => (self.open)().await?,
        };
        Ok(Held {
            conn: Some(conn),
            pool: self,
            _permit: permit,
        })
    }

    /// Connections open and not held now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

/// One held connection; dropped with it unless [`released`](Held::release).
pub struct Held<'a, C> {
    conn: Option<C>,
    pool: &'a Exclusive<C>,
    _permit: SemaphorePermit<'a>,
}

impl<C> Held<'_, C> {
    /// The connection.
    pub fn conn(&mut self) -> &mut C {
        self.conn.as_mut().expect("held until released")
    }

    /// Hands the connection back for the next call: only after a call that finished.
    pub fn release(mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.idle.lock().push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(cap: usize) -> (Arc<Exclusive<usize>>, Arc<AtomicUsize>) {
        let opened = Arc::new(AtomicUsize::new(0));
        let o = opened.clone();
        let pool = Exclusive::new(
            cap,
            Box::new(move || {
                let n = o.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move { Ok(n) })
            }),
        );
        (pool, opened)
    }

    #[tokio::test]
    async fn released_connections_are_reused_and_dropped_ones_are_not() {
        let (pool, opened) = counting(2);
        let a = pool.hold(Duration::from_millis(10)).await.unwrap();
        a.release();
        assert_eq!(pool.idle(), 1);
        let mut b = pool.hold(Duration::from_millis(10)).await.unwrap();
        assert_eq!(*b.conn(), 0, "the released one");
        drop(b); // a failed or cancelled call
        assert_eq!(pool.idle(), 0);
        let mut c = pool.hold(Duration::from_millis(10)).await.unwrap();
        assert_eq!(*c.conn(), 1, "a fresh one");
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn over_the_cap_waits_then_is_unavailable() {
        let (pool, _) = counting(1);
        let held = pool.hold(Duration::from_millis(10)).await.unwrap();
        let e = pool.hold(Duration::from_millis(20)).await.err().unwrap();
        assert!(
            matches!(e, StoreError::Unavailable(_)) && !e.trips_guard(),
            "{e}"
        );
        drop(held);
        assert!(pool.hold(Duration::from_millis(10)).await.is_ok());
    }
}
