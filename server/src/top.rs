//! Top consumers: which keys a namespace's limits deny most. Denials are counted in
//! process (one short lock per denied check, nothing on the store's path) and flushed every
//! few seconds into one sorted set per namespace and minute in the store, trimmed to the
//! top [`KEEP_PER_MINUTE`] and expiring after [`MAX_MINUTES`] — never one entry per user
//! key forever. `TopKeys` merges the last minutes' sets.
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tracing::warn;

use crate::{keys::Keys, store::Store};

/// Distinct (namespace, key, policy) a server counts between two flushes; denials of
/// further ones are only counted as untracked.
pub const MAX_PENDING: usize = 10_000;
/// Members kept per namespace and minute.
pub const KEEP_PER_MINUTE: usize = 1_000;
/// Minutes kept (and the most `TopKeys` looks back).
pub const MAX_MINUTES: u64 = 15;
/// How often the counts are flushed.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The member of one (key, policy) in a minute's set: keys contain no control characters,
/// so a tab separates them unambiguously.
pub fn member(key: &str, policy: &str) -> String {
    format!("{key}\t{policy}")
}

/// Splits a member into (key, policy).
pub fn split_member(m: &str) -> (&str, &str) {
    m.rsplit_once('\t').unwrap_or((m, ""))
}

/// Denials counted since the last flush.
#[derive(Debug, Default)]
pub struct TopCounter {
    /// (namespace, member) → denials.
    pending: Mutex<HashMap<(String, String), u64>>,
    /// Denials not tracked because `pending` was full.
    untracked: AtomicU64,
}

impl TopCounter {
    /// Counts one denial of `key` under `policy` in `namespace`.
    pub fn record(&self, namespace: &str, key: &str, policy: &str) {
        let mut p = self.pending.lock();
        let id = (namespace.to_owned(), member(key, policy));
        if let Some(n) = p.get_mut(&id) {
            *n += 1;
        } else if p.len() < MAX_PENDING {
            p.insert(id, 1);
        } else {
            self.untracked.fetch_add(1, Relaxed);
        }
    }

    /// Denials that could not be tracked, since the start.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Relaxed)
    }

    /// Takes the counts, grouped by namespace.
    pub fn take(&self) -> HashMap<String, Vec<(String, u64)>> {
        let drained = std::mem::take(&mut *self.pending.lock());
        let mut by_ns: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        for ((ns, m), n) in drained {
            by_ns.entry(ns).or_default().push((m, n));
        }
        by_ns
    }
}

/// The current minute since the Unix epoch (the servers' clocks only pick the bucket).
pub fn minute_now() -> u64 {
    floodgate_core::time::Clock::now(&floodgate_core::SystemClock) / 60_000_000
}

/// Writes the pending counts to the store.
pub async fn flush<S: Store>(store: &S, keys: &Keys, counter: &TopCounter) {
    let minute = minute_now();
    for (ns, entries) in counter.take() {
        let key = keys.top(&ns, minute);
        if let Err(e) = store
            .top_add(&key, &entries, MAX_MINUTES * 60, KEEP_PER_MINUTE)
            .await
        {
            warn!(namespace = %ns, error = %e, "could not flush top denied keys; these counts are lost");
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] until the process ends.
pub fn spawn_flusher<S: Store>(state: Arc<crate::service::state::AppState<S>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            flush(&state.store, &state.keys, &state.top).await;
        }
    });
}

/// Sums per-minute tops and returns the `limit` largest, most denied first (ties by member).
pub fn merge(per_minute: Vec<Vec<(String, u64)>>, limit: usize) -> Vec<(String, u64)> {
    let mut sum: HashMap<String, u64> = HashMap::new();
    for (m, n) in per_minute.into_iter().flatten() {
        *sum.entry(m).or_default() += n;
    }
    let mut all: Vec<(String, u64)> = sum.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_by_namespace_and_merge_across_minutes() {
        let c = TopCounter::default();
        for _ in 0..3 {
            c.record("a", "user:1", "api");
        }
        c.record("a", "user:2", "api");
        c.record("b", "user:1", "api");
        let taken = c.take();
        assert_eq!(taken["a"].len(), 2);
        assert!(c.take().is_empty());
        let merged = merge(
            vec![
                vec![(member("user:1", "api"), 3), (member("user:2", "api"), 1)],
                vec![(member("user:2", "api"), 5)],
            ],
            1,
        );
        assert_eq!(merged, vec![(member("user:2", "api"), 6)]);
        assert_eq!(split_member(&merged[0].0), ("user:2", "api"));
    }

    #[test]
    fn a_full_counter_counts_the_rest_as_untracked() {
        let c = TopCounter::default();
        for i in 0..MAX_PENDING + 5 {
            c.record("a", &format!("k{i}"), "p");
        }
        assert_eq!(c.untracked(), 5);
    }
}
