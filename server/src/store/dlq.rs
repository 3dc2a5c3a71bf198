//! What stores exchange about dead-letter queues: a queue resolved for a call and the
//! entries as read back.
use std::sync::Arc;

use floodgate_core::{Micros, dead_letters::Message};

use crate::queue_config::QueueSettings;

/// One queue, resolved and ready for a store.
#[derive(Debug, Clone)]
pub struct PlannedQueue {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its eight keys (from [`crate::keys::Keys::queue`]).
    pub keys: [String; 8],
    /// The redrive in-flight hash.
    pub redrive_key: String,
    /// Its settings.
    pub settings: Arc<QueueSettings>,
}

/// One entry as read back from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLetter {
    /// Stream id (in the archive: the archive id).
    pub id: String,
    /// The message; its payload is empty unless it was asked for.
    pub message: Message,
    /// When it was published (µs).
    pub published_at: Micros,
    /// Payload length in bytes.
    pub payload_size: u64,
    /// Times Claim handed it out.
    pub delivery_count: u32,
    /// Read from the archive.
    pub archived: bool,
    /// Archived entries: the id it had in the queue.
    pub original_id: Option<String>,
}

/// Where a scan starts and which ids it may return.
#[derive(Debug, Clone, Default)]
pub struct ScanRange {
    /// Continue after this id (exclusive), in the scan's direction.
    pub after: Option<String>,
    /// Ids at or after this millisecond.
    pub since_ms: Option<u64>,
    /// Ids before this millisecond.
    pub until_ms: Option<u64>,
    /// Newest first.
    pub newest_first: bool,
}
