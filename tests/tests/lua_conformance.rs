//! Conformance: every Lua script decides exactly like its `core` twin.
//!
//! Random request sequences on an explicit clock go through the Redis store (the scripts
//! `token_bucket.lua`, `sliding_window.lua`, `sliding_log.lua`, `fixed_window.lua`,
//! `concurrency.lua`, `release.lua`, `renew.lua`, assembled with `prelude.lua` and
//! `acquire.lua`) on a real Redis, and through the pure model in `floodgate_core`; every
//! step must give identical decisions. Also pinned here: Status never writes, the script
//! cache recovers from `SCRIPT FLUSH` (PyrateLimiter #182), request records replay, and
//! every key carries a TTL.
use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicI32, Ordering},
};

use floodgate_core::{
    Algorithm, Micros, Policy, PolicySpec,
    acquire::{CheckRequest, LimitState, acquire},
    concurrency,
};
use floodgate_server::{
    keys::Keys,
    store::{
        AcquirePlan, PlannedCheck, Store, StoreDecision,
        redis::{ConnectionMode, RedisStore},
    },
};
use floodgate_tests::redis::TestRedis;
use proptest::prelude::*;
use tokio::runtime::Runtime;

/// A realistic epoch start for the explicit clock.
const T0: Micros = 1_700_000_000_000_000;

struct Harness {
    rt: Runtime,
    _redis: TestRedis,
    url: String,
    store: RedisStore,
}

/// The pid of the harness's private `redis-server`. The harness lives in a static, which
/// Rust never drops, so the process is killed when the test process exits instead.
static REDIS_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn kill_redis_at_exit() {
    let pid = REDIS_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) on the pid of the child this process started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// One Redis and one store for the whole file (proptest cases run many times).
fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let redis = rt.block_on(TestRedis::start());
        if let Some(pid) = redis.pid().and_then(|p| i32::try_from(p).ok()) {
            REDIS_PID.store(pid, Ordering::SeqCst);
            // SAFETY: registers a plain extern "C" function that only calls kill(2).
            unsafe {
                libc::atexit(kill_redis_at_exit);
            }
        }
        let url = redis.url().to_owned();
        let store = rt
            .block_on(RedisStore::connect(&url, ConnectionMode::Multiplexed, 1))
            .expect("connect to the test Redis");
        Harness {
            rt,
            _redis: redis,
            url,
            store,
        }
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A check as both sides see it.
#[derive(Debug, Clone)]
struct Check {
    key: String,
    policy: Arc<Policy>,
}

impl Check {
    fn new(policy: Policy) -> Self {
        let key = Keys::new("fgtest").limit(
            &unique("ns"),
            "k",
            policy.algorithm(),
            &policy.fingerprint(),
        );
        Self {
            key,
            policy: Arc::new(policy),
        }
    }
}

fn plan(checks: &[(&Check, u64, Option<String>)], now: Micros, consume: bool) -> AcquirePlan {
    AcquirePlan {
        checks: checks
            .iter()
            .map(|(c, cost, member)| PlannedCheck {
                key: c.key.clone(),
                policy: c.policy.clone(),
                policy_ref: c.policy.fingerprint(),
                cost: *cost,
                lease_member: member.clone(),
            })
            .collect(),
        request_record: None,
        breakers: Vec::new(),
        consume,
        now: Some(now),
    }
}

fn on_redis(p: &AcquirePlan) -> StoreDecision {
    let h = harness();
    h.rt.block_on(h.store.acquire(p))
        .expect("the script must answer")
}

fn in_model(
    states: &mut [LimitState],
    p: &AcquirePlan,
) -> (bool, Vec<floodgate_core::CheckOutcome>) {
    let reqs: Vec<CheckRequest<'_>> = p.checks.iter().map(PlannedCheck::request).collect();
    let mut refs: Vec<&mut LimitState> = states.iter_mut().collect();
    let o = acquire(&mut refs, &reqs, p.now.unwrap(), p.consume);
    (o.allowed, o.checks)
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

/// Periods from 1 ms to a day, biased to small ones so windows turn over in a sequence.
fn period() -> impl Strategy<Value = Micros> {
    prop_oneof![
        1_000u64..=50_000,
        50_000u64..=2_000_000,
        Just(60_000_000u64),
        Just(3_600_000_000u64),
        Just(86_400_000_000u64),
    ]
}

fn policy_for(algorithm: Algorithm, shadow: bool) -> impl Strategy<Value = Policy> {
    (1u64..=12, period(), 0u64..=20, 1_000u64..=3_000_000).prop_filter_map(
        "valid policy",
        move |(limit, period, burst, ttl)| {
            Policy::new(PolicySpec {
                algorithm,
                limit,
                period,
                burst: if algorithm == Algorithm::TokenBucket {
                    burst
                } else {
                    0
                },
                fail_mode: None,
                lease_ttl: Some(ttl),
                shadow,
            })
            .ok()
        },
    )
}

/// One step of a sequence: how far the clock moves, then what is asked.
#[derive(Debug, Clone)]
enum Step {
    /// Acquire (or Status) with a cost given as a share of the capacity.
    Acquire {
        advance: Micros,
        cost_per_mille: u64,
        status: bool,
    },
    /// Release the n-th lease taken so far (concurrency).
    Release { advance: Micros, lease: usize },
    /// Renew the n-th lease taken so far (concurrency).
    Renew {
        advance: Micros,
        lease: usize,
        ttl: Micros,
    },
}

fn advance(period: Micros) -> impl Strategy<Value = Micros> {
    let p = period.max(1);
    prop_oneof![Just(0u64), 0..=p / 4 + 1, 0..=2 * p, Just(p), Just(p / 2)]
}

fn steps(period: Micros) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (advance(period), 0u64..=1000, prop::bool::weighted(0.15))
            .prop_map(|(advance, cost_per_mille, status)| Step::Acquire { advance, cost_per_mille, status }),
        1 => (advance(period), 0usize..8).prop_map(|(advance, lease)| Step::Release { advance, lease }),
        1 => (advance(period), 0usize..8, 1_000u64..=2_000_000)
            .prop_map(|(advance, lease, ttl)| Step::Renew { advance, lease, ttl }),
    ];
    prop::collection::vec(step, 1..30)
}

fn cost_of(policy: &Policy, per_mille: u64) -> u64 {
    (policy.capacity() * per_mille / 1000).clamp(1, policy.capacity())
}

/// Runs `steps` against one check through Redis and the model; panics on the first
/// difference.
fn run_sequence(policy: Policy, steps: &[Step]) {
    let check = Check::new(policy);
    let mut state = [LimitState::empty(check.policy.algorithm())];
    let mut leases: Vec<String> = Vec::new();
    let mut now = T0;
    let h = harness();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Acquire {
                advance,
                cost_per_mille,
                status,
            } => {
                now += advance;
                let cost = cost_of(&check.policy, *cost_per_mille);
                let member = (check.policy.algorithm() == Algorithm::Concurrency && !status)
                    .then(|| concurrency::member(cost, &uuid::Uuid::new_v4().simple().to_string()));
                let p = plan(&[(&check, cost, member.clone())], now, !status);
                let redis = on_redis(&p);
                let (allowed, outcomes) = in_model(&mut state, &p);
                assert_eq!(
                    (redis.allowed, &redis.checks),
                    (allowed, &outcomes),
                    "step {i} {step:?} at +{} µs, cost {cost}, policy {:?}",
                    now - T0,
                    check.policy
                );
                if let (Some(m), true) = (member, redis.allowed) {
                    assert_eq!(redis.leases[0].as_deref(), Some(m.as_str()));
                    leases.push(m);
                }
            }
            Step::Release { advance, lease } if !leases.is_empty() => {
                now += advance;
                let m = &leases[lease % leases.len()];
                let redis =
                    h.rt.block_on(h.store.release(&check.key, m, Some(now)))
                        .unwrap();
                let LimitState::Concurrency(s) = &mut state[0] else {
                    unreachable!()
                };
                let model = concurrency::release(s, m, now);
                assert_eq!(redis, model, "step {i} release {m} at +{} µs", now - T0);
            }
            Step::Renew {
                advance,
                lease,
                ttl,
            } if !leases.is_empty() => {
                now += advance;
                let m = &leases[lease % leases.len()];
                let redis =
                    h.rt.block_on(h.store.renew(&check.key, m, *ttl, Some(now)))
                        .unwrap();
                let LimitState::Concurrency(s) = &mut state[0] else {
                    unreachable!()
                };
                let model = concurrency::renew(s, m, *ttl, now);
                assert_eq!(redis, model, "step {i} renew {m} at +{} µs", now - T0);
            }
            Step::Release { .. } | Step::Renew { .. } => {}
        }
    }
}

fn policy_and_steps() -> impl Strategy<Value = (Policy, Vec<Step>)> {
    algorithm()
        .prop_flat_map(|a| policy_for(a, false))
        .prop_flat_map(|p| {
            let period = if p.period() == 0 {
                p.lease_ttl()
            } else {
                p.period()
            };
            (Just(p), steps(period))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Each algorithm alone: Lua and core decide every step identically.
    #[test]
    fn every_script_decides_like_its_core_twin((policy, steps) in policy_and_steps()) {
        run_sequence(policy, &steps);
    }

    /// Several checks of mixed algorithms (some shadow) in one Acquire: the same overall
    /// answer and per-check outcomes; a denial consumes nothing on either side, so the
    /// sequences keep agreeing.
    #[test]
    fn multi_check_acquire_decides_like_core(
        policies in prop::collection::vec(
            (algorithm(), prop::bool::weighted(0.25)).prop_flat_map(|(a, s)| policy_for(a, s)),
            2..=4,
        ),
        script in prop::collection::vec((0u64..=300_000, prop::collection::vec(0u64..=1000, 4), prop::bool::weighted(0.1)), 1..25),
    ) {
        let checks: Vec<Check> = policies.into_iter().map(Check::new).collect();
        let mut states: Vec<LimitState> = checks.iter().map(|c| LimitState::empty(c.policy.algorithm())).collect();
        let mut now = T0;
        for (i, (advance, costs, status)) in script.iter().enumerate() {
            now += advance;
            let spec: Vec<(&Check, u64, Option<String>)> = checks
                .iter()
                .zip(costs)
                .map(|(c, per_mille)| {
                    let cost = cost_of(&c.policy, *per_mille);
                    let member = (c.policy.algorithm() == Algorithm::Concurrency && !status)
                        .then(|| concurrency::member(cost, &uuid::Uuid::new_v4().simple().to_string()));
                    (c, cost, member)
                })
                .collect();
            let p = plan(&spec, now, !status);
            let redis = on_redis(&p);
            let (allowed, outcomes) = in_model(&mut states, &p);
            prop_assert_eq!((redis.allowed, &redis.checks), (allowed, &outcomes), "step {}", i);
        }
    }
}

/// A policy from plain numbers (period and lease TTL in µs).
fn fixed(algorithm: Algorithm, limit: u64, period: Micros, lease_ttl: Option<Micros>) -> Policy {
    Policy::new(PolicySpec {
        algorithm,
        limit,
        period,
        burst: 0,
        fail_mode: None,
        lease_ttl,
        shadow: false,
    })
    .unwrap()
}

/// Regressions found while building the model, pinned with fixed inputs.
#[test]
fn sliding_window_retry_after_is_honest_across_the_window_edge() {
    let policy = fixed(Algorithm::SlidingWindow, 7, 1_000_000, None);
    let mut steps = vec![Step::Acquire {
        advance: 999_000,
        cost_per_mille: 1000,
        status: false,
    }];
    for _ in 0..5 {
        steps.push(Step::Acquire {
            advance: 1_500,
            cost_per_mille: 500,
            status: false,
        });
    }
    run_sequence(policy, &steps);
}

fn pttl(key: &str) -> i64 {
    let mut c = redis::Client::open(harness().url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("PTTL").arg(key).query(&mut c).unwrap()
}

/// Every key that can be re-derived carries a TTL, for every algorithm.
#[test]
fn every_key_gets_a_ttl() {
    for algorithm in Algorithm::ALL {
        let policy = fixed(algorithm, 10, 2_000_000, Some(2_000_000));
        let check = Check::new(policy);
        let member =
            (algorithm == Algorithm::Concurrency).then(|| concurrency::member(1, "ttltest"));
        // The store's own clock (Redis TIME): TTLs are then exact, without test slack.
        let mut p = plan(&[(&check, 1, member)], 0, true);
        p.now = None;
        assert!(on_redis(&p).allowed);
        let ttl = pttl(&check.key);
        let most = if algorithm == Algorithm::SlidingWindow {
            4_000
        } else {
            2_000
        };
        assert!(
            ttl > 0 && ttl <= most,
            "{algorithm:?}: PTTL {ttl} ms, want 1..={most}"
        );
    }
}

/// Status never writes: the same Status twice, then an Acquire, sees the untouched state.
#[test]
fn status_never_writes() {
    for algorithm in Algorithm::ALL {
        let policy = fixed(algorithm, 1, 60_000_000, None);
        let check = Check::new(policy);
        for _ in 0..3 {
            let d = on_redis(&plan(&[(&check, 1, None)], T0, false));
            assert!(d.allowed, "{algorithm:?}");
            assert_eq!(
                d.checks[0].remaining, 1,
                "{algorithm:?}: Status must not consume"
            );
        }
        let mut c = redis::Client::open(harness().url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let exists: i64 = redis::cmd("EXISTS").arg(&check.key).query(&mut c).unwrap();
        assert_eq!(exists, 0, "{algorithm:?}: Status created a key");
    }
}

/// PyrateLimiter #182: after `SCRIPT FLUSH` (a restart or failover does the same) the
/// store reloads its scripts on `NOSCRIPT` and keeps deciding.
#[test]
fn script_flush_recovers_pyratelimiter_182() {
    let policy = fixed(Algorithm::FixedWindow, 3, 60_000_000, None);
    let check = Check::new(policy);
    let leases = Check::new(fixed(Algorithm::Concurrency, 1, 0, None));
    let mut c = redis::Client::open(harness().url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let h = harness();
    for i in 0..5u64 {
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
        let d = on_redis(&plan(&[(&check, 1, None)], T0 + i, true));
        assert_eq!(d.allowed, i < 3, "call {i} after a flush");
        let lease = concurrency::member(1, "flush");
        let released =
            h.rt.block_on(h.store.release(&leases.key, &lease, Some(T0)));
        assert!(released.is_ok(), "release after a flush: {released:?}");
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
        let renewed =
            h.rt.block_on(h.store.renew(&leases.key, &lease, 1_000, Some(T0)));
        assert!(renewed.is_ok(), "renew after a flush: {renewed:?}");
    }
}

/// A request record replays the first answer (with its lease) and consumes nothing more.
#[test]
fn request_record_replays_the_first_answer() {
    let policy = fixed(Algorithm::Concurrency, 2, 0, None);
    let check = Check::new(policy);
    let record = format!("{}:req:{}", check.key, unique("r"));
    let mut first = plan(
        &[(&check, 1, Some(concurrency::member(1, "first")))],
        T0,
        true,
    );
    first.request_record = Some(record.clone());
    let a = on_redis(&first);
    let mut retry = plan(
        &[(&check, 1, Some(concurrency::member(1, "second")))],
        T0 + 10,
        true,
    );
    retry.request_record = Some(record);
    let b = on_redis(&retry);
    assert_eq!(a, b, "a retry must get the first answer");
    assert_eq!(b.leases[0].as_deref(), Some("1~first"));
    let status = on_redis(&plan(&[(&check, 1, None)], T0 + 20, false));
    assert_eq!(status.checks[0].remaining, 1, "the retry consumed a slot");
}
