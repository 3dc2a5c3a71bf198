//! Batched outcome reports. Owns the in-process batches and the one background task per
//! [`crate::Client`] that sends them.
//!
//! Every outcome is added to a batch keyed by (namespace, breaker, generation) — a report
//! carries one generation, and the server ignores reports of an older one. The task sends
//! the batches [`FLUSH_EVERY`] after the first outcome arrives (at once when a batch holds
//! [`MAX_OUTCOMES`]), so a busy application sends about ten Reports a second, not one per
//! call; [`Reporter::flush`] sends everything now and returns once it was answered.
//!
//! Rules:
//! - Recording never waits: it takes a std mutex for a push, so a permit guard may record
//!   from `Drop`.
//! - Memory is bounded: past [`MAX_HELD`] outcomes waiting, new outcomes are dropped and
//!   counted ([`Reporter::dropped`]); hand-backs of trial permits are counts and always kept.
//! - A Report that fails is sent again with the next flush, then dropped and counted. A
//!   Report the server rejects outright (e.g. a breaker removed from the configuration) is
//!   split so the other breakers' reports still get through; a rejected one is dropped.
//! - Flushes run one at a time and every send has a deadline ([`REPORT_TIMEOUT`]), so
//!   `flush().await` means "sent", and a hung server cannot stall the task forever.
use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::AuthChannel;
use floodgate_proto::v1::{self as pb, circuit_breakers_client::CircuitBreakersClient};
use tokio::sync::{Notify, watch};

/// How long outcomes wait before they are sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Outcomes per report; a batch this large is sent at once (the server takes 10,000).
pub const MAX_OUTCOMES: usize = 5_000;
/// Outcomes held in all batches together; more are dropped and counted.
pub const MAX_HELD: usize = 100_000;
/// Reports per Report call (the server's limit).
pub const MAX_REPORTS: usize = 64;
/// Deadline of one Report call.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which batch an outcome belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
struct Batch {
    /// Single outcomes with their durations (the server classifies slow calls).
    calls: Vec<pb::CallOutcome>,
    /// Trial permits handed back.
    released: u64,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.released == 0
    }

    fn absorb(&mut self, other: Batch) {
        self.calls.extend(other.calls);
        self.released += other.released;
    }
}

/// One report of a flush: part of a batch, and whether it is already its second try.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    key: BatchKey,
    batch: Batch,
    retried: bool,
}

/// Everything waiting to be sent.
#[derive(Debug, Default)]
struct Pending {
    fresh: HashMap<BatchKey, Batch>,
    /// Batches whose send failed once: sent with the next flush, then dropped.
    retry: HashMap<BatchKey, Batch>,
    /// Outcomes held in `fresh` and `retry`.
    held: usize,
}

/// What [`Pending::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    Held {
        /// The batch is full: send it now.
        full: bool,
    },
    Dropped,
}

impl Pending {
    fn record(&mut self, key: BatchKey, outcome: pb::CallOutcome) -> Recorded {
        if self.held >= MAX_HELD {
            return Recorded::Dropped;
        }
        self.held += 1;
        let b = self.fresh.entry(key).or_default();
        b.calls.push(outcome);
        Recorded::Held {
            full: b.calls.len() >= MAX_OUTCOMES,
        }
    }

    fn release(&mut self, key: BatchKey) {
        self.fresh.entry(key).or_default().released += 1;
    }

    /// Takes everything out as reports of at most [`MAX_OUTCOMES`] each, grouped into
    /// Report requests per namespace: at most [`MAX_REPORTS`] each, a breaker name at most
    /// once per request. Retried batches come first.
    fn take(&mut self) -> Vec<(String, Vec<Item>)> {
        self.held = 0;
        let mut items = Vec::new();
        for (retried, map) in [(true, &mut self.retry), (false, &mut self.fresh)] {
            let mut batches: Vec<_> = map.drain().filter(|(_, b)| !b.is_empty()).collect();
            batches.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, batch) in batches {
                split(key, batch, retried, &mut items);
            }
        }
        let mut requests: Vec<(String, Vec<Item>)> = Vec::new();
        for item in items {
            let fits = |(ns, its): &&mut (String, Vec<Item>)| {
                *ns == item.key.namespace
                    && its.len() < MAX_REPORTS
                    && its.iter().all(|i| i.key.breaker != item.key.breaker)
            };
            match requests.iter_mut().find(fits) {
                Some((_, its)) => its.push(item),
                None => requests.push((item.key.namespace.clone(), vec![item])),
            }
        }
        requests
    }

    /// Puts back what a failed send carried: a first try waits for the next flush, a
    /// second try is dropped. Returns the outcomes and hand-backs dropped.
    fn failed(&mut self, items: Vec<Item>) -> u64 {
        let mut dropped = 0;
        for item in items {
            if item.retried {
                dropped += item.batch.calls.len() as u64 + item.batch.released;
            } else {
                self.held += item.batch.calls.len();
                self.retry.entry(item.key).or_default().absorb(item.batch);
            }
        }
        dropped
    }
}

/// Cuts a batch into reports of at most [`MAX_OUTCOMES`] outcomes; hand-backs go with the
/// first.
fn split(key: BatchKey, mut batch: Batch, retried: bool, out: &mut Vec<Item>) {
    while batch.calls.len() > MAX_OUTCOMES {
        let rest = batch.calls.split_off(MAX_OUTCOMES);
        let head = std::mem::replace(&mut batch.calls, rest);
        out.push(Item {
            key: key.clone(),
            batch: Batch {
                calls: head,
                released: std::mem::take(&mut batch.released),
            },
            retried,
        });
    }
    out.push(Item {
        key,
        batch,
        retried,
    });
}

/// A rejection that sending again will not change: the request itself is wrong.
fn rejected(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(
        code,
        C::InvalidArgument
            | C::NotFound
            | C::PermissionDenied
            | C::Unauthenticated
            | C::FailedPrecondition
            | C::OutOfRange
            | C::Unimplemented
    )
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Flushes run one at a time, so a flush that returns has seen the batches sent.
    flushing: tokio::sync::Mutex<()>,
    /// Report calls answered.
    sent: AtomicU64,
    /// Report calls that failed.
    failed: AtomicU64,
    /// Outcomes and hand-backs given up on.
    dropped: AtomicU64,
    /// An outcome arrived (the task starts its [`FLUSH_EVERY`] wait).
    arrived: Notify,
    /// A batch is full (the task sends at once).
    full: Notify,
}

/// The batcher; one per [`crate::Client`], shared by its breaker handles. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
    channel: AuthChannel,
    /// Who reports (for the server's minimum_reporters): host, process and a random part.
    reporter_id: Arc<str>,
}

fn to_wire(d: Duration) -> floodgate_proto::prost_types::Duration {
    floodgate_proto::prost_types::Duration {
        seconds: d.as_secs().min(i64::MAX as u64) as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// `host-pid-random`: distinct per process, and per client within one.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 64 && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "host".into());
    let random = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::time::SystemTime::now(),
    );
    format!("{host}-{}-{:08x}", std::process::id(), random as u32)
}

impl Reporter {
    /// A reporter over `channel` with no task: batches go out on [`Reporter::flush`].
    pub(crate) fn new(channel: AuthChannel) -> Self {
        Self {
            shared: Arc::default(),
            channel,
            reporter_id: instance_id().into(),
        }
    }

    /// Starts the background task (when a Tokio runtime runs). It stops, after a last
    /// flush, when `stop` turns true or its sender is dropped.
    pub(crate) fn start(&self, mut stop: watch::Receiver<bool>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let r = self.clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    () = r.shared.arrived.notified() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                tokio::select! {
                    () = tokio::time::sleep(FLUSH_EVERY) => {}
                    () = r.shared.full.notified() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                r.flush().await;
            }
            r.flush_final().await;
        });
    }

    /// The last flush: sends everything, and once more what failed the first time.
    pub(crate) async fn flush_final(&self) {
        self.flush().await;
        if !self.pending().retry.is_empty() {
            self.flush().await;
        }
    }

    /// This process's reporter id.
    pub fn reporter_id(&self) -> &str {
        &self.reporter_id
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one outcome of a call admitted in `key.generation` that took `took`.
    pub fn record(&self, key: BatchKey, success: bool, took: Duration) {
        let outcome = pb::CallOutcome {
            success,
            duration: Some(to_wire(took)),
        };
        let recorded = self.pending().record(key, outcome);
        match recorded {
            Recorded::Held { full } => {
                self.shared.arrived.notify_one();
                if full {
                    self.shared.full.notify_one();
                }
            }
            Recorded::Dropped => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Hands one half-open trial permit back (its call was cancelled or ignored).
    pub fn release(&self, key: BatchKey) {
        self.pending().release(key);
        self.shared.arrived.notify_one();
    }

    /// Report calls answered so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Report calls that failed so far (their batches were sent again once).
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Outcomes and permit hand-backs given up on: failed twice, rejected by the server,
    /// or over [`MAX_HELD`].
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Sends everything pending now; returns when it was answered (or failed).
    pub async fn flush(&self) {
        let channel = self.channel.clone();
        self.flush_with(move |request| {
            let mut client = CircuitBreakersClient::new(channel.clone());
            async move {
                match tokio::time::timeout(REPORT_TIMEOUT, client.report(request)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(status)) => Err(status.code()),
                    Err(_) => Err(tonic::Code::DeadlineExceeded),
                }
            }
        })
        .await;
    }

    /// [`Reporter::flush`] through `send`.
    async fn flush_with<F, Fut>(&self, mut send: F)
    where
        F: FnMut(pb::ReportRequest) -> Fut,
        Fut: Future<Output = Result<(), tonic::Code>>,
    {
        let _one_at_a_time = self.shared.flushing.lock().await;
        let requests = self.pending().take();
        for (namespace, items) in requests {
            let mut queue = vec![items];
            while let Some(items) = queue.pop() {
                let request = pb::ReportRequest {
                    namespace: namespace.clone(),
                    reports: items.iter().map(|i| self.wire(i)).collect(),
                };
                match send(request).await {
                    Ok(()) => {
                        self.shared.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(code) => {
                        self.shared.failed.fetch_add(1, Ordering::Relaxed);
                        if rejected(code) && items.len() > 1 {
                            // One report may be the bad one: send each alone.
                            queue.extend(items.into_iter().map(|i| vec![i]));
                        } else if rejected(code) {
                            let lost: u64 = items
                                .iter()
                                .map(|i| i.batch.calls.len() as u64 + i.batch.released)
                                .sum();
                            self.shared.dropped.fetch_add(lost, Ordering::Relaxed);
                        } else {
                            let lost = self.pending().failed(items);
                            self.shared.dropped.fetch_add(lost, Ordering::Relaxed);
                            // Sent again with the next flush.
                            self.shared.arrived.notify_one();
                        }
                    }
                }
            }
        }
    }

    fn wire(&self, item: &Item) -> pb::BreakerReport {
        pb::BreakerReport {
            breaker: item.key.breaker.clone(),
            calls: item.batch.calls.clone(),
            released: item.batch.released,
            generation: item.key.generation,
            reporter: self.reporter_id.to_string(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    fn key(ns: &str, b: &str, g: u64) -> BatchKey {
        BatchKey {
            namespace: ns.into(),
            breaker: b.into(),
            generation: g,
        }
    }

    fn ok(ms: u64) -> pb::CallOutcome {
        pb::CallOutcome {
            success: true,
            duration: Some(to_wire(Duration::from_millis(ms))),
        }
    }

    fn lazy_reporter() -> Reporter {
        Reporter::new(AuthChannel::new(
            tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy(),
        ))
    }

    #[test]
    fn outcomes_group_by_namespace_breaker_and_generation() {
        let mut p = Pending::default();
        for _ in 0..3 {
            p.record(key("a", "pay", 1), ok(5));
        }
        p.record(key("a", "pay", 2), ok(5));
        p.release(key("a", "pay", 2));
        p.record(key("b", "pay", 1), ok(0));
        let mut taken = p.take();
        taken.sort_by(|x, y| x.0.cmp(&y.0));
        // Two generations of one breaker never share a request (one report per name).
        type Shape<'a> = Vec<(&'a str, Vec<(u64, usize, u64)>)>;
        let shape: Shape<'_> = taken
            .iter()
            .map(|(ns, items)| {
                let v = items
                    .iter()
                    .map(|i| (i.key.generation, i.batch.calls.len(), i.batch.released))
                    .collect();
                (ns.as_str(), v)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a", vec![(1, 3, 0)]),
                ("a", vec![(2, 1, 1)]),
                ("b", vec![(1, 1, 0)])
            ]
        );
        assert!(p.take().is_empty());
        assert_eq!(p.held, 0);
    }

    #[test]
    fn requests_hold_at_most_64_reports_and_one_per_breaker() {
        let mut p = Pending::default();
        for i in 0..130 {
            p.record(key("a", &format!("b{i}"), 1), ok(1));
        }
        let sizes: Vec<usize> = p.take().iter().map(|(_, b)| b.len()).collect();
        assert_eq!(sizes, vec![64, 64, 2]);
    }

    #[test]
    fn a_full_batch_asks_for_a_send_and_is_cut_into_reports_the_server_takes() {
        let mut p = Pending::default();
        let k = key("a", "pay", 1);
        p.release(k.clone());
        for i in 1..=(2 * MAX_OUTCOMES + 1) {
            let r = p.record(k.clone(), ok(1));
            assert_eq!(
                r,
                Recorded::Held {
                    full: i >= MAX_OUTCOMES
                }
            );
        }
        let taken = p.take();
        let parts: Vec<(usize, u64)> = taken
            .iter()
            .flat_map(|(_, items)| {
                items
                    .iter()
                    .map(|i| (i.batch.calls.len(), i.batch.released))
            })
            .collect();
        assert_eq!(parts, vec![(MAX_OUTCOMES, 1), (MAX_OUTCOMES, 0), (1, 0)]);
        assert_eq!(taken.len(), 3, "one breaker name per request");
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Pending::default();
        for i in 0..MAX_HELD {
            let k = key("a", &format!("b{}", i % 100), 1);
            assert!(matches!(p.record(k, ok(1)), Recorded::Held { .. }));
        }
        assert_eq!(p.record(key("a", "b0", 1), ok(1)), Recorded::Dropped);
        // Hand-backs are counts and always kept.
        p.release(key("a", "b0", 1));
        p.take();
        assert_eq!(
            p.record(key("a", "b0", 1), ok(1)),
            Recorded::Held { full: false }
        );
    }

    #[test]
    fn a_failed_batch_is_retried_once_then_dropped() {
        let mut p = Pending::default();
        p.record(key("a", "pay", 1), ok(1));
        p.release(key("a", "pay", 1));
        let first = p.take().remove(0).1;
        assert_eq!(p.failed(first), 0, "a first failure keeps the batch");
        p.record(key("a", "pay", 1), ok(2));
        // The retried part and the new outcome travel separately (different tries).
        let tries: Vec<Vec<(bool, usize, u64)>> = p
            .take()
            .into_iter()
            .map(|(_, items)| {
                items
                    .iter()
                    .map(|i| (i.retried, i.batch.calls.len(), i.batch.released))
                    .collect()
            })
            .collect();
        assert_eq!(tries, vec![vec![(true, 1, 1)], vec![(false, 1, 0)]]);
        p.record(key("a", "pay", 1), ok(3));
        let again = first_again(&mut p);
        p.failed(again);
        let mut second = p.take();
        assert_eq!(second.len(), 1);
        assert!(second[0].1[0].retried);
        assert_eq!(p.failed(second.remove(0).1), 1, "a second failure drops it");
        assert!(p.retry.is_empty() && p.fresh.is_empty());
        assert_eq!(p.held, 0);
    }

    /// Takes the pending items as one list (for tests with one breaker).
    fn first_again(p: &mut Pending) -> Vec<Item> {
        p.take().into_iter().flat_map(|(_, items)| items).collect()
    }

    type Sent = Arc<StdMutex<Vec<pb::ReportRequest>>>;

    /// A sender that records requests and answers with `answer(request)`.
    fn sender(
        sent: &Sent,
        answer: impl Fn(&pb::ReportRequest) -> Result<(), tonic::Code>,
    ) -> impl FnMut(pb::ReportRequest) -> std::future::Ready<Result<(), tonic::Code>> {
        let sent = sent.clone();
        move |r| {
            let a = answer(&r);
            sent.lock().unwrap().push(r);
            std::future::ready(a)
        }
    }

    #[tokio::test]
    async fn flush_sends_with_reporter_and_generation_and_counts() {
        let r = lazy_reporter();
        r.record(key("a", "pay", 4), true, Duration::from_millis(3));
        r.record(key("a", "pay", 4), false, Duration::from_secs(3));
        r.release(key("a", "pay", 4));
        let sent = Sent::default();
        r.flush_with(sender(&sent, |_| Ok(()))).await;
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        let rep = &sent[0].reports[0];
        assert_eq!(
            (rep.breaker.as_str(), rep.generation, rep.released),
            ("pay", 4, 1)
        );
        assert_eq!(rep.reporter, r.reporter_id());
        assert_eq!(
            rep.calls,
            vec![
                pb::CallOutcome {
                    success: true,
                    duration: Some(to_wire(Duration::from_millis(3)))
                },
                pb::CallOutcome {
                    success: false,
                    duration: Some(to_wire(Duration::from_secs(3)))
                },
            ]
        );
        assert_eq!((r.sent(), r.failed(), r.dropped()), (1, 0, 0));
    }

    #[tokio::test]
    async fn an_unavailable_server_gets_the_batch_twice_then_it_is_dropped() {
        let r = lazy_reporter();
        r.record(key("a", "pay", 1), true, Duration::ZERO);
        let sent = Sent::default();
        for _ in 0..3 {
            r.flush_with(sender(&sent, |_| Err(tonic::Code::Unavailable)))
                .await;
        }
        assert_eq!(sent.lock().unwrap().len(), 2);
        assert_eq!((r.sent(), r.failed(), r.dropped()), (0, 2, 1));
    }

    #[tokio::test]
    async fn a_rejected_report_does_not_sink_the_others() {
        let r = lazy_reporter();
        r.record(key("a", "gone", 1), true, Duration::ZERO);
        r.record(key("a", "pay", 1), true, Duration::ZERO);
        r.record(key("a", "pay", 1), true, Duration::ZERO);
        let sent = Sent::default();
        let gone = |req: &pb::ReportRequest| {
            if req.reports.iter().any(|b| b.breaker == "gone") {
                Err(tonic::Code::NotFound)
            } else {
                Ok(())
            }
        };
        r.flush_with(sender(&sent, gone)).await;
        let sizes: Vec<usize> = sent
            .lock()
            .unwrap()
            .iter()
            .map(|q| q.reports.len())
            .collect();
        assert_eq!(sizes, vec![2, 1, 1], "the request, then each report alone");
        assert_eq!((r.sent(), r.failed(), r.dropped()), (1, 2, 1));
        // Nothing is left to retry: a rejection is final.
        r.flush_with(sender(&sent, gone)).await;
        assert_eq!(sent.lock().unwrap().len(), 3);
    }

    /// Waits (virtual time) until `done`.
    async fn until(done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // The lazy channel cannot connect, so each send of the task fails: `failed` counts them.

    #[tokio::test(start_paused = true)]
    async fn the_task_sends_a_burst_in_one_report_after_the_wait() {
        let r = lazy_reporter();
        let (_stop, stop_rx) = watch::channel(false);
        r.start(stop_rx);
        for _ in 0..200 {
            r.record(key("a", "pay", 1), true, Duration::ZERO);
        }
        tokio::time::sleep(FLUSH_EVERY / 2).await;
        assert_eq!(r.sent() + r.failed(), 0, "nothing before the wait");
        until(|| r.failed() > 0).await;
        assert_eq!(r.failed(), 1, "200 outcomes, one Report");
        // The failed batch goes once more on its own, then it is dropped.
        until(|| r.dropped() > 0).await;
        assert_eq!((r.failed(), r.dropped()), (2, 200));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_the_task_flushes_what_is_left() {
        let r = lazy_reporter();
        let (stop, stop_rx) = watch::channel(false);
        r.start(stop_rx);
        r.record(key("a", "pay", 1), true, Duration::ZERO);
        stop.send_replace(true);
        // The last flush sends once more what failed, then gives up and counts it.
        until(|| r.dropped() > 0).await;
        assert_eq!((r.failed(), r.dropped()), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_stop_sender_also_stops_the_task_after_a_flush() {
        let r = lazy_reporter();
        let (stop, stop_rx) = watch::channel(false);
        r.start(stop_rx);
        r.record(key("a", "pay", 1), true, Duration::ZERO);
        drop(stop);
        // The last flush sends once more what failed, then gives up and counts it.
        until(|| r.dropped() > 0).await;
        assert_eq!((r.failed(), r.dropped()), (2, 1));
    }
}
