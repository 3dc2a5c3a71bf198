//! Breaker states kept current by `CircuitBreakers.Watch`. Owns the cache entries and their
//! Watch tasks.
//!
//! One stream per (namespace, breaker), opened on the breaker's first call and reopened
//! with backoff (100 ms doubling to 5 s) when it ends. An entry is fresh while its stream is
//! up: the server sends the current state first and then every transition from any server
//! (and the current states again if its relay fell behind), so a live stream is never
//! knowingly wrong. Fresh CLOSED, DISABLED and METRICS_ONLY admit with no round trip;
//! fresh OPEN refuses until its `retry_after` (counted from the event's time when the
//! clocks allow, so a late event only shortens it); FORCED_OPEN refuses and is asked
//! about again every second; HALF_OPEN (a fleet-wide permit is needed), an OPEN past its
//! wait, and anything stale are decided by the server.
//!
//! The tasks stop when the client shuts down or its last clone is dropped; entries then
//! turn stale, so calls ask.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime},
};

use crate::AuthChannel;
use floodgate_proto::v1::{self as pb, circuit_breakers_client::CircuitBreakersClient};
use tokio::{sync::watch, time::Instant};

use crate::acquire::duration;

/// What the cache says about one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CachedState {
    /// Admit locally, reporting with this generation.
    Admit {
        /// The breaker's state (CLOSED, DISABLED or METRICS_ONLY).
        state: pb::BreakerState,
        /// The breaker's generation.
        generation: u64,
    },
    /// Refuse locally.
    Refuse {
        /// OPEN or FORCED_OPEN.
        state: pb::BreakerState,
        /// When to ask again.
        retry_after: Duration,
    },
    /// Ask the server.
    Ask,
}

/// How long a FORCED_OPEN breaker is refused locally before asking again (an operator's
/// change arrives through the stream anyway).
pub const FORCED_OPEN_RECHECK: Duration = Duration::from_secs(1);
/// First and longest wait before reopening a Watch stream.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

#[derive(Debug, Clone, Copy)]
struct Known {
    state: pb::BreakerState,
    generation: u64,
    /// OPEN: when it may let trial calls through.
    retry_at: Instant,
    /// The Watch stream is up.
    fresh: bool,
}

/// One breaker's entry: its state as last seen, or nothing yet. Breaker handles keep it,
/// so a lookup is one uncontended lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slot(Arc<Mutex<Option<Known>>>);

impl Slot {
    fn get(&self) -> Option<Known> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, known: Option<Known>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = known;
    }

    /// The cached decision for a call at `now`.
    pub(crate) fn decide(&self, now: Instant) -> CachedState {
        decide(self.get(), now)
    }
}

/// Breaker states by (namespace, breaker); one per [`crate::Client`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BreakerCache {
    entries: Arc<Mutex<HashMap<(String, String), Slot>>>,
    channel: AuthChannel,
    stop: watch::Receiver<bool>,
}

impl BreakerCache {
    /// An empty cache watching through `channel` until `stop` turns true or its sender is
    /// dropped.
    pub(crate) fn new(channel: AuthChannel, stop: watch::Receiver<bool>) -> Self {
        Self {
            entries: Arc::default(),
            channel,
            stop,
        }
    }

    /// The entry of a breaker; the first call starts its Watch (when a Tokio runtime runs
    /// and the client was not shut down).
    pub(crate) fn slot(&self, namespace: &str, breaker: &str) -> Slot {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let id = (namespace.to_owned(), breaker.to_owned());
        if let Some(s) = entries.get(&id) {
            return s.clone();
        }
        let slot = Slot::default();
        if !*self.stop.borrow() {
            self.spawn_watch(namespace, breaker, Arc::downgrade(&slot.0));
        }
        entries.insert(id, slot.clone());
        slot
    }

    /// The cached decision for a call of `breaker` at `now`.
    pub fn lookup(&self, namespace: &str, breaker: &str, now: Instant) -> CachedState {
        self.slot(namespace, breaker).decide(now)
    }

    fn spawn_watch(&self, namespace: &str, breaker: &str, slot: Weak<Mutex<Option<Known>>>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let request = pb::WatchBreakersRequest {
            namespace: namespace.to_owned(),
            breakers: vec![breaker.to_owned()],
        };
        let (channel, mut stop) = (self.channel.clone(), self.stop.clone());
        rt.spawn(async move {
            tokio::select! {
                () = watch_loop(channel, request, &slot) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            // Stopped: nobody keeps the entry current any more.
            if let Some(s) = slot.upgrade() {
                Slot(s).set(None);
            }
        });
    }
}

/// Keeps `slot` current until the entry is gone.
async fn watch_loop(
    channel: AuthChannel,
    request: pb::WatchBreakersRequest,
    slot: &Weak<Mutex<Option<Known>>>,
) {
    let mut backoff = BACKOFF.0;
    loop {
        let stream = CircuitBreakersClient::new(channel.clone())
            .watch(request.clone())
            .await;
        if let Ok(stream) = stream {
            let mut stream = stream.into_inner();
            while let Ok(Some(event)) = stream.message().await {
                let Some(s) = slot.upgrade() else { return };
                let since = event.at.and_then(|at| {
                    let at = SystemTime::try_from(at).ok()?;
                    SystemTime::now().duration_since(at).ok()
                });
                Slot(s).set(Some(apply(&event, Instant::now(), since)));
                backoff = BACKOFF.0;
            }
        }
        // The stream is down: stale until it is back.
        match slot.upgrade() {
            Some(s) => Slot(s).set(None),
            None => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// The entry after event `e`, received at `now`, `since` after the event's time.
fn apply(e: &pb::BreakerEvent, now: Instant, since: Option<Duration>) -> Known {
    let retry = duration(e.retry_after).saturating_sub(since.unwrap_or_default());
    Known {
        state: pb::BreakerState::try_from(e.to).unwrap_or(pb::BreakerState::Unspecified),
        generation: e.generation,
        retry_at: now + retry,
        fresh: true,
    }
}

/// The decision for a breaker last seen as `known`, at `now`.
fn decide(known: Option<Known>, now: Instant) -> CachedState {
    let Some(k) = known.filter(|k| k.fresh) else {
        return CachedState::Ask;
    };
    use pb::BreakerState as S;
    match k.state {
        S::Closed | S::Disabled | S::MetricsOnly => CachedState::Admit {
            state: k.state,
            generation: k.generation,
        },
        S::Open if k.retry_at > now => CachedState::Refuse {
            state: S::Open,
            retry_after: k.retry_at - now,
        },
        S::ForcedOpen => CachedState::Refuse {
            state: S::ForcedOpen,
            retry_after: FORCED_OPEN_RECHECK,
        },
        _ => CachedState::Ask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(state: pb::BreakerState, retry_at: Instant, fresh: bool) -> Option<Known> {
        Some(Known {
            state,
            generation: 7,
            retry_at,
            fresh,
        })
    }

    use pb::BreakerState as S;

    #[test]
    fn fresh_passing_states_admit_locally_with_their_generation() {
        let now = Instant::now();
        for s in [S::Closed, S::Disabled, S::MetricsOnly] {
            assert_eq!(
                decide(known(s, now, true), now),
                CachedState::Admit {
                    state: s,
                    generation: 7
                }
            );
        }
    }

    #[test]
    fn stale_or_unknown_entries_ask() {
        let now = Instant::now();
        for s in [S::Closed, S::Open, S::ForcedOpen, S::Disabled] {
            let later = now + Duration::from_secs(3);
            assert_eq!(decide(known(s, later, false), now), CachedState::Ask);
        }
        assert_eq!(decide(None, now), CachedState::Ask);
        assert_eq!(
            decide(known(S::Unspecified, now, true), now),
            CachedState::Ask
        );
    }

    #[test]
    fn open_refuses_until_its_retry_after_then_asks() {
        let now = Instant::now();
        let at = now + Duration::from_secs(3);
        assert_eq!(
            decide(known(S::Open, at, true), now),
            CachedState::Refuse {
                state: S::Open,
                retry_after: Duration::from_secs(3)
            }
        );
        let almost = at - Duration::from_millis(1);
        assert_eq!(
            decide(known(S::Open, at, true), almost),
            CachedState::Refuse {
                state: S::Open,
                retry_after: Duration::from_millis(1)
            }
        );
        assert_eq!(decide(known(S::Open, at, true), at), CachedState::Ask);
    }

    #[test]
    fn half_open_always_asks_and_forced_open_refuses() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        assert_eq!(
            decide(known(S::HalfOpen, later, true), now),
            CachedState::Ask
        );
        assert_eq!(
            decide(known(S::ForcedOpen, now, true), later),
            CachedState::Refuse {
                state: S::ForcedOpen,
                retry_after: FORCED_OPEN_RECHECK
            }
        );
    }

    fn open_event(retry_secs: i64) -> pb::BreakerEvent {
        pb::BreakerEvent {
            to: S::Open as i32,
            generation: 3,
            retry_after: Some(floodgate_proto::prost_types::Duration {
                seconds: retry_secs,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_set_state_generation_and_deadline() {
        let now = Instant::now();
        let k = apply(&open_event(2), now, None);
        assert_eq!((k.state, k.generation, k.fresh), (S::Open, 3, true));
        assert_eq!(k.retry_at, now + Duration::from_secs(2));
    }

    #[test]
    fn a_late_event_only_shortens_the_wait() {
        let now = Instant::now();
        let k = apply(&open_event(2), now, Some(Duration::from_millis(500)));
        assert_eq!(k.retry_at, now + Duration::from_millis(1500));
        // Older than its wait (or a client clock far ahead): ask at once.
        let k = apply(&open_event(2), now, Some(Duration::from_secs(10)));
        assert_eq!(decide(Some(k), now), CachedState::Ask);
    }

    #[tokio::test]
    async fn a_stopped_cache_starts_no_watch_and_asks() {
        let channel = AuthChannel::new(
            tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy(),
        );
        let (tx, rx) = watch::channel(true);
        let cache = BreakerCache::new(channel, rx);
        assert_eq!(cache.lookup("ns", "b", Instant::now()), CachedState::Ask);
        drop(tx);
    }

    #[tokio::test]
    async fn an_unreachable_server_leaves_the_entry_stale() {
        let channel = AuthChannel::new(
            tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy(),
        );
        let (tx, rx) = watch::channel(false);
        let cache = BreakerCache::new(channel, rx);
        let slot = cache.slot("ns", "b");
        // As if a stream had delivered CLOSED: the next failed reconnect makes it stale.
        slot.set(known(S::Closed, Instant::now(), true));
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.decide(Instant::now()) != CachedState::Ask {
            assert!(Instant::now() < deadline, "the entry stayed fresh");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Stopping ends the task and leaves the entry stale.
        tx.send_replace(true);
        slot.set(known(S::Closed, Instant::now(), true));
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.decide(Instant::now()) != CachedState::Ask {
            assert!(
                Instant::now() < deadline,
                "the entry stayed fresh after stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
