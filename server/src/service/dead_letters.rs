//! `floodgate.v1.DeadLetters`: Publish, Get, List, Stats, Claim, Ack, Nack, Redrive,
//! Archive, Restore, Purge.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use floodgate_core::{
    Micros,
    dead_letters::{EntryId, MAX_BATCH, Message},
    names::validate_policy_name,
};
use floodgate_proto::v1::{self as pb, dead_letters_server::DeadLetters};
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{annotate, observed, state::AppState};
use crate::{
    error::Error,
    metrics,
    queue_config::Durability,
    store::{PlannedQueue, ScanRange, Store, StoredLetter},
    validate::{self, to_duration},
};

/// Largest encoded List response: gRPC's usual 4 MiB receive limit, less headroom.
pub const RESPONSE_BUDGET: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Entries one List call reads at most while filtering (so a sparse filter cannot hold a
/// call for long); the page then ends early with a cursor.
pub const SCAN_LIMIT: usize = 10_000;
/// Ids per Ack, Nack, Archive or Restore.
pub const MAX_IDS: usize = 1_000;
/// Recent target entries Redrive looks through to recognise copies of an interrupted run.
pub const REDRIVE_LOOKBACK: usize = 10_000;
const MAX_TEXT: usize = 256;
const MAX_METADATA: usize = 64;
const MAX_META_KEY: usize = 128;
const MAX_META_VALUE: usize = 1_024;
const MAX_CONSUMER: usize = 128;
const MAX_VISIBILITY: Micros = 12 * 3600 * 1_000_000;

fn invalid(field: &str, rule: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{field}: {rule}"))
}

fn timestamp(us: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1_000) as i32,
    }
}

fn from_timestamp(field: &str, t: &prost_types::Timestamp) -> Result<Micros, Error> {
    if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(invalid(field, "must be a valid time after 1970"));
    }
    Ok(t.seconds as u64 * 1_000_000 + t.nanos as u64 / 1_000)
}

fn wire(l: &StoredLetter) -> pb::DeadLetter {
    let m = &l.message;
    pb::DeadLetter {
        id: l.id.clone(),
        payload: m.payload.clone(),
        reason: m.reason.clone(),
        error_class: m.error_class.clone(),
        source: m.source.clone(),
        attempts: m.attempts,
        metadata: m.metadata.clone().into_iter().collect(),
        trace_id: m.trace_id.clone(),
        first_failed_at: m.first_failed_at.map(timestamp),
        published_at: Some(timestamp(l.published_at)),
        delivery_count: l.delivery_count,
        archived: l.archived,
        original_id: l.original_id.clone().unwrap_or_default(),
        payload_size: l.payload_size,
        idempotency_key: m.idempotency_key.clone(),
    }
}

fn text(field: &str, v: &str, max: usize) -> Result<(), Error> {
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("must be at most {max} bytes without control characters"),
        ));
    }
    Ok(())
}

fn ids(field: &str, ids: &[String]) -> Result<(), Error> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(invalid(field, format!("must hold 1 to {MAX_IDS} ids")));
    }
    for (i, id) in ids.iter().enumerate() {
        id.parse::<EntryId>()
            .map_err(|e| invalid(&format!("{field}[{i}]"), e))?;
    }
    Ok(())
}

/// A filter, validated, as a scan range and a predicate.
struct Filter {
    reason: String,
    metadata: BTreeMap<String, String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
}

impl Filter {
    fn new(f: Option<&pb::DeadLetterFilter>) -> Result<Self, Error> {
        let Some(f) = f else {
            return Ok(Filter {
                reason: String::new(),
                metadata: BTreeMap::new(),
                since_ms: None,
                until_ms: None,
            });
        };
        let ms = |field: &str, t: Option<&prost_types::Timestamp>| {
            t.map(|t| from_timestamp(field, t).map(|us| us / 1_000))
                .transpose()
        };
        Ok(Filter {
            reason: f.reason.clone(),
            metadata: f.metadata.clone().into_iter().collect(),
            since_ms: ms("filter.since", f.since.as_ref())?,
            until_ms: ms("filter.until", f.until.as_ref())?,
        })
    }

    fn matches(&self, l: &StoredLetter) -> bool {
        (self.reason.is_empty() || l.message.reason == self.reason)
            && self
                .metadata
                .iter()
                .all(|(k, v)| l.message.metadata.get(k) == Some(v))
    }

    fn range(&self, after: Option<String>, newest_first: bool) -> ScanRange {
        ScanRange {
            after,
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            newest_first,
        }
    }
}

/// The DeadLetters service over a store.
#[derive(Debug)]
pub struct DeadLettersService<S> {
    /// Shared server state.
    state: Arc<AppState<S>>,
}

impl<S> DeadLettersService<S> {
    /// A service over `state`.
    pub fn new(state: Arc<AppState<S>>) -> Self {
        Self { state }
    }
}

/// What a scan reads and keeps.
struct ScanSpec<'a> {
    /// The archive instead of the queue.
    archived: bool,
    /// Which entries to keep.
    filter: &'a Filter,
    /// Newest first.
    newest_first: bool,
    /// Read payloads too.
    include_payload: bool,
}

/// One matching page of a scan: the letters and where the scan stopped (`None`: the end).
struct Page {
    letters: Vec<StoredLetter>,
    cursor: Option<String>,
}

impl<S: Store> DeadLettersService<S> {
    fn queue(&self, ns: &str, name: &str) -> Result<PlannedQueue, Error> {
        annotate(ns, Some(name))?;
        validate::namespace_rule(ns)?;
        validate_policy_name(name)
            .map_err(|_| invalid("queue", "must be 1-64 characters of [A-Za-z0-9_.-]"))?;
        let config = self.state.config.load();
        let settings = config
            .queue(name)
            .ok_or_else(|| Error::QueueNotFound {
                field: "queue".into(),
                name: name.into(),
            })?
            .clone();
        Ok(PlannedQueue {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            keys: self.state.keys.queue(ns, name),
            redrive_key: self.state.keys.queue_redrive(ns, name),
            settings,
        })
    }

    /// Scans from `after` for up to `want` letters matching `spec`, reading at most
    /// [`SCAN_LIMIT`] entries, in batches.
    async fn scan(
        &self,
        q: &PlannedQueue,
        spec: &ScanSpec<'_>,
        mut after: Option<String>,
        want: usize,
    ) -> Result<Page, Error> {
        let (archived, filter, include_payload) =
            (spec.archived, spec.filter, spec.include_payload);
        let newest_first = spec.newest_first;
        let scan_limit = SCAN_LIMIT;
        let st = &self.state;
        let mut letters = Vec::new();
        let mut scanned = 0;
        while letters.len() < want && scanned < scan_limit {
            let batch = (want - letters.len())
                .clamp(1, MAX_BATCH)
                .min(scan_limit - scanned);
            let range = filter.range(after.clone(), newest_first);
            let got = st
                .with_deadline(
                    "dlq_scan",
                    st.store
                        .dlq_scan(q, archived, &range, batch, include_payload),
                )
                .await?;
            let exhausted = got.len() < batch;
            scanned += got.len();
            for l in got {
                after = Some(l.id.clone());
                if filter.matches(&l) {
                    letters.push(l);
                }
            }
            if exhausted {
                return Ok(Page {
                    letters,
                    cursor: None,
                });
            }
        }
        Ok(Page {
            letters,
            cursor: after,
        })
    }

    /// Redrive of the entries an interrupted run left marked: copies those not already in
    /// their target's recent entries, then removes them all. Returns how many it removed.
    async fn finish_interrupted_redrive(&self, q: &PlannedQueue) -> Result<u64, Error> {
        let st = &self.state;
        let pending = st
            .with_deadline("dlq_redrive", st.store.dlq_redrive_pending(q))
            .await?;
        let mut by_target: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, target) in pending {
            by_target.entry(target).or_default().push(id);
        }
        let mut moved = 0;
        for (target, ids) in by_target {
            for chunk in ids.chunks(MAX_BATCH) {
                let present = st
                    .with_deadline(
                        "dlq_redrive",
                        st.store
                            .dlq_redrive_present(&target, chunk, REDRIVE_LOOKBACK),
                    )
                    .await?;
                let letters: Vec<StoredLetter> = st
                    .with_deadline("dlq_read", st.store.dlq_read(q, false, chunk, true))
                    .await?
                    .into_iter()
                    .flatten()
                    .filter(|l| !present.contains(&l.id))
                    .collect();
                if !letters.is_empty() {
                    st.with_deadline(
                        "dlq_redrive",
                        st.store.dlq_redrive_copy(q, &target, &letters),
                    )
                    .await?;
                }
                moved += u64::from(
                    st.with_deadline("dlq_remove", st.store.dlq_remove(q, chunk))
                        .await?,
                );
            }
        }
        Ok(moved)
    }
}

#[tonic::async_trait]
impl<S: Store> DeadLetters for DeadLettersService<S> {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        observed("Publish", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            let max = q.settings.max_payload;
            if req.payload.len() as u64 > max {
                return Err(invalid(
                    "payload",
                    format!(
                        "{} bytes is over this queue's max_payload of {max} bytes",
                        req.payload.len()
                    ),
                )
                .into());
            }
            for (field, v) in [
                ("reason", &req.reason),
                ("error_class", &req.error_class),
                ("source", &req.source),
                ("trace_id", &req.trace_id),
                ("idempotency_key", &req.idempotency_key),
            ] {
                text(field, v, MAX_TEXT)?;
            }
            if req.metadata.len() > MAX_METADATA {
                return Err(invalid("metadata", format!("at most {MAX_METADATA} entries")).into());
            }
            for (k, v) in &req.metadata {
                if k.is_empty() {
                    return Err(invalid("metadata", "keys must not be empty").into());
                }
                text(&format!("metadata[{k:?}]"), k, MAX_META_KEY)?;
                text(&format!("metadata[{k:?}]"), v, MAX_META_VALUE)?;
            }
            let first_failed_at = req
                .first_failed_at
                .as_ref()
                .map(|t| from_timestamp("first_failed_at", t))
                .transpose()?;
            let message = Message {
                payload: req.payload,
                reason: req.reason,
                error_class: req.error_class,
                source: req.source,
                attempts: req.attempts,
                metadata: req.metadata.into_iter().collect(),
                trace_id: req.trace_id,
                first_failed_at,
                idempotency_key: req.idempotency_key,
            };
            let st = &self.state;
            let (id, duplicate) = if q.settings.durability == Durability::Replicated {
                // Three quarters of the deadline for checkout, publish and WAIT (which gets
                // what is left of it); the last quarter for the answer to come back.
                let wait = (st.config.load().store_timeout * 3 / 4).max(Duration::from_millis(1));
                let (id, duplicate, replicas) = st
                    .with_deadline(
                        "dlq_publish",
                        st.store.dlq_publish_replicated(&q, &message, None, wait),
                    )
                    .await?;
                if replicas == 0 {
                    return Err(Status::unavailable(format!(
                        "stored as {id} but no replica confirmed it within {wait:?} (durability = \"replicated\"); retry with the same idempotency_key"
                    )));
                }
                (id, duplicate)
            } else {
                st.with_deadline("dlq_publish", st.store.dlq_publish(&q, &message, None))
                    .await?
            };
            metrics::dlq_published(&q.namespace, &q.name, duplicate);
            st.note_queue(&q).await;
            Ok(Response::new(pb::PublishResponse { id, duplicate }))
        })
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetter>, Status> {
        observed("GetDeadLetter", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            req.id.parse::<EntryId>().map_err(|e| invalid("id", e))?;
            let st = &self.state;
            let one = std::slice::from_ref(&req.id);
            for archived in [false, true] {
                let got = st
                    .with_deadline("dlq_read", st.store.dlq_read(&q, archived, one, true))
                    .await?;
                if let Some(Some(l)) = got.into_iter().next() {
                    return Ok(Response::new(wire(&l)));
                }
            }
            Err(Error::LetterNotFound(req.id).into())
        })
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        observed("ListDeadLetters", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            let page_size = match req.page_size {
                0 => 100,
                n @ 1..=1_000 => n as usize,
                _ => return Err(invalid("page_size", "must be between 1 and 1000").into()),
            };
            if !req.cursor.is_empty() {
                req.cursor
                    .parse::<EntryId>()
                    .map_err(|e| invalid("cursor", e))?;
            }
            let filter = Filter::new(req.filter.as_ref())?;
            let after = (!req.cursor.is_empty()).then(|| req.cursor.clone());
            let spec = ScanSpec {
                archived: req.archived,
                filter: &filter,
                newest_first: req.newest_first,
                include_payload: req.include_payload,
            };
            let page = self.scan(&q, &spec, after, page_size).await?;
            // Keep the answer under the byte budget: end the page early, with a cursor.
            let mut messages = Vec::with_capacity(page.letters.len());
            let mut size = 0;
            let mut cursor = page.cursor;
            for l in &page.letters {
                let m = wire(l);
                let len = m.encoded_len() + 8;
                if size + len > RESPONSE_BUDGET && !messages.is_empty() {
                    cursor = messages.last().map(|m: &pb::DeadLetter| m.id.clone());
                    break;
                }
                size += len;
                messages.push(m);
            }
            Ok(Response::new(pb::ListDeadLettersResponse {
                messages,
                next_cursor: cursor.unwrap_or_default(),
            }))
        })
        .await
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        observed("DeadLetterStats", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            let st = &self.state;
            let s = st
                .with_deadline("dlq_stats", st.store.dlq_stats(&q, None))
                .await?;
            Ok(Response::new(stats_response(&q, &s)))
        })
        .await
    }

    async fn claim(
        &self,
        request: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        observed("Claim", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            if req.consumer.is_empty() {
                return Err(invalid("consumer", "is required (who claims, 1-128 bytes)").into());
            }
            text("consumer", &req.consumer, MAX_CONSUMER)?;
            let count = match req.count {
                0 => 1,
                n @ 1..=1_000 => n as usize,
                _ => return Err(invalid("count", "must be between 1 and 1000").into()),
            };
            let visibility =
                match validate::duration("visibility_timeout", req.visibility_timeout.as_ref())? {
                    None => q.settings.visibility_timeout,
                    Some(v) if (1_000..=MAX_VISIBILITY).contains(&v) => v,
                    Some(_) => {
                        return Err(
                            invalid("visibility_timeout", "must be between 1ms and 12h").into()
                        );
                    }
                };
            let st = &self.state;
            let (letters, archived) = st
                .with_deadline(
                    "dlq_claim",
                    st.store
                        .dlq_claim(&q, &req.consumer, count, visibility, None),
                )
                .await?;
            Ok(Response::new(pb::ClaimResponse {
                messages: letters.iter().map(wire).collect(),
                archived_over_max_deliveries: archived,
            }))
        })
        .await
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        observed("Ack", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            ids("ids", &req.ids)?;
            let st = &self.state;
            let acked = st
                .with_deadline("dlq_remove", st.store.dlq_remove(&q, &req.ids))
                .await?;
            Ok(Response::new(pb::AckResponse { acked }))
        })
        .await
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        observed("Nack", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            ids("ids", &req.ids)?;
            let st = &self.state;
            let released = st
                .with_deadline("dlq_nack", st.store.dlq_nack(&q, &req.ids, None))
                .await?;
            Ok(Response::new(pb::NackResponse { released }))
        })
        .await
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> Result<Response<pb::RedriveResponse>, Status> {
        observed("Redrive", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            let listed = q
                .settings
                .redrive_targets
                .iter()
                .any(|t| crate::queue_config::redrive_target(t, &q.namespace) == req.target_stream);
            // `{namespace}` could spell a floodgate key; those are never a target.
            let floodgate_key = req
                .target_stream
                .starts_with(&format!("{}:", self.state.keys.prefix()));
            if !listed || floodgate_key {
                return Err(invalid(
                    "target_stream",
                    format!(
                        "{:?} is not in this queue's redrive_targets {:?} ({{namespace}} stands for {:?}), or names a floodgate key",
                        req.target_stream, q.settings.redrive_targets, q.namespace
                    ),
                )
                .into());
            }
            let st = &self.state;
            if !st.store.supports_redrive() {
                return Err(Error::Unsupported(
                    "Redrive writes to your application's Redis stream, so it needs a server on Redis (this one serves from memory)".into(),
                )
                .into());
            }
            let filter = Filter::new(req.filter.as_ref())?;
            let mut moved = self.finish_interrupted_redrive(&q).await?;
            let limit = if req.limit == 0 { u64::MAX } else { req.limit };
            let mut after = None;
            while moved < limit {
                let want = (limit - moved).min(MAX_BATCH as u64) as usize;
                let spec = ScanSpec {
                    archived: false,
                    filter: &filter,
                    newest_first: false,
                    include_payload: true,
                };
                let page = self.scan(&q, &spec, after.clone(), want).await?;
                if !page.letters.is_empty() {
                    let batch: Vec<String> = page.letters.iter().map(|l| l.id.clone()).collect();
                    // Mark, copy, remove: a crash after the copy leaves the marks, and the next
                    // Redrive finishes the batch without copying it twice.
                    st.with_deadline(
                        "dlq_redrive",
                        st.store.dlq_redrive_mark(&q, &batch, &req.target_stream),
                    )
                    .await?;
                    st.with_deadline(
                        "dlq_redrive",
                        st.store
                            .dlq_redrive_copy(&q, &req.target_stream, &page.letters),
                    )
                    .await?;
                    moved += u64::from(
                        st.with_deadline("dlq_remove", st.store.dlq_remove(&q, &batch))
                            .await?,
                    );
                }
                match page.cursor {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            tracing::info!(namespace = %q.namespace, queue = %q.name, target = %req.target_stream, moved, "redrive");
            Ok(Response::new(pb::RedriveResponse { moved }))
        })
        .await
    }

    async fn archive(
        &self,
        request: Request<pb::ArchiveRequest>,
    ) -> Result<Response<pb::ArchiveResponse>, Status> {
        observed("Archive", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            ids("ids", &req.ids)?;
            let st = &self.state;
            let archived = st
                .with_deadline("dlq_archive", st.store.dlq_archive(&q, &req.ids, None))
                .await?;
            Ok(Response::new(pb::ArchiveResponse { archived }))
        })
        .await
    }

    async fn restore(
        &self,
        request: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        observed("Restore", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            ids("ids", &req.ids)?;
            let st = &self.state;
            let restored = st
                .with_deadline("dlq_restore", st.store.dlq_restore(&q, &req.ids, None))
                .await?;
            Ok(Response::new(pb::RestoreResponse {
                ids: restored
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
            }))
        })
        .await
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        observed("Purge", async move {
            let req = request.into_inner();
            let q = self.queue(&req.namespace, &req.queue)?;
            let filter = Filter::new(req.filter.as_ref())?;
            let st = &self.state;
            let mut purged = 0u64;
            let mut after = None;
            loop {
                let spec = ScanSpec {
                    archived: req.archived,
                    filter: &filter,
                    newest_first: false,
                    include_payload: false,
                };
                let page = self.scan(&q, &spec, after.clone(), MAX_BATCH).await?;
                if !page.letters.is_empty() {
                    let batch: Vec<String> = page.letters.iter().map(|l| l.id.clone()).collect();
                    let n = if req.archived {
                        st.with_deadline("dlq_remove", st.store.dlq_purge_archived(&q, &batch))
                            .await?
                    } else {
                        st.with_deadline("dlq_remove", st.store.dlq_remove(&q, &batch))
                            .await?
                    };
                    purged += u64::from(n);
                }
                match page.cursor {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            tracing::info!(namespace = %q.namespace, queue = %q.name, archived = req.archived, purged, "purge");
            Ok(Response::new(pb::PurgeResponse { purged }))
        })
        .await
    }
}

/// Stats on the wire.
pub fn stats_response(
    q: &PlannedQueue,
    s: &floodgate_core::dead_letters::QueueStats,
) -> pb::StatsResponse {
    pb::StatsResponse {
        count: s.count,
        by_reason: s.counters.by_reason.clone().into_iter().collect(),
        oldest_age: Some(to_duration(s.oldest_age)),
        published_last_hour: s.published_last_hour,
        over_threshold: s.count >= q.settings.alert_threshold,
        archived: s.archived,
        trimmed_by_age: s.counters.trimmed_by_age,
        trimmed_by_length: s.counters.trimmed_by_length,
        in_flight: s.in_flight,
        published_total: s.counters.published_total,
        duplicates_total: s.counters.duplicates_total,
    }
}
