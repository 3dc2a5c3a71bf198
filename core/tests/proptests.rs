//! Property tests of every algorithm's promises, on an explicit clock.
//!
//! Each test drives a random sequence of (clock advance, cost) steps through one algorithm
//! and checks what it promises: never more than it admits in any window it speaks of,
//! `remaining` within the capacity, and an honest `retry_after` (waiting exactly that long
//! admits the same cost; for the exact algorithms one microsecond less does not).
use floodgate_core::{
    Algorithm, CheckOutcome, Micros, Policy, PolicySpec,
    acquire::{CheckRequest, LimitState, acquire},
    concurrency, fixed_window, sliding_log, sliding_window, token_bucket,
};
use proptest::prelude::*;

const T0: Micros = 1_700_000_000_000_000;

fn policy(algorithm: Algorithm, limit: u64, period: Micros, burst: u64) -> Policy {
    Policy::new(PolicySpec {
        algorithm,
        limit,
        period,
        burst,
        fail_mode: None,
        lease_ttl: Some(period.max(1_000)),
        shadow: false,
    })
    .unwrap()
}

/// (limit, period, burst) and steps of (advance, cost per mille of the capacity).
fn scenario() -> impl Strategy<Value = (u64, Micros, u64, Vec<(Micros, u64)>)> {
    (1u64..=20, 1_000u64..=10_000_000, 0u64..=30).prop_flat_map(|(limit, period, burst)| {
        let step = (
            prop_oneof![Just(0u64), 0..=period / 8 + 1, 0..=2 * period],
            0u64..=1000,
        );
        (
            Just(limit),
            Just(period),
            Just(burst),
            prop::collection::vec(step, 1..80),
        )
    })
}

fn cost(capacity: u64, per_mille: u64) -> u64 {
    (capacity * per_mille / 1000).clamp(1, capacity)
}

/// Sum of admitted costs in every window `[t, t + len)` that starts at an admission.
fn max_in_any_window(admitted: &[(Micros, u64)], len: Micros) -> u64 {
    admitted
        .iter()
        .map(|&(t, _)| {
            admitted
                .iter()
                .filter(|&&(u, _)| u >= t && u < t + len)
                .map(|&(_, c)| c)
                .sum()
        })
        .max()
        .unwrap_or(0)
}

/// Checks that a denial's `retry_after` is honest (and, if `tight`, the least such wait),
/// by asking `decide` on the unchanged state.
fn check_retry(
    o: &CheckOutcome,
    now: Micros,
    tight: bool,
    decide: impl Fn(Micros) -> CheckOutcome,
) -> Result<(), TestCaseError> {
    if o.allowed {
        prop_assert_eq!(o.retry_after, 0);
        return Ok(());
    }
    prop_assert!(
        o.retry_after > 0,
        "a denial must say when to retry: {:?}",
        o
    );
    prop_assert!(
        decide(now + o.retry_after).allowed,
        "retry_after {} is not honest",
        o.retry_after
    );
    if tight {
        prop_assert!(
            !decide(now + o.retry_after - 1).allowed,
            "retry_after {} is not the least wait",
            o.retry_after
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn token_bucket_admits_at_most_burst_plus_limit_per_period((limit, period, burst, steps) in scenario()) {
        prop_assume!(limit <= period);
        let p = policy(Algorithm::TokenBucket, limit, period, burst);
        let mut s = token_bucket::State::default();
        let (mut now, mut admitted) = (T0, Vec::new());
        for (advance, per_mille) in steps {
            now += advance;
            let c = cost(p.capacity(), per_mille);
            let before = s;
            let o = token_bucket::token_bucket(&mut s, &p, now, c);
            prop_assert!(o.remaining <= p.capacity());
            prop_assert_eq!(o.limit, p.capacity());
            check_retry(&o, now, true, |t| token_bucket::check(&before, &p, t, c))?;
            if o.allowed {
                admitted.push((now, c));
            }
        }
        let most = max_in_any_window(&admitted, period);
        prop_assert!(most <= p.capacity() + limit, "{} admitted in one period", most);
    }

    #[test]
    fn fixed_window_admits_at_most_limit_per_window((limit, period, _b, steps) in scenario()) {
        let p = policy(Algorithm::FixedWindow, limit, period, 0);
        let mut s = fixed_window::State::default();
        let (mut now, mut admitted) = (T0, Vec::new());
        for (advance, per_mille) in steps {
            now += advance;
            let c = cost(limit, per_mille);
            let before = s;
            let o = fixed_window::fixed_window(&mut s, &p, now, c);
            prop_assert!(o.remaining <= limit);
            check_retry(&o, now, true, |t| fixed_window::check(&before, &p, t, c))?;
            if o.allowed {
                admitted.push((now, c));
            }
        }
        for &(t, _) in &admitted {
            let w = t / period;
            let in_window: u64 = admitted.iter().filter(|&&(u, _)| u / period == w).map(|&(_, c)| c).sum();
            prop_assert!(in_window <= limit);
        }
    }

    #[test]
    fn sliding_log_is_exact_over_every_window((limit, period, _b, steps) in scenario()) {
        let p = policy(Algorithm::SlidingLog, limit, period, 0);
        let mut s = sliding_log::State::default();
        let (mut now, mut admitted) = (T0, Vec::new());
        for (advance, per_mille) in steps {
            now += advance;
            let c = cost(limit, per_mille);
            let before = s.clone();
            let o = sliding_log::sliding_log(&mut s, &p, now, c);
            prop_assert!(o.remaining <= limit);
            check_retry(&o, now, true, |t| sliding_log::check(&before, &p, t, c))?;
            if o.allowed {
                admitted.push((now, c));
            }
        }
        prop_assert!(max_in_any_window(&admitted, period) <= limit);
    }

    #[test]
    fn sliding_window_stays_within_its_bound((limit, period, _b, steps) in scenario()) {
        let p = policy(Algorithm::SlidingWindow, limit, period, 0);
        let mut s = sliding_window::State::default();
        let (mut now, mut admitted) = (T0, Vec::new());
        for (advance, per_mille) in steps {
            now += advance;
            let c = cost(limit, per_mille);
            let before = s;
            let o = sliding_window::sliding_window(&mut s, &p, now, c);
            prop_assert!(o.remaining <= limit);
            check_retry(&o, now, false, |t| sliding_window::check(&before, &p, t, c))?;
            if o.allowed {
                admitted.push((now, c));
            }
        }
        for &(t, _) in &admitted {
            let w = t / period;
            let in_window: u64 = admitted.iter().filter(|&&(u, _)| u / period == w).map(|&(_, c)| c).sum();
            prop_assert!(in_window <= limit, "aligned window over the limit");
        }
        prop_assert!(max_in_any_window(&admitted, period) <= 2 * limit);
    }

    /// Leases: live slots never exceed the limit; a denial's retry_after is honest when
    /// nothing is released meanwhile; releases free slots.
    #[test]
    fn concurrency_never_exceeds_its_slots(
        (limit, ttl) in (1u64..=10, 1_000u64..=5_000_000),
        steps in prop::collection::vec((0u64..=3_000_000, 0u64..=1000, 0usize..4), 1..80),
    ) {
        let p = Policy::new(PolicySpec {
            algorithm: Algorithm::Concurrency,
            limit,
            period: 0,
            burst: 0,
            fail_mode: None,
            lease_ttl: Some(ttl),
            shadow: false,
        })
        .unwrap();
        let mut s = concurrency::State::default();
        let mut live: Vec<(String, u64, Micros)> = Vec::new();
        let mut now = T0;
        for (i, (advance, per_mille, action)) in steps.into_iter().enumerate() {
            now += advance;
            live.retain(|&(_, _, exp)| exp > now);
            if action == 0 && !live.is_empty() {
                let (m, _, _) = live.remove(i % live.len());
                prop_assert!(concurrency::release(&mut s, &m, now));
                continue;
            }
            let c = cost(limit, per_mille);
            let m = concurrency::member(c, &format!("l{i}"));
            let before = s.clone();
            let o = concurrency::concurrency(&mut s, &p, &m, now, c);
            check_retry(&o, now, true, |t| concurrency::decide(&before, limit, ttl, t, c))?;
            if o.allowed {
                live.push((m, c, now + ttl));
            }
            let used: u64 = live.iter().map(|&(_, c, _)| c).sum();
            prop_assert!(used <= limit, "{} slots held of {}", used, limit);
            prop_assert_eq!(o.remaining, limit - used);
        }
    }

    /// All-or-nothing: a denied Acquire leaves every state as it was; Status never changes
    /// a state; shadow checks never make the answer deny.
    #[test]
    fn acquire_is_all_or_nothing(
        specs in prop::collection::vec((0usize..5, 1u64..=5, prop::bool::weighted(0.3)), 1..5),
        steps in prop::collection::vec((0u64..=400_000, prop::bool::weighted(0.2)), 1..40),
    ) {
        let policies: Vec<Policy> = specs
            .iter()
            .map(|&(a, limit, shadow)| {
                let algorithm = Algorithm::ALL[a];
                Policy::new(PolicySpec {
                    algorithm,
                    limit,
                    period: 1_000_000,
                    burst: 0,
                    fail_mode: None,
                    lease_ttl: Some(1_000_000),
                    shadow,
                })
                .unwrap()
            })
            .collect();
        let mut states: Vec<LimitState> = policies.iter().map(|p| LimitState::empty(p.algorithm())).collect();
        let mut now = T0;
        for (i, (advance, status)) in steps.into_iter().enumerate() {
            now += advance;
            let members: Vec<String> = (0..policies.len()).map(|j| concurrency::member(1, &format!("s{i}c{j}"))).collect();
            let reqs: Vec<CheckRequest<'_>> = policies
                .iter()
                .zip(&members)
                .map(|(p, m)| CheckRequest { policy: p, cost: 1, lease_member: Some(m) })
                .collect();
            let before = states.clone();
            let mut refs: Vec<&mut LimitState> = states.iter_mut().collect();
            let o = acquire(&mut refs, &reqs, now, !status);
            let all_real_allow = o.checks.iter().zip(&policies).all(|(c, p)| c.allowed || p.shadow());
            prop_assert_eq!(o.allowed, all_real_allow);
            if status || !o.allowed {
                prop_assert_eq!(&states, &before, "a denial or a Status changed state");
            }
            if policies.iter().all(Policy::shadow) {
                prop_assert!(o.allowed, "only shadow checks, and the answer denied");
            }
        }
    }
}
