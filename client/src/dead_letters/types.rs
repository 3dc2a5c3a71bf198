//! The values a dead-letter queue takes and gives: [`Message`] to publish, [`DeadLetter`]
//! stored entries, [`Filter`] and [`ListOptions`] to select them, [`Stats`].
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use floodgate_proto::{prost_types, v1 as pb};

/// A message that failed for good, to publish with [`super::DeadLetterQueue::publish`].
///
/// ```
/// use floodgate_client::dead_letters::Message;
/// let m = Message::new(b"{\"order\":42}".to_vec())
///     .reason("payment_declined")
///     .error_class("CardError")
///     .source("billing-worker")
///     .attempts(5)
///     .meta("tenant", "acme");
/// assert_eq!(m.metadata["tenant"], "acme");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The bytes, stored exactly as given (at most the queue's `max_payload`, 1 MiB by
    /// default).
    pub payload: Vec<u8>,
    /// Why it failed, e.g. `timeout` (up to 256 bytes).
    pub reason: String,
    /// The error's class or type name.
    pub error_class: String,
    /// Who published it (service, worker).
    pub source: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// Up to 64 string pairs (keys up to 128 bytes, values up to 1,024).
    pub metadata: BTreeMap<String, String>,
    /// A trace id to find the original request.
    pub trace_id: String,
    /// When it first failed; the server uses the publish time when unset.
    pub first_failed_at: Option<SystemTime>,
    /// Deduplication key. When `None`, [`super::DeadLetterQueue::publish`] generates a random
    /// one, so its own retries never store the message twice.
    pub idempotency_key: Option<String>,
}

impl Message {
    /// A message with this payload and nothing else set.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the error class.
    pub fn error_class(mut self, class: impl Into<String>) -> Self {
        self.error_class = class.into();
        self
    }

    /// Sets the source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the attempt count.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Adds one metadata pair.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the trace id.
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = trace_id.into();
        self
    }

    /// Sets when it first failed.
    pub fn first_failed_at(mut self, at: SystemTime) -> Self {
        self.first_failed_at = Some(at);
        self
    }

    /// Sets the idempotency key (the same key within the queue's retention stores one entry).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The wire request; `key` is the idempotency key to send.
    pub(crate) fn to_request(&self, namespace: &str, queue: &str, key: &str) -> pb::PublishRequest {
        pb::PublishRequest {
            namespace: namespace.to_owned(),
            queue: queue.to_owned(),
            payload: self.payload.clone(),
            reason: self.reason.clone(),
            error_class: self.error_class.clone(),
            source: self.source.clone(),
            attempts: self.attempts,
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            idempotency_key: key.to_owned(),
            trace_id: self.trace_id.clone(),
            first_failed_at: self.first_failed_at.map(wire_time),
        }
    }
}

/// What [`super::DeadLetterQueue::publish`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The entry's id (the first entry's when `duplicate`).
    pub id: String,
    /// The idempotency key had been seen: nothing new was stored.
    pub duplicate: bool,
    /// The idempotency key sent (generated when the message had none).
    pub idempotency_key: String,
    /// Calls made (more than 1 after retries).
    pub attempts: u32,
}

/// A stored entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its stream id, e.g. `1763870000123-0` (in the archive: its archive id).
    pub id: String,
    /// The bytes as published; empty when a list did not ask for payloads.
    pub payload: Vec<u8>,
    /// Byte length of the payload, also when it was not included.
    pub payload_size: u64,
    /// Why it failed.
    pub reason: String,
    /// The error's class.
    pub error_class: String,
    /// Who published it.
    pub source: String,
    /// Attempts the publisher made.
    pub attempts: u32,
    /// String pairs.
    pub metadata: BTreeMap<String, String>,
    /// The trace id.
    pub trace_id: String,
    /// When it first failed.
    pub first_failed_at: Option<SystemTime>,
    /// When it was published.
    pub published_at: Option<SystemTime>,
    /// Times a consumer was handed it by Claim.
    pub delivery_count: u32,
    /// It is in the archive.
    pub archived: bool,
    /// In the archive: the id it had in the queue.
    pub original_id: String,
    /// The idempotency key it was published with.
    pub idempotency_key: String,
}

impl From<pb::DeadLetter> for DeadLetter {
    fn from(d: pb::DeadLetter) -> Self {
        Self {
            id: d.id,
            payload: d.payload,
            payload_size: d.payload_size,
            reason: d.reason,
            error_class: d.error_class,
            source: d.source,
            attempts: d.attempts,
            metadata: d.metadata.into_iter().collect(),
            trace_id: d.trace_id,
            first_failed_at: d.first_failed_at.and_then(system_time),
            published_at: d.published_at.and_then(system_time),
            delivery_count: d.delivery_count,
            archived: d.archived,
            original_id: d.original_id,
            idempotency_key: d.idempotency_key,
        }
    }
}

/// Which entries a list, redrive or purge touches. The default matches every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact reason; `None` matches any.
    pub reason: Option<String>,
    /// Every pair must match exactly.
    pub metadata: BTreeMap<String, String>,
    /// Published at or after.
    pub since: Option<SystemTime>,
    /// Published before.
    pub until: Option<SystemTime>,
}

impl Filter {
    /// Matches every entry.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only this reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Also requires this metadata pair.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Published at or after `t`.
    pub fn since(mut self, t: SystemTime) -> Self {
        self.since = Some(t);
        self
    }

    /// Published before `t`.
    pub fn until(mut self, t: SystemTime) -> Self {
        self.until = Some(t);
        self
    }

    pub(crate) fn to_proto(&self) -> pb::DeadLetterFilter {
        pb::DeadLetterFilter {
            reason: self.reason.clone().unwrap_or_default(),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            since: self.since.map(wire_time),
            until: self.until.map(wire_time),
        }
    }
}

/// How [`super::DeadLetterQueue::list`] walks a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Which entries.
    pub filter: Filter,
    /// Newest entry first (default: oldest first).
    pub newest_first: bool,
    /// Include payloads (pages then end earlier, under the server's byte budget).
    pub include_payload: bool,
    /// Walk the archive instead of the queue.
    pub archived: bool,
    /// Entries asked for per call, 1-1,000; 0 lets the server choose (100).
    pub page_size: u32,
}

impl ListOptions {
    /// Every entry, oldest first, without payloads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Newest first.
    pub fn newest_first(mut self, yes: bool) -> Self {
        self.newest_first = yes;
        self
    }

    /// With payloads.
    pub fn include_payload(mut self, yes: bool) -> Self {
        self.include_payload = yes;
        self
    }

    /// The archive instead of the queue.
    pub fn archived(mut self, yes: bool) -> Self {
        self.archived = yes;
        self
    }

    /// Entries per call.
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }
}

impl From<Filter> for ListOptions {
    fn from(filter: Filter) -> Self {
        Self {
            filter,
            ..Self::default()
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The entries.
    pub messages: Vec<DeadLetter>,
    /// Pass to the next call; `None` when there is nothing more.
    pub next_cursor: Option<String>,
}

/// A queue's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries in the queue (claimed ones included, archived ones not).
    pub count: u64,
    /// Entries per reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Age of the oldest entry; zero when empty.
    pub oldest_age: Duration,
    /// Published in the last hour.
    pub published_last_hour: u64,
    /// `count` reached the queue's alert threshold.
    pub over_threshold: bool,
    /// Entries in the archive.
    pub archived: u64,
    /// Removed by retention since the queue was created.
    pub trimmed_by_age: u64,
    /// Removed by `max_len` since the queue was created.
    pub trimmed_by_length: u64,
    /// Claimed and not yet acked.
    pub in_flight: u64,
    /// Publishes that stored an entry.
    pub published_total: u64,
    /// Publishes answered as duplicates.
    pub duplicates_total: u64,
}

impl From<pb::StatsResponse> for Stats {
    fn from(s: pb::StatsResponse) -> Self {
        Self {
            count: s.count,
            by_reason: s.by_reason.into_iter().collect(),
            oldest_age: crate::acquire::duration(s.oldest_age),
            published_last_hour: s.published_last_hour,
            over_threshold: s.over_threshold,
            archived: s.archived,
            trimmed_by_age: s.trimmed_by_age,
            trimmed_by_length: s.trimmed_by_length,
            in_flight: s.in_flight,
            published_total: s.published_total,
            duplicates_total: s.duplicates_total,
        }
    }
}

/// What [`super::DeadLetterQueue::claim`] handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The entries, with payloads; ack or nack each.
    pub messages: Vec<DeadLetter>,
    /// Entries this claim moved to the archive because they reached `max_deliveries`.
    pub archived_over_max_deliveries: u32,
}

/// A time on the wire.
pub(crate) fn wire_time(t: SystemTime) -> prost_types::Timestamp {
    let (seconds, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i32),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i32);
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    };
    prost_types::Timestamp { seconds, nanos }
}

/// A wire time; `None` for the zero timestamp (unset) and for nonsense.
pub(crate) fn system_time(t: prost_types::Timestamp) -> Option<SystemTime> {
    if t.seconds == 0 && t.nanos == 0 {
        return None;
    }
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    if t.seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(t.seconds as u64, t.nanos as u32))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.seconds.unsigned_abs()))?
            .checked_add(Duration::from_nanos(t.nanos as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for t in [
            UNIX_EPOCH + Duration::new(1_763_870_000, 123_456_789),
            UNIX_EPOCH + Duration::from_secs(1),
            UNIX_EPOCH - Duration::new(5, 250_000_000),
        ] {
            assert_eq!(system_time(wire_time(t)), Some(t), "{t:?}");
        }
        assert_eq!(
            wire_time(UNIX_EPOCH - Duration::new(5, 250_000_000)),
            prost_types::Timestamp {
                seconds: -6,
                nanos: 750_000_000
            }
        );
        assert_eq!(system_time(prost_types::Timestamp::default()), None);
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(system_time(bad), None);
    }

    #[test]
    fn message_becomes_a_request() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let m = Message::new(vec![0u8, 255, 1])
            .reason("timeout")
            .error_class("Io")
            .source("worker")
            .attempts(4)
            .meta("tenant", "acme")
            .meta("region", "eu")
            .trace_id("t-1")
            .first_failed_at(at);
        let r = m.to_request("shop", "orders", "k-1");
        assert_eq!(r.namespace, "shop");
        assert_eq!(r.queue, "orders");
        assert_eq!(r.payload, vec![0u8, 255, 1]);
        assert_eq!(r.reason, "timeout");
        assert_eq!(r.error_class, "Io");
        assert_eq!(r.source, "worker");
        assert_eq!(r.attempts, 4);
        assert_eq!(r.metadata.len(), 2);
        assert_eq!(r.metadata["region"], "eu");
        assert_eq!(r.idempotency_key, "k-1");
        assert_eq!(r.trace_id, "t-1");
        assert_eq!(r.first_failed_at.map(|t| t.seconds), Some(1_700_000_000));
        assert_eq!(
            Message::new(b"x".to_vec())
                .to_request("a", "b", "k")
                .first_failed_at,
            None
        );
    }

    #[test]
    fn filters_become_proto() {
        assert_eq!(Filter::all().to_proto(), pb::DeadLetterFilter::default());
        let since = UNIX_EPOCH + Duration::from_secs(100);
        let f = Filter::all()
            .reason("timeout")
            .meta("tenant", "acme")
            .since(since)
            .until(since + Duration::from_secs(60))
            .to_proto();
        assert_eq!(f.reason, "timeout");
        assert_eq!(f.metadata["tenant"], "acme");
        assert_eq!(f.since.map(|t| t.seconds), Some(100));
        assert_eq!(f.until.map(|t| t.seconds), Some(160));
    }

    #[test]
    fn entries_and_stats_from_proto() {
        let d: DeadLetter = pb::DeadLetter {
            id: "1-0".into(),
            payload: b"p".to_vec(),
            reason: "r".into(),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
            published_at: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            delivery_count: 2,
            payload_size: 1,
            ..Default::default()
        }
        .into();
        assert_eq!(d.id, "1-0");
        assert_eq!(d.metadata["k"], "v");
        assert_eq!(d.published_at, Some(UNIX_EPOCH + Duration::from_secs(10)));
        assert_eq!(d.first_failed_at, None);
        assert_eq!(d.delivery_count, 2);
        let s: Stats = pb::StatsResponse {
            count: 3,
            by_reason: [("a".to_owned(), 2), ("b".to_owned(), 1)].into(),
            oldest_age: Some(prost_types::Duration {
                seconds: 7,
                nanos: 0,
            }),
            ..Default::default()
        }
        .into();
        assert_eq!(s.count, 3);
        assert_eq!(s.by_reason.values().sum::<u64>(), 3);
        assert_eq!(s.oldest_age, Duration::from_secs(7));
    }
}
