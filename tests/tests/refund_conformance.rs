//! Conformance of the Redis Cluster reserve-then-refund: `acquire.lua` in `'reserve'`
//! mode and `lua/refund.lua` against `core::acquire` and `core::refund`, on a real Redis
//! with explicit clocks.
//!
//! Each case: a random policy of one algorithm, random prior traffic, a reservation at
//! `t1`, optionally other traffic on the same key, a refund at `t2 >= t1`, then random
//! later Acquires. Every step's answer from Redis must equal the model's (acquire, then
//! refund); and every later answer must also equal the answer of a twin that never saw
//! the reservation ("as if it never happened"), for all five algorithms, whenever the
//! traffic in between was decided alike in both worlds (and, for a token bucket, admitted
//! nothing). A token bucket is also never left emptier than the twin's: a refund never gives
//! back more than the reservation still held (it over-admitted once, when a request found
//! the bucket full between reservation and refund). After the refund each key lives
//! exactly as long as the model's state, and is gone when the model's state is empty (a
//! refund never creates state).
//!
//! Also pinned: a denied reservation writes nothing; the `'reserved'` reply carries the
//! script's clock; a shadow check is refunded only when it allowed (and so consumed).
use std::sync::Arc;

use floodgate_core::{
    Algorithm, CheckOutcome, Micros, Policy, PolicySpec, acquire::LimitState, refund::refund,
    time::SECOND,
};
use floodgate_server::store::{AcquirePlan, PlannedCheck, StoreDecision};
use floodgate_tests::conformance_support::{
    EPOCH, Env, fresh_member, model_acquire, plan_at, planned, runner, unique_key,
};
use proptest::{prelude::*, test_runner::TestCaseError};

/// How far the clock moves before a step; edges come up often.
#[derive(Debug, Clone, Copy)]
enum Advance {
    Zero,
    Random(u64),
    Span,
    NextEdge,
    NextEdgeMinus1,
    Units(u64),
}

impl Advance {
    fn resolve(self, now: Micros, span: Micros, unit: Micros) -> Micros {
        let to_edge = span - now % span;
        match self {
            Advance::Zero => 0,
            Advance::Random(r) => r % (2 * span + 1),
            Advance::Span => span,
            Advance::NextEdge => to_edge,
            Advance::NextEdgeMinus1 => to_edge - 1,
            Advance::Units(k) => k * unit,
        }
    }
}

fn advance() -> impl Strategy<Value = Advance> {
    prop_oneof![
        5 => Just(Advance::Zero),
        6 => any::<u64>().prop_map(Advance::Random),
        1 => Just(Advance::Span),
        1 => Just(Advance::NextEdge),
        1 => Just(Advance::NextEdgeMinus1),
        2 => (1u64..=3).prop_map(Advance::Units),
    ]
}

fn policy(algorithm: Algorithm) -> impl Strategy<Value = Policy> {
    (
        prop_oneof![4 => 1u64..=6, 2 => 7u64..=40],
        prop_oneof![2 => 1_000u64..=50_000, 2 => 50_001u64..=5_000_000, 1 => Just(3_600 * SECOND)],
        prop_oneof![2 => Just(0u64), 1 => 1u64..=10],
        1_000u64..=5_000_000,
    )
        .prop_filter_map("a valid policy", move |(limit, period, burst, ttl)| {
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
                shadow: false,
            })
            .ok()
        })
}

/// A step: how far the clock moves, and a raw cost (resolved to `1..=capacity`).
type Step = (Advance, u64);

#[derive(Debug, Clone)]
struct Case {
    policy: Policy,
    offset: Micros,
    prior: Vec<Step>,
    reserve: Step,
    between: Vec<Step>,
    delay: Advance,
    later: Vec<Step>,
}

fn case(algorithm: Algorithm) -> impl Strategy<Value = Case> {
    let step = || (advance(), any::<u64>());
    (
        policy(algorithm),
        0u64..=10_000_000_000_000,
        prop::collection::vec(step(), 0..=8),
        step(),
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(step(), 1..=3)],
        advance(),
        prop::collection::vec(step(), 1..=8),
    )
        .prop_map(
            |(policy, offset, prior, reserve, between, delay, later)| Case {
                policy,
                offset,
                prior,
                reserve,
                between,
                delay,
                later,
            },
        )
}

/// The span steps move in and its smallest unit.
fn span_and_unit(p: &Policy) -> (Micros, Micros) {
    match p.algorithm() {
        Algorithm::Concurrency => (p.lease_ttl(), (p.lease_ttl() / p.limit()).max(1)),
        Algorithm::TokenBucket => (p.period(), p.emission_interval()),
        _ => (p.period(), (p.period() / p.limit()).max(1)),
    }
}

/// One Acquire of `cost` on the key, with a fresh lease member for concurrency.
fn one(key: &str, policy: &Arc<Policy>, cost: u64, now: Micros) -> AcquirePlan {
    let member = (policy.algorithm() == Algorithm::Concurrency).then(|| fresh_member(cost));
    plan_at(vec![planned(key, policy, cost, member)], now, true)
}

fn run(env: &Env, case: &Case) -> Result<(), TestCaseError> {
    let policy = Arc::new(case.policy.clone());
    let key = unique_key(policy.algorithm(), &policy.fingerprint());
    let (span, unit) = span_and_unit(&policy);
    let cost = |raw: u64| 1 + raw % policy.capacity();
    // `model`: the world with the reservation (then its refund); `twin`: without it.
    let mut model = [LimitState::empty(policy.algorithm())];
    let mut twin = model.clone();
    let mut now = EPOCH + case.offset;
    for (i, &(adv, raw)) in case.prior.iter().enumerate() {
        now += adv.resolve(now, span, unit);
        let plan = one(&key, &policy, cost(raw), now);
        let got = env.acquire(&plan);
        prop_assert_eq!(&got, &model_acquire(&mut model, &plan), "prior step {}", i);
        model_acquire(&mut twin, &plan);
    }

    let t1 = now + case.reserve.0.resolve(now, span, unit);
    let plan = one(&key, &policy, cost(case.reserve.1), t1);
    let before = env.snapshot(&[&key]);
    let (reserved, clock) = env.reserve(&plan);
    prop_assert_eq!(
        clock,
        t1,
        "the 'reserved' reply must carry the script's now"
    );
    prop_assert_eq!(
        &reserved,
        &model_acquire(&mut model, &plan),
        "reserve at t1"
    );
    if !reserved.allowed {
        before.assert_unchanged(&env.snapshot(&[&key]), "a denied reservation");
    }

    // Traffic in between must be decided alike in both worlds for the refund to be exact;
    // a token bucket's refund is exact only when nothing was admitted in between (else it
    // may give back less: see core::refund), and never gives back too much (checked below).
    let (mut alike, mut exact) = (true, true);
    now = t1;
    for (i, &(adv, raw)) in case.between.iter().enumerate() {
        now += adv.resolve(now, span, unit);
        let p = one(&key, &policy, cost(raw), now);
        let got = env.acquire(&p);
        prop_assert_eq!(&got, &model_acquire(&mut model, &p), "between {}", i);
        alike &= model_acquire(&mut twin, &p).allowed == got.allowed;
        if matches!(twin[0], LimitState::TokenBucket(_)) {
            exact &= !got.allowed;
        }
    }
    exact &= alike;

    let t2 = now + case.delay.resolve(now, span, unit);
    if reserved.allowed {
        env.refund(&plan.checks, &reserved.checks, t1, t2);
        let unrefunded = model[0].clone();
        let reset_after = reserved.checks[0].reset_after;
        refund(
            &mut model[0],
            &plan.checks[0].request(),
            t1,
            reset_after,
            t2,
        );
        if model[0] != unrefunded {
            check_lifetime(env, &key, &model[0], &policy, t2)?;
        }
        // Never over-admits: a bucket after the refund is at least as full as the world
        // that never reserved (when the traffic between was decided alike).
        if let (LimitState::TokenBucket(m), LimitState::TokenBucket(w)) = (&model[0], &twin[0])
            && alike
        {
            prop_assert!(
                m.tat.max(t2) >= w.tat.max(t2),
                "the refund gave back more than the reservation still held: {} < {}",
                m.tat,
                w.tat
            );
        }
    }

    now = t2;
    for (i, &(adv, raw)) in case.later.iter().enumerate() {
        now += adv.resolve(now, span, unit);
        let p = one(&key, &policy, cost(raw), now);
        let got = env.acquire(&p);
        let want = model_acquire(&mut model, &p);
        prop_assert_eq!(
            &got,
            &want,
            "later step {} at t2 + {}: Lua vs core",
            i,
            now - t2
        );
        let never = model_acquire(&mut twin, &p);
        if exact {
            prop_assert_eq!(&want, &never, "later step {}: not as if never reserved", i);
        }
    }
    Ok(())
}

/// After a refund that changed the state, the key lives as long as the model's state says,
/// and is gone when that state is empty. (An untouched key keeps the TTL of its last
/// write, relative to that write's explicit clock, so it is not checked.)
fn check_lifetime(
    env: &Env,
    key: &str,
    state: &LimitState,
    policy: &Policy,
    now: Micros,
) -> Result<(), TestCaseError> {
    if *state == LimitState::empty(policy.algorithm()) {
        prop_assert_eq!(
            env.pttl(key),
            -2,
            "empty after the refund, yet {} exists",
            key
        );
    } else {
        env.assert_ttl_matches(key, state.expires_at(policy), now, "after the refund");
    }
    Ok(())
}

fn conforms(algorithm: Algorithm) {
    let env = Env::start();
    let mut runner = runner(file!(), 128);
    if let Err(e) = runner.run(&case(algorithm), |c| run(&env, &c)) {
        panic!("{}: reserve/refund: {e}", algorithm.name());
    }
}

#[test]
fn token_bucket_refund_conforms() {
    conforms(Algorithm::TokenBucket);
}

#[test]
fn fixed_window_refund_conforms() {
    conforms(Algorithm::FixedWindow);
}

#[test]
fn sliding_window_refund_conforms() {
    conforms(Algorithm::SlidingWindow);
}

#[test]
fn sliding_log_refund_conforms() {
    conforms(Algorithm::SlidingLog);
}

#[test]
fn concurrency_refund_conforms() {
    conforms(Algorithm::Concurrency);
}

fn fw(limit: u64, shadow: bool) -> Arc<Policy> {
    Arc::new(
        Policy::new(PolicySpec {
            algorithm: Algorithm::FixedWindow,
            limit,
            period: 10 * SECOND,
            burst: 0,
            fail_mode: None,
            lease_ttl: None,
            shadow,
        })
        .unwrap(),
    )
}

fn remaining(env: &Env, checks: &[PlannedCheck], now: Micros) -> Vec<u64> {
    let d: StoreDecision = env.acquire(&plan_at(checks.to_vec(), now, false));
    d.checks
        .iter()
        .map(|c: &CheckOutcome| c.remaining)
        .collect()
}

/// A group denied by one check consumes nothing anywhere; the reply still carries `now`.
#[test]
fn a_denied_reservation_consumes_nothing() {
    let env = Env::start();
    let (a, b) = (fw(5, false), fw(1, false));
    let (ka, kb) = (
        unique_key(Algorithm::FixedWindow, "a"),
        unique_key(Algorithm::FixedWindow, "b"),
    );
    let t = EPOCH + 3 * SECOND;
    env.acquire(&plan_at(
        vec![planned(&ka, &a, 2, None), planned(&kb, &b, 1, None)],
        t,
        true,
    ));
    let before = env.snapshot(&[&ka, &kb]);
    let checks = vec![planned(&ka, &a, 1, None), planned(&kb, &b, 1, None)];
    let (d, clock) = env.reserve(&plan_at(checks.clone(), t + 1, true));
    assert!(!d.allowed && d.checks[0].allowed && !d.checks[1].allowed);
    assert_eq!(clock, t + 1);
    assert_eq!(
        d.checks[0].remaining, 3,
        "a denied group reports the limit as it is"
    );
    before.assert_unchanged(&env.snapshot(&[&ka, &kb]), "a denied reservation");
}

/// Allowed shadow checks were consumed and are refunded; denied ones are left alone.
#[test]
fn shadow_checks_are_refunded_only_when_they_allowed() {
    let env = Env::start();
    let (a, room, full) = (fw(5, false), fw(5, true), fw(1, true));
    let k = |s: &str| unique_key(Algorithm::FixedWindow, s);
    let (ka, kr, kf) = (k("a"), k("room"), k("full"));
    let t = EPOCH + 3 * SECOND;
    env.acquire(&plan_at(vec![planned(&kf, &full, 1, None)], t, true));
    let checks = vec![
        planned(&ka, &a, 2, None),
        planned(&kr, &room, 2, None),
        planned(&kf, &full, 1, None),
    ];
    let full_before = env.snapshot(&[&kf]);
    let (d, at) = env.reserve(&plan_at(checks.clone(), t, true));
    assert!(d.allowed);
    assert_eq!(
        d.checks.iter().map(|c| c.allowed).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(remaining(&env, &checks, t), [3, 3, 0]);
    env.refund(&checks, &d.checks, at, t + 5);
    assert_eq!(remaining(&env, &checks, t + 5), [5, 5, 0]);
    assert_eq!(env.pttl(&ka), -2, "a count refunded to zero is dropped");
    full_before.assert_unchanged(&env.snapshot(&[&kf]), "refunding a denied shadow check");
}

/// A refund at the consumption's own instant leaves the stamp's members numbered
/// `0..m-1`, so the next unit stamped then is a new member, not an overwrite of one.
#[test]
fn sliding_log_refund_keeps_the_stamp_numbering() {
    let env = Env::start();
    let p = sliding_log(10);
    let key = unique_key(Algorithm::SlidingLog, "sl");
    let t = EPOCH + 7;
    env.acquire(&plan_at(vec![planned(&key, &p, 2, None)], t, true));
    let checks = vec![planned(&key, &p, 3, None)];
    let (d, at) = env.reserve(&plan_at(checks.clone(), t, true));
    env.refund(&checks, &d.checks, at, t);
    let members: Vec<String> = env.cmd(::redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1));
    assert_eq!(members, [format!("{t}:0"), format!("{t}:1")]);
    env.acquire(&plan_at(checks.clone(), t, true));
    assert_eq!(remaining(&env, &checks, t), [5]);
}

/// Without an explicit clock the reply carries Redis TIME; a reservation never reads or
/// writes the request record.
#[test]
fn reserve_answers_redis_time_and_ignores_the_request_record() {
    let env = Env::start();
    let a = fw(5, false);
    let ka = unique_key(Algorithm::FixedWindow, "a");
    let record = format!("{ka}:record");
    let mut plan = plan_at(vec![planned(&ka, &a, 1, None)], 0, true);
    plan.now = None;
    plan.request_record = Some(record.clone());
    let wall = floodgate_core::SystemClock;
    let before = floodgate_core::Clock::now(&wall);
    let (d, clock) = env.reserve(&plan);
    let after = floodgate_core::Clock::now(&wall);
    assert!(d.allowed);
    assert!(
        clock + 5 * SECOND >= before && clock <= after + 5 * SECOND,
        "clock {clock} not within [{before}, {after}] (+-5 s)"
    );
    assert_eq!(env.pttl(&record), -2, "reserve wrote the request record");
    let (again, _) = env.reserve(&plan);
    assert_eq!(
        again.checks[0].remaining, 3,
        "a reservation is never replayed"
    );
}

/// A sliding log's refund of 10,000 units (the default `max_sliding_log_limit`) removes
/// them all: the members go in batches (one ZREM of them all overflowed Lua's stack).
#[test]
fn a_sliding_log_refund_of_ten_thousand_units_removes_them_all() {
    let env = Env::start();
    let p = sliding_log(10_000);
    let key = unique_key(Algorithm::SlidingLog, "big");
    let t = EPOCH + 11;
    let checks = vec![planned(&key, &p, 10_000, None)];
    let (d, at) = env.reserve(&plan_at(checks.clone(), t, true));
    assert!(d.allowed);
    assert_eq!(remaining(&env, &checks, t), [0]);
    env.refund(&checks, &d.checks, at, t + 1);
    assert_eq!(remaining(&env, &checks, t + 1), [10_000]);
    assert_eq!(env.pttl(&key), -2, "an emptied log is dropped");
}

/// A sliding log of `limit` per second.
fn sliding_log(limit: u64) -> Arc<Policy> {
    Arc::new(
        Policy::new(PolicySpec {
            algorithm: Algorithm::SlidingLog,
            limit,
            period: SECOND,
            burst: 0,
            fail_mode: None,
            lease_ttl: None,
            shadow: false,
        })
        .unwrap(),
    )
}
