//! Helpers for the dead-letter conformance suite (`tests/tests/dlq_conformance.rs`): a
//! planned queue per case, the `core` model's entries in the shape a store answers, and
//! the store's `dlq_*` calls run to completion on an [`Env`] (a store error fails the test).
use std::{sync::Arc, time::Duration};

use floodgate_core::{
    Micros,
    dead_letters::{Entry, EntryId, Message, Queue, QueueLimits, QueueStats},
};
use floodgate_server::{
    keys::Keys,
    queue_config::{DEFAULT_MAX_PAYLOAD, Durability, QueueSettings},
    store::{PlannedQueue, ScanRange, Store, StoredLetter},
};

use crate::conformance_support::Env;

/// The queue `name` in `namespace` with `limits`, keyed as the server keys it (`fg` prefix).
pub fn planned_queue(namespace: &str, name: &str, limits: QueueLimits) -> PlannedQueue {
    let keys = Keys::new("fg");
    PlannedQueue {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        keys: keys.queue(namespace, name),
        redrive_key: keys.queue_redrive(namespace, name),
        settings: Arc::new(QueueSettings {
            limits,
            max_payload: DEFAULT_MAX_PAYLOAD,
            alert_threshold: 1_000,
            visibility_timeout: 30_000_000,
            redrive_targets: Vec::new(),
            durability: Durability::Accepted,
        }),
    }
}

/// A model entry as a store reads it back with its payload (what the memory store answers).
pub fn model_letter(id: EntryId, e: &Entry, archived: bool) -> StoredLetter {
    StoredLetter {
        id: id.to_string(),
        message: e.message.clone(),
        published_at: e.published_at,
        payload_size: e.message.payload.len() as u64,
        delivery_count: e.delivery_count,
        archived,
        original_id: e.original_id.map(|o| o.to_string()),
    }
}

/// The whole queue (or archive) of the model, oldest or newest first.
pub fn model_contents(q: &Queue, archived: bool, newest_first: bool) -> Vec<StoredLetter> {
    let from = if archived { &q.archive } else { &q.entries };
    let all = from.iter().map(|(id, e)| model_letter(*id, e, archived));
    if newest_first {
        all.rev().collect()
    } else {
        all.collect()
    }
}

/// `letters` as read without payloads: payload empty, `payload_size` kept.
pub fn without_payloads(mut letters: Vec<StoredLetter>) -> Vec<StoredLetter> {
    for l in &mut letters {
        l.message.payload.clear();
    }
    letters
}

/// One queue on the test Redis, through the store's `dlq_*` calls with explicit clocks.
pub struct DlqStore<'a> {
    env: &'a Env,
    /// The queue every call goes to.
    pub q: PlannedQueue,
}

impl std::fmt::Debug for DlqStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqStore")
            .field("queue", &self.q.keys[0])
            .finish()
    }
}

impl<'a> DlqStore<'a> {
    /// A queue named `orders` in a namespace no other test uses.
    pub fn new(env: &'a Env, limits: QueueLimits) -> Self {
        let ns = crate::unique_namespace("dlqconf");
        Self {
            env,
            q: planned_queue(&ns, "orders", limits),
        }
    }

    /// Runs `f` with the store, failing the test on an error or after 30 s.
    fn run<T, F>(&self, what: &str, f: F) -> T
    where
        F: Future<Output = Result<T, floodgate_server::store::StoreError>>,
    {
        self.env
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
            .unwrap_or_else(|_| panic!("{what} took more than 30 s"))
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    /// Changes the limits later calls see (a reloaded configuration).
    pub fn set_limits(&mut self, limits: QueueLimits) {
        let mut s = (*self.q.settings).clone();
        s.limits = limits;
        self.q.settings = Arc::new(s);
    }

    /// `dlq_publish`: (id, duplicate).
    pub fn publish(&self, m: &Message, now: Micros) -> (String, bool) {
        self.run(
            "dlq_publish",
            self.env.store.dlq_publish(&self.q, m, Some(now)),
        )
    }

    /// `dlq_claim`: (entries with payloads, archived for reaching max_deliveries).
    pub fn claim(&self, count: usize, visibility: Micros, now: Micros) -> (Vec<StoredLetter>, u32) {
        self.run(
            "dlq_claim",
            self.env
                .store
                .dlq_claim(&self.q, "conformance", count, visibility, Some(now)),
        )
    }

    /// `dlq_remove` (Ack).
    pub fn ack(&self, ids: &[String]) -> u32 {
        self.run("dlq_remove", self.env.store.dlq_remove(&self.q, ids))
    }

    /// `dlq_nack`.
    pub fn nack(&self, ids: &[String], now: Micros) -> u32 {
        self.run("dlq_nack", self.env.store.dlq_nack(&self.q, ids, Some(now)))
    }

    /// `dlq_archive`.
    pub fn archive(&self, ids: &[String], now: Micros) -> u32 {
        self.run(
            "dlq_archive",
            self.env.store.dlq_archive(&self.q, ids, Some(now)),
        )
    }

    /// `dlq_restore`: the new ids.
    pub fn restore(&self, ids: &[String], now: Micros) -> Vec<Option<String>> {
        self.run(
            "dlq_restore",
            self.env.store.dlq_restore(&self.q, ids, Some(now)),
        )
    }

    /// `dlq_purge_archived`.
    pub fn purge_archived(&self, ids: &[String]) -> u32 {
        self.run(
            "dlq_purge_archived",
            self.env.store.dlq_purge_archived(&self.q, ids),
        )
    }

    /// `dlq_stats` at `now`.
    pub fn stats(&self, now: Micros) -> QueueStats {
        self.run("dlq_stats", self.env.store.dlq_stats(&self.q, Some(now)))
    }

    /// `dlq_scan` over the whole queue (or archive) in one direction.
    pub fn scan_all(
        &self,
        archived: bool,
        newest_first: bool,
        include_payload: bool,
    ) -> Vec<StoredLetter> {
        let range = ScanRange {
            newest_first,
            ..ScanRange::default()
        };
        self.run(
            "dlq_scan",
            self.env
                .store
                .dlq_scan(&self.q, archived, &range, 100_000, include_payload),
        )
    }

    /// `dlq_read` of `ids` with payloads.
    pub fn read(&self, archived: bool, ids: &[String]) -> Vec<Option<StoredLetter>> {
        self.run(
            "dlq_read",
            self.env.store.dlq_read(&self.q, archived, ids, true),
        )
    }

    /// A raw command on the test Redis (for keys the store does not expose).
    pub fn cmd<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> T {
        self.env.cmd(cmd)
    }
}
