//! What every service shares: the store, the live configuration and the key builder, and
//! the one place a store call gets its deadline and its fail mode.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use floodgate_core::{
    CheckOutcome, FailMode,
    breaker::{Admission, State},
};
use tracing::warn;

use crate::{
    config::Config,
    error::Error,
    keys::Keys,
    metrics,
    store::{
        AcquirePlan, PlannedBreaker, Store, StoreDecision, StoreError,
        guard::{self, StoreGuard},
        memory::MemoryStore,
    },
};

/// Shared by every service of one server.
#[derive(Debug)]
pub struct AppState<S> {
    /// Where limit state lives.
    pub store: S,
    /// The configuration; swapped whole on reload, read without locks.
    pub config: ArcSwap<Config>,
    /// Builds every Redis key.
    pub keys: Keys,
    /// Decides `FAIL_MODE_LOCAL` checks in-process while the store is failing.
    pub local: MemoryStore,
    /// Becomes true when the server starts shutting down (ends Watch streams, which would
    /// otherwise hold the graceful drain open forever).
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Breaker index entries this process wrote recently (so a busy Report path does not
    /// write the index every time).
    noted: parking_lot::Mutex<HashMap<String, Instant>>,
    /// Denials counted for TopKeys, flushed in the background (`crate::top`).
    pub top: crate::top::TopCounter,
    /// When this server started (ServerStatus uptime).
    pub started: Instant,
    /// The in-flight cap and breaker around every store call (`store::guard`).
    pub guard: Arc<StoreGuard>,
    /// Breaker Watch streams open, per connection and in total (`limits.max_watches*`).
    pub watch_slots: Arc<crate::limits::WatchSlots>,
}

/// The least time the store probe gives a reconnect and PING (a short `store_timeout`
/// would otherwise make a slow TCP handshake look like a dead Redis forever).
const PROBE_DEADLINE_FLOOR: Duration = Duration::from_millis(250);

/// How often this process rewrites a breaker's index entry.
const NOTE_EVERY: Duration = Duration::from_secs(3600);
/// Most index entries remembered before the memory is cleared.
const MAX_NOTED: usize = 10_000;

impl<S: Store> AppState<S> {
    /// State for `store` under `config`.
    pub fn new(store: S, config: Config) -> Arc<Self> {
        let guard = Arc::new(StoreGuard::new(config.store_max_in_flight));
        Arc::new(Self {
            store,
            keys: Keys::new(config.key_prefix.clone()),
            config: ArcSwap::from_pointee(config),
            local: MemoryStore::default(),
            shutdown: tokio::sync::watch::channel(false).0,
            noted: Default::default(),
            top: Default::default(),
            started: Instant::now(),
            guard,
            watch_slots: Default::default(),
        })
    }

    /// Starts the background probe that reconnects the store while the guard is open
    /// (and makes the first connection when the store could not connect at start).
    pub fn spawn_store_probe(self: &Arc<Self>) {
        let state = Arc::downgrade(self);
        guard::spawn_probe(self.guard.clone(), move || {
            let state = state.clone();
            async move {
                let Some(st) = state.upgrade() else {
                    return Err(StoreError::Unavailable("server stopped".into()));
                };
                let limit = st.config.load().store_timeout.max(PROBE_DEADLINE_FLOOR);
                tokio::time::timeout(limit, async {
                    st.store.reconnect().await?;
                    st.store.ping().await
                })
                .await
                .unwrap_or(Err(StoreError::Timeout(limit)))
            }
        });
    }

    /// Tells long-lived streams that the server is shutting down.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns true when the server starts shutting down.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Records that queue `q` has state (for metrics and status), at most hourly per queue
    /// and process; failures are only logged.
    pub async fn note_queue(&self, q: &crate::store::PlannedQueue) {
        let member = format!("{}\t{}", q.namespace, q.name);
        if !self.first_note(format!("q\0{member}")) {
            return;
        }
        let index = self.keys.queue_index();
        if let Err(e) = self
            .timed("queue_index", self.store.queue_index_add(&index, &member))
            .await
        {
            warn!(error = %e, queue = %q.name, "could not note the queue for metrics and status");
        }
    }

    /// True when `id` was not noted within [`NOTE_EVERY`] (and notes it now).
    fn first_note(&self, id: String) -> bool {
        let mut noted = self.noted.lock();
        if noted.get(&id).is_some_and(|t| t.elapsed() < NOTE_EVERY) {
            return false;
        }
        if noted.len() >= MAX_NOTED {
            noted.clear();
        }
        noted.insert(id, Instant::now());
        true
    }

    /// Records that breaker `b` has state in its namespace (for List), at most hourly per
    /// breaker and process; failures are only logged (List then misses a template breaker
    /// until the next report).
    pub async fn note_breaker(&self, b: &PlannedBreaker) {
        if !self.first_note(format!("b\0{}\0{}", b.namespace, b.name)) {
            return;
        }
        let index = self.keys.breaker_index(&b.namespace);
        if let Err(e) = self
            .timed(
                "breaker_index",
                self.store.breaker_index_add(&index, &b.name),
            )
            .await
        {
            warn!(error = %e, breaker = %b.name, "could not note the breaker for List");
        }
    }

    /// Runs one store call within `store_timeout` through the guard (in-flight cap and
    /// store breaker), recording its latency and any error.
    pub async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let timeout = self.config.load().store_timeout;
        let started = Instant::now();
        let result = self.guard.run(timeout, f).await;
        metrics::store_call(op, started.elapsed(), result.as_ref().err());
        result
    }

    /// Runs `plan` on the store within its deadline. When the store fails or is late, each
    /// check's fail mode decides and the answer is `degraded` (the bool).
    pub async fn decide(&self, plan: &AcquirePlan) -> Result<(StoreDecision, bool), Error> {
        match self.timed("acquire", self.store.acquire(plan)).await {
            Ok(d) => Ok((d, false)),
            Err(e) => {
                // While the guard is open every call lands here; its opening was logged once.
                if matches!(e, StoreError::Unavailable(_)) {
                    tracing::debug!(error = %e, "store unavailable; fail modes decide");
                } else {
                    warn!(error = %e, "store failed; fail modes decide");
                }
                metrics::degraded(match e {
                    StoreError::Timeout(_) => "timeout",
                    StoreError::Unavailable(_) => "unavailable",
                    _ => "error",
                });
                let default = self.config.load().default_fail_mode;
                Ok((self.fail_mode_decision(plan, default).await, true))
            }
        }
    }

    /// Runs a plan that must not be answered without the store (Status).
    pub async fn decide_strict(&self, plan: &AcquirePlan) -> Result<StoreDecision, Error> {
        Ok(self.timed("status", self.store.acquire(plan)).await?)
    }

    /// Runs a store call within the deadline; a failure is the caller's error.
    pub async fn with_deadline<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Error> {
        Ok(self.timed(op, f).await?)
    }

    /// The answer without the store: a `closed` check denies everything; `local` checks are
    /// decided in-process; `open` checks allow.
    async fn fail_mode_decision(&self, plan: &AcquirePlan, default: FailMode) -> StoreDecision {
        let modes: Vec<FailMode> = plan
            .checks
            .iter()
            .map(|c| c.policy.fail_mode().unwrap_or(default))
            .collect();
        let breakers: Vec<Admission> = plan
            .breakers
            .iter()
            .map(|b| {
                let open = b.settings.fail_mode != FailMode::Closed;
                // Generation 0: outcomes reported with it count in whatever generation the
                // breaker is in when the store is back.
                Admission {
                    allowed: open,
                    state: if open { State::Closed } else { State::Open },
                    retry_after: 0,
                    generation: 0,
                }
            })
            .collect();
        let closed = plan
            .checks
            .iter()
            .zip(&modes)
            .any(|(c, m)| *m == FailMode::Closed && !c.policy.shadow())
            || breakers.iter().any(|b| !b.allowed);
        let degraded = |c: &crate::store::PlannedCheck, allowed: bool| CheckOutcome {
            allowed,
            limit: c.policy.capacity(),
            remaining: 0,
            reset_after: 0,
            retry_after: 0,
        };
        if closed {
            let checks = plan
                .checks
                .iter()
                .zip(&modes)
                .map(|(c, m)| degraded(c, *m != FailMode::Closed))
                .collect();
            return StoreDecision {
                allowed: false,
                checks,
                leases: vec![None; plan.checks.len()],
                breakers,
                transitions: Vec::new(),
            };
        }
        let local: Vec<usize> = (0..plan.checks.len())
            .filter(|&i| modes[i] == FailMode::Local)
            .collect();
        let mut checks: Vec<CheckOutcome> = plan.checks.iter().map(|c| degraded(c, true)).collect();
        let mut leases = vec![None; plan.checks.len()];
        let mut allowed = true;
        if !local.is_empty() {
            // Each server enforces its share of the limit alone (DESIGN "Failure").
            let share = 1.0 / f64::from(self.config.load().fleet_size.max(1));
            let sub = AcquirePlan {
                checks: local
                    .iter()
                    .map(|&i| {
                        let mut c = plan.checks[i].clone();
                        c.policy = Arc::new(c.policy.local_part(share));
                        c
                    })
                    .collect(),
                request_record: None,
                breakers: Vec::new(),
                consume: plan.consume,
                now: plan.now,
            };
            // The memory store cannot fail.
            if let Ok(d) = self.local.acquire(&sub).await {
                allowed = d.allowed;
                for (j, &i) in local.iter().enumerate() {
                    checks[i] = d.checks[j];
                    leases[i] = d.leases[j].clone();
                }
            }
        }
        StoreDecision {
            allowed,
            checks,
            leases,
            breakers,
            transitions: Vec::new(),
        }
    }
}
