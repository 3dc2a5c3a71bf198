//! The one storage interface: a store decides Acquires atomically and manages leases.
//!
//! - [`memory`]: the embedded single-instance store, running the `core` model.
//! - [`redis`]: the fleet-wide store, one Lua script call per operation.
use std::{future::Future, sync::Arc};

use floodgate_core::{
    CheckOutcome, Micros, Policy,
    breaker::{Admission, State},
};
use thiserror::Error;

pub mod breaker;
pub mod dlq;
pub mod guard;
pub mod memory;
pub mod redis;

pub use dlq::{PlannedQueue, ScanRange, StoredLetter};

pub use breaker::{
    BreakerEvent, BreakerRead, BreakerReported, MadeTransition, PlannedBreaker, ReportCounts,
};

/// One check, resolved and ready for a store.
#[derive(Debug, Clone)]
pub struct PlannedCheck {
    /// The limit's state key (from [`crate::keys::Keys::limit`]).
    pub key: String,
    /// The validated policy.
    pub policy: Arc<Policy>,
    /// The policy's name, or the fingerprint of an inline policy.
    pub policy_ref: String,
    /// Units to take.
    pub cost: u64,
    /// Concurrency checks: the lease member `<cost>~<id>` to record when admitted.
    pub lease_member: Option<String>,
}

impl PlannedCheck {
    /// The check as the `core` model takes it.
    pub fn request(&self) -> floodgate_core::acquire::CheckRequest<'_> {
        floodgate_core::acquire::CheckRequest {
            policy: &self.policy,
            cost: self.cost,
            lease_member: self.lease_member.as_deref(),
        }
    }
}

/// Everything a store needs to decide one Acquire or Status.
#[derive(Debug, Clone, Default)]
pub struct AcquirePlan {
    /// The checks, in request order, each with a distinct key.
    pub checks: Vec<PlannedCheck>,
    /// Key of the request record when the request carries a `request_id`.
    pub request_record: Option<String>,
    /// Breakers that must admit too (Acquire only).
    pub breakers: Vec<PlannedBreaker>,
    /// False for Status: decide, never write.
    pub consume: bool,
    /// Explicit clock, for tests only; `None` means the store's clock (Redis `TIME`).
    pub now: Option<Micros>,
}

/// One stored audit entry: its stream id and its fields.
pub type AuditRecord = (String, Vec<(String, String)>);

/// What a store decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDecision {
    /// Every non-shadow check allowed (and was consumed).
    pub allowed: bool,
    /// Per check, in request order.
    pub checks: Vec<CheckOutcome>,
    /// Per check: the lease member taken, if any.
    pub leases: Vec<Option<String>>,
    /// Per breaker, in plan order.
    pub breakers: Vec<Admission>,
    /// Transitions the decision made (lazy OPEN -> HALF_OPEN steps).
    pub transitions: Vec<MadeTransition>,
}

/// Infrastructure failures; a denial is never an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The connection pool failed to hand out a connection.
    #[error("redis pool: {0}")]
    Pool(String),
    /// The store took longer than its deadline.
    #[error("store call exceeded its {0:?} deadline")]
    Timeout(std::time::Duration),
    /// Redis answered something the script never returns.
    #[error("unexpected reply from the store: {0}")]
    Protocol(String),
    /// The call was not made: no connection yet, the server's store breaker is open, or
    /// too many calls are in flight (`store::guard`).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's settings cannot be used (a malformed `--redis` URL, TLS files with a
    /// URL that is not `rediss`); the message names the rule. Waiting will not cure it.
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Protocol(_) | StoreError::Config(_))
    }

    /// Whether this failure is one waiting will not cure: the store was reached but refused
    /// us (bad password, TLS certificate not trusted, a URL the driver rejects). `serve`
    /// stops at start on these instead of waiting for the store in the background.
    pub fn is_misconfiguration(&self) -> bool {
        use ::redis::{ErrorKind, ServerErrorKind as S};
        match self {
            StoreError::Redis(e) => {
                matches!(
                    e.kind(),
                    ErrorKind::AuthenticationFailed
                        | ErrorKind::InvalidClientConfig
                        | ErrorKind::Server(S::NoPerm)
                ) || (e.is_io_error() && !e.is_connection_refusal() && !e.is_timeout() && {
                    // rustls reports an untrusted certificate as an I/O error
                    let text = e.to_string().to_ascii_lowercase();
                    text.contains("certificate") || text.contains("tls")
                })
            }
            StoreError::Config(_) => true,
            _ => false,
        }
    }

    /// Whether this failure says the store itself is unwell (counts toward opening the
    /// server's store breaker): timeouts, lost or refused connections, a replica refusing
    /// writes, a cluster or master that is down or loading. A script's own error or a reply
    /// we cannot read is not.
    pub fn trips_guard(&self) -> bool {
        use ::redis::{ErrorKind, ServerErrorKind as S};
        match self {
            StoreError::Timeout(_) | StoreError::Pool(_) => true,
            StoreError::Protocol(_) | StoreError::Unavailable(_) | StoreError::Config(_) => false,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    // The Cluster driver has no connection to any node (all down).
                    || e.kind() == ErrorKind::ClusterConnectionNotFound
                    || matches!(
                        e.kind(),
                        ErrorKind::Server(
                            S::ReadOnly
                                | S::ClusterDown
                                | S::MasterDown
                                | S::BusyLoading
                                | S::TryAgain
                        )
                    )
            }
        }
    }
}

/// A place that holds limit state and changes it atomically.
pub trait Store: Send + Sync + 'static {
    /// Decides every check together; consumes only when `plan.consume` and all allow.
    fn acquire(
        &self,
        plan: &AcquirePlan,
    ) -> impl Future<Output = Result<StoreDecision, StoreError>> + Send;
    /// Ends a lease; true when it was live.
    fn release(
        &self,
        key: &str,
        member: &str,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Extends a live lease by `ttl` from now; `None` when it has expired or never existed.
    fn renew(
        &self,
        key: &str,
        member: &str,
        ttl: Micros,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<Option<Micros>, StoreError>> + Send;
    /// Forgets a limit's state; true when there was any.
    fn reset(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Records reported outcomes for one breaker (creating its state when needed).
    /// `draw` is the jitter draw (0..1_000_000) for a wait in OPEN.
    fn breaker_report(
        &self,
        breaker: &PlannedBreaker,
        report: &ReportCounts,
        draw: u32,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<BreakerReported, StoreError>> + Send;
    /// Reads one breaker (applying the lazy steps; never creating state).
    fn breaker_get(
        &self,
        breaker: &PlannedBreaker,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<BreakerRead, StoreError>> + Send;
    /// Moves one breaker to `state` (an operator's override), creating it when needed.
    fn breaker_set_state(
        &self,
        breaker: &PlannedBreaker,
        state: State,
        draw: u32,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<BreakerRead, StoreError>> + Send;
    /// The breaker's last `limit` transitions, newest first.
    fn breaker_history(
        &self,
        breaker: &PlannedBreaker,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<BreakerEvent>, StoreError>> + Send;
    /// Notes that `name` has state in the namespace of `index` (for List).
    fn breaker_index_add(
        &self,
        index: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Names noted in `index`.
    fn breaker_index(
        &self,
        index: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Adds denial counts to one minute's top set (`crate::top`), keeping its `keep` largest
    /// members and expiring it after `ttl_secs`.
    fn top_add(
        &self,
        key: &str,
        entries: &[(String, u64)],
        ttl_secs: u64,
        keep: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every member and count of one minute's top set.
    fn top_read(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;
    /// Appends one entry (field, value pairs) to the audit stream `key`, keeping about
    /// `max_len` entries (Redis `XADD MAXLEN ~`; the memory store keeps a ring).
    fn audit_append(
        &self,
        key: &str,
        fields: &[(&'static str, String)],
        max_len: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The newest `count` audit entries of `key`, newest first: (id, fields).
    fn audit_read(
        &self,
        key: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
    /// The schema version the store holds (0 on the memory store, which has none).
    fn schema_version(
        &self,
        keys: &crate::keys::Keys,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    /// Stores a dead letter unless its idempotency key was seen; (id, duplicate).
    fn dlq_publish(
        &self,
        q: &PlannedQueue,
        m: &floodgate_core::dead_letters::Message,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<(String, bool), StoreError>> + Send;
    /// Publishes like [`Store::dlq_publish`], then waits for a replica to take the write
    /// (Redis `WAIT`), the whole within `wait`, without holding up other calls; (id,
    /// duplicate, replicas that confirmed it). A store without replicas answers 0.
    fn dlq_publish_replicated(
        &self,
        q: &PlannedQueue,
        m: &floodgate_core::dead_letters::Message,
        now: Option<Micros>,
        wait: std::time::Duration,
    ) -> impl Future<Output = Result<(String, bool, u64), StoreError>> + Send;
    /// Reads entries by id (from the archive when `archived`), `None` for those not there.
    fn dlq_read(
        &self,
        q: &PlannedQueue,
        archived: bool,
        ids: &[String],
        include_payload: bool,
    ) -> impl Future<Output = Result<Vec<Option<StoredLetter>>, StoreError>> + Send;
    /// Up to `count` entries in `range`'s order (from the archive when `archived`).
    fn dlq_scan(
        &self,
        q: &PlannedQueue,
        archived: bool,
        range: &ScanRange,
        count: usize,
        include_payload: bool,
    ) -> impl Future<Output = Result<Vec<StoredLetter>, StoreError>> + Send;
    /// The queue's numbers.
    fn dlq_stats(
        &self,
        q: &PlannedQueue,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<floodgate_core::dead_letters::QueueStats, StoreError>> + Send;
    /// Hands out up to `count` entries for `visibility` µs; (entries, archived for
    /// reaching max_deliveries).
    fn dlq_claim(
        &self,
        q: &PlannedQueue,
        consumer: &str,
        count: usize,
        visibility: Micros,
        now: Option<Micros>,
    ) -> impl Future<Output = Result<(Vec<StoredLetter>, u32), StoreError>> + Send;
    /// Removes entries (and their redrive in-flight marks); how many were there.
    fn dlq_remove(
        &self,
        q: &PlannedQueue,
        ids: &[String],
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    /// Makes claimed entries claimable now; how many were claimed.
    fn dlq_nack(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    /// Moves entries to the archive; how many were in the queue.
    fn dlq_archive(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    /// Moves archived entries back; their new ids.
    fn dlq_restore(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        now: Option<Micros>,
    ) -> impl Future<Output = Result<Vec<Option<String>>, StoreError>> + Send;
    /// Deletes archived entries; how many were there.
    fn dlq_purge_archived(
        &self,
        q: &PlannedQueue,
        ids: &[String],
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
    /// Whether Redrive can write to application streams (only Redis can).
    fn supports_redrive(&self) -> bool;
    /// Redrive step 1: marks `ids` as on their way to `target`.
    fn dlq_redrive_mark(
        &self,
        q: &PlannedQueue,
        ids: &[String],
        target: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Ids marked by an earlier, interrupted redrive, with their targets.
    fn dlq_redrive_pending(
        &self,
        q: &PlannedQueue,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
    /// Redrive step 2: appends the letters to `target`, each with `dlq_id`, `dlq_queue`
    /// and `attempts` fields.
    fn dlq_redrive_copy(
        &self,
        q: &PlannedQueue,
        target: &str,
        letters: &[StoredLetter],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Which of `ids` appear as `dlq_id` among the last `window` entries of `target`.
    fn dlq_redrive_present(
        &self,
        target: &str,
        ids: &[String],
        window: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Notes that a queue has state (for metrics and status).
    fn queue_index_add(
        &self,
        index: &str,
        member: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Members of the queue index.
    fn queue_index(
        &self,
        index: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Every breaker transition in the fleet, as it happens.
    fn breaker_events(&self) -> tokio::sync::broadcast::Receiver<BreakerEvent>;
    /// Counts the times the feed of [`Store::breaker_events`] was re-established after a
    /// break, during which transitions may have gone unseen: a watcher re-reads the states
    /// it shows when it changes. A store whose feed cannot break never changes it.
    fn breaker_event_gaps(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }
    /// Checks that the store answers (readiness).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Drops the connection(s) and connects afresh (following a Sentinel failover or a
    /// half-open socket); called by the store guard's probe while the store fails.
    fn reconnect(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A short description for logs and status: `memory`, `redis redis://…`.
    fn describe(&self) -> String;
}
