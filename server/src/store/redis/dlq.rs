//! Dead-letter queues on Redis: the `dlq_*.lua` scripts for every change, plain reads
//! (`XRANGE`, `HMGET`) for Get and List, and the redrive steps that write to an
//! application's stream.
use std::collections::BTreeMap;

use floodgate_core::{
    Micros,
    dead_letters::{Counters, Message, QueueStats},
};
use std::time::{Duration, Instant};

use redis::{
    ScriptInvocation, Value,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

use super::{Conn, RedisStore, invoke_on, now_arg, scripts, split::hash_slot};
use crate::store::{PlannedQueue, ScanRange, StoreError, StoredLetter};

fn bad(what: impl Into<String>) -> StoreError {
    StoreError::Protocol(what.into())
}

/// An entry's fields as stored (see `lua/dlq.lua`).
type Fields = Vec<(String, String)>;

fn get<'a>(f: &'a Fields, name: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn num(f: &Fields, name: &str) -> u64 {
    get(f, name).parse().unwrap_or(0)
}

/// Builds a letter from its fields; `payload` is empty unless read.
fn letter(
    id: String,
    f: &Fields,
    payload: Vec<u8>,
    delivery_count: u32,
    archived: bool,
) -> StoredLetter {
    let metadata: BTreeMap<String, String> = serde_json::from_str(get(f, "md")).unwrap_or_default();
    let original = get(f, "oid");
    StoredLetter {
        id,
        message: Message {
            payload,
            reason: get(f, "r").to_owned(),
            error_class: get(f, "ec").to_owned(),
            source: get(f, "src").to_owned(),
            attempts: num(f, "att") as u32,
            metadata,
            trace_id: get(f, "tid").to_owned(),
            first_failed_at: Some(num(f, "ff")),
            idempotency_key: get(f, "ik").to_owned(),
        },
        published_at: num(f, "pub"),
        payload_size: num(f, "sz"),
        delivery_count: if archived {
            num(f, "dc") as u32
        } else {
            delivery_count
        },
        archived,
        original_id: (!original.is_empty()).then(|| original.to_owned()),
    }
}

/// The publish script's invocation for `m` (see `lua/dlq_publish.lua` for the arguments).
fn publish_invocation<'a>(
    q: &PlannedQueue,
    idempotency_record: Option<&str>,
    m: &Message,
    now: Option<Micros>,
) -> Result<ScriptInvocation<'a>, StoreError> {
    let mut inv = queue_invocation(&scripts::DLQ_PUBLISH, q);
    if let Some(k) = idempotency_record {
        inv.key(k);
    }
    let metadata = serde_json::to_string(&m.metadata).map_err(|e| bad(e.to_string()))?;
    inv.arg(now_arg(now))
        .arg(q.settings.limits.retention)
        .arg(q.settings.limits.max_len)
        .arg(&m.idempotency_key)
        .arg(m.payload.as_slice())
        .arg(&m.reason)
        .arg(&m.error_class)
        .arg(&m.source)
        .arg(m.attempts)
        .arg(metadata)
        .arg(&m.trace_id)
        .arg(m.first_failed_at.map(|t| t.to_string()).unwrap_or_default())
        .arg(m.payload.len());
    Ok(inv)
}

fn queue_invocation<'a>(script: &'a redis::Script, q: &PlannedQueue) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in &q.keys {
        inv.key(k.as_str());
    }
    inv
}

impl RedisStore {
    pub(super) async fn dlq_publish_impl(
        &self,
        q: &PlannedQueue,
        idempotency_record: Option<&str>,
        m: &Message,
        now: Option<Micros>,
    ) -> Result<(String, bool), StoreError> {
        let inv = publish_invocation(q, idempotency_record, m, now)?;
        let (id, dup): (String, i64) = self.invoke(&inv).await?;
        Ok((id, dup == 1))
    }

    /// Publishes, then runs `WAIT 1 <ms>` on the same connection: WAIT counts the replicas
    /// that took that connection's writes so far. WAIT blocks its connection until a replica
    /// answers or the wait ends, so both run on an [`Exclusive`](super::exclusive::Exclusive)
    /// connection (on a Cluster with WAIT sent to the queue's primary only) and no other call
    /// waits behind it. Checkout, publish and WAIT share `budget`: WAIT gets what is left
    /// (at least 1 ms). (id, duplicate, replicas that confirmed).
    pub(super) async fn dlq_publish_replicated_impl(
        &self,
        q: &PlannedQueue,
        idempotency_record: Option<&str>,
        m: &Message,
        now: Option<Micros>,
        budget: Duration,
    ) -> Result<(String, bool, u64), StoreError> {
        let until = Instant::now() + budget;
        let inv = publish_invocation(q, idempotency_record, m, now)?;
        let wait = || {
            let left = until.saturating_duration_since(Instant::now());
            let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(1).arg(ms);
            cmd
        };
        let conn = self.slot.get()?;
        let ((id, dup), replicas): ((String, i64), u64) = match &*conn {
            Conn::Multiplexed { exclusive, .. } | Conn::Pool { exclusive, .. } => {
                let mut held = exclusive.hold(budget / 2).await?;
                let published = invoke_on(&inv, held.conn()).await?;
                let replicas = wait().query_async(held.conn()).await?;
                held.release();
                (published, replicas)
            }
            Conn::Cluster { exclusive, .. } => {
                let mut held = exclusive.hold(budget / 2).await?;
                let published = invoke_on(&inv, held.conn()).await?;
                // The driver would send WAIT to every primary; it belongs to the queue's.
                let primary = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(hash_slot(&q.keys[0]), SlotAddr::Master),
                ));
                let replicas = held.conn().route_command(wait(), primary).await?;
                held.release();
                let replicas = redis::from_redis_value(replicas)
                    .map_err(|e| bad(format!("WAIT answered {e}")))?;
                (published, replicas)
            }
        };
        Ok((id, dup == 1, replicas))
    }

    async fn payloads(&self, hash: &str, ids: &[String]) -> Result<Vec<Vec<u8>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let got: Vec<Option<Vec<u8>>> =
            self.command(redis::cmd("HMGET").arg(hash).arg(ids)).await?;
        Ok(got.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn delivery_counts(
        &self,
        q: &PlannedQueue,
        ids: &[String],
    ) -> Result<Vec<u32>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let got: Vec<Option<u32>> = self
            .command(redis::cmd("HMGET").arg(&q.keys[6]).arg(ids))
            .await?;
        Ok(got.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Builds letters from XRANGE entries, with payloads and delivery counts as asked.
    async fn letters(
        &self,
        q: &PlannedQueue,
        archived: bool,
        entries: Vec<(String, Fields)>,
        include_payload: bool,
    ) -> Result<Vec<StoredLetter>, StoreError> {
        let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let payload_hash = if archived { &q.keys[3] } else { &q.keys[1] };
        let payloads = if include_payload {
            self.payloads(payload_hash, &ids).await?
        } else {
            vec![Vec::new(); ids.len()]
        };
        let counts = if archived {
            vec![0; ids.len()]
        } else {
            self.delivery_counts(q, &ids).await?
        };
        Ok(entries
            .into_iter()
            .zip(payloads)
            .zip(counts)
            .map(|(((id, f), p), dc)| letter(id, &f, p, dc, archived))
            .collect())
    }

    pub(super) async fn dlq_read_impl(
        &self,
        q: &PlannedQueue,
        archived: bool,
        ids: &[String],
        include_payload: bool,
    ) -> Result<Vec<Option<StoredLetter>>, StoreError> {
        let stream = if archived { &q.keys[2] } else { &q.keys[0] };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found: Vec<(String, Fields)> = match self
                .command(redis::cmd("XRANGE").arg(stream).arg(id).arg(id))
                .await
            {
                Ok(f) => f,
                // An id Redis cannot parse names no entry.
                Err(StoreError::Redis(e))
                    if e.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
                {
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            let mut letters = self.letters(q, archived, found, include_payload).await?;
            out.push(letters.pop());
        }
        Ok(out)
    }

    pub(super) async fn dlq_scan_impl(
        &self,
        q: &PlannedQueue,
        archived: bool,
        r: &ScanRange,
        count: usize,
        include_payload: bool,
    ) -> Result<Vec<StoredLetter>, StoreError> {
        let stream = if archived { &q.keys[2] } else { &q.keys[0] };
        // Bounds in the scan's direction: low..high, ids as Redis reads them.
        let mut low = r
            .since_ms
            .map_or_else(|| "-".to_owned(), |s| format!("{s}-0"));
        let mut high = r
            .until_ms
            .map_or_else(|| "+".to_owned(), |u| format!("({u}-0"));
        if let Some(after) = &r.after {
            if r.newest_first {
                high = format!("({after}");
            } else {
                low = format!("({after}");
            }
        }
        let mut cmd = if r.newest_first {
            let mut c = redis::cmd("XREVRANGE");
            c.arg(stream).arg(&high).arg(&low);
            c
        } else {
            let mut c = redis::cmd("XRANGE");
            c.arg(stream).arg(&low).arg(&high);
            c
        };
        cmd.arg("COUNT").arg(count);
        let entries: Vec<(String, Fields)> = self.command(&cmd).await?;
        self.letters(q, archived, entries, include_payload).await
    }

    pub(super) async fn dlq_stats_impl(
        &self,
        q: &PlannedQueue,
        now: Option<Micros>,
    ) -> Result<QueueStats, StoreError> {
        let inv = queue_invocation(&scripts::DLQ_STATS, q);
        let (count, archived, in_flight, oldest, counters, minutes): (
            u64,
            u64,
            u64,
            String,
            BTreeMap<String, String>,
            BTreeMap<String, u64>,
        ) = self.invoke(&inv).await?;
        let now = match now {
            Some(n) => n,
            None => self.server_time().await?,
        };
        let mut c = Counters::default();
        for (k, v) in &counters {
            let n: u64 = v.parse().unwrap_or(0);
            match k.as_str() {
                "ta" => c.trimmed_by_age = n,
                "tl" => c.trimmed_by_length = n,
                "pt" => c.published_total = n,
                "dt" => c.duplicates_total = n,
                k => {
                    if let Some(reason) = k.strip_prefix("r:")
                        && n > 0
                    {
                        c.by_reason.insert(reason.to_owned(), n);
                    }
                }
            }
        }
        for (m, n) in minutes {
            if let Ok(m) = m.parse() {
                c.per_minute.insert(m, n);
            }
        }
        let minute = now / 60_000_000;
        let oldest_ms: Option<u64> = oldest.split('-').next().and_then(|m| m.parse().ok());
        Ok(QueueStats {
            count,
            oldest_age: oldest_ms.map_or(0, |ms| now.saturating_sub(ms * 1_000)),
            published_last_hour: c
                .per_minute
                .iter()
                .filter(|(m, _)| **m + 60 > minute)
                .map(|(_, n)| n)
                .sum(),
            counters: c,
            archived,
            in_flight,
        })
    }

    async fn server_time(&self) -> Result<Micros, StoreError> {
        let (s, us): (u64, u64) = self.command(&redis::cmd("TIME")).await?;
        Ok(s * 1_000_000 + us)
    }

    pub(super) async fn dlq_claim_impl(
        &self,
        q: &PlannedQueue,
        consumer: &str,
        count: usize,
        visibility: Micros,
        now: Option<Micros>,
    ) -> Result<(Vec<StoredLetter>, u32), StoreError> {
        let mut inv = queue_invocation(&scripts::DLQ_CLAIM, q);
        inv.arg(now_arg(now))
            .arg(count)
            .arg(visibility)
            .arg(q.settings.limits.max_deliveries)
            .arg(consumer);
        let reply: Vec<Value> = self.invoke(&inv).await?;
        let Some((first, rest)) = reply.split_first() else {
            return Err(bad("empty claim reply"));
        };
        let archived: u32 =
            redis::from_redis_value(first.clone()).map_err(|e| bad(e.to_string()))?;
        let letters = rest
            .iter()
            .map(|v| {
                let (id, f, payload, dc): (String, Fields, Vec<u8>, u32) =
                    redis::from_redis_value(v.clone()).map_err(|e| bad(e.to_string()))?;
                Ok(letter(id, &f, payload, dc, false))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((letters, archived))
    }

    /// Runs an id-list script (`ack`, `nack`, `archive`, `purge_archived`).
    pub(super) async fn dlq_ids_impl(
        &self,
        script: &redis::Script,
        q: &PlannedQueue,
        extra_key: Option<&str>,
        now: Option<Option<Micros>>,
        ids: &[String],
    ) -> Result<u32, StoreError> {
        let mut inv = queue_invocation(script, q);
        if let Some(k) = extra_key {
            inv.key(k);
        }
        if let Some(now) = now {
            inv.arg(now_arg(now));
        }
        for id in ids {
            inv.arg(id.as_str());
        }
        self.invoke(&inv).await
    }

    pub(super) async fn dlq_restore_impl(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut inv = queue_invocation(&scripts::DLQ_RESTORE, q);
        inv.arg(now_arg(now));
        for id in ids {
            inv.arg(id.as_str());
        }
        let got: Vec<String> = self.invoke(&inv).await?;
        Ok(got
            .into_iter()
            .map(|id| (!id.is_empty()).then_some(id))
            .collect())
    }

    pub(super) async fn dlq_redrive_copy_impl(
        &self,
        q: &PlannedQueue,
        target: &str,
        letters: &[StoredLetter],
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for l in letters {
            let m = &l.message;
            let metadata = serde_json::to_string(&m.metadata).map_err(|e| bad(e.to_string()))?;
            pipe.cmd("XADD")
                .arg(target)
                .arg("*")
                .arg("dlq_id")
                .arg(&l.id)
                .arg("dlq_queue")
                .arg(format!("{}/{}", q.namespace, q.name))
                .arg("attempts")
                .arg(m.attempts)
                .arg("payload")
                .arg(m.payload.as_slice())
                .arg("reason")
                .arg(&m.reason)
                .arg("error_class")
                .arg(&m.error_class)
                .arg("source")
                .arg(&m.source)
                .arg("metadata")
                .arg(metadata)
                .arg("trace_id")
                .arg(&m.trace_id)
                .arg("first_failed_at_us")
                .arg(m.first_failed_at.unwrap_or(0))
                .arg("delivery_count")
                .arg(l.delivery_count)
                .ignore();
        }
        self.pipeline(&pipe).await
    }

    pub(super) async fn dlq_redrive_present_impl(
        &self,
        target: &str,
        ids: &[String],
        window: usize,
    ) -> Result<Vec<String>, StoreError> {
        let recent: Vec<(String, Fields)> = self
            .command(
                redis::cmd("XREVRANGE")
                    .arg(target)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(window),
            )
            .await?;
        Ok(ids
            .iter()
            .filter(|id| recent.iter().any(|(_, f)| get(f, "dlq_id") == id.as_str()))
            .cloned()
            .collect())
    }
}
