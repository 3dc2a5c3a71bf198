//! Conformance: every Lua script decides exactly like its `core` twin, on a real Redis.
//!
//! Random policies and random step sequences on an explicit clock go through the Redis
//! store (`lua/prelude.lua` + the algorithm files + `acquire.lua`, `release.lua`,
//! `renew.lua`, exactly as the server assembles them) and through the pure model
//! (`core::token_bucket::token_bucket`, …, and `core::acquire::acquire` for several checks);
//! every step must give the identical `CheckOutcome` (allowed, limit, remaining,
//! reset_after, retry_after), overall decision and lease. Clock advances include 0, exact
//! window edges, exact periods ±1 µs and the previous answer's own `retry_after` and
//! `reset_after`, so the steps land on the boundaries where a decision flips.
//!
//! Raw Redis state is compared too: a Status or a denied Acquire must leave every key
//! byte-identical (`DUMP`) with its TTL untouched, and after every write each key's TTL
//! must match how long the model says its state lives (`expires_at`, plus the scripts'
//! 60 s test slack). A configured policy reloaded with other parameters keeps its key, so
//! sequences that switch policies on one key are checked as well.
//!
//! Also pinned here: Status never writes; the script cache recovers from `SCRIPT FLUSH`
//! (PyrateLimiter #182); a request record replays the first admitted answer; every key has a
//! TTL (and lease sets refresh theirs, llm-d-async #336); memory per idle key.
use std::sync::Arc;

use floodgate_core::{
    Algorithm, CheckOutcome, Micros, Policy, PolicySpec, acquire::LimitState, concurrency,
    policy::MIN_LEASE_TTL, time::SECOND,
};
use floodgate_server::{
    keys::Keys,
    store::{AcquirePlan, PlannedCheck, Store, redis::scripts},
};
use floodgate_tests::{
    conformance_support::{
        EPOCH, Env, TEST_TTL_SLACK_MS, TTL_MARGIN_MS, fresh_member, model_acquire, model_single,
        plan_at, planned, runner, unique_key,
    },
    unique_namespace,
};
use proptest::{prelude::*, test_runner::TestCaseError};

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// How far the clock moves before a step, resolved against the policy and the previous
/// answer so that exact boundaries come up often.
#[derive(Debug, Clone, Copy)]
enum Advance {
    /// Same microsecond.
    Zero,
    /// Uniform in `0..=2 * span` (span: the period, or the lease TTL).
    Random(u64),
    /// Exactly one span, one span - 1 µs, one span + 1 µs.
    Span,
    SpanMinus1,
    SpanPlus1,
    /// To the next epoch-aligned window edge, or 1 µs before it.
    NextEdge,
    NextEdgeMinus1,
    /// By the previous answer's `retry_after` (where a denial must flip), or 1 µs less.
    LastRetry,
    LastRetryMinus1,
    /// By the previous answer's `reset_after`.
    LastReset,
    /// k token-bucket emission intervals (span / limit for the other algorithms).
    Units(u64),
}

impl Advance {
    fn resolve(self, now: Micros, span: Micros, unit: Micros, last: &CheckOutcome) -> Micros {
        let span = span.max(1);
        let to_edge = span - now % span;
        match self {
            Advance::Zero => 0,
            Advance::Random(r) => r % (2 * span + 1),
            Advance::Span => span,
            Advance::SpanMinus1 => span - 1,
            Advance::SpanPlus1 => span + 1,
            Advance::NextEdge => to_edge,
            Advance::NextEdgeMinus1 => to_edge - 1,
            Advance::LastRetry => last.retry_after,
            Advance::LastRetryMinus1 => last.retry_after.saturating_sub(1),
            Advance::LastReset => last.reset_after,
            Advance::Units(k) => k * unit.max(1),
        }
    }
}

fn advance() -> impl Strategy<Value = Advance> {
    prop_oneof![
        3 => Just(Advance::Zero),
        8 => any::<u64>().prop_map(Advance::Random),
        1 => Just(Advance::Span),
        1 => Just(Advance::SpanMinus1),
        1 => Just(Advance::SpanPlus1),
        1 => Just(Advance::NextEdge),
        1 => Just(Advance::NextEdgeMinus1),
        2 => Just(Advance::LastRetry),
        1 => Just(Advance::LastRetryMinus1),
        1 => Just(Advance::LastReset),
        2 => (1u64..=3).prop_map(Advance::Units),
    ]
}

/// A cost in `1..=capacity`, with both ends often.
#[derive(Debug, Clone, Copy)]
enum Cost {
    One,
    Capacity,
    Any(u64),
}

impl Cost {
    fn resolve(self, capacity: u64) -> u64 {
        match self {
            Cost::One => 1,
            Cost::Capacity => capacity,
            Cost::Any(r) => 1 + r % capacity,
        }
    }
}

fn cost() -> impl Strategy<Value = Cost> {
    prop_oneof![
        4 => Just(Cost::One),
        1 => Just(Cost::Capacity),
        4 => any::<u64>().prop_map(Cost::Any),
    ]
}

fn limit() -> impl Strategy<Value = u64> {
    prop_oneof![5 => 1u64..=5, 3 => 6u64..=20, 1 => 21u64..=300]
}

/// Periods from 1 ms to hours, biased to short ones so windows turn over within a sequence.
fn period() -> impl Strategy<Value = Micros> {
    prop_oneof![
        2 => Just(1_000u64),
        4 => 1_000u64..=20_000,
        4 => 20_001u64..=2_000_000,
        2 => 2_000_001u64..=120_000_000,
        1 => Just(3_600 * SECOND),
        1 => 3_600 * SECOND..=6 * 3_600 * SECOND,
    ]
}

fn burst() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 3 => 1u64..=20, 1 => 21u64..=200]
}

fn lease_ttl() -> impl Strategy<Value = Micros> {
    prop_oneof![
        1 => Just(MIN_LEASE_TTL),
        3 => MIN_LEASE_TTL..=50_000,
        3 => 50_001u64..=10_000_000,
        1 => Just(60 * SECOND),
        1 => 60 * SECOND..=2 * 3_600 * SECOND,
    ]
}

fn policy(algorithm: Algorithm, shadow_weight: f64) -> impl Strategy<Value = Policy> {
    (
        limit(),
        period(),
        burst(),
        lease_ttl(),
        prop::bool::weighted(shadow_weight),
    )
        .prop_filter_map(
            "a valid policy",
            move |(limit, period, burst, lease_ttl, shadow)| {
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
                    lease_ttl: Some(lease_ttl),
                    shadow,
                })
                .ok()
            },
        )
}

/// Where the explicit clock starts: the epoch constant itself (aligned to every round
/// period) or up to ~4 months after it.
fn start_offset() -> impl Strategy<Value = Micros> {
    prop_oneof![1 => Just(0u64), 4 => 0u64..=10_000_000_000_000]
}

/// The time span a policy's steps move in, and its smallest unit.
fn span_and_unit(policy: &Policy) -> (Micros, Micros) {
    match policy.algorithm() {
        Algorithm::Concurrency => (
            policy.lease_ttl(),
            (policy.lease_ttl() / policy.limit()).max(1),
        ),
        Algorithm::TokenBucket => (policy.period(), policy.emission_interval()),
        _ => (policy.period(), (policy.period() / policy.limit()).max(1)),
    }
}

/// What one step asks.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Acquire `cost` (consume when admitted).
    Acquire(Cost),
    /// Status for `cost` (never writes).
    Status(Cost),
    /// Concurrency: release the n-th lease member seen so far (taken or not).
    Release(usize),
    /// Concurrency: renew the n-th lease member seen so far, for a raw TTL.
    Renew(usize, u64),
}

fn op(algorithm: Algorithm) -> BoxedStrategy<Op> {
    if algorithm == Algorithm::Concurrency {
        prop_oneof![
            6 => cost().prop_map(Op::Acquire),
            1 => cost().prop_map(Op::Status),
            2 => any::<usize>().prop_map(Op::Release),
            2 => (any::<usize>(), any::<u64>()).prop_map(|(i, t)| Op::Renew(i, t)),
        ]
        .boxed()
    } else {
        prop_oneof![
            6 => cost().prop_map(Op::Acquire),
            1 => cost().prop_map(Op::Status),
        ]
        .boxed()
    }
}

/// One algorithm's case: a policy, a clock start and 20-40 steps.
#[derive(Debug, Clone)]
struct SingleCase {
    policy: Policy,
    offset: Micros,
    steps: Vec<(Advance, Op)>,
}

fn single_case(algorithm: Algorithm) -> impl Strategy<Value = SingleCase> {
    (
        policy(algorithm, 0.15),
        start_offset(),
        prop::collection::vec((advance(), op(algorithm)), 20..=40),
    )
        .prop_map(|(policy, offset, steps)| SingleCase {
            policy,
            offset,
            steps,
        })
}

/// A renew TTL in `1 ms..=2 * lease_ttl`.
fn renew_ttl(raw: u64, lease_ttl: Micros) -> Micros {
    MIN_LEASE_TTL + raw % (2 * lease_ttl - MIN_LEASE_TTL + 1)
}

fn pick(members: &[String], i: usize) -> Option<&String> {
    (!members.is_empty()).then(|| &members[i % members.len()])
}

// ---------------------------------------------------------------------------------------
// One algorithm at a time
// ---------------------------------------------------------------------------------------

/// Drives one case through Redis and the model; the first difference fails the case.
fn run_single(env: &Env, case: &SingleCase) -> Result<(), TestCaseError> {
    let policy = Arc::new(case.policy.clone());
    let algorithm = policy.algorithm();
    let key = unique_key(algorithm, &policy.fingerprint());
    let (span, unit) = span_and_unit(&policy);
    let mut state = LimitState::empty(algorithm);
    let mut now = EPOCH + case.offset;
    let mut last = CheckOutcome::default();
    let mut members: Vec<String> = Vec::new();
    for (i, &(adv, op)) in case.steps.iter().enumerate() {
        now += adv.resolve(now, span, unit, &last);
        let at = now - EPOCH - case.offset;
        match op {
            Op::Acquire(c) | Op::Status(c) => {
                let consume = matches!(op, Op::Acquire(_));
                let cost = c.resolve(policy.capacity());
                let member =
                    (algorithm == Algorithm::Concurrency && consume).then(|| fresh_member(cost));
                let plan = plan_at(
                    vec![planned(&key, &policy, cost, member.clone())],
                    now,
                    consume,
                );
                let before = env.snapshot(&[&key]);
                let got = env.acquire(&plan);
                let want = if consume {
                    // The script's twin by name, cross-checked against core's own Acquire.
                    let mut whole_state = [state.clone()];
                    let whole = model_acquire(&mut whole_state, &plan);
                    let single = model_single(&mut state, &policy, now, cost, member.as_deref());
                    prop_assert_eq!(
                        whole.checks[0],
                        single,
                        "core disagrees with itself: acquire() vs {}()",
                        algorithm.name()
                    );
                    prop_assert_eq!(&whole_state[0], &state, "core: acquire() state differs");
                    whole
                } else {
                    let before_model = state.clone();
                    let d = model_acquire(std::slice::from_mut(&mut state), &plan);
                    prop_assert_eq!(&before_model, &state, "core: Status changed the model");
                    d
                };
                prop_assert_eq!(
                    &got,
                    &want,
                    "step {} ({:?} then {:?}) at +{} us (now {}), cost {}: Lua (left) vs core (right)",
                    i,
                    adv,
                    op,
                    at,
                    now,
                    cost
                );
                if !consume || !got.checks[0].allowed {
                    let what = format!("step {i} ({op:?}, denied or Status)");
                    before.assert_unchanged(&env.snapshot(&[&key]), &what);
                } else {
                    let what = format!("step {i} ({op:?}, admitted)");
                    env.assert_ttl_matches(&key, state.expires_at(&policy), now, &what);
                }
                last = got.checks[0];
                members.extend(member);
            }
            Op::Release(n) => {
                let m = pick(&members, n)
                    .cloned()
                    .unwrap_or_else(|| fresh_member(1));
                let got = env.release(&key, &m, now);
                let LimitState::Concurrency(s) = &mut state else {
                    unreachable!("release on {algorithm:?}")
                };
                let want = concurrency::release(s, &m, now);
                prop_assert_eq!(
                    got,
                    want,
                    "step {} release {} at +{} us: Lua (left) vs core (right)",
                    i,
                    m,
                    at
                );
                env.assert_ttl_matches(&key, s.expires_at(), now, &format!("step {i} release"));
            }
            Op::Renew(n, raw) => {
                let m = pick(&members, n)
                    .cloned()
                    .unwrap_or_else(|| fresh_member(1));
                let ttl = renew_ttl(raw, policy.lease_ttl());
                let got = env.renew(&key, &m, ttl, now);
                let LimitState::Concurrency(s) = &mut state else {
                    unreachable!("renew on {algorithm:?}")
                };
                let want = concurrency::renew(s, &m, ttl, now);
                prop_assert_eq!(
                    got,
                    want,
                    "step {} renew {} by {} us at +{} us: Lua (left) vs core (right)",
                    i,
                    m,
                    ttl,
                    at
                );
                env.assert_ttl_matches(&key, s.expires_at(), now, &format!("step {i} renew"));
            }
        }
    }
    Ok(())
}

fn conforms(algorithm: Algorithm) {
    let env = Env::start();
    let mut runner = runner(file!(), 96);
    let result = runner.run(&single_case(algorithm), |case| run_single(&env, &case));
    if let Err(e) = result {
        panic!("{}: Lua and core disagree: {e}", algorithm.name());
    }
}

#[test]
fn token_bucket_lua_decides_like_core() {
    conforms(Algorithm::TokenBucket);
}

#[test]
fn sliding_window_lua_decides_like_core() {
    conforms(Algorithm::SlidingWindow);
}

#[test]
fn sliding_log_lua_decides_like_core() {
    conforms(Algorithm::SlidingLog);
}

#[test]
fn fixed_window_lua_decides_like_core() {
    conforms(Algorithm::FixedWindow);
}

#[test]
fn concurrency_lua_acquire_release_renew_decide_like_core() {
    conforms(Algorithm::Concurrency);
}

/// A configured policy reloaded with another limit, period or burst keeps its key, so a
/// state written under one policy is read under another (a token bucket ahead of a
/// lowered burst, a window count above a lowered limit, windows of another length). Both
/// sides must still agree: `(policy A, policy B, steps)` where each step picks one.
#[derive(Debug, Clone)]
struct ReloadCase {
    policies: [Policy; 2],
    offset: Micros,
    steps: Vec<(Advance, bool, Op)>,
}

fn reload_case() -> impl Strategy<Value = ReloadCase> {
    any_algorithm().prop_flat_map(|a| {
        (
            [policy(a, 0.0), policy(a, 0.0)],
            start_offset(),
            prop::collection::vec((advance(), any::<bool>(), op(a)), 20..=40),
        )
            .prop_map(|(policies, offset, steps)| ReloadCase {
                policies,
                offset,
                steps,
            })
    })
}

fn run_reload(env: &Env, case: &ReloadCase) -> Result<(), TestCaseError> {
    let policies = case.policies.clone().map(Arc::new);
    let algorithm = policies[0].algorithm();
    let key = unique_key(algorithm, "reloaded");
    let mut state = LimitState::empty(algorithm);
    let mut now = EPOCH + case.offset;
    let mut last = CheckOutcome::default();
    let mut members: Vec<String> = Vec::new();
    for (i, &(adv, second, op)) in case.steps.iter().enumerate() {
        let policy = &policies[usize::from(second)];
        let (span, unit) = span_and_unit(policy);
        now += adv.resolve(now, span, unit, &last);
        match op {
            Op::Acquire(c) | Op::Status(c) => {
                let consume = matches!(op, Op::Acquire(_));
                let cost = c.resolve(policy.capacity());
                let member =
                    (algorithm == Algorithm::Concurrency && consume).then(|| fresh_member(cost));
                let plan = plan_at(
                    vec![planned(&key, policy, cost, member.clone())],
                    now,
                    consume,
                );
                let got = env.acquire(&plan);
                let want = model_acquire(std::slice::from_mut(&mut state), &plan);
                prop_assert_eq!(
                    &got,
                    &want,
                    "step {} ({:?} then {:?} under policy {}) cost {}: Lua (left) vs core (right)",
                    i,
                    adv,
                    op,
                    usize::from(second),
                    cost
                );
                last = got.checks[0];
                members.extend(member);
            }
            Op::Release(n) | Op::Renew(n, _) => {
                let m = pick(&members, n)
                    .cloned()
                    .unwrap_or_else(|| fresh_member(1));
                let LimitState::Concurrency(s) = &mut state else {
                    unreachable!("lease op on {algorithm:?}")
                };
                if let Op::Renew(_, raw) = op {
                    let ttl = renew_ttl(raw, policy.lease_ttl());
                    let got = env.renew(&key, &m, ttl, now);
                    prop_assert_eq!(got, concurrency::renew(s, &m, ttl, now), "step {} renew", i);
                } else {
                    let got = env.release(&key, &m, now);
                    prop_assert_eq!(got, concurrency::release(s, &m, now), "step {} release", i);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn reloaded_policy_on_the_same_key_decides_like_core() {
    let env = Env::start();
    let mut runner = runner(file!(), 96);
    if let Err(e) = runner.run(&reload_case(), |case| run_reload(&env, &case)) {
        panic!("a reloaded policy: Lua and core disagree: {e}");
    }
}

/// Found by `reloaded_policy_on_the_same_key_decides_like_core`: the sliding log names a
/// unit `<now>:<n>`, and n used to be the count of live units. A reload that shortens the
/// period shrinks that count at the same `now`, so a new unit took the name of one already
/// stored and `ZADD` overwrote it: an admitted unit went uncounted and the limit
/// over-admitted. Members are now numbered among the units stamped `now`.
#[test]
fn sliding_log_never_loses_a_unit_when_a_reload_shortens_the_period() {
    let env = Env::start();
    let hourly = Arc::new(fixed_policy(
        Algorithm::SlidingLog,
        5,
        3_600 * SECOND,
        SECOND,
    ));
    let per_ms = Arc::new(fixed_policy(Algorithm::SlidingLog, 4, 1_000, SECOND));
    let key = unique_key(Algorithm::SlidingLog, "reloaded");
    let mut state = LimitState::empty(Algorithm::SlidingLog);
    let t = EPOCH + 555;
    step_both(&env, &key, &hourly, &mut state, 1, t, true);
    // One unit at t + 12 min, named `<now>:1` (one live unit before it).
    step_both(&env, &key, &hourly, &mut state, 1, t + 720 * SECOND, true);
    // Reloaded to 4 per ms at the same microsecond: one unit is live, three more fit.
    step_both(&env, &key, &per_ms, &mut state, 3, t + 720 * SECOND, true);
    let card: i64 = env.cmd(redis::cmd("ZCARD").arg(&key));
    assert_eq!(card, 4, "every admitted unit is in the log");
    // Back to the hourly policy: 4 units live, one more fits and then the log is full.
    let o = step_both(&env, &key, &hourly, &mut state, 1, t + 720 * SECOND, true);
    assert!(o.allowed && o.remaining == 0, "{o:?}");
    let o = step_both(&env, &key, &hourly, &mut state, 1, t + 720 * SECOND, true);
    assert!(!o.allowed, "the log over-admitted: {o:?}");
}

// ---------------------------------------------------------------------------------------
// Several checks in one Acquire
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum MultiOp {
    Acquire,
    Status,
    /// Release the n-th lease member seen so far (of any concurrency check).
    Release(usize),
    /// Renew the n-th lease member seen so far, for a raw TTL.
    Renew(usize, u64),
}

#[derive(Debug, Clone)]
struct MultiStep {
    advance: Advance,
    /// Which check's span and last answer the advance is measured by.
    by: usize,
    costs: [Cost; 4],
    op: MultiOp,
}

#[derive(Debug, Clone)]
struct MultiCase {
    policies: Vec<Policy>,
    offset: Micros,
    steps: Vec<MultiStep>,
}

fn any_algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

fn multi_case() -> impl Strategy<Value = MultiCase> {
    let step = (
        advance(),
        0usize..4,
        [cost(), cost(), cost(), cost()],
        prop_oneof![
            12 => Just(MultiOp::Acquire),
            2 => Just(MultiOp::Status),
            1 => any::<usize>().prop_map(MultiOp::Release),
            1 => (any::<usize>(), any::<u64>()).prop_map(|(i, t)| MultiOp::Renew(i, t)),
        ],
    )
        .prop_map(|(advance, by, costs, op)| MultiStep {
            advance,
            by,
            costs,
            op,
        });
    (
        prop::collection::vec(any_algorithm().prop_flat_map(|a| policy(a, 0.25)), 2..=4),
        start_offset(),
        prop::collection::vec(step, 20..=40),
    )
        .prop_map(|(policies, offset, steps)| MultiCase {
            policies,
            offset,
            steps,
        })
}

fn run_multi(env: &Env, case: &MultiCase) -> Result<(), TestCaseError> {
    // Every check's key shares one hash tag, as one Acquire's keys do in the server.
    let ns = unique_namespace("multi");
    let keys = Keys::new("fg");
    let policies: Vec<Arc<Policy>> = case.policies.iter().cloned().map(Arc::new).collect();
    let names: Vec<String> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| keys.limit(&ns, "user:42", p.algorithm(), &format!("p{i}")))
        .collect();
    let key_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut states: Vec<LimitState> = policies
        .iter()
        .map(|p| LimitState::empty(p.algorithm()))
        .collect();
    let mut last = vec![CheckOutcome::default(); policies.len()];
    let mut members: Vec<(usize, String)> = Vec::new();
    let mut now = EPOCH + case.offset;
    for (i, step) in case.steps.iter().enumerate() {
        let by = step.by % policies.len();
        let (span, unit) = span_and_unit(&policies[by]);
        now += step.advance.resolve(now, span, unit, &last[by]);
        let lease_op = match step.op {
            MultiOp::Release(n) | MultiOp::Renew(n, _) if !members.is_empty() => {
                Some(members[n % members.len()].clone())
            }
            _ => None,
        };
        if let Some((c, m)) = lease_op {
            let LimitState::Concurrency(s) = &mut states[c] else {
                unreachable!("lease members belong to concurrency checks")
            };
            if let MultiOp::Renew(_, raw) = step.op {
                let ttl = renew_ttl(raw, policies[c].lease_ttl());
                let got = env.renew(&names[c], &m, ttl, now);
                prop_assert_eq!(got, concurrency::renew(s, &m, ttl, now), "step {} renew", i);
            } else {
                let got = env.release(&names[c], &m, now);
                prop_assert_eq!(got, concurrency::release(s, &m, now), "step {} release", i);
            }
            env.assert_ttl_matches(
                &names[c],
                s.expires_at(),
                now,
                &format!("step {i} lease op"),
            );
            continue;
        }
        let consume = !matches!(step.op, MultiOp::Status);
        let checks: Vec<PlannedCheck> = policies
            .iter()
            .zip(&names)
            .zip(step.costs)
            .map(|((p, k), c)| {
                let cost = c.resolve(p.capacity());
                let member = (consume && p.algorithm() == Algorithm::Concurrency)
                    .then(|| fresh_member(cost));
                planned(k, p, cost, member)
            })
            .collect();
        let plan = plan_at(checks, now, consume);
        let before = env.snapshot(&key_refs);
        let got = env.acquire(&plan);
        let want = model_acquire(&mut states, &plan);
        prop_assert_eq!(
            &got,
            &want,
            "step {} ({:?}) at +{} us: Lua (left) vs core (right); costs {:?}",
            i,
            step,
            now - EPOCH - case.offset,
            plan.checks.iter().map(|c| c.cost).collect::<Vec<_>>()
        );
        // All-or-nothing, proved on the raw state: a Status or a denied Acquire writes no
        // key, and a check that denied inside an admitted Acquire (shadow) writes nothing.
        let after = env.snapshot(&key_refs);
        for (c, outcome) in got.checks.iter().enumerate() {
            if !consume || !got.allowed || !outcome.allowed {
                before.only(c).assert_unchanged(
                    &after.only(c),
                    &format!(
                        "step {i}: check {c} (allowed {}, Acquire allowed {}, consume {consume})",
                        outcome.allowed, got.allowed
                    ),
                );
            }
        }
        for (c, outcome) in got.checks.iter().enumerate() {
            if consume && got.allowed && outcome.allowed {
                let what = format!("step {i}: check {c} admitted");
                env.assert_ttl_matches(&names[c], states[c].expires_at(&policies[c]), now, &what);
            }
            last[c] = *outcome;
        }
        for (c, check) in plan.checks.iter().enumerate() {
            if let Some(m) = &check.lease_member {
                members.push((c, m.clone()));
            }
        }
    }
    Ok(())
}

/// 2-4 checks of mixed algorithms (a quarter of them shadow) in one Acquire: the same
/// overall answer, the same outcome per check, the same leases; a denied Acquire consumes
/// nothing on either side (checked on the raw keys, and by every later step agreeing).
#[test]
fn multi_check_acquire_decides_like_core() {
    let env = Env::start();
    let mut runner = runner(file!(), 96);
    if let Err(e) = runner.run(&multi_case(), |case| run_multi(&env, &case)) {
        panic!("multi-check Acquire: Lua and core disagree: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Fixed scenarios
// ---------------------------------------------------------------------------------------

fn fixed_policy(algorithm: Algorithm, limit: u64, period: Micros, lease_ttl: Micros) -> Policy {
    Policy::new(PolicySpec {
        algorithm,
        limit,
        period: if algorithm == Algorithm::Concurrency {
            0
        } else {
            period
        },
        burst: 0,
        fail_mode: None,
        lease_ttl: Some(lease_ttl),
        shadow: false,
    })
    .unwrap()
}

/// One Acquire of one check, on Redis and in the model; both answers must agree.
fn step_both(
    env: &Env,
    key: &str,
    policy: &Arc<Policy>,
    state: &mut LimitState,
    cost: u64,
    now: Micros,
    consume: bool,
) -> CheckOutcome {
    let member =
        (consume && policy.algorithm() == Algorithm::Concurrency).then(|| fresh_member(cost));
    let plan = plan_at(vec![planned(key, policy, cost, member)], now, consume);
    let got = env.acquire(&plan);
    let want = model_acquire(std::slice::from_mut(state), &plan);
    assert_eq!(
        got, want,
        "{key} cost {cost} at {now}: Lua (left) vs core (right)"
    );
    got.checks[0]
}

/// Status (consume = false) never changes state on Redis: byte-identical values, no TTL
/// extended, no key created; whatever the cost asked and however far the clock moved.
#[test]
fn status_never_changes_state_on_redis() {
    let env = Env::start();
    for algorithm in Algorithm::ALL {
        let policy = Arc::new(fixed_policy(algorithm, 3, 10 * SECOND, 10 * SECOND));
        // Status on a limit nobody used creates nothing.
        let empty = unique_key(algorithm, "status-empty");
        let mut empty_state = LimitState::empty(algorithm);
        for cost in 1..=3 {
            step_both(&env, &empty, &policy, &mut empty_state, cost, EPOCH, false);
        }
        let exists: i64 = env.cmd(redis::cmd("EXISTS").arg(&empty));
        assert_eq!(exists, 0, "{algorithm:?}: Status created {empty}");

        let key = unique_key(algorithm, "status");
        let mut state = LimitState::empty(algorithm);
        let t0 = EPOCH + 1_234_567;
        step_both(&env, &key, &policy, &mut state, 1, t0, true);
        step_both(&env, &key, &policy, &mut state, 1, t0 + 1_000, true);
        let model_before = state.clone();
        let before = env.snapshot(&[&key]);
        for at in [
            1_000,
            1_001,
            5 * SECOND,
            10 * SECOND,
            10 * SECOND + 1_000,
            25 * SECOND,
            10 * 3_600 * SECOND,
        ] {
            for cost in 1..=3 {
                let o = step_both(&env, &key, &policy, &mut state, cost, t0 + at, false);
                if at == 1_000 {
                    assert_eq!(o.allowed, cost == 1, "{algorithm:?} cost {cost}");
                    assert_eq!(
                        o.remaining, 1,
                        "{algorithm:?}: Status reads the limit as it is"
                    );
                }
            }
        }
        before.assert_unchanged(&env.snapshot(&[&key]), &format!("{algorithm:?} Status"));
        assert_eq!(
            state, model_before,
            "{algorithm:?}: Status changed the model"
        );
        // And the limit still answers as if no Status had happened.
        let o = step_both(&env, &key, &policy, &mut state, 1, t0 + 2_000, true);
        assert!(o.allowed && o.remaining == 0, "{algorithm:?}: {o:?}");
    }
}

/// PyrateLimiter #182: after `SCRIPT FLUSH` (what a restart or failover does to the script
/// cache) every call goes on succeeding through `RedisStore`, reloading on `NOSCRIPT`, and
/// the decisions still follow the model: the limits' state survived, only the cache went.
#[test]
fn noscript_after_script_flush_pyratelimiter_182() {
    let env = Env::start();
    let tb = Arc::new(
        Policy::new(PolicySpec {
            algorithm: Algorithm::TokenBucket,
            limit: 5,
            period: SECOND,
            burst: 3,
            fail_mode: None,
            lease_ttl: None,
            shadow: false,
        })
        .unwrap(),
    );
    let cc = Arc::new(fixed_policy(Algorithm::Concurrency, 2, 0, 5 * SECOND));
    let ns = unique_namespace("flush");
    let keys = Keys::new("fg");
    let tb_key = keys.limit(&ns, "user:42", Algorithm::TokenBucket, "api");
    let cc_key = keys.limit(&ns, "user:42", Algorithm::Concurrency, "jobs");
    let mut states = vec![
        LimitState::empty(Algorithm::TokenBucket),
        LimitState::empty(Algorithm::Concurrency),
    ];
    let flush = || {
        let () = env.cmd(redis::cmd("SCRIPT").arg("FLUSH"));
        let cached: Vec<i64> = env.cmd(
            redis::cmd("SCRIPT")
                .arg("EXISTS")
                .arg(scripts::ACQUIRE.get_hash()),
        );
        assert_eq!(cached, [0], "SCRIPT FLUSH did not empty the cache");
    };
    let mut now = EPOCH;
    let mut taken = Vec::new();
    let mut admitted = 0;
    for i in 0..12u64 {
        // A few calls on a warm cache first, then a flush before every other call.
        if i >= 3 && i % 2 == 1 {
            flush();
        }
        let member = fresh_member(1);
        let plan = plan_at(
            vec![
                planned(&tb_key, &tb, 1, None),
                planned(&cc_key, &cc, 1, Some(member.clone())),
            ],
            now,
            true,
        );
        let got = env.acquire(&plan);
        assert_eq!(
            got,
            model_acquire(&mut states, &plan),
            "call {i} (after a flush: {})",
            i >= 3 && i % 2 == 1
        );
        if got.allowed {
            admitted += 1;
            taken.push(member);
        }
        if taken.len() == 2 {
            // Free a slot through the release script, also right after a flush.
            flush();
            let m = taken.remove(0);
            let LimitState::Concurrency(s) = &mut states[1] else {
                unreachable!()
            };
            assert_eq!(
                env.release(&cc_key, &m, now),
                concurrency::release(s, &m, now)
            );
        }
        now += 150_000;
    }
    assert!(
        admitted >= 4,
        "the sequence should admit several calls, got {admitted}"
    );
    flush();
    let m = taken.last().cloned().unwrap_or_else(|| fresh_member(1));
    let LimitState::Concurrency(s) = &mut states[1] else {
        unreachable!()
    };
    assert_eq!(
        env.renew(&cc_key, &m, 5 * SECOND, now),
        concurrency::renew(s, &m, 5 * SECOND, now),
        "renew after a flush"
    );
    // Many concurrent calls right after a flush all succeed (each may meet NOSCRIPT).
    flush();
    let concurrent: Vec<AcquirePlan> = (0..32)
        .map(|i| {
            plan_at(
                vec![planned(
                    &unique_key(Algorithm::FixedWindow, &format!("c{i}")),
                    &Arc::new(fixed_policy(Algorithm::FixedWindow, 1, SECOND, SECOND)),
                    1,
                    None,
                )],
                now,
                true,
            )
        })
        .collect();
    let results = env.rt.block_on(futures::future::join_all(
        concurrent.iter().map(|p| env.store.acquire(p)),
    ));
    for (i, r) in results.into_iter().enumerate() {
        let d = r.unwrap_or_else(|e| panic!("concurrent call {i} after a flush failed: {e}"));
        assert!(d.allowed, "concurrent call {i}: {d:?}");
    }
    let cached: Vec<i64> = env.cmd(
        redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(scripts::ACQUIRE.get_hash()),
    );
    assert_eq!(cached, [1], "the Acquire script was not reloaded");
}

/// A request record answers a retried Acquire with the first admitted answer (the same
/// lease member) and consumes nothing more; the record has a TTL; a denial is not recorded,
/// so its retry is decided afresh.
#[test]
fn request_record_replays_the_first_answer_and_consumes_nothing_more() {
    let env = Env::start();
    let tb = Arc::new(fixed_policy(Algorithm::TokenBucket, 3, 3 * SECOND, SECOND));
    let cc = Arc::new(fixed_policy(Algorithm::Concurrency, 2, 0, 30 * SECOND));
    let ns = unique_namespace("record");
    let keys = Keys::new("fg");
    let tb_key = keys.limit(&ns, "user:42", Algorithm::TokenBucket, "api");
    let cc_key = keys.limit(&ns, "user:42", Algorithm::Concurrency, "jobs");
    let mut states = vec![
        LimitState::empty(Algorithm::TokenBucket),
        LimitState::empty(Algorithm::Concurrency),
    ];
    let plan = |tb_cost: u64, member: &str, now: Micros, record: &str| AcquirePlan {
        checks: vec![
            planned(&tb_key, &tb, tb_cost, None),
            planned(&cc_key, &cc, 1, Some(member.to_owned())),
        ],
        request_record: Some(keys.request(&ns, "user:42", record, "0123456789abcdef")),
        breakers: Vec::new(),
        consume: true,
        now: Some(now),
    };
    let status = |now: Micros| {
        plan_at(
            vec![
                planned(&tb_key, &tb, 1, None),
                planned(&cc_key, &cc, 1, None),
            ],
            now,
            false,
        )
    };

    let first = plan(1, "1~first", EPOCH, "r1");
    let a = env.acquire(&first);
    assert_eq!(a, model_acquire(&mut states, &first));
    assert!(a.allowed);
    assert_eq!(a.leases[1].as_deref(), Some("1~first"));
    let record_key = first.request_record.clone().unwrap();
    let ttl = env.pttl(&record_key);
    assert!(
        ttl > 0 && ttl <= 60_000,
        "the request record must carry its 60 s TTL, PTTL {ttl}"
    );

    let state_before = env.snapshot(&[&tb_key, &cc_key]);
    for (i, member) in ["1~second", "1~third"].iter().enumerate() {
        let retry = plan(1, member, EPOCH + 10 + i as u64, "r1");
        let b = env.acquire(&retry);
        assert_eq!(b, a, "retry {i} must get the first answer");
        assert_eq!(
            b.leases[1].as_deref(),
            Some("1~first"),
            "the first lease, not {member}"
        );
    }
    state_before.assert_unchanged(&env.snapshot(&[&tb_key, &cc_key]), "a replayed Acquire");
    let card: i64 = env.cmd(redis::cmd("ZCARD").arg(&cc_key));
    assert_eq!(card, 1, "a replay took another lease");
    // Only the first Acquire was consumed: Redis and the model (which saw it once) agree.
    let s = status(EPOCH + 20);
    let st = env.acquire(&s);
    assert_eq!(st, model_acquire(&mut states, &s));
    assert_eq!((st.checks[0].remaining, st.checks[1].remaining), (2, 1));

    // A denial consumed nothing and is not recorded: the same request id is decided afresh,
    // so a client that waited retry_after gets in (and that answer is then recorded).
    let denied = plan(3, "1~denied", EPOCH + 30, "r2");
    let d = env.acquire(&denied);
    assert_eq!(d, model_acquire(&mut states, &denied));
    assert!(!d.allowed && d.leases.iter().all(Option::is_none), "{d:?}");
    let exists: i64 = env.cmd(redis::cmd("EXISTS").arg(denied.request_record.as_ref().unwrap()));
    assert_eq!(exists, 0, "a denial was recorded");
    let early = plan(3, "1~early", EPOCH + 30 + d.checks[0].retry_after - 1, "r2");
    let e = env.acquire(&early);
    assert_eq!(
        e,
        model_acquire(&mut states, &early),
        "a retry 1 us too early"
    );
    assert!(!e.allowed, "{e:?}");
    let later = EPOCH + 30 + d.checks[0].retry_after;
    let retried = plan(3, "1~later", later, "r2");
    let r = env.acquire(&retried);
    assert_eq!(r, model_acquire(&mut states, &retried));
    assert!(
        r.allowed,
        "a retry after retry_after is decided afresh: {r:?}"
    );
    assert_eq!(r.leases[1].as_deref(), Some("1~later"));
    let replay = env.acquire(&plan(3, "1~again", later + 1, "r2"));
    assert_eq!(replay, r, "the admitted retry is now the recorded answer");
}

/// A sliding log admits large costs as one write per 500 units; the model agrees about
/// every unit.
#[test]
fn sliding_log_large_costs_decide_like_core() {
    let env = Env::start();
    let policy = Arc::new(fixed_policy(
        Algorithm::SlidingLog,
        2_000,
        10 * SECOND,
        SECOND,
    ));
    let key = unique_key(Algorithm::SlidingLog, "big");
    let mut state = LimitState::empty(Algorithm::SlidingLog);
    let t0 = EPOCH + 777;
    for (at, cost) in [
        (0, 1_250),
        (0, 500),
        (1, 251),
        (1, 250),
        (SECOND, 1),
        (5 * SECOND, 2_000),
        (10 * SECOND, 1_251),
        (10 * SECOND, 1_250),
        (10 * SECOND + 1, 1),
        (20 * SECOND, 2_000),
        (20 * SECOND + 1, 1_999),
        (30 * SECOND + 1, 2_000),
    ] {
        step_both(&env, &key, &policy, &mut state, cost, t0 + at, true);
        let LimitState::SlidingLog(log) = &state else {
            unreachable!()
        };
        let card: i64 = env.cmd(redis::cmd("ZCARD").arg(&key));
        assert_eq!(
            card as u64,
            log.len(),
            "one member per unit, as many as the model holds"
        );
    }
    let card: i64 = env.cmd(redis::cmd("ZCARD").arg(&key));
    assert_eq!(card, 2_000, "a full log of 2,000 units");
}

/// The sliding window's estimate `prev * (period - e) / period + cur` is computed in
/// doubles, and the order of those operations shows at exact boundaries: for these
/// (prev, k), where the previous window weighs exactly k, `prev * ((period - e) / period)`
/// is a little above k (25 * fl(14/25) = 14.000000000000002), which would turn a denial's
/// `remaining` of 11 into 10. Both sides must compute in the same order and agree; random
/// sequences almost never land on these points.
#[test]
fn sliding_window_float_order_matches_core_at_exact_boundaries() {
    let env = Env::start();
    for (prev, k) in [
        (25u64, 14u64),
        (29, 15),
        (35, 29),
        (38, 21),
        (41, 23),
        (58, 30),
    ] {
        let period = prev * 1_000;
        let policy = Arc::new(fixed_policy(Algorithm::SlidingWindow, prev, period, SECOND));
        let key = unique_key(Algorithm::SlidingWindow, &format!("fp{prev}-{k}"));
        let mut state = LimitState::empty(Algorithm::SlidingWindow);
        let window = EPOCH - EPOCH % period + period;
        let o = step_both(&env, &key, &policy, &mut state, prev, window, true);
        assert!(o.allowed);
        // (period - e) / period = k / prev exactly: the previous window weighs exactly k.
        let at = window + period + (prev - k) * 1_000;
        let o = step_both(&env, &key, &policy, &mut state, prev - k + 1, at, false);
        assert!(
            !o.allowed && o.remaining == prev - k,
            "prev {prev}, k {k}: {o:?}"
        );
        let o = step_both(&env, &key, &policy, &mut state, prev - k + 1, at, true);
        assert!(
            !o.allowed && o.remaining == prev - k,
            "prev {prev}, k {k}: {o:?}"
        );
        let o = step_both(&env, &key, &policy, &mut state, prev - k, at, true);
        assert!(o.allowed && o.remaining == 0, "prev {prev}, k {k}: {o:?}");
    }
}

// ---------------------------------------------------------------------------------------
// TTLs: every key that can be re-derived carries one
// ---------------------------------------------------------------------------------------

fn ms(us: Micros) -> i64 {
    i64::try_from(us.div_ceil(1_000)).unwrap()
}

/// Acquires once on an explicit clock and once on Redis's clock (on another key), and
/// checks each key's TTL against how long its state lasts: `state_us(now)`, which the
/// explicit-clock TTL exceeds by the scripts' 60 s test slack.
fn assert_ttl(algorithm: Algorithm, state_us: impl Fn(Micros) -> Micros) {
    let env = Env::start();
    let policy = Arc::new(fixed_policy(algorithm, 10, 30 * SECOND, 20 * SECOND));
    let member = |cost| (algorithm == Algorithm::Concurrency).then(|| fresh_member(cost));

    let key = unique_key(algorithm, "ttl");
    let now = EPOCH + 123_456_789;
    let d = env.acquire(&plan_at(
        vec![planned(&key, &policy, 3, member(3))],
        now,
        true,
    ));
    assert!(d.allowed, "{d:?}");
    let expected = ms(state_us(now)) + TEST_TTL_SLACK_MS;
    let ttl = env.pttl(&key);
    assert!(
        ttl > 0 && ttl <= expected && ttl > expected - TTL_MARGIN_MS,
        "{algorithm:?} on an explicit clock: PTTL {ttl} ms, want about {expected} ms \
         ({} ms of state + {TEST_TTL_SLACK_MS} ms test slack)",
        ms(state_us(now))
    );

    // On Redis's own clock there is no slack; the state's lifetime bounds the TTL.
    let key = unique_key(algorithm, "ttl-time");
    let mut plan = plan_at(vec![planned(&key, &policy, 1, member(1))], 0, true);
    plan.now = None;
    assert!(env.acquire(&plan).allowed);
    let ttl = env.pttl(&key);
    // (shortest, longest) the state can live; a fixed window may end any moment.
    let (shortest, longest) = match algorithm {
        Algorithm::TokenBucket => (3_000, 3_000),
        Algorithm::SlidingWindow => (30_000, 60_000),
        Algorithm::SlidingLog => (30_000, 30_000),
        Algorithm::FixedWindow => (1, 30_000),
        Algorithm::Concurrency => (20_000, 20_000),
    };
    assert!(
        ttl > 0 && ttl <= longest && ttl > shortest - TTL_MARGIN_MS,
        "{algorithm:?} on Redis TIME: PTTL {ttl} ms, want about {shortest}..={longest}"
    );
}

#[test]
fn token_bucket_key_has_a_ttl() {
    // 10 per 30 s: one token is 3 s; 3 taken from a full bucket refill in 9 s.
    assert_ttl(Algorithm::TokenBucket, |_| 9 * SECOND);
}

#[test]
fn sliding_window_key_has_a_ttl() {
    // The current window's count weighs until the end of the next window.
    assert_ttl(Algorithm::SlidingWindow, |now| {
        let p = 30 * SECOND;
        now - now % p + 2 * p - now
    });
}

#[test]
fn sliding_log_key_has_a_ttl() {
    assert_ttl(Algorithm::SlidingLog, |_| 30 * SECOND);
}

#[test]
fn fixed_window_key_has_a_ttl() {
    assert_ttl(Algorithm::FixedWindow, |now| {
        let p = 30 * SECOND;
        now - now % p + p - now
    });
}

#[test]
fn concurrency_key_has_a_ttl() {
    assert_ttl(Algorithm::Concurrency, |_| 20 * SECOND);
}

/// llm-d-async #336: a lease set whose TTL is set only by its first acquire expires under
/// later, longer leases. The TTL follows the latest lease on every acquire, renew and
/// release.
#[test]
fn concurrency_ttl_follows_the_latest_lease_llm_d_async_336() {
    let env = Env::start();
    let short = Arc::new(fixed_policy(Algorithm::Concurrency, 3, 0, SECOND));
    // Same slots, longer leases: lease_ttl is not part of an inline policy's fingerprint,
    // so both share one lease set.
    let long = Arc::new(fixed_policy(Algorithm::Concurrency, 3, 0, 100 * SECOND));
    let key = unique_key(Algorithm::Concurrency, "leases");
    let mut state = LimitState::empty(Algorithm::Concurrency);
    let near = |ttl: i64, want_ms: i64, what: &str| {
        let want = want_ms + TEST_TTL_SLACK_MS;
        assert!(
            ttl <= want && ttl > want - TTL_MARGIN_MS,
            "{what}: PTTL {ttl} ms, want about {want} ms"
        );
    };
    let t0 = EPOCH;
    step_both(&env, &key, &short, &mut state, 1, t0, true);
    near(env.pttl(&key), 1_000, "after a 1 s lease");
    step_both(&env, &key, &long, &mut state, 1, t0 + 500_000, true);
    near(env.pttl(&key), 100_000, "after a later 100 s lease");

    let key2 = unique_key(Algorithm::Concurrency, "renew");
    let mut state2 = LimitState::empty(Algorithm::Concurrency);
    let m = fresh_member(1);
    let plan = plan_at(vec![planned(&key2, &short, 1, Some(m.clone()))], t0, true);
    assert_eq!(
        env.acquire(&plan),
        model_acquire(std::slice::from_mut(&mut state2), &plan)
    );
    assert_eq!(
        env.renew(&key2, &m, 200 * SECOND, t0 + 900_000),
        Some(200 * SECOND)
    );
    near(env.pttl(&key2), 200_000, "after renewing for 200 s");
    // Releasing the longest lease brings the TTL back to the remaining latest one.
    let m2 = fresh_member(1);
    let plan = plan_at(
        vec![planned(&key2, &short, 1, Some(m2))],
        t0 + 950_000,
        true,
    );
    assert!(env.acquire(&plan).allowed);
    near(
        env.pttl(&key2),
        200_000,
        "a shorter lease keeps the longest one's TTL",
    );
    assert!(env.release(&key2, &m, t0 + 960_000));
    near(env.pttl(&key2), 990, "after releasing the 200 s lease");
}

// ---------------------------------------------------------------------------------------
// Memory per idle key
// ---------------------------------------------------------------------------------------

fn memory_usage(env: &Env, key: &str) -> i64 {
    env.cmd(
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0),
    )
}

/// `MEMORY USAGE` of each algorithm's key after one admitted request (and of sliding logs
/// and lease sets holding more), for the README. A token bucket must stay a small string.
#[test]
fn memory_usage_per_idle_key() {
    let env = Env::start();
    let keys = Keys::new("fg");
    // A realistic key: `fg:{<12-char namespace>:user:42}:<code>:api`, 32 bytes.
    let key_of = |algorithm: Algorithm, tag: &str| {
        let ns = &unique_namespace("m")[..12];
        keys.limit(ns, "user:42", algorithm, tag)
    };
    let mut figures = Vec::new();
    let now = EPOCH + 42_424_242;
    for algorithm in Algorithm::ALL {
        let policy = Arc::new(fixed_policy(algorithm, 100, 60 * SECOND, 60 * SECOND));
        let key = key_of(algorithm, "api");
        let member = (algorithm == Algorithm::Concurrency).then(|| fresh_member(1));
        let d = env.acquire(&plan_at(vec![planned(&key, &policy, 1, member)], now, true));
        assert!(d.allowed);
        let bytes = memory_usage(&env, &key);
        println!(
            "MEMORY USAGE {:<15} {bytes:>6} bytes (key {key:?}, {} bytes)",
            algorithm.name(),
            key.len()
        );
        figures.push((algorithm, bytes));
    }
    for (n, limit) in [
        (100u64, 10_000u64),
        (128, 10_000),
        (129, 10_000),
        (1_000, 10_000),
    ] {
        let policy = Arc::new(fixed_policy(
            Algorithm::SlidingLog,
            limit,
            60 * SECOND,
            SECOND,
        ));
        let key = key_of(Algorithm::SlidingLog, "api");
        for i in 0..n {
            env.acquire(&plan_at(
                vec![planned(&key, &policy, 1, None)],
                now + i,
                true,
            ));
        }
        println!(
            "MEMORY USAGE sliding_log with {n:>5} units in the window: {:>7} bytes",
            memory_usage(&env, &key)
        );
    }
    for n in [10u64, 100, 128, 129] {
        let policy = Arc::new(fixed_policy(Algorithm::Concurrency, 1_000, 0, 60 * SECOND));
        let key = key_of(Algorithm::Concurrency, "api");
        for i in 0..n {
            let d = env.acquire(&plan_at(
                vec![planned(&key, &policy, 1, Some(fresh_member(1)))],
                now + i,
                true,
            ));
            assert!(d.allowed);
        }
        println!(
            "MEMORY USAGE concurrency with {n:>5} live leases:       {:>7} bytes",
            memory_usage(&env, &key)
        );
    }
    let tb = figures
        .iter()
        .find(|(a, _)| *a == Algorithm::TokenBucket)
        .map(|&(_, b)| b)
        .unwrap();
    assert!(
        tb <= 200,
        "an idle token bucket costs {tb} bytes, want <= 200"
    );
}
