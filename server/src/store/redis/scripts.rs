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

/// Decides an Acquire or a Status (`lua/acquire.lua`).
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_SRC));
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

/// Every script, for loading at start.
pub fn all() -> [&'static Script; 6] {
    [
        &ACQUIRE,
        &RELEASE,
        &RENEW,
        &BREAKER_REPORT,
        &BREAKER_GET,
        &BREAKER_SET_STATE,
    ]
}
