//! A dead-letter queue as a pure data structure (twin of `lua/dlq*.lua`): the in-memory
//! store runs it, and conformance tests require the Redis scripts to answer alike.
//!
//! The model mirrors the Redis layout: a time-ordered stream of entries (ids `<ms>-<seq>`,
//! as Redis stream ids, taken from `now`), a consumer group's "delivered up to" id, claims
//! with their own visibility deadlines, an archive stream, idempotency keys that expire
//! after the retention, and counters. Work per call is bounded: one publish trims at most
//! [`MAX_BATCH`] entries.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    str::FromStr,
};

use crate::time::Micros;

/// Most entries one call trims, moves or removes.
pub const MAX_BATCH: usize = 1_000;

/// A stream entry id: milliseconds and a sequence number, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl EntryId {
    /// The next id after `self` for a clock reading `now` (never going back).
    pub fn next(self, now: Micros) -> Self {
        let ms = now / 1_000;
        if ms > self.ms {
            EntryId { ms, seq: 0 }
        } else {
            EntryId {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) if !ms_has_sign(s) => Ok(EntryId { ms, seq }),
            _ => Err(format!("not a stream id: {s:?} (expected <ms>-<seq>)")),
        }
    }
}

fn ms_has_sign(s: &str) -> bool {
    s.starts_with(['+', '-'])
}

/// What a publisher sends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The payload, byte for byte.
    pub payload: Vec<u8>,
    /// Why it failed.
    pub reason: String,
    /// The error's class.
    pub error_class: String,
    /// Who published it.
    pub source: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// Free-form string pairs.
    pub metadata: BTreeMap<String, String>,
    /// Trace id.
    pub trace_id: String,
    /// When it first failed (µs); `None`: the publish time.
    pub first_failed_at: Option<Micros>,
    /// Deduplication key; empty: none.
    pub idempotency_key: String,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The message (with `first_failed_at` filled in).
    pub message: Message,
    /// When it was published (µs).
    pub published_at: Micros,
    /// Times Claim handed it out.
    pub delivery_count: u32,
    /// Archived entries: the id it had in the queue.
    pub original_id: Option<EntryId>,
}

/// A queue's limits, from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Entries older than this (by id time) are trimmed.
    pub retention: Micros,
    /// At most this many entries; the oldest are trimmed first.
    pub max_len: u64,
    /// After this many deliveries an expired claim moves the entry to the archive
    /// (0: never).
    pub max_deliveries: u32,
}

/// Counters kept beside the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Entries in the queue by reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Trimmed by retention.
    pub trimmed_by_age: u64,
    /// Trimmed by `max_len`.
    pub trimmed_by_length: u64,
    /// Publishes that stored an entry.
    pub published_total: u64,
    /// Publishes answered as duplicates.
    pub duplicates_total: u64,
    /// Publishes per minute (minute since the epoch), the last 60 kept.
    pub per_minute: BTreeMap<u64, u64>,
}

/// What Stats reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries in the queue.
    pub count: u64,
    /// Counters.
    pub counters: Counters,
    /// Age of the oldest entry (µs), 0 when empty.
    pub oldest_age: Micros,
    /// Publishes in the last 60 minute buckets.
    pub published_last_hour: u64,
    /// Entries in the archive.
    pub archived: u64,
    /// Claimed and not acked.
    pub in_flight: u64,
}

/// One queue.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    /// Entries by id.
    pub entries: BTreeMap<EntryId, Entry>,
    /// The last id given out in the queue stream.
    pub last_id: EntryId,
    /// The consumer group's last delivered id.
    pub delivered: EntryId,
    /// Claimed entries and when they become claimable again (µs).
    pub claims: BTreeMap<EntryId, Micros>,
    /// The archive.
    pub archive: BTreeMap<EntryId, Entry>,
    /// The last id given out in the archive stream.
    pub archive_last_id: EntryId,
    /// Idempotency keys: the entry id and when the key expires (µs).
    pub idempotency: HashMap<String, (EntryId, Micros)>,
    /// Counters.
    pub counters: Counters,
}

/// What Claim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The entries handed out, expired claims first.
    pub entries: Vec<(EntryId, Entry)>,
    /// Entries moved to the archive for reaching `max_deliveries`.
    pub archived: u32,
}

impl Queue {
    fn forget(&mut self, id: EntryId) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.claims.remove(&id);
        let reason = &e.message.reason;
        if let Some(n) = self.counters.by_reason.get_mut(reason) {
            *n -= 1;
            if *n == 0 {
                self.counters.by_reason.remove(reason);
            }
        }
        Some(e)
    }

    /// Trims by age then by length, at most [`MAX_BATCH`] entries in all, so that one more
    /// entry fits in `max_len`.
    fn trim(&mut self, now: Micros, limits: &QueueLimits) {
        let mut budget = MAX_BATCH;
        let min_ms = now.saturating_sub(limits.retention) / 1_000;
        while budget > 0 {
            match self.entries.keys().next() {
                Some(&id) if id.ms < min_ms => {
                    self.forget(id);
                    self.counters.trimmed_by_age += 1;
                    budget -= 1;
                }
                _ => break,
            }
        }
        while budget > 0 && self.entries.len() as u64 >= limits.max_len {
            let Some(&id) = self.entries.keys().next() else {
                break;
            };
            self.forget(id);
            self.counters.trimmed_by_length += 1;
            budget -= 1;
        }
    }

    /// Stores `m` unless its idempotency key was seen within the retention; returns the id
    /// and whether it was a duplicate.
    /// Twin of `lua/dlq_publish.lua`.
    pub fn publish(&mut self, m: Message, now: Micros, limits: &QueueLimits) -> (EntryId, bool) {
        self.idempotency.retain(|_, (_, exp)| *exp > now);
        if !m.idempotency_key.is_empty()
            && let Some((id, _)) = self.idempotency.get(&m.idempotency_key)
        {
            self.counters.duplicates_total += 1;
            return (*id, true);
        }
        self.trim(now, limits);
        let id = self.new_id(now);
        self.last_id = id;
        if !m.idempotency_key.is_empty() {
            self.idempotency
                .insert(m.idempotency_key.clone(), (id, now + limits.retention));
        }
        *self.counters.by_reason.entry(m.reason.clone()).or_default() += 1;
        self.counters.published_total += 1;
        let minute = now / 60_000_000;
        *self.counters.per_minute.entry(minute).or_default() += 1;
        self.counters.per_minute.retain(|&m, _| m + 60 > minute);
        let mut message = m;
        message.first_failed_at.get_or_insert(now);
        self.entries.insert(
            id,
            Entry {
                message,
                published_at: now,
                delivery_count: 0,
                original_id: None,
            },
        );
        (id, false)
    }

    /// A fresh id for the queue or its archive: after every id either has given out, so
    /// one id names one entry across both (Get looks in both). Twin of `dlq_new_id`.
    fn new_id(&self, now: Micros) -> EntryId {
        self.last_id.max(self.archive_last_id).next(now)
    }

    fn archive_entry(&mut self, id: EntryId, now: Micros) -> bool {
        let Some(mut e) = self.forget(id) else {
            return false;
        };
        let aid = self.new_id(now);
        self.archive_last_id = aid;
        e.original_id = Some(id);
        self.archive.insert(aid, e);
        true
    }

    /// Hands out up to `count` entries for `visibility` µs: expired claims first (by
    /// deadline, then id text, as a sorted set orders them), then never-delivered entries.
    /// Twin of `lua/dlq_claim.lua`.
    pub fn claim(
        &mut self,
        count: usize,
        visibility: Micros,
        now: Micros,
        limits: &QueueLimits,
    ) -> Claimed {
        let mut out = Claimed::default();
        let mut expired: Vec<(Micros, String, EntryId)> = self
            .claims
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, d)| (*d, id.to_string(), *id))
            .collect();
        expired.sort();
        for (_, _, id) in expired.into_iter().take(count) {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            e.delivery_count += 1;
            if limits.max_deliveries > 0 && e.delivery_count > limits.max_deliveries {
                // Counted as a delivery it never got: the archive keeps the real count.
                e.delivery_count -= 1;
                self.archive_entry(id, now);
                out.archived += 1;
                continue;
            }
            self.claims.insert(id, now + visibility);
            out.entries.push((id, e.clone()));
        }
        let fresh: Vec<EntryId> = self
            .entries
            .range(
                EntryId {
                    ms: self.delivered.ms,
                    seq: self.delivered.seq,
                }..,
            )
            .map(|(id, _)| *id)
            .filter(|id| *id > self.delivered)
            .take(count.saturating_sub(out.entries.len()))
            .collect();
        for id in fresh {
            self.delivered = id;
            if let Some(e) = self.entries.get_mut(&id) {
                e.delivery_count += 1;
                self.claims.insert(id, now + visibility);
                out.entries.push((id, e.clone()));
            }
        }
        out
    }

    /// Removes entries (Ack, and the delete step of Redrive and Purge); returns how many
    /// were there.
    /// Twin of `lua/dlq_ack.lua`.
    pub fn remove(&mut self, ids: &[EntryId]) -> u32 {
        ids.iter().filter(|id| self.forget(**id).is_some()).count() as u32
    }

    /// Removes archived entries; returns how many were there.
    /// Twin of `lua/dlq_purge_archived.lua`.
    pub fn remove_archived(&mut self, ids: &[EntryId]) -> u32 {
        ids.iter()
            .filter(|id| self.archive.remove(id).is_some())
            .count() as u32
    }

    /// Makes claimed entries claimable now; returns how many were claimed.
    /// Twin of `lua/dlq_nack.lua`.
    pub fn nack(&mut self, ids: &[EntryId], now: Micros) -> u32 {
        let mut n = 0;
        for id in ids {
            if let Some(d) = self.claims.get_mut(id) {
                *d = now;
                n += 1;
            }
        }
        n
    }

    /// Moves entries to the archive; returns how many were in the queue.
    /// Twin of `lua/dlq_archive.lua`.
    pub fn archive(&mut self, ids: &[EntryId], now: Micros) -> u32 {
        ids.iter()
            .filter(|id| self.archive_entry(**id, now))
            .count() as u32
    }

    /// Moves archived entries back as new, never-delivered entries; their new ids.
    /// Twin of `lua/dlq_restore.lua`.
    pub fn restore(&mut self, ids: &[EntryId], now: Micros) -> Vec<Option<EntryId>> {
        ids.iter()
            .map(|aid| {
                let mut e = self.archive.remove(aid)?;
                let id = self.new_id(now);
                self.last_id = id;
                e.original_id = None;
                e.delivery_count = 0;
                *self
                    .counters
                    .by_reason
                    .entry(e.message.reason.clone())
                    .or_default() += 1;
                self.entries.insert(id, e);
                Some(id)
            })
            .collect()
    }

    /// The numbers Stats reports.
    /// Twin of `lua/dlq_stats.lua` (which reads the numbers; the store derives the rest).
    pub fn stats(&self, now: Micros) -> QueueStats {
        let minute = now / 60_000_000;
        QueueStats {
            count: self.entries.len() as u64,
            counters: self.counters.clone(),
            oldest_age: self
                .entries
                .keys()
                .next()
                .map_or(0, |id| now.saturating_sub(id.ms * 1_000)),
            published_last_hour: self
                .counters
                .per_minute
                .iter()
                .filter(|(m, _)| **m + 60 > minute)
                .map(|(_, n)| n)
                .sum(),
            archived: self.archive.len() as u64,
            in_flight: self.claims.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits = QueueLimits {
        retention: 3_600_000_000,
        max_len: 3,
        max_deliveries: 2,
    };

    fn msg(reason: &str, key: &str) -> Message {
        Message {
            reason: reason.into(),
            idempotency_key: key.into(),
            ..Message::default()
        }
    }

    #[test]
    fn ids_are_time_ordered_and_never_go_back() {
        let a = EntryId::default().next(5_000);
        assert_eq!(a.to_string(), "5-0");
        assert_eq!(a.next(5_999).to_string(), "5-1");
        assert_eq!(a.next(1_000).to_string(), "5-1");
        assert_eq!("7-3".parse::<EntryId>().unwrap(), EntryId { ms: 7, seq: 3 });
        assert!("x".parse::<EntryId>().is_err());
    }

    #[test]
    fn idempotency_and_trimming_are_counted() {
        let mut q = Queue::default();
        let (a, dup) = q.publish(msg("timeout", "k1"), 1_000_000, &LIMITS);
        assert!(!dup);
        assert_eq!(
            q.publish(msg("timeout", "k1"), 1_000_500, &LIMITS),
            (a, true)
        );
        for i in 0..3 {
            q.publish(msg("bad", ""), 2_000_000 + i, &LIMITS);
        }
        let s = q.stats(3_000_000);
        assert_eq!(s.count, 3);
        assert_eq!(s.counters.trimmed_by_length, 1);
        assert_eq!(s.counters.by_reason.get("timeout"), None);
        assert_eq!(s.counters.by_reason["bad"], 3);
        assert_eq!(s.counters.duplicates_total, 1);
        // an hour later everything has aged out
        q.publish(msg("late", ""), 3_700_000_000, &LIMITS);
        let s = q.stats(3_700_000_000);
        assert_eq!((s.count, s.counters.trimmed_by_age), (1, 3));
    }

    #[test]
    fn claims_expire_and_reach_the_archive_after_max_deliveries() {
        let mut q = Queue::default();
        let (id, _) = q.publish(msg("r", ""), 1_000_000, &LIMITS);
        let c = q.claim(5, 10, 1_000_000, &LIMITS);
        assert_eq!(c.entries.len(), 1);
        assert!(q.claim(5, 10, 1_000_005, &LIMITS).entries.is_empty());
        let c = q.claim(5, 10, 1_000_010, &LIMITS);
        assert_eq!(c.entries[0].1.delivery_count, 2);
        let c = q.claim(5, 10, 1_000_020, &LIMITS);
        assert_eq!((c.entries.len(), c.archived), (0, 1));
        assert_eq!(q.stats(0).archived, 1);
        let back = q.restore(&[*q.archive.keys().next().unwrap()], 2_000_000);
        assert!(back[0].unwrap() > id);
        assert_eq!(q.claim(5, 10, 2_000_000, &LIMITS).entries.len(), 1);
    }

    #[test]
    fn nack_makes_claimable_and_ack_removes() {
        let mut q = Queue::default();
        let (id, _) = q.publish(msg("r", ""), 1_000_000, &LIMITS);
        q.claim(1, 1_000_000, 1_000_000, &LIMITS);
        assert_eq!(q.nack(&[id], 1_000_001), 1);
        assert_eq!(q.claim(1, 5, 1_000_001, &LIMITS).entries.len(), 1);
        assert_eq!(q.remove(&[id, id]), 1);
        assert_eq!(q.stats(0).in_flight, 0);
    }

    #[test]
    fn queue_and_archive_never_share_an_id() {
        // Published in one millisecond, archived in the next: an archive counter of its own
        // would hand out "2-0", the id of the entry still in the queue.
        let mut q = Queue::default();
        let a = q.publish(msg("r", ""), 1_000, &LIMITS).0;
        let b = q.publish(msg("r", ""), 2_000, &LIMITS).0;
        let c = q.publish(msg("r", ""), 2_000, &LIMITS).0;
        assert_eq!(q.archive(&[a, b], 2_500), 2);
        let archived: Vec<EntryId> = q.archive.keys().copied().collect();
        assert!(
            archived.iter().all(|id| !q.entries.contains_key(id)),
            "{archived:?}"
        );
        assert!(archived.iter().all(|id| *id > c), "{archived:?}");
        let back = q.restore(&archived[..1], 2_600)[0].unwrap();
        assert!(back > archived[1] && !q.archive.contains_key(&back));
    }
}
