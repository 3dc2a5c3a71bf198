//! The in-memory store: the `core` model behind one mutex. Serves a single instance only;
//! nothing is shared with other servers. Idle state is swept in the background.
use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use floodgate_core::{
    Clock, Micros, SystemClock,
    acquire::{CheckRequest, LimitState, acquire},
    breaker::{Breaker, State, Transition, machine},
    concurrency,
    dead_letters::{Entry, EntryId, Message, Queue, QueueStats},
};
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{
    AcquirePlan, BreakerEvent, BreakerRead, BreakerReported, MadeTransition, PlannedBreaker,
    PlannedCheck, PlannedQueue, ReportCounts, ScanRange, Store, StoreDecision, StoreError,
    StoredLetter,
};

/// Transitions kept per breaker (as the Redis stream's MAXLEN).
const HISTORY_LEN: usize = 1_000;

/// How long a request record answers retries.
const REQUEST_RECORD_TTL: Micros = 60_000_000;

#[derive(Debug, Default)]
struct Tables {
    /// Limit state by key, with the time it becomes equivalent to empty.
    limits: HashMap<String, (LimitState, Micros)>,
    /// First answers of Acquires with a request_id, with their expiry.
    requests: HashMap<String, (StoreDecision, Micros)>,
    /// Breaker state by state key.
    breakers: HashMap<String, Breaker>,
    /// Breaker transitions by state key, newest last.
    history: HashMap<String, VecDeque<BreakerEvent>>,
    /// Breaker names with state, by index key.
    index: HashMap<String, BTreeSet<String>>,
    /// Top denied keys by minute key: member → count, with the set's expiry.
    tops: HashMap<String, (HashMap<String, u64>, Micros)>,
    /// Dead-letter queues by stream key.
    queues: HashMap<String, Queue>,
}

fn letter(id: EntryId, e: &Entry, archived: bool, include_payload: bool) -> StoredLetter {
    let mut message = e.message.clone();
    let payload_size = message.payload.len() as u64;
    if !include_payload {
        message.payload = Vec::new();
    }
    StoredLetter {
        id: id.to_string(),
        message,
        published_at: e.published_at,
        payload_size,
        delivery_count: e.delivery_count,
        archived,
        original_id: e.original_id.map(|o| o.to_string()),
    }
}

/// Ids that parse; others name nothing (as in Redis, where they match no entry).
fn entry_ids(ids: &[String]) -> Vec<EntryId> {
    ids.iter().filter_map(|i| i.parse().ok()).collect()
}

/// Limit state in this process.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    /// The tables; one lock, held only for the pure computation.
    tables: Arc<Mutex<Tables>>,
    /// Where "now" comes from when a plan gives none.
    clock: Arc<dyn Clock>,
    /// Breaker transitions, for Watch.
    events: broadcast::Sender<BreakerEvent>,
    /// The audit trail: a bounded ring of (sequence, key, fields), oldest first.
    audit: Arc<Mutex<AuditRing>>,
}

/// The memory store's audit ring and the sequence number of its next entry.
#[derive(Debug, Default)]
struct AuditRing {
    next: u64,
    entries: std::collections::VecDeque<(u64, String, crate::store::AuditRecord)>,
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
            events: broadcast::channel(1024).0,
            audit: Arc::default(),
        }
    }

    /// Drops every state that has become equivalent to empty. Returns how many went.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let mut t = self.tables.lock();
        let before = t.limits.len() + t.requests.len();
        t.limits.retain(|_, (_, exp)| *exp > now);
        t.requests.retain(|_, (_, exp)| *exp > now);
        t.tops.retain(|_, (_, exp)| *exp > now);
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
                    events: broadcast::channel(1).0,
                    audit: Arc::default(),
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
        // Breakers first: a refusing breaker means no check consumes.
        let mut transitions = Vec::new();
        let mut admissions = Vec::with_capacity(plan.breakers.len());
        let mut held: Vec<Option<Breaker>> = Vec::with_capacity(plan.breakers.len());
        for (i, b) in plan.breakers.iter().enumerate() {
            let mut state = tables.breakers.remove(&b.keys[0]);
            let mut made = Vec::new();
            admissions.push(machine::admit(
                &mut state,
                &b.settings.config,
                now,
                &mut made,
            ));
            transitions.extend(made.into_iter().map(|t| (i, t)));
            held.push(state);
        }
        let breakers_allow = admissions.iter().all(|a| a.allowed);
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
        let outcome = acquire(&mut refs, &requests, now, plan.consume && breakers_allow);
        let allowed = outcome.allowed && breakers_allow;
        for (b, mut state) in plan.breakers.iter().zip(held) {
            if plan.consume && allowed {
                machine::commit(&mut state, &b.settings.config, now);
            }
            if let Some(state) = state {
                tables.breakers.insert(b.keys[0].clone(), state);
            }
        }
        let made = self.record_transitions(tables, &plan.breakers, transitions);
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
                (plan.consume && allowed && o.allowed)
                    .then(|| c.lease_member.clone())
                    .flatten()
            })
            .collect();
        let decision = StoreDecision {
            allowed,
            checks: outcome.checks,
            leases,
            breakers: admissions,
            transitions: made,
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

    /// Keeps and publishes `transitions` of `breakers` (matched by name); returns them in
    /// the stores' common form.
    fn record_transitions(
        &self,
        tables: &mut Tables,
        breakers: &[PlannedBreaker],
        transitions: Vec<(usize, Transition)>,
    ) -> Vec<MadeTransition> {
        transitions
            .into_iter()
            .map(|(i, t)| {
                let b = &breakers[i];
                let event = BreakerEvent {
                    namespace: b.namespace.clone(),
                    breaker: b.name.clone(),
                    from: t.from,
                    to: t.to,
                    at: t.at,
                    reason: t.reason.to_owned(),
                    generation: t.generation,
                    retry_after: t.retry_after,
                };
                let h = tables.history.entry(b.keys[0].clone()).or_default();
                h.push_back(event.clone());
                if h.len() > HISTORY_LEN {
                    h.pop_front();
                }
                // Nobody watching is fine.
                let _ = self.events.send(event);
                MadeTransition {
                    breaker: b.name.clone(),
                    from: t.from,
                    to: t.to,
                    reason: t.reason.to_owned(),
                }
            })
            .collect()
    }

    /// Runs `f` on one breaker's state under the lock, then keeps and publishes the
    /// transitions it made.
    fn with_breaker<T>(
        &self,
        b: &PlannedBreaker,
        now: Option<Micros>,
        f: impl FnOnce(&mut Option<Breaker>, Micros, &mut Vec<Transition>) -> T,
    ) -> (T, Vec<MadeTransition>) {
        let mut guard = self.tables.lock();
        let now = now.unwrap_or_else(|| self.clock.now());
        let tables = &mut *guard;
        let mut state = tables.breakers.remove(&b.keys[0]);
        let mut transitions = Vec::new();
        let out = f(&mut state, now, &mut transitions);
        if let Some(state) = state {
            tables.breakers.insert(b.keys[0].clone(), state);
        }
        let made = self.record_transitions(
            tables,
            std::slice::from_ref(b),
            transitions.into_iter().map(|t| (0, t)).collect(),
        );
        (out, made)
    }

    /// Runs `f` on one queue under the lock.
    fn with_queue<T>(&self, q: &PlannedQueue, f: impl FnOnce(&mut Queue, Micros) -> T) -> T {
        let mut t = self.tables.lock();
        let now = self.clock.now();
        f(t.queues.entry(q.keys[0].clone()).or_default(), now)
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

    async fn breaker_report(
        &self,
        b: &PlannedBreaker,
        report: &ReportCounts,
        draw: u32,
        now: Option<Micros>,
    ) -> Result<BreakerReported, StoreError> {
        let (result, transitions) = self.with_breaker(b, now, |state, now, out| {
            machine::report(state, &b.settings.config, now, &report.input(), draw, out)
        });
        Ok(BreakerReported {
            result,
            transitions,
        })
    }

    async fn breaker_get(
        &self,
        b: &PlannedBreaker,
        now: Option<Micros>,
    ) -> Result<BreakerRead, StoreError> {
        let (info, transitions) = self.with_breaker(b, now, |state, now, out| {
            if let Some(s) = state {
                machine::advance(s, &b.settings.config, now, out);
            }
            machine::info(state, &b.settings.config, now)
        });
        Ok(BreakerRead { info, transitions })
    }

    async fn breaker_set_state(
        &self,
        b: &PlannedBreaker,
        to: State,
        draw: u32,
        now: Option<Micros>,
    ) -> Result<BreakerRead, StoreError> {
        let (info, transitions) = self.with_breaker(b, now, |state, now, out| {
            machine::set_state(state, &b.settings.config, now, to, draw, out);
            machine::info(state, &b.settings.config, now)
        });
        Ok(BreakerRead { info, transitions })
    }

    async fn breaker_history(
        &self,
        b: &PlannedBreaker,
        limit: usize,
    ) -> Result<Vec<BreakerEvent>, StoreError> {
        let t = self.tables.lock();
        Ok(t.history
            .get(&b.keys[0])
            .map(|h| h.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn breaker_index_add(&self, index: &str, name: &str) -> Result<(), StoreError> {
        let mut t = self.tables.lock();
        t.index
            .entry(index.to_owned())
            .or_default()
            .insert(name.to_owned());
        Ok(())
    }

    async fn breaker_index(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let t = self.tables.lock();
        Ok(t.index
            .get(index)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn top_add(
        &self,
        key: &str,
        entries: &[(String, u64)],
        ttl_secs: u64,
        keep: usize,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut t = self.tables.lock();
        let (set, exp) = t.tops.entry(key.to_owned()).or_default();
        for (m, n) in entries {
            *set.entry(m.clone()).or_default() += n;
        }
        *exp = now + ttl_secs * 1_000_000;
        if set.len() > keep {
            // As ZREMRANGEBYRANK: the lowest counts go, ties by member.
            let mut all: Vec<(String, u64)> = set.drain().collect();
            all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
            all.truncate(keep);
            set.extend(all);
        }
        Ok(())
    }

    async fn top_read(&self, key: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let now = self.clock.now();
        let t = self.tables.lock();
        Ok(match t.tops.get(key) {
            Some((set, exp)) if *exp > now => set.iter().map(|(m, n)| (m.clone(), *n)).collect(),
            _ => Vec::new(),
        })
    }

    async fn schema_version(&self, _keys: &crate::keys::Keys) -> Result<u32, StoreError> {
        Ok(0)
    }

    async fn dlq_publish(
        &self,
        q: &PlannedQueue,
        m: &Message,
        now: Option<Micros>,
    ) -> Result<(String, bool), StoreError> {
        Ok(self.with_queue(q, |queue, clock| {
            let (id, dup) = queue.publish(m.clone(), now.unwrap_or(clock), &q.settings.limits);
            (id.to_string(), dup)
        }))
    }

    async fn dlq_publish_replicated(
        &self,
        q: &PlannedQueue,
        m: &Message,
        now: Option<Micros>,
        _: Duration,
    ) -> Result<(String, bool, u64), StoreError> {
        let (id, dup) = self.dlq_publish(q, m, now).await?;
        Ok((id, dup, 0))
    }

    async fn dlq_read(
        &self,
        q: &PlannedQueue,
        archived: bool,
        ids: &[String],
        include_payload: bool,
    ) -> Result<Vec<Option<StoredLetter>>, StoreError> {
        Ok(self.with_queue(q, |queue, _| {
            let from = if archived {
                &queue.archive
            } else {
                &queue.entries
            };
            ids.iter()
                .map(|i| {
                    let id: EntryId = i.parse().ok()?;
                    from.get(&id)
                        .map(|e| letter(id, e, archived, include_payload))
                })
                .collect()
        }))
    }

    async fn dlq_scan(
        &self,
        q: &PlannedQueue,
        archived: bool,
        range: &ScanRange,
        count: usize,
        include_payload: bool,
    ) -> Result<Vec<StoredLetter>, StoreError> {
        Ok(self.with_queue(q, |queue, _| {
            let from = if archived {
                &queue.archive
            } else {
                &queue.entries
            };
            let after: Option<EntryId> = range.after.as_deref().and_then(|a| a.parse().ok());
            let within = |id: &EntryId| {
                range.since_ms.is_none_or(|s| id.ms >= s)
                    && range.until_ms.is_none_or(|u| id.ms < u)
                    && match (after, range.newest_first) {
                        (Some(a), false) => *id > a,
                        (Some(a), true) => *id < a,
                        (None, _) => true,
                    }
            };
            let pick = |(id, e): (&EntryId, &Entry)| letter(*id, e, archived, include_payload);
            if range.newest_first {
                from.iter()
                    .rev()
                    .filter(|(id, _)| within(id))
                    .take(count)
                    .map(pick)
                    .collect()
            } else {
                from.iter()
                    .filter(|(id, _)| within(id))
                    .take(count)
                    .map(pick)
                    .collect()
            }
        }))
    }

    async fn dlq_stats(
        &self,
        q: &PlannedQueue,
        now: Option<Micros>,
    ) -> Result<QueueStats, StoreError> {
        Ok(self.with_queue(q, |queue, clock| queue.stats(now.unwrap_or(clock))))
    }

    async fn dlq_claim(
        &self,
        q: &PlannedQueue,
        _consumer: &str,
        count: usize,
        visibility: Micros,
        now: Option<Micros>,
    ) -> Result<(Vec<StoredLetter>, u32), StoreError> {
        Ok(self.with_queue(q, |queue, clock| {
            let c = queue.claim(count, visibility, now.unwrap_or(clock), &q.settings.limits);
            let letters = c
                .entries
                .iter()
                .map(|(id, e)| letter(*id, e, false, true))
                .collect();
            (letters, c.archived)
        }))
    }

    async fn dlq_remove(&self, q: &PlannedQueue, ids: &[String]) -> Result<u32, StoreError> {
        Ok(self.with_queue(q, |queue, _| queue.remove(&entry_ids(ids))))
    }

    async fn dlq_nack(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> Result<u32, StoreError> {
        Ok(self.with_queue(q, |queue, clock| {
            queue.nack(&entry_ids(ids), now.unwrap_or(clock))
        }))
    }

    async fn dlq_archive(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> Result<u32, StoreError> {
        Ok(self.with_queue(q, |queue, clock| {
            queue.archive(&entry_ids(ids), now.unwrap_or(clock))
        }))
    }

    async fn dlq_restore(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> Result<Vec<Option<String>>, StoreError> {
        Ok(self.with_queue(q, |queue, clock| {
            ids.iter()
                .map(|i| {
                    let id: EntryId = i.parse().ok()?;
                    queue.restore(&[id], now.unwrap_or(clock))[0].map(|n| n.to_string())
                })
                .collect()
        }))
    }

    async fn dlq_purge_archived(
        &self,
        q: &PlannedQueue,
        ids: &[String],
    ) -> Result<u32, StoreError> {
        Ok(self.with_queue(q, |queue, _| queue.remove_archived(&entry_ids(ids))))
    }

    fn supports_redrive(&self) -> bool {
        false
    }

    async fn dlq_redrive_mark(
        &self,
        _: &PlannedQueue,
        _: &[String],
        _: &str,
    ) -> Result<(), StoreError> {
        Err(StoreError::Protocol("redrive needs Redis".into()))
    }

    async fn dlq_redrive_pending(
        &self,
        _: &PlannedQueue,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    async fn dlq_redrive_copy(
        &self,
        _: &PlannedQueue,
        _: &str,
        _: &[StoredLetter],
    ) -> Result<(), StoreError> {
        Err(StoreError::Protocol("redrive needs Redis".into()))
    }

    async fn dlq_redrive_present(
        &self,
        _: &str,
        _: &[String],
        _: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn queue_index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        self.breaker_index_add(index, member).await
    }

    async fn audit_append(
        &self,
        key: &str,
        fields: &[(&'static str, String)],
        max_len: usize,
    ) -> Result<(), StoreError> {
        let mut ring = self.audit.lock();
        let seq = ring.next;
        ring.next += 1;
        let fields = fields.iter().map(|(f, v)| ((*f).to_owned(), v.clone()));
        let record = (seq.to_string(), fields.collect());
        ring.entries.push_back((seq, key.to_owned(), record));
        while ring.entries.len() > max_len.max(1) {
            ring.entries.pop_front();
        }
        Ok(())
    }

    async fn audit_read(
        &self,
        key: &str,
        count: usize,
    ) -> Result<Vec<crate::store::AuditRecord>, StoreError> {
        let ring = self.audit.lock();
        Ok(ring
            .entries
            .iter()
            .rev()
            .filter(|(_, k, _)| k == key)
            .take(count)
            .map(|(_, _, record)| record.clone())
            .collect())
    }

    async fn queue_index(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.breaker_index(index).await
    }

    fn breaker_events(&self) -> broadcast::Receiver<BreakerEvent> {
        self.events.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn reconnect(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
