//! Batched outcome reports: every call's outcome is added to an in-process batch keyed by
//! (namespace, breaker, generation), and a background task sends the batches every
//! [`FLUSH_EVERY`] (and on [`Reporter::flush`]) as a few `Report` calls, so a busy
//! application sends a few Reports a second, not one per call. Recording never waits: a
//! batch that cannot be sent is retried once at the next flush, then dropped and counted.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use floodgate_proto::v1::{self as pb, circuit_breakers_client::CircuitBreakersClient};
use tokio::sync::Notify;
use tonic::transport::Channel;

/// How often batches are sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Outcomes one report may carry (the server's limit is 10,000); a batch this large is
/// sent at once.
pub const MAX_OUTCOMES: usize = 5_000;
/// Reports per Report call (the server's limit).
pub const MAX_REPORTS: usize = 64;

/// Which batch an outcome belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// The breaker's namespace.
    pub namespace: String,
    /// The breaker.
    pub breaker: String,
    /// The generation the call was admitted in.
    pub generation: u64,
}

/// Outcomes waiting to be sent for one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Single outcomes with their durations (the server classifies slow calls).
    pub calls: Vec<pb::CallOutcome>,
    /// Trial permits handed back.
    pub released: u64,
    /// Sends already failed for this batch.
    pub failures: u32,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<HashMap<BatchKey, Batch>>,
    /// Reports sent (Report calls that succeeded).
    sent: AtomicU64,
    /// Batches dropped after a second failed send.
    dropped: AtomicU64,
    /// Wakes the flusher early (a batch got large, or a flush was asked for).
    wake: Notify,
}

/// The batcher; one per [`crate::Client`], shared by its breaker handles.
#[derive(Debug, Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
    channel: Channel,
    /// Who reports (for the server's minimum_reporters): host, process and a random part.
    reporter_id: Arc<str>,
}

fn to_wire(d: Duration) -> floodgate_proto::prost_types::Duration {
    floodgate_proto::prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl Reporter {
    /// A reporter over `channel`; starts its flusher when a Tokio runtime is running.
    pub fn new(channel: Channel) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let random = std::collections::hash_map::RandomState::new();
        let nonce = std::hash::BuildHasher::hash_one(&random, std::process::id());
        let r = Self {
            shared: Arc::default(),
            channel,
            reporter_id: format!("{host}-{}-{:08x}", std::process::id(), nonce as u32).into(),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&r.shared);
            let (channel, id) = (r.channel.clone(), r.reporter_id.clone());
            rt.spawn(async move {
                loop {
                    let Some(shared) = weak.upgrade() else { return };
                    let woke = shared.wake.notified();
                    tokio::select! {
                        () = tokio::time::sleep(FLUSH_EVERY) => {}
                        () = woke => {}
                    }
                    let r = Reporter {
                        shared,
                        channel: channel.clone(),
                        reporter_id: id.clone(),
                    };
                    r.flush().await;
                }
            });
        }
        r
    }

    /// This process's reporter id.
    pub fn reporter_id(&self) -> &str {
        &self.reporter_id
    }

    /// Adds one outcome.
    pub fn record(&self, key: BatchKey, success: bool, took: Duration) {
        let big = {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let b = p.entry(key).or_default();
            b.calls.push(pb::CallOutcome {
                success,
                duration: Some(to_wire(took)),
            });
            b.calls.len() >= MAX_OUTCOMES
        };
        if big {
            self.shared.wake.notify_one();
        }
    }

    /// Hands one trial permit back.
    pub fn release(&self, key: BatchKey) {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.entry(key).or_default().released += 1;
    }

    /// Report calls sent so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Batches dropped after failing twice.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The pending batches, taken out (for a send), grouped by namespace in chunks the
    /// server accepts.
    pub fn take(&self) -> Vec<(String, Vec<(BatchKey, Batch)>)> {
        let drained: Vec<(BatchKey, Batch)> = {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            p.drain().collect()
        };
        let mut by_ns: HashMap<String, Vec<(BatchKey, Batch)>> = HashMap::new();
        for (k, b) in drained {
            if b.calls.is_empty() && b.released == 0 {
                continue;
            }
            by_ns.entry(k.namespace.clone()).or_default().push((k, b));
        }
        let mut out = Vec::new();
        for (ns, mut all) in by_ns {
            while !all.is_empty() {
                let rest = all.split_off(all.len().min(MAX_REPORTS));
                out.push((ns.clone(), std::mem::replace(&mut all, rest)));
            }
        }
        out
    }

    /// Sends everything pending now. A failed batch goes back for one more try; a batch
    /// that failed twice is dropped and counted.
    pub async fn flush(&self) {
        for (namespace, batches) in self.take() {
            let reports = batches
                .iter()
                .map(|(k, b)| pb::BreakerReport {
                    breaker: k.breaker.clone(),
                    calls: b.calls.clone(),
                    released: b.released,
                    generation: k.generation,
                    reporter: self.reporter_id.to_string(),
                    ..Default::default()
                })
                .collect();
            let sent = CircuitBreakersClient::new(self.channel.clone())
                .report(pb::ReportRequest { namespace, reports })
                .await;
            match sent {
                Ok(_) => {
                    self.shared.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    let mut p = self
                        .shared
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    for (k, mut b) in batches {
                        if b.failures >= 1 {
                            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        b.failures += 1;
                        let slot = p.entry(k).or_default();
                        slot.calls.extend(b.calls);
                        slot.released += b.released;
                        slot.failures = slot.failures.max(b.failures);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, b: &str, g: u64) -> BatchKey {
        BatchKey {
            namespace: ns.into(),
            breaker: b.into(),
            generation: g,
        }
    }

    #[tokio::test]
    async fn batches_group_by_breaker_generation_and_namespace() {
        let channel = Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let r = Reporter::new(channel);
        for _ in 0..3 {
            r.record(key("a", "pay", 1), true, Duration::from_millis(5));
        }
        r.record(key("a", "pay", 2), false, Duration::from_millis(5));
        r.release(key("a", "pay", 2));
        r.record(key("b", "pay", 1), true, Duration::ZERO);
        let mut taken = r.take();
        taken.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(taken.len(), 2);
        let a = &taken[0].1;
        assert_eq!(a.len(), 2);
        let g2 = a.iter().find(|(k, _)| k.generation == 2).unwrap();
        assert_eq!((g2.1.calls.len(), g2.1.released), (1, 1));
        assert!(r.take().is_empty());
    }

    #[tokio::test]
    async fn more_than_64_breakers_split_into_several_reports() {
        let channel = Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let r = Reporter::new(channel);
        for i in 0..130 {
            r.record(key("a", &format!("b{i}"), 1), true, Duration::ZERO);
        }
        let sizes: Vec<usize> = r.take().iter().map(|(_, b)| b.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 130);
        assert!(sizes.iter().all(|n| *n <= MAX_REPORTS));
    }
}
