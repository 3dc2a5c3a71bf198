//! Breaker states kept current by `CircuitBreakers.Watch`: one stream per breaker, opened
//! on first use and reopened with backoff. While its stream is up an entry is fresh: CLOSED
//! (and DISABLED, METRICS_ONLY) admit with no round trip, OPEN refuses until its
//! `retry_after`, FORCED_OPEN refuses; HALF_OPEN, an OPEN past its wait, and anything
//! stale are decided by asking the server.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use floodgate_proto::v1::{self as pb, circuit_breakers_client::CircuitBreakersClient};
use tonic::transport::Channel;

/// What the cache says about one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachedState {
    /// Admit locally, reporting with this generation.
    Admit {
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
const FORCED_OPEN_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Known {
    state: pb::BreakerState,
    generation: u64,
    /// OPEN: when it may let trial calls through.
    retry_at: Instant,
    /// The Watch stream is up.
    fresh: bool,
}

/// The state of one breaker as last seen, or nothing yet.
type Slot = Arc<Mutex<Option<Known>>>;

/// Breaker states by (namespace, breaker); one per [`crate::Client`].
#[derive(Debug, Clone)]
pub struct BreakerCache {
    entries: Arc<Mutex<HashMap<(String, String), Slot>>>,
    channel: Channel,
}

impl BreakerCache {
    /// An empty cache watching through `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            entries: Arc::default(),
            channel,
        }
    }

    /// The cached decision for a call at `now`; the first lookup of a breaker starts its
    /// Watch (when a Tokio runtime runs) and answers `None` (ask).
    pub fn lookup(&self, namespace: &str, breaker: &str, now: Instant) -> Option<CachedState> {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let id = (namespace.to_owned(), breaker.to_owned());
            match entries.get(&id) {
                Some(s) => s.clone(),
                None => {
                    let slot: Slot = Arc::default();
                    entries.insert(id, slot.clone());
                    self.spawn_watch(namespace, breaker, Arc::downgrade(&slot));
                    return None;
                }
            }
        };
        let known = *slot.lock().unwrap_or_else(|e| e.into_inner());
        Some(decide(known, now))
    }

    fn spawn_watch(&self, namespace: &str, breaker: &str, slot: Weak<Mutex<Option<Known>>>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let channel = self.channel.clone();
        let request = pb::WatchBreakersRequest {
            namespace: namespace.to_owned(),
            breakers: vec![breaker.to_owned()],
        };
        rt.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                if slot.strong_count() == 0 {
                    return;
                }
                let stream = CircuitBreakersClient::new(channel.clone())
                    .watch(request.clone())
                    .await;
                if let Ok(stream) = stream {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(event)) = stream.message().await {
                        let Some(slot) = slot.upgrade() else { return };
                        apply(&slot, &event, Instant::now());
                        backoff = Duration::from_millis(100);
                    }
                }
                // The stream is down: stale until it is back.
                if let Some(slot) = slot.upgrade()
                    && let Some(k) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
                {
                    k.fresh = false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }
}

/// Applies one Watch event received at `now`.
fn apply(slot: &Mutex<Option<Known>>, e: &pb::BreakerEvent, now: Instant) {
    let retry = e
        .retry_after
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .unwrap_or_default();
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Known {
        state: pb::BreakerState::try_from(e.to).unwrap_or(pb::BreakerState::Unspecified),
        generation: e.generation,
        retry_at: now + retry,
        fresh: true,
    });
}

/// The decision for a breaker last seen as `known`, at `now`.
fn decide(known: Option<Known>, now: Instant) -> CachedState {
    let Some(k) = known.filter(|k| k.fresh) else {
        return CachedState::Ask;
    };
    use pb::BreakerState as S;
    match k.state {
        S::Closed | S::Disabled | S::MetricsOnly => CachedState::Admit {
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

    #[test]
    fn fresh_states_decide_locally_and_stale_ones_ask() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        use pb::BreakerState as S;
        assert_eq!(
            decide(known(S::Closed, now, true), now),
            CachedState::Admit { generation: 7 }
        );
        assert_eq!(decide(known(S::Closed, now, false), now), CachedState::Ask);
        assert_eq!(decide(None, now), CachedState::Ask);
        assert_eq!(
            decide(known(S::Open, later, true), now),
            CachedState::Refuse {
                state: S::Open,
                retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(decide(known(S::Open, now, true), later), CachedState::Ask);
        assert_eq!(
            decide(known(S::HalfOpen, later, true), now),
            CachedState::Ask
        );
    }

    #[test]
    fn events_update_the_slot() {
        let slot = Mutex::new(None);
        let now = Instant::now();
        apply(
            &slot,
            &pb::BreakerEvent {
                to: pb::BreakerState::Open as i32,
                generation: 3,
                retry_after: Some(floodgate_proto::prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                ..Default::default()
            },
            now,
        );
        let k = slot.lock().unwrap().unwrap();
        assert_eq!(
            (k.state, k.generation, k.fresh),
            (pb::BreakerState::Open, 3, true)
        );
        assert_eq!(k.retry_at, now + Duration::from_secs(2));
    }
}
