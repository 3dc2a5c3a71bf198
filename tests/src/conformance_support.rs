//! Helpers for the conformance suites (`tests/tests/conformance.rs`,
//! `tests/tests/store_scenarios.rs`, `tests/tests/refund_conformance.rs`): one Redis and
//! one [`RedisStore`] per test driven from synchronous proptest closures, unique keys, the
//! `core` model of a whole Acquire, and snapshots of raw Redis state to prove that
//! something wrote nothing.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use floodgate_core::{
    Algorithm, CheckOutcome, Micros, Policy,
    acquire::{CheckRequest, LimitState, acquire},
    concurrency, fixed_window, sliding_log, sliding_window, token_bucket,
};
use floodgate_server::{
    keys::Keys,
    store::{
        AcquirePlan, PlannedCheck, Store, StoreDecision,
        redis::{ConnectionMode, RedisStore},
    },
};
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use tokio::runtime::Runtime;

use crate::redis::TestRedis;

/// A realistic start for explicit clocks (2023-11-14), in microseconds.
pub const EPOCH: Micros = 1_700_000_000_000_000;

/// Slack the scripts add to every TTL when a test gives `now` (`lua/prelude.lua`).
pub const TEST_TTL_SLACK_MS: i64 = 60_000;

/// How far below its expected value a TTL may be read: real time passes between the
/// script and `PTTL`, and a loaded 2-core machine may stall for seconds.
pub const TTL_MARGIN_MS: i64 = 5_000;

/// One runtime, one Redis and one store, for one test.
pub struct Env {
    /// Runs the store's futures (`block_on`).
    pub rt: Runtime,
    /// The Redis; dropped (and its private server stopped) with the `Env`.
    pub redis: TestRedis,
    /// The store under test, connected as the server connects it.
    pub store: RedisStore,
    /// A plain connection for assertions (DUMP, PTTL, MEMORY USAGE, SCRIPT FLUSH).
    conn: Mutex<::redis::Connection>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("redis", &self.redis).finish()
    }
}

impl Env {
    /// Starts a Redis ([`TestRedis::start`]) and connects a multiplexed [`RedisStore`].
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime");
        let redis = rt.block_on(TestRedis::start());
        let store = rt
            .block_on(RedisStore::connect(
                redis.url(),
                ConnectionMode::Multiplexed,
                1,
            ))
            .expect("cannot connect the Redis store to the test Redis");
        let conn = Mutex::new(redis.connection());
        Self {
            rt,
            redis,
            store,
            conn,
        }
    }

    /// Runs `plan` through the Acquire script; a store error fails the test.
    pub fn acquire(&self, plan: &AcquirePlan) -> StoreDecision {
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(30), self.store.acquire(plan)).await
            })
            .expect("the Acquire script took more than 30 s")
            .unwrap_or_else(|e| panic!("the Acquire script failed: {e} (plan {plan:?})"))
    }

    /// Runs `plan` through the Acquire script in `'reserve'` mode: (decision, its clock).
    pub fn reserve(&self, plan: &AcquirePlan) -> (StoreDecision, Micros) {
        self.rt
            .block_on(self.store.reserve(plan))
            .unwrap_or_else(|e| panic!("the reserve script failed: {e} (plan {plan:?})"))
    }

    /// Runs the refund script for a reservation consumed at `consumed_at`.
    pub fn refund(
        &self,
        checks: &[PlannedCheck],
        outcomes: &[CheckOutcome],
        consumed_at: Micros,
        now: Micros,
    ) {
        self.rt
            .block_on(self.store.refund(checks, outcomes, consumed_at, Some(now)))
            .unwrap_or_else(|e| panic!("the refund script failed: {e}"));
    }

    /// Runs the release script.
    pub fn release(&self, key: &str, member: &str, now: Micros) -> bool {
        self.rt
            .block_on(self.store.release(key, member, Some(now)))
            .unwrap_or_else(|e| panic!("the release script failed: {e}"))
    }

    /// Runs the renew script.
    pub fn renew(&self, key: &str, member: &str, ttl: Micros, now: Micros) -> Option<Micros> {
        self.rt
            .block_on(self.store.renew(key, member, ttl, Some(now)))
            .unwrap_or_else(|e| panic!("the renew script failed: {e}"))
    }

    /// Runs one plain command on the assertion connection.
    pub fn cmd<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> T {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        cmd.query(&mut *c)
            .unwrap_or_else(|e| panic!("redis command {cmd:?} failed: {e}"))
    }

    /// `PTTL key` in milliseconds (-2: no key, -1: no TTL).
    pub fn pttl(&self, key: &str) -> i64 {
        self.cmd(::redis::cmd("PTTL").arg(key))
    }

    /// The raw state of `keys`: serialized value and TTL of each.
    pub fn snapshot(&self, keys: &[&str]) -> Snapshot {
        Snapshot(
            keys.iter()
                .map(|k| {
                    let dump: Option<Vec<u8>> = self.cmd(::redis::cmd("DUMP").arg(*k));
                    let before = Instant::now();
                    let pttl = self.pttl(k);
                    KeyState {
                        key: k.to_string(),
                        dump,
                        pttl,
                        before,
                        after: Instant::now(),
                    }
                })
                .collect(),
        )
    }

    /// Panics unless `key`'s TTL says it lives exactly as long as the model's state:
    /// gone when the state `expires_at <= now`, else `PTTL` within a few seconds of
    /// `ceil((expires_at - now) / 1 ms)` + the scripts' test slack (never above it).
    pub fn assert_ttl_matches(&self, key: &str, expires_at: Micros, now: Micros, what: &str) {
        let ttl = self.pttl(key);
        if expires_at <= now {
            assert_eq!(ttl, -2, "{what}: {key} outlives its state (PTTL {ttl} ms)");
            return;
        }
        let want = i64::try_from((expires_at - now).div_ceil(1_000)).unwrap() + TEST_TTL_SLACK_MS;
        assert!(
            ttl <= want && ttl > want - TTL_MARGIN_MS,
            "{what}: PTTL of {key} is {ttl} ms, the state lives {} us more (want {want} ms \
             with the test slack)",
            expires_at - now
        );
    }
}

/// One key's raw state.
#[derive(Debug, Clone)]
pub struct KeyState {
    /// The key.
    pub key: String,
    /// `DUMP` of its value, `None` when it does not exist.
    pub dump: Option<Vec<u8>>,
    /// `PTTL` in ms (-2: no key, -1: no TTL).
    pub pttl: i64,
    /// Just before `PTTL` was sent.
    pub before: Instant,
    /// Just after its answer came.
    pub after: Instant,
}

/// Raw Redis state of some keys.
#[derive(Debug, Clone)]
pub struct Snapshot(pub Vec<KeyState>);

impl Snapshot {
    /// The snapshot of the `i`-th key only.
    pub fn only(&self, i: usize) -> Snapshot {
        Snapshot(vec![self.0[i].clone()])
    }

    /// Panics unless `after` holds byte-identical values and TTLs that only ran down with
    /// the real time that passed between the two reads (a TTL rewritten to any other
    /// value, longer or shorter, is a write).
    pub fn assert_unchanged(&self, after: &Snapshot, what: &str) {
        for (a, b) in self.0.iter().zip(&after.0) {
            let key = &a.key;
            assert!(a.dump == b.dump, "{what} changed the value of {key}");
            let (ttl, ttl2) = (a.pttl, b.pttl);
            assert_eq!(
                ttl < 0,
                ttl2 < 0,
                "{what} changed whether {key} exists or has a TTL ({ttl} -> {ttl2})"
            );
            if ttl >= 0 {
                // Redis reports whole ms; 1 ms of rounding at each read.
                let most =
                    i64::try_from(b.after.duration_since(a.before).as_millis()).unwrap_or(i64::MAX);
                assert!(
                    ttl2 <= ttl && ttl - ttl2 <= most + 2,
                    "{what} rewrote the TTL of {key}: {ttl} -> {ttl2} ms in at most {most} ms"
                );
            }
        }
    }
}

/// A key no other test uses: `fg:{<ns>:user:42}:<code>:<policy_ref>` with a fresh namespace.
pub fn unique_key(algorithm: Algorithm, policy_ref: &str) -> String {
    Keys::new("fg").limit(
        &crate::unique_namespace("conf"),
        "user:42",
        algorithm,
        policy_ref,
    )
}

/// A lease member `<cost>~<id>` with a fresh id, as the server makes them.
pub fn fresh_member(cost: u64) -> String {
    concurrency::member(cost, &uuid::Uuid::new_v4().simple().to_string())
}

/// One check of a plan.
pub fn planned(key: &str, policy: &Arc<Policy>, cost: u64, member: Option<String>) -> PlannedCheck {
    PlannedCheck {
        key: key.to_owned(),
        policy: policy.clone(),
        policy_ref: policy.fingerprint(),
        cost,
        lease_member: member,
    }
}

/// A plan at the explicit time `now`.
pub fn plan_at(checks: Vec<PlannedCheck>, now: Micros, consume: bool) -> AcquirePlan {
    AcquirePlan {
        checks,
        request_record: None,
        breakers: Vec::new(),
        consume,
        now: Some(now),
    }
}

/// What the `core` model decides for `plan` on `states` (one per check, same order), in
/// the shape a store answers: a lease is reported for every admitted concurrency check of
/// an admitted Acquire.
pub fn model_acquire(states: &mut [LimitState], plan: &AcquirePlan) -> StoreDecision {
    let now = plan.now.expect("conformance plans carry an explicit clock");
    let requests: Vec<CheckRequest<'_>> = plan.checks.iter().map(PlannedCheck::request).collect();
    let mut refs: Vec<&mut LimitState> = states.iter_mut().collect();
    let outcome = acquire(&mut refs, &requests, now, plan.consume);
    let leases = plan
        .checks
        .iter()
        .zip(&outcome.checks)
        .map(|(c, o)| {
            (plan.consume && outcome.allowed && o.allowed)
                .then(|| c.lease_member.clone())
                .flatten()
        })
        .collect();
    StoreDecision {
        allowed: outcome.allowed,
        checks: outcome.checks,
        leases,
        breakers: Vec::new(),
        transitions: Vec::new(),
    }
}

/// The single-check twin of each script, called by its own name
/// (`token_bucket::token_bucket`, …): decides and, when allowed, consumes.
pub fn model_single(
    state: &mut LimitState,
    policy: &Policy,
    now: Micros,
    cost: u64,
    member: Option<&str>,
) -> CheckOutcome {
    match state {
        LimitState::TokenBucket(s) => token_bucket::token_bucket(s, policy, now, cost),
        LimitState::SlidingWindow(s) => sliding_window::sliding_window(s, policy, now, cost),
        LimitState::SlidingLog(s) => sliding_log::sliding_log(s, policy, now, cost),
        LimitState::FixedWindow(s) => fixed_window::fixed_window(s, policy, now, cost),
        LimitState::Concurrency(s) => concurrency::concurrency(
            s,
            policy,
            member.expect("a concurrency acquire needs a lease member"),
            now,
            cost,
        ),
    }
}

/// A proptest runner with `default_cases` cases (unless `PROPTEST_CASES` says otherwise),
/// persisting failing seeds next to `source_file` (pass `file!()`), as `proptest!` does.
pub fn runner(source_file: &'static str, default_cases: u32) -> TestRunner {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config.source_file = Some(source_file);
    // `<test file>.proptest-regressions` next to the test (what `proptest!` ends up using
    // for an integration test, without its warning about a missing lib.rs).
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    TestRunner::new(config)
}
