//! The Redis store: every decision is an `EVALSHA` of an atomic Lua script, so a fleet of
//! servers sharing one Redis decides as one. On a Redis Cluster an Acquire whose keys span
//! several slots is reserved slot by slot and refunded on denial (`split`).
//!
//! - [`connection`]: where Redis is (one server, a Cluster, Sentinel; TLS) and the
//!   connection slot, replaced whole on reconnect.
//! - `exclusive`: connections one call holds alone, for commands that block (`WAIT`).
//! - `split`: hash slots and the cross-slot Acquire.
//! - [`scripts`]: the assembled scripts.
//! - `reply`: parsing the scripts' replies.
//! - `dlq`: dead-letter queues (scripts, reads, redrive steps).
//! - `refund`: Redis Cluster's reserve-then-refund of an Acquire split over slots.
//! - `events`: relaying breaker transitions from Redis Pub/Sub to this server's watchers.
//! - [`schema`]: the key layout's version and its migrations (`migrations/`).
//!
//! Connections: by default one multiplexed connection (redis-rs `ConnectionManager`, which
//! pipelines concurrent commands on one socket and reconnects by itself); optionally a
//! deadpool pool; on a Cluster the redis-rs Cluster driver. Beside each, up to 8 exclusive
//! connections for blocking commands. The README (Performance) records the measurements
//! behind the default.
use floodgate_core::{
    Algorithm, Micros,
    breaker::{BreakerConfig, State},
};
use std::sync::Arc;

use redis::{Script, ScriptInvocation};
use tokio::sync::broadcast;

use self::connection::{Conn, Slot, Target};
use self::schema::{Report, Schema, SchemaError, StoredSchema};
use floodgate_core::dead_letters::{Message, QueueStats};

use super::{
    AcquirePlan, BreakerEvent, BreakerRead, BreakerReported, PlannedBreaker, PlannedQueue,
    ReportCounts, ScanRange, Store, StoreDecision, StoreError, StoredLetter,
};

pub mod connection;
mod dlq;
mod events;
mod exclusive;
mod refund;
mod reply;
mod split;

pub use split::hash_slot;
pub mod schema;
pub mod scripts;

/// How the store talks to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionMode {
    /// One shared, auto-pipelined connection.
    #[default]
    Multiplexed,
    /// A pool of exclusive connections (deadpool-redis).
    Pool,
}

/// Runs `$body` with `$c` bound to a `&mut` connection of whatever kind the store holds;
/// `$err` turns a pool checkout failure into the caller's error type.
macro_rules! with_conn {
    ($self:ident, $err:expr, |$c:ident| $body:expr) => {{
        let conn = $self.slot.get()?;
        match &*conn {
            Conn::Multiplexed { shared, .. } => {
                let $c = &mut shared.clone();
                $body
            }
            Conn::Cluster { shared, .. } => {
                let $c = &mut shared.clone();
                $body
            }
            Conn::Pool { pool, .. } => {
                let mut pooled = pool.get().await.map_err(|e| $err(e.to_string()))?;
                let $c = &mut pooled;
                $body
            }
        }
    }};
}

/// Limit state in Redis.
#[derive(Clone)]
pub struct RedisStore {
    /// The connection(s); empty until the first connection succeeds.
    slot: Slot,
    /// Where Redis is.
    target: Arc<Target>,
    /// How to connect.
    mode: ConnectionMode,
    /// Pool size in pool mode.
    pool_size: usize,
    /// The URL, password removed, for logs.
    url: String,
    /// Breaker transitions from every server, once the relay runs.
    events: broadcast::Sender<BreakerEvent>,
    /// Re-subscriptions of the relay (see [`Store::breaker_event_gaps`]).
    gaps: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish()
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl RedisStore {
    /// A store for `url` (any form of [`Target::parse`]) that is not connected yet; calls
    /// fail with [`StoreError::Unavailable`] until [`Store::reconnect`] succeeds. `tls`:
    /// the files for a `rediss` URL (see [`Self::connect_tls`]).
    pub fn new_tls(
        url: &str,
        mode: ConnectionMode,
        pool_size: usize,
        tls: Option<redis::TlsCertificates>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            slot: Slot::default(),
            target: Arc::new(Target::parse(url)?.with_tls(tls)?),
            mode,
            pool_size,
            url: redact(url),
            events: broadcast::channel(1024).0,
            gaps: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// Connects to `url` now and loads the scripts.
    pub async fn connect(
        url: &str,
        mode: ConnectionMode,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        Self::connect_tls(url, mode, pool_size, None).await
    }

    /// Connects to `url` now; a `rediss` URL (any form) verifies Redis's certificate
    /// against `tls`'s CA (or the system roots) and presents its client certificate, if
    /// any. Every connection the store opens (commands, pool, Pub/Sub) uses them.
    pub async fn connect_tls(
        url: &str,
        mode: ConnectionMode,
        pool_size: usize,
        tls: Option<redis::TlsCertificates>,
    ) -> Result<Self, StoreError> {
        let store = Self::new_tls(url, mode, pool_size, tls)?;
        store.reconnect().await?;
        store.load_scripts().await?;
        Ok(store)
    }

    /// Whether this store is a Redis Cluster (keys of one script must share a slot).
    pub fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }

    /// Redis's `maxmemory-policy`, or `None` when `CONFIG GET` is not allowed (managed Redis
    /// often disables it).
    pub async fn maxmemory_policy(&self) -> Option<String> {
        let reply: Vec<String> = self
            .command(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
            .await
            .ok()?;
        reply.get(1).cloned()
    }

    /// The schema record the store holds; `None` when it is empty (no schema key).
    pub async fn schema(&self, schema: &Schema) -> Result<Option<StoredSchema>, SchemaError> {
        with_conn!(self, SchemaError::Pool, |c| schema.read(c).await)
    }

    /// Applies the migrations the store is missing ([`Schema::apply`]).
    pub async fn migrate(&self, schema: &Schema) -> Result<Report, SchemaError> {
        self.apply_schema(schema, false).await
    }

    /// Plans the missing migrations and, unless `dry_run`, applies them. On a Cluster the
    /// record and every migration script live in the schema key's slot.
    pub async fn apply_schema(
        &self,
        schema: &Schema,
        dry_run: bool,
    ) -> Result<Report, SchemaError> {
        with_conn!(self, SchemaError::Pool, |c| schema.apply(c, dry_run).await)
    }

    /// Loads every script (done at start; `EVALSHA` reloads by itself after a flush).
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        for script in scripts::all() {
            with_conn!(self, StoreError::Pool, |c| {
                script.load_async(c).await?;
            });
        }
        Ok(())
    }

    /// Runs a script by `EVALSHA`. redis-rs loads it and retries once on `NOSCRIPT`; when
    /// another flush lands between that load and the retry we try again, a bounded number
    /// of times. Only `NOSCRIPT` is retried: it proves the script did not run, whereas a
    /// timeout or a dropped connection may follow a call that did.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        with_conn!(self, StoreError::Pool, |c| invoke_on(inv, c).await)
    }

    /// Relays every breaker transition published on `channel` (by any server) to
    /// [`Store::breaker_events`], reconnecting with backoff until the process ends.
    pub fn start_event_relay(&self, channel: String) {
        events::spawn_relay(
            self.target.clone(),
            channel,
            self.events.clone(),
            self.gaps.clone(),
        );
    }

    async fn pipeline(&self, pipe: &redis::Pipeline) -> Result<(), StoreError> {
        with_conn!(self, StoreError::Pool, |c| Ok(pipe.query_async(c).await?))
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        with_conn!(self, StoreError::Pool, |c| Ok(cmd.query_async(c).await?))
    }
}

/// Runs a script on `c`, again when the script cache was flushed between its load and its
/// call (NOSCRIPT; three times at most).
async fn invoke_on<T: redis::FromRedisValue>(
    inv: &ScriptInvocation<'_>,
    c: &mut impl redis::aio::ConnectionLike,
) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        match inv.invoke_async(c).await {
            Err(e)
                if attempt < 3
                    && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                attempt += 1;
            }
            other => return Ok(other?),
        }
    }
}

/// Whether a `maxmemory-policy` can evict keys that have no TTL (dead letters, breaker
/// state): anything but `noeviction` and the `volatile-*` family. Note that `volatile-*`
/// still evicts limit and lease keys, which all have a TTL; only `noeviction` keeps all.
pub fn eviction_can_drop_keys(policy: &str) -> bool {
    !(policy == "noeviction" || policy.starts_with("volatile-"))
}

/// The key that remembers a letter's idempotency key, beside its queue's keys.
fn idempotency_record(q: &PlannedQueue, m: &Message) -> Option<String> {
    (!m.idempotency_key.is_empty()).then(|| format!("{}:ik:{}", q.keys[0], m.idempotency_key))
}

fn now_arg(now: Option<Micros>) -> String {
    now.map(|n| n.to_string()).unwrap_or_default()
}

/// Milliseconds the request record of an Acquire answers retries.
const REQUEST_RECORD_TTL_MS: u64 = 60_000;

/// The Acquire script's invocation; `mode` is `"acquire"`, `"status"` or `"reserve"`
/// (which never takes the request record).
fn acquire_invocation<'a>(
    script: &'a Script,
    plan: &AcquirePlan,
    mode: &str,
) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for c in &plan.checks {
        inv.key(c.key.as_str());
    }
    let record_ttl = match &plan.request_record {
        Some(record) if mode == "acquire" => {
            inv.key(record.as_str());
            REQUEST_RECORD_TTL_MS
        }
        _ => 0,
    };
    for b in &plan.breakers {
        for k in &b.keys {
            inv.key(k.as_str());
        }
    }
    inv.arg(mode)
        .arg(now_arg(plan.now))
        .arg(record_ttl)
        .arg(plan.checks.len());
    for c in &plan.checks {
        let p = &c.policy;
        inv.arg(p.algorithm().code())
            .arg(c.cost)
            .arg(u8::from(p.shadow()));
        policy_args(&mut inv, c);
    }
    if let Some(first) = plan.breakers.first() {
        inv.arg(plan.breakers.len())
            .arg(first.namespace.as_str())
            .arg(&first.channel);
        for b in &plan.breakers {
            inv.arg(b.name.as_str());
            breaker_args(&mut inv, &b.settings.config);
        }
    }
    inv
}

/// The three arguments a check's algorithm reads after its code and cost, in `acquire.lua`
/// and `refund.lua` alike: the token bucket's emission interval and capacity; a lease's
/// limit, TTL and member; a window's limit and period.
fn policy_args(inv: &mut ScriptInvocation<'_>, c: &crate::store::PlannedCheck) {
    let p = &c.policy;
    match p.algorithm() {
        Algorithm::TokenBucket => inv.arg(p.emission_interval()).arg(p.capacity()).arg(""),
        Algorithm::Concurrency => inv
            .arg(p.limit())
            .arg(p.lease_ttl())
            .arg(c.lease_member.as_deref().unwrap_or("")),
        _ => inv.arg(p.limit()).arg(p.period()).arg(""),
    };
}

/// The 12 settings every breaker script reads (`br_cfg` in `lua/breaker.lua`).
fn breaker_args(inv: &mut ScriptInvocation<'_>, c: &BreakerConfig) {
    let s = c.spec();
    inv.arg(s.window.name())
        .arg(s.window_size)
        .arg(s.minimum_calls)
        .arg(s.failure_rate_threshold.to_string())
        .arg(s.slow_call_rate_threshold.to_string())
        .arg(s.wait_in_open)
        .arg(s.wait_in_open_multiplier.to_string())
        .arg(s.wait_in_open_max)
        .arg(s.wait_in_open_jitter.to_string())
        .arg(s.half_open_calls)
        .arg(s.half_open_max_wait)
        .arg(s.minimum_reporters);
}

/// A breaker script's invocation up to its settings: 4 keys, now, namespace, name,
/// channel, and the jitter draw when given.
fn breaker_invocation<'a>(
    script: &'a Script,
    b: &PlannedBreaker,
    now: Option<Micros>,
    draw: Option<u32>,
) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in &b.keys {
        inv.key(k.as_str());
    }
    inv.arg(now_arg(now))
        .arg(b.namespace.as_str())
        .arg(b.name.as_str())
        .arg(&b.channel);
    if let Some(d) = draw {
        inv.arg(d);
    }
    breaker_args(&mut inv, &b.settings.config);
    inv
}

impl RedisStore {
    /// Decides a plan whose keys share one slot: one script call.
    async fn acquire_one(&self, plan: &AcquirePlan) -> Result<StoreDecision, StoreError> {
        let mode = if plan.consume { "acquire" } else { "status" };
        let inv = acquire_invocation(&scripts::ACQUIRE, plan, mode);
        let value: redis::Value = self.invoke(&inv).await?;
        reply::parse_acquire(&value, plan.checks.len(), plan.breakers.len())
    }
}

impl Store for RedisStore {
    async fn acquire(&self, plan: &AcquirePlan) -> Result<StoreDecision, StoreError> {
        if self.is_cluster() {
            let groups = split::groups(plan);
            if groups.len() > 1 {
                // A task of its own: a caller whose deadline passes mid-way stops waiting,
                // but the reservations made so far are still refunded (or completed).
                let (store, plan) = (self.clone(), plan.clone());
                let split = tokio::spawn(async move { store.acquire_split(&plan, &groups).await });
                return split.await.map_err(|e| {
                    StoreError::Protocol(format!("the cross-slot Acquire task ended: {e}"))
                })?;
            }
        }
        self.acquire_one(plan).await
    }

    async fn breaker_report(
        &self,
        b: &PlannedBreaker,
        r: &ReportCounts,
        draw: u32,
        now: Option<Micros>,
    ) -> Result<BreakerReported, StoreError> {
        let mut inv = breaker_invocation(&scripts::BREAKER_REPORT, b, now, Some(draw));
        inv.arg(r.counts.calls)
            .arg(r.counts.failures)
            .arg(r.counts.slow)
            .arg(r.released)
            .arg(r.generation)
            .arg(r.reporter.as_str());
        let value: redis::Value = self.invoke(&inv).await?;
        reply::parse_report(&value)
    }

    async fn breaker_get(
        &self,
        b: &PlannedBreaker,
        now: Option<Micros>,
    ) -> Result<BreakerRead, StoreError> {
        let inv = breaker_invocation(&scripts::BREAKER_GET, b, now, None);
        let value: redis::Value = self.invoke(&inv).await?;
        reply::parse_info(&value)
    }

    async fn breaker_set_state(
        &self,
        b: &PlannedBreaker,
        to: State,
        draw: u32,
        now: Option<Micros>,
    ) -> Result<BreakerRead, StoreError> {
        let mut inv = breaker_invocation(&scripts::BREAKER_SET_STATE, b, now, Some(draw));
        inv.arg(to.name());
        let value: redis::Value = self.invoke(&inv).await?;
        reply::parse_info(&value)
    }

    async fn breaker_history(
        &self,
        b: &PlannedBreaker,
        limit: usize,
    ) -> Result<Vec<BreakerEvent>, StoreError> {
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .command(
                redis::cmd("XREVRANGE")
                    .arg(&b.keys[3])
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        entries
            .into_iter()
            .map(|(_, fields)| events::from_fields(&b.namespace, &b.name, &fields))
            .collect()
    }

    async fn breaker_index_add(&self, index: &str, name: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .command(redis::cmd("SADD").arg(index).arg(name))
            .await?;
        let _: i64 = self
            .command(redis::cmd("EXPIRE").arg(index).arg(events::INDEX_TTL_SECS))
            .await?;
        Ok(())
    }

    async fn breaker_index(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.command(redis::cmd("SMEMBERS").arg(index)).await?;
        names.sort();
        Ok(names)
    }

    async fn top_add(
        &self,
        key: &str,
        entries: &[(String, u64)],
        ttl_secs: u64,
        keep: usize,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (m, n) in entries {
            pipe.cmd("ZINCRBY").arg(key).arg(*n).arg(m).ignore();
        }
        pipe.cmd("EXPIRE").arg(key).arg(ttl_secs).ignore();
        // Keep the `keep` largest: drop ranks 0 .. -(keep + 1) (the lowest counts).
        let last = -(i64::try_from(keep).unwrap_or(i64::MAX - 1) + 1);
        pipe.cmd("ZREMRANGEBYRANK")
            .arg(key)
            .arg(0)
            .arg(last)
            .ignore();
        self.pipeline(&pipe).await
    }

    async fn top_read(&self, key: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let flat: Vec<(String, f64)> = self
            .command(
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await?;
        Ok(flat
            .into_iter()
            .map(|(m, n)| (m, n.max(0.0) as u64))
            .collect())
    }

    async fn schema_version(&self, keys: &crate::keys::Keys) -> Result<u32, StoreError> {
        self.schema(&Schema::new(keys))
            .await
            .map(|s| s.map_or(0, |s| s.version))
            .map_err(|e| StoreError::Protocol(e.to_string()))
    }

    async fn dlq_publish(
        &self,
        q: &PlannedQueue,
        m: &Message,
        now: Option<Micros>,
    ) -> Result<(String, bool), StoreError> {
        let record = idempotency_record(q, m);
        self.dlq_publish_impl(q, record.as_deref(), m, now).await
    }

    async fn dlq_publish_replicated(
        &self,
        q: &PlannedQueue,
        m: &Message,
        now: Option<Micros>,
        wait: std::time::Duration,
    ) -> Result<(String, bool, u64), StoreError> {
        let record = idempotency_record(q, m);
        self.dlq_publish_replicated_impl(q, record.as_deref(), m, now, wait)
            .await
    }

    async fn dlq_read(
        &self,
        q: &PlannedQueue,
        archived: bool,
        ids: &[String],
        include_payload: bool,
    ) -> Result<Vec<Option<StoredLetter>>, StoreError> {
        self.dlq_read_impl(q, archived, ids, include_payload).await
    }

    async fn dlq_scan(
        &self,
        q: &PlannedQueue,
        archived: bool,
        range: &ScanRange,
        count: usize,
        include_payload: bool,
    ) -> Result<Vec<StoredLetter>, StoreError> {
        self.dlq_scan_impl(q, archived, range, count, include_payload)
            .await
    }

    async fn dlq_stats(
        &self,
        q: &PlannedQueue,
        now: Option<Micros>,
    ) -> Result<QueueStats, StoreError> {
        self.dlq_stats_impl(q, now).await
    }

    async fn dlq_claim(
        &self,
        q: &PlannedQueue,
        consumer: &str,
        count: usize,
        visibility: Micros,
        now: Option<Micros>,
    ) -> Result<(Vec<StoredLetter>, u32), StoreError> {
        self.dlq_claim_impl(q, consumer, count, visibility, now)
            .await
    }

    async fn dlq_remove(&self, q: &PlannedQueue, ids: &[String]) -> Result<u32, StoreError> {
        self.dlq_ids_impl(&scripts::DLQ_ACK, q, Some(&q.redrive_key), None, ids)
            .await
    }

    async fn dlq_nack(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> Result<u32, StoreError> {
        self.dlq_ids_impl(&scripts::DLQ_NACK, q, None, Some(now), ids)
            .await
    }

    async fn dlq_archive(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> Result<u32, StoreError> {
        self.dlq_ids_impl(&scripts::DLQ_ARCHIVE, q, None, Some(now), ids)
            .await
    }

    async fn dlq_restore(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> Result<Vec<Option<String>>, StoreError> {
        self.dlq_restore_impl(q, ids, now).await
    }

    async fn dlq_purge_archived(
        &self,
        q: &PlannedQueue,
        ids: &[String],
    ) -> Result<u32, StoreError> {
        self.dlq_ids_impl(&scripts::DLQ_PURGE_ARCHIVED, q, None, None, ids)
            .await
    }

    fn supports_redrive(&self) -> bool {
        true
    }

    async fn dlq_redrive_mark(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        target: &str,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&q.redrive_key);
        for id in ids {
            cmd.arg(id).arg(target);
        }
        let _: i64 = self.command(&cmd).await?;
        Ok(())
    }

    async fn dlq_redrive_pending(
        &self,
        q: &PlannedQueue,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.command(redis::cmd("HGETALL").arg(&q.redrive_key))
            .await
    }

    async fn dlq_redrive_copy(
        &self,
        q: &PlannedQueue,
        target: &str,
        letters: &[StoredLetter],
    ) -> Result<(), StoreError> {
        self.dlq_redrive_copy_impl(q, target, letters).await
    }

    async fn dlq_redrive_present(
        &self,
        target: &str,
        ids: &[String],
        window: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.dlq_redrive_present_impl(target, ids, window).await
    }

    async fn queue_index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .command(redis::cmd("SADD").arg(index).arg(member))
            .await?;
        Ok(())
    }

    async fn audit_append(
        &self,
        key: &str,
        fields: &[(&'static str, String)],
        max_len: usize,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("MAXLEN").arg("~").arg(max_len).arg("*");
        for (f, v) in fields {
            cmd.arg(*f).arg(v);
        }
        let _: String = self.command(&cmd).await?;
        Ok(())
    }

    async fn audit_read(
        &self,
        key: &str,
        count: usize,
    ) -> Result<Vec<crate::store::AuditRecord>, StoreError> {
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .command(
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        Ok(entries)
    }

    async fn queue_index(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.command(redis::cmd("SMEMBERS").arg(index)).await?;
        names.sort();
        Ok(names)
    }

    fn breaker_events(&self) -> broadcast::Receiver<BreakerEvent> {
        self.events.subscribe()
    }

    fn breaker_event_gaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.gaps.subscribe()
    }

    async fn release(
        &self,
        key: &str,
        member: &str,
        now: Option<Micros>,
    ) -> Result<bool, StoreError> {
        let mut inv = scripts::RELEASE.prepare_invoke();
        inv.key(key).arg(member).arg(now_arg(now));
        let released: i64 = self.invoke(&inv).await?;
        Ok(released == 1)
    }

    async fn renew(
        &self,
        key: &str,
        member: &str,
        ttl: Micros,
        now: Option<Micros>,
    ) -> Result<Option<Micros>, StoreError> {
        let mut inv = scripts::RENEW.prepare_invoke();
        inv.key(key).arg(member).arg(now_arg(now)).arg(ttl);
        let granted: i64 = self.invoke(&inv).await?;
        Ok(u64::try_from(granted).ok())
    }

    async fn reset(&self, key: &str) -> Result<bool, StoreError> {
        let deleted: i64 = self.command(redis::cmd("DEL").arg(key)).await?;
        Ok(deleted > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.command(&redis::cmd("PING")).await?;
        Ok(())
    }

    async fn reconnect(&self) -> Result<(), StoreError> {
        match self.target.connect(self.mode, self.pool_size).await {
            Ok(conn) => {
                self.slot.set(conn);
                Ok(())
            }
            Err(e) => {
                // The old connection goes too: the Cluster driver otherwise keeps retrying
                // its nodes every few milliseconds (CPU and a flood of warnings) for as long
                // as they are down, while calls fail at the open store guard anyway.
                self.slot.clear();
                Err(e)
            }
        }
    }

    fn describe(&self) -> String {
        format!("redis {}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_policies() {
        assert!(!eviction_can_drop_keys("noeviction"));
        assert!(!eviction_can_drop_keys("volatile-lru"));
        assert!(eviction_can_drop_keys("allkeys-lru"));
        assert!(eviction_can_drop_keys("allkeys-random"));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:pw@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
