//! The two stores behind the `Store` trait answer alike: the in-memory store (the `core`
//! model behind a mutex, what `floodgate serve` runs without Redis) and the Redis store (the
//! Lua scripts), fed the same random plans on an explicit clock.
//!
//! Beyond the algorithm conformance of `conformance.rs`, this covers what the stores add:
//! lease members in the answer, request records replaying the first answer, release and
//! renew through the trait, and the memory store's background sweep, which may drop a
//! state only once it is equivalent to an empty one (`expires_at`), so sweeping at any
//! moment never changes a later decision.
use std::sync::Arc;

use floodgate_core::{
    Algorithm, ManualClock, Micros, Policy, PolicySpec, policy::MIN_LEASE_TTL, time::SECOND,
};
use floodgate_server::{
    keys::Keys,
    store::{AcquirePlan, PlannedCheck, Store, StoreDecision, memory::MemoryStore},
};
use floodgate_tests::{
    conformance_support::{EPOCH, Env, fresh_member, planned, runner},
    unique_namespace,
};
use proptest::{prelude::*, test_runner::TestCaseError};

/// Request records answer for 60 s in both stores (the memory store on the explicit
/// clock, Redis in real time); a scenario reuses a request id only within that time.
const RECORD_LIFETIME: Micros = 60 * SECOND;

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(Algorithm::ALL.to_vec()),
        prop_oneof![3 => 1u64..=5, 1 => 6u64..=40],
        prop_oneof![
            Just(1_000u64),
            1_000u64..=100_000,
            100_000u64..=5_000_000,
            Just(3_600 * SECOND)
        ],
        prop_oneof![Just(0u64), 1u64..=10],
        prop_oneof![Just(MIN_LEASE_TTL), MIN_LEASE_TTL..=5_000_000],
        prop::bool::weighted(0.2),
    )
        .prop_filter_map(
            "a valid policy",
            |(algorithm, limit, period, burst, lease_ttl, shadow)| {
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

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Acquire with costs (raw, mapped into `1..=capacity`); `retry` reuses the last
    /// request id when it is still answering.
    Acquire {
        costs: [u64; 3],
        record: bool,
        retry: bool,
    },
    Status {
        costs: [u64; 3],
    },
    Release(usize),
    Renew(usize, u64),
    /// The memory store's background sweep runs now.
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let costs = [any::<u64>(), any::<u64>(), any::<u64>()];
    prop_oneof![
        8 => (costs, prop::bool::weighted(0.4), prop::bool::weighted(0.4))
            .prop_map(|(costs, record, retry)| Op::Acquire { costs, record, retry }),
        2 => costs.prop_map(|costs| Op::Status { costs }),
        1 => any::<usize>().prop_map(Op::Release),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(i, t)| Op::Renew(i, t)),
        2 => Just(Op::Sweep),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    policies: Vec<Policy>,
    steps: Vec<(u64, usize, Op)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(policy(), 1..=3),
        prop::collection::vec((any::<u64>(), 0usize..3, op()), 20..=40),
    )
        .prop_map(|(policies, steps)| Scenario { policies, steps })
}

fn span(p: &Policy) -> Micros {
    if p.algorithm() == Algorithm::Concurrency {
        p.lease_ttl()
    } else {
        p.period()
    }
}

fn run(env: &Env, sc: &Scenario) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(EPOCH);
    let memory = MemoryStore::new(Arc::new(clock.clone()));
    let ns = unique_namespace("stores");
    let keys = Keys::new("fg");
    let policies: Vec<Arc<Policy>> = sc.policies.iter().cloned().map(Arc::new).collect();
    let names: Vec<String> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| keys.limit(&ns, "user:42", p.algorithm(), &format!("p{i}")))
        .collect();
    let mut now = EPOCH;
    let mut members: Vec<(usize, String)> = Vec::new();
    let mut last_record: Option<(String, Micros, AcquirePlan)> = None;
    let mut records = 0;
    for (i, &(raw_advance, by, op)) in sc.steps.iter().enumerate() {
        // 0, exactly one span, or uniform in 0..=2 spans of one of the checks.
        let s = span(&policies[by % policies.len()]);
        now += match raw_advance % 4 {
            0 => 0,
            1 => s,
            _ => raw_advance % (2 * s + 1),
        };
        clock.set(now);
        let build = |costs: [u64; 3], consume: bool| -> Vec<PlannedCheck> {
            policies
                .iter()
                .zip(&names)
                .zip(costs)
                .map(|((p, k), raw)| {
                    let cost = 1 + raw % p.capacity();
                    let member = (consume && p.algorithm() == Algorithm::Concurrency)
                        .then(|| fresh_member(cost));
                    planned(k, p, cost, member)
                })
                .collect()
        };
        let compare = |plan: &AcquirePlan| -> Result<StoreDecision, TestCaseError> {
            let m = env.rt.block_on(memory.acquire(plan)).unwrap();
            let r = env.acquire(plan);
            prop_assert_eq!(
                &r,
                &m,
                "step {} at +{} us: Redis store (left) vs memory store (right), plan {:?}",
                i,
                now - EPOCH,
                plan
            );
            Ok(r)
        };
        match op {
            Op::Acquire {
                costs,
                record,
                retry,
            } => {
                let reusable = last_record
                    .as_ref()
                    .filter(|(_, at, _)| retry && now < at + RECORD_LIFETIME);
                let plan = if let Some((_, _, first)) = reusable {
                    // A retry of the same request: same checks and record, fresh lease ids
                    // (a retried call makes new ones), a later clock.
                    let mut again = first.clone();
                    again.now = Some(now);
                    for c in &mut again.checks {
                        if let Some(m) = &mut c.lease_member {
                            *m = fresh_member(c.cost);
                        }
                    }
                    again
                } else {
                    let mut plan = AcquirePlan {
                        checks: build(costs, true),
                        request_record: None,
                        breakers: Vec::new(),
                        consume: true,
                        now: Some(now),
                    };
                    if record {
                        records += 1;
                        let id = format!("r{records}");
                        let key = keys.request(&ns, "user:42", &id, "00000000000000ff");
                        plan.request_record = Some(key.clone());
                        last_record = Some((key, now, plan.clone()));
                    }
                    plan
                };
                let d = compare(&plan)?;
                for (c, l) in d.leases.iter().enumerate() {
                    if let Some(l) = l {
                        members.push((c, l.clone()));
                    }
                }
            }
            Op::Status { costs } => {
                compare(&AcquirePlan {
                    checks: build(costs, false),
                    request_record: None,
                    breakers: Vec::new(),
                    consume: false,
                    now: Some(now),
                })?;
            }
            Op::Release(n) | Op::Renew(n, _) => {
                let Some((c, m)) = (!members.is_empty())
                    .then(|| members[n % members.len()].clone())
                    .or_else(|| {
                        policies
                            .iter()
                            .position(|p| p.algorithm() == Algorithm::Concurrency)
                            .map(|c| (c, fresh_member(1)))
                    })
                else {
                    continue;
                };
                if let Op::Renew(_, raw) = op {
                    let ttl = MIN_LEASE_TTL + raw % (2 * policies[c].lease_ttl());
                    let m1 = env
                        .rt
                        .block_on(memory.renew(&names[c], &m, ttl, Some(now)))
                        .unwrap();
                    let r1 = env.renew(&names[c], &m, ttl, now);
                    prop_assert_eq!(r1, m1, "step {} renew {}: Redis vs memory", i, m);
                } else {
                    let m1 = env
                        .rt
                        .block_on(memory.release(&names[c], &m, Some(now)))
                        .unwrap();
                    let r1 = env.release(&names[c], &m, now);
                    prop_assert_eq!(r1, m1, "step {} release {}: Redis vs memory", i, m);
                }
            }
            Op::Sweep => {
                memory.sweep();
            }
        }
    }
    Ok(())
}

/// Random plans of 1-3 checks (some shadow) with request ids, Status, releases, renewals
/// and sweeps: the Redis store and the memory store give identical answers throughout.
#[test]
fn redis_and_memory_stores_answer_alike() {
    let env = Env::start();
    let mut runner = runner(file!(), 64);
    if let Err(e) = runner.run(&scenario(), |sc| run(&env, &sc)) {
        panic!("the stores disagree: {e}");
    }
}
