//! [`Consumer`]: claims batches from a queue, runs a handler per entry, acks the entries it
//! handled and nacks the ones it failed, until told to stop.
use std::{pin::pin, time::Duration};

use futures::{FutureExt, StreamExt};

use super::{DeadLetter, DeadLetterQueue};
use crate::Error;

/// The claim / handle / ack-or-nack loop. Delivery is at least once: an entry whose ack is
/// lost, or whose handler outlives the claim's visibility timeout, is handed out again
/// (with a higher `delivery_count`), so handlers should be idempotent.
///
/// ```no_run
/// # async fn demo(client: floodgate_client::Client) -> Result<(), floodgate_client::Error> {
/// use std::time::Duration;
/// let queue = client.dead_letters("shop", "orders");
/// let report = queue
///     .consumer("replayer-1")
///     .batch_size(20)
///     .visibility_timeout(Duration::from_secs(60))
///     .run(
///         |entry| async move {
///             println!("replaying {} ({} bytes)", entry.id, entry.payload.len());
///             Ok::<(), std::io::Error>(())
///         },
///         async { let _ = tokio::signal::ctrl_c().await; },
///     )
///     .await?;
/// println!("{} acked, {} nacked", report.acked, report.nacked);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Consumer {
    queue: DeadLetterQueue,
    name: String,
    batch_size: u32,
    concurrency: usize,
    visibility: Option<Duration>,
    idle_min: Duration,
    idle_max: Duration,
    max_messages: Option<u64>,
}

/// What a [`Consumer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Entries handed to the handler.
    pub handled: u64,
    /// Entries acked after the handler succeeded.
    pub acked: u64,
    /// Entries nacked after the handler failed.
    pub nacked: u64,
    /// Claim calls that returned entries.
    pub batches: u64,
    /// Entries the server archived during our claims because they reached
    /// `max_deliveries`.
    pub archived_over_max_deliveries: u64,
}

impl Consumer {
    /// A consumer named `name` (1-128 bytes, shown in server logs): batches of 10, one
    /// handler at a time, the queue's visibility timeout, idle backoff 100 ms to 2 s.
    pub fn new(queue: DeadLetterQueue, name: &str) -> Self {
        Self {
            queue,
            name: name.to_owned(),
            batch_size: 10,
            concurrency: 1,
            visibility: None,
            idle_min: Duration::from_millis(100),
            idle_max: Duration::from_secs(2),
            max_messages: None,
        }
    }

    /// Entries per claim (1-1,000).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = n.clamp(1, 1_000);
        self
    }

    /// Handlers running at once within a batch (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long a claim hides its entries from other consumers; it should cover handling a
    /// whole batch, since acks are sent per batch. Default: the queue's.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility = Some(d);
        self
    }

    /// Waits between claims that found nothing: `min` first, doubling up to `max`.
    pub fn idle_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.idle_min = min;
        self.idle_max = max.max(min);
        self
    }

    /// Stops after handling this many entries (claims never ask for more than are left).
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// Loops until `shutdown` completes (or `max_messages` were handled): claims a batch,
    /// runs `handler` on each entry, acks those that returned `Ok` and nacks the others
    /// (claimable again at once). When a claim finds nothing it waits (idle backoff).
    ///
    /// Shutdown is noticed between batches and while idle: a batch in progress is finished
    /// and its acks and nacks sent first. Transient errors (server or Redis unavailable)
    /// are waited out with the idle backoff; any other error ends the loop. Entries whose
    /// ack or nack could not be sent come back after their visibility timeout.
    pub async fn run<H, Fut, E>(
        &self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumerReport, Error>
    where
        H: Fn(DeadLetter) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut shutdown = pin!(shutdown.fuse());
        let mut report = ConsumerReport::default();
        let mut idle = self.idle_min;
        loop {
            if (&mut shutdown).now_or_never().is_some() {
                return Ok(report);
            }
            let count = match self.max_messages {
                Some(max) if report.handled >= max => return Ok(report),
                Some(max) => (max - report.handled).min(u64::from(self.batch_size)) as u32,
                None => self.batch_size,
            };
            let claimed = match self.queue.claim(&self.name, count, self.visibility).await {
                Ok(c) => c,
                Err(e) if e.is_transient() => {
                    if self.wait(&mut shutdown, &mut idle).await {
                        return Ok(report);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.archived_over_max_deliveries += u64::from(claimed.archived_over_max_deliveries);
            if claimed.messages.is_empty() {
                if self.wait(&mut shutdown, &mut idle).await {
                    return Ok(report);
                }
                continue;
            }
            idle = self.idle_min;
            report.batches += 1;
            report.handled += claimed.messages.len() as u64;
            let outcomes: Vec<(String, bool)> = futures::stream::iter(claimed.messages)
                .map(|entry| {
                    let id = entry.id.clone();
                    handler(entry).map(move |r| (id, r.is_ok()))
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            let (ok, failed): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|(_, ok)| *ok);
            let ok: Vec<String> = ok.into_iter().map(|(id, _)| id).collect();
            let failed: Vec<String> = failed.into_iter().map(|(id, _)| id).collect();
            if !ok.is_empty() {
                report.acked += self.settle(true, ok).await?;
            }
            if !failed.is_empty() {
                report.nacked += self.settle(false, failed).await?;
            }
        }
    }

    /// Acks or nacks `ids`, retrying transient failures a few times; a transient failure
    /// that persists is not fatal (the entries come back after their timeout): 0 counted.
    async fn settle(&self, ack: bool, ids: Vec<String>) -> Result<u64, Error> {
        let mut wait = self.idle_min;
        for attempt in 0..5 {
            let r = if ack {
                self.queue.ack(ids.clone()).await
            } else {
                self.queue.nack(ids.clone()).await
            };
            match r {
                Ok(n) => return Ok(n),
                Err(e) if e.is_transient() && attempt < 4 => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.idle_max);
                }
                Err(e) if e.is_transient() => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        Ok(0)
    }

    /// Sleeps the idle backoff (then doubles it); true when shutdown came first.
    async fn wait<S>(&self, shutdown: &mut std::pin::Pin<&mut S>, idle: &mut Duration) -> bool
    where
        S: Future<Output = ()> + futures::future::FusedFuture,
    {
        let sleep = tokio::time::sleep(*idle);
        *idle = (*idle * 2).min(self.idle_max);
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => true,
            _ = sleep => false,
        }
    }
}
