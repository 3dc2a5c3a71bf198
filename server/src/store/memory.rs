//! The in-memory store: the `core` model behind one mutex. Serves a single instance only;
//! nothing is shared with other servers. Idle state is swept in the background.
use std::{collections::HashMap, sync::Arc, time::Duration};

use floodgate_core::{
    Clock, Micros, SystemClock,
    acquire::{CheckRequest, LimitState, acquire},
    concurrency,
};
use parking_lot::Mutex;

use super::{AcquirePlan, PlannedCheck, Store, StoreDecision, StoreError};

/// How long a request record answers retries.
const REQUEST_RECORD_TTL: Micros = 60_000_000;

#[derive(Debug, Default)]
struct Tables {
    /// Limit state by key, with the time it becomes equivalent to empty.
    limits: HashMap<String, (LimitState, Micros)>,
    /// First answers of Acquires with a request_id, with their expiry.
    requests: HashMap<String, (StoreDecision, Micros)>,
}

/// Limit state in this process.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    /// The tables; one lock, held only for the pure computation.
    tables: Arc<Mutex<Tables>>,
    /// Where "now" comes from when a plan gives none.
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryStore {
    /// An empty store reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            tables: Arc::default(),
            clock,
        }
    }

    /// Drops every state that has become equivalent to empty. Returns how many went.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let mut t = self.tables.lock();
        let before = t.limits.len() + t.requests.len();
        t.limits.retain(|_, (_, exp)| *exp > now);
        t.requests.retain(|_, (_, exp)| *exp > now);
        before - (t.limits.len() + t.requests.len())
    }

    /// Sweeps every `every` until the store is dropped.
    pub fn spawn_sweeper(&self, every: Duration) {
        let weak = Arc::downgrade(&self.tables);
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(tables) = weak.upgrade() else { return };
                MemoryStore {
                    tables,
                    clock: clock.clone(),
                }
                .sweep();
            }
        });
    }

    /// Number of limits held (for tests and status).
    pub fn len(&self) -> usize {
        self.tables.lock().limits.len()
    }

    /// Whether no limit is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn decide(&self, plan: &AcquirePlan) -> StoreDecision {
        // Read the clock under the lock: a request holding an older `now` must never run
        // after one that already stored a later state.
        let mut guard = self.tables.lock();
        let now = plan.now.unwrap_or_else(|| self.clock.now());
        let tables = &mut *guard;
        if let Some(record) = &plan.request_record
            && let Some((answer, exp)) = tables.requests.get(record)
            && *exp > now
        {
            return answer.clone();
        }
        // Take the states out so each check gets its own `&mut` (keys are distinct).
        let mut states: Vec<LimitState> = plan
            .checks
            .iter()
            .map(|c| {
                tables
                    .limits
                    .remove(&c.key)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|| LimitState::empty(c.policy.algorithm()))
            })
            .collect();
        let requests: Vec<CheckRequest<'_>> =
            plan.checks.iter().map(PlannedCheck::request).collect();
        let mut refs: Vec<&mut LimitState> = states.iter_mut().collect();
        let outcome = acquire(&mut refs, &requests, now, plan.consume);
        for (c, s) in plan.checks.iter().zip(states) {
            let exp = s.expires_at(&c.policy);
            if exp > now {
                tables.limits.insert(c.key.clone(), (s, exp));
            }
        }
        let leases = plan
            .checks
            .iter()
            .zip(&outcome.checks)
            .map(|(c, o)| {
                (plan.consume && outcome.allowed && o.allowed)
                    .then(|| c.lease_member.clone())
                    .flatten()
            })
            .collect();
        let decision = StoreDecision {
            allowed: outcome.allowed,
            checks: outcome.checks,
            leases,
        };
        // Only an admitted answer is recorded (a denial consumed nothing; its retry is
        // decided afresh), as in `lua/acquire.lua`.
        if plan.consume
            && decision.allowed
            && let Some(record) = &plan.request_record
        {
            tables
                .requests
                .insert(record.clone(), (decision.clone(), now + REQUEST_RECORD_TTL));
        }
        decision
    }

    fn with_leases<T>(
        &self,
        key: &str,
        now: Option<Micros>,
        f: impl FnOnce(&mut concurrency::State, Micros) -> T,
    ) -> T {
        let mut t = self.tables.lock();
        let now = now.unwrap_or_else(|| self.clock.now());
        let mut state = match t.limits.remove(key) {
            Some((LimitState::Concurrency(s), _)) => s,
            _ => concurrency::State::default(),
        };
        let out = f(&mut state, now);
        let exp = state.expires_at();
        if exp > now {
            t.limits
                .insert(key.to_owned(), (LimitState::Concurrency(state), exp));
        }
        out
    }
}

impl Store for MemoryStore {
    async fn acquire(&self, plan: &AcquirePlan) -> Result<StoreDecision, StoreError> {
        Ok(self.decide(plan))
    }

    async fn release(
        &self,
        key: &str,
        member: &str,
        now: Option<Micros>,
    ) -> Result<bool, StoreError> {
        Ok(self.with_leases(key, now, |s, now| concurrency::release(s, member, now)))
    }

    async fn renew(
        &self,
        key: &str,
        member: &str,
        ttl: Micros,
        now: Option<Micros>,
    ) -> Result<Option<Micros>, StoreError> {
        Ok(self.with_leases(key, now, |s, now| concurrency::renew(s, member, ttl, now)))
    }

    async fn reset(&self, key: &str) -> Result<bool, StoreError> {
        let mut t = self.tables.lock();
        let now = self.clock.now();
        Ok(t.limits.remove(key).is_some_and(|(_, exp)| exp > now))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
