//! The Lua scripts, assembled at build time from `lua/` and hashed once.
//!
//! Why Lua and not MULTI/EXEC: a decision must read state and write it in one atomic step
//! on the server (check-then-act over two round trips over-admits under concurrency), and
//! a script is the only way Redis runs logic between the read and the write.
//!
//! Every script is called by `EVALSHA`; redis-rs loads it and retries on `NOSCRIPT` only
//! (after a flush, restart or failover), never after a timeout, because a timed-out call
//! may already have run.
use std::sync::LazyLock;

use redis::Script;

/// Source of the Acquire/Status script: prelude, every algorithm, the breaker, then the
/// main loop.
pub const ACQUIRE_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/token_bucket.lua"),
    include_str!("../../../../lua/sliding_window.lua"),
    include_str!("../../../../lua/sliding_log.lua"),
    include_str!("../../../../lua/fixed_window.lua"),
    include_str!("../../../../lua/concurrency.lua"),
    include_str!("../../../../lua/breaker.lua"),
    include_str!("../../../../lua/acquire.lua"),
);

/// Source of the breaker report script.
pub const BREAKER_REPORT_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/breaker.lua"),
    include_str!("../../../../lua/breaker_report.lua"),
);

/// Source of the breaker read script.
pub const BREAKER_GET_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/breaker.lua"),
    include_str!("../../../../lua/breaker_get.lua"),
);

/// Source of the breaker override script.
pub const BREAKER_SET_STATE_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/breaker.lua"),
    include_str!("../../../../lua/breaker_set_state.lua"),
);

/// Source of the lease release script.
pub const RELEASE_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/concurrency.lua"),
    include_str!("../../../../lua/release.lua"),
);

/// Source of the lease renew script.
pub const RENEW_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/concurrency.lua"),
    include_str!("../../../../lua/renew.lua"),
);

/// Source of the refund script (Redis Cluster: undoing a reserved slot's share).
pub const REFUND_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/concurrency.lua"),
    include_str!("../../../../lua/refund.lua"),
);

/// Decides an Acquire or a Status (`lua/acquire.lua`).
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_SRC));
/// Gives back a reserved Acquire's consumption (`lua/refund.lua`).
pub static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(REFUND_SRC));
/// Ends a lease (`lua/release.lua`).
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_SRC));
/// Extends a lease (`lua/renew.lua`).
pub static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_SRC));
/// Records a breaker's outcomes (`lua/breaker_report.lua`).
pub static BREAKER_REPORT: LazyLock<Script> = LazyLock::new(|| Script::new(BREAKER_REPORT_SRC));
/// Reads a breaker (`lua/breaker_get.lua`).
pub static BREAKER_GET: LazyLock<Script> = LazyLock::new(|| Script::new(BREAKER_GET_SRC));
/// Overrides a breaker's state (`lua/breaker_set_state.lua`).
pub static BREAKER_SET_STATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(BREAKER_SET_STATE_SRC));

/// Source of `lua/dlq_publish.lua`.
pub const DLQ_PUBLISH_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_publish.lua"),
);
/// `lua/dlq_publish.lua`.
pub static DLQ_PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(DLQ_PUBLISH_SRC));

/// Source of `lua/dlq_claim.lua`.
pub const DLQ_CLAIM_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_claim.lua"),
);
/// `lua/dlq_claim.lua`.
pub static DLQ_CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(DLQ_CLAIM_SRC));

/// Source of `lua/dlq_ack.lua`.
pub const DLQ_ACK_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_ack.lua"),
);
/// `lua/dlq_ack.lua`.
pub static DLQ_ACK: LazyLock<Script> = LazyLock::new(|| Script::new(DLQ_ACK_SRC));

/// Source of `lua/dlq_nack.lua`.
pub const DLQ_NACK_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_nack.lua"),
);
/// `lua/dlq_nack.lua`.
pub static DLQ_NACK: LazyLock<Script> = LazyLock::new(|| Script::new(DLQ_NACK_SRC));

/// Source of `lua/dlq_archive.lua`.
pub const DLQ_ARCHIVE_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_archive.lua"),
);
/// `lua/dlq_archive.lua`.
pub static DLQ_ARCHIVE: LazyLock<Script> = LazyLock::new(|| Script::new(DLQ_ARCHIVE_SRC));

/// Source of `lua/dlq_restore.lua`.
pub const DLQ_RESTORE_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_restore.lua"),
);
/// `lua/dlq_restore.lua`.
pub static DLQ_RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(DLQ_RESTORE_SRC));

/// Source of `lua/dlq_purge_archived.lua`.
pub const DLQ_PURGE_ARCHIVED_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_purge_archived.lua"),
);
/// `lua/dlq_purge_archived.lua`.
pub static DLQ_PURGE_ARCHIVED: LazyLock<Script> =
    LazyLock::new(|| Script::new(DLQ_PURGE_ARCHIVED_SRC));

/// Source of `lua/dlq_stats.lua`.
pub const DLQ_STATS_SRC: &str = concat!(
    include_str!("../../../../lua/prelude.lua"),
    include_str!("../../../../lua/dlq.lua"),
    include_str!("../../../../lua/dlq_stats.lua"),
);
/// `lua/dlq_stats.lua`.
pub static DLQ_STATS: LazyLock<Script> = LazyLock::new(|| Script::new(DLQ_STATS_SRC));

/// Every script, for loading at start.
pub fn all() -> [&'static Script; 15] {
    [
        &ACQUIRE,
        &REFUND,
        &RELEASE,
        &RENEW,
        &BREAKER_REPORT,
        &BREAKER_GET,
        &BREAKER_SET_STATE,
        &DLQ_PUBLISH,
        &DLQ_CLAIM,
        &DLQ_ACK,
        &DLQ_NACK,
        &DLQ_ARCHIVE,
        &DLQ_RESTORE,
        &DLQ_PURGE_ARCHIVED,
        &DLQ_STATS,
    ]
}
