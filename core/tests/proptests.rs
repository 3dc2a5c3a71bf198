//! Property tests of every algorithm's promises, on an explicit clock.
//!
//! Each test drives a random sequence of (clock advance, cost) steps through one algorithm
//! and checks what its module documentation promises: never more admitted than it allows in
//! any window it speaks of, `remaining` within the capacity, and an honest `retry_after`
//! (waiting exactly that long admits the same cost; for the exact algorithms one microsecond
//! less does not). Acquire is checked against the single-check functions (a denied
//! Acquire's checks report their limits as they are, like Status): all or nothing,
//! shadow checks never deny, Status never writes.
use floodgate_core::{
    Algorithm, CheckOutcome, Micros, Policy, PolicySpec,
    acquire::{CheckRequest, LimitState, acquire},
    concurrency, fixed_window, sliding_log, sliding_window, token_bucket,
};
use proptest::prelude::*;

/// A plausible "now" (late 2023); each scenario adds an offset so windows align differently.
const T0: Micros = 1_700_000_000_000_000;

fn policy(
    algorithm: Algorithm,
    limit: u64,
    period: Micros,
    burst: u64,
    lease_ttl: Micros,
    shadow: bool,
) -> Policy {
    Policy::new(PolicySpec {
        algorithm,
        limit,
        period,
        burst,
        fail_mode: None,
        lease_ttl: Some(lease_ttl),
        shadow,
    })
    .unwrap()
}

/// A clock advance: often none (a burst), often a small step, sometimes several periods.
fn advance(period: Micros) -> impl Strategy<Value = Micros> {
    prop_oneof![
        3 => Just(0u64),
        4 => 0..=period / 8 + 1,
        3 => 0..=period,
        1 => 0..=3 * period,
    ]
}

/// A limit: usually small, so limits are hit; sometimes huge, so the float arithmetic of the
/// sliding window and the large products of the token bucket are exercised.
fn limit() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 1u64..=20, 1 => 1u64..=1_000_000_000]
}

/// A period: tiny (a few microseconds per unit, so rounding matters) up to ten seconds.
fn period(limit: u64) -> impl Strategy<Value = Micros> {
    let lo = limit.max(1);
    prop_oneof![
        lo..=lo.saturating_mul(4),
        lo.max(1_000)..=lo.max(10_000_000),
    ]
}

/// A request cost in `1..=capacity`, from a per-mille draw (small costs are the most likely).
fn cost(capacity: u64, per_mille: u64) -> u64 {
    let c = (u128::from(capacity) * u128::from(per_mille) / 1000) as u64;
    c.clamp(1, capacity)
}

fn per_mille() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 2 => 0u64..=200, 1 => 0u64..=1000]
}

/// One rate-limit scenario: (limit, period, burst, start offset, steps of (advance, cost per
/// mille of the capacity)).
type Scenario = (u64, Micros, u64, Micros, Vec<(Micros, u64)>);

fn scenario() -> impl Strategy<Value = Scenario> {
    limit()
        .prop_flat_map(|limit| (Just(limit), period(limit)))
        .prop_flat_map(|(limit, period)| {
            (
                Just(limit),
                Just(period),
                prop_oneof![2 => Just(0u64), 1 => 1u64..=30],
                0..2 * period,
                prop::collection::vec((advance(period), per_mille()), 1..80),
            )
        })
}

/// Sum of admitted costs over every window `[t, t + len)` that starts at an admission (the
/// most any window of length `len` holds is attained by one of these).
fn max_in_any_window(admitted: &[(Micros, u64)], len: Micros) -> u128 {
    admitted
        .iter()
        .map(|&(t, _)| {
            admitted
                .iter()
                .filter(|&&(u, _)| u >= t && u - t < len)
                .map(|&(_, c)| u128::from(c))
                .sum()
        })
        .max()
        .unwrap_or(0)
}

/// Sum of admitted costs in the fullest window aligned to the epoch.
fn max_in_aligned_window(admitted: &[(Micros, u64)], period: Micros) -> u128 {
    admitted
        .iter()
        .map(|&(t, _)| {
            admitted
                .iter()
                .filter(|&&(u, _)| u / period == t / period)
                .map(|&(_, c)| u128::from(c))
                .sum()
        })
        .max()
        .unwrap_or(0)
}

/// Checks that a denial's `retry_after` is honest (and, if `tight`, the least such wait) by
/// deciding the same cost on the unchanged state at the later times.
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
    let later = decide(now + o.retry_after);
    prop_assert!(
        later.allowed,
        "retry_after {} is not honest: {:?} then {:?}",
        o.retry_after,
        o,
        later
    );
    if tight {
        prop_assert!(
            !decide(now + o.retry_after - 1).allowed,
            "retry_after {} is not the least wait: {:?}",
            o.retry_after,
            o
        );
    }
    Ok(())
}

/// Checks that `remaining` is exact: right after the step, a cost of `remaining` fits and one
/// more unit does not (`decide` asks the state after the step, at the same instant).
fn check_remaining(
    o: &CheckOutcome,
    capacity: u64,
    decide: impl Fn(u64) -> CheckOutcome,
) -> Result<(), TestCaseError> {
    let r = o.remaining;
    prop_assert!(r <= capacity, "remaining {} above capacity {}", r, capacity);
    if r > 0 {
        prop_assert!(decide(r).allowed, "remaining {} does not fit: {:?}", r, o);
    }
    if r < capacity {
        prop_assert!(
            !decide(r + 1).allowed,
            "more than remaining {} fits: {:?}",
            r,
            o
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// GCRA: at most burst + limit in any window of one period; remaining within the
    /// capacity; retry_after honest and tight.
    #[test]
    fn token_bucket_admits_at_most_burst_plus_limit_per_period(
        (limit, period, burst, start, steps) in scenario()
    ) {
        prop_assume!(limit <= period);
        let spec = PolicySpec {
            algorithm: Algorithm::TokenBucket,
            limit,
            period,
            burst,
            fail_mode: None,
            lease_ttl: None,
            shadow: false,
        };
        // A huge burst at a slow rate may be refused (BurstSpanTooLong): nothing to test.
        let Ok(p) = Policy::new(spec) else { return Ok(()) };
        let cap = p.capacity();
        let mut s = token_bucket::State::default();
        let (mut now, mut admitted) = (T0 + start, Vec::new());
        for (adv, pm) in steps {
            now += adv;
            let c = cost(cap, pm);
            let before = s;
            let o = token_bucket::token_bucket(&mut s, &p, now, c);
            prop_assert_eq!(o.limit, cap);
            check_remaining(&o, cap, |k| token_bucket::check(&s, &p, now, k))?;
            if o.allowed {
                admitted.push((now, c));
            } else {
                prop_assert_eq!(s, before, "a denial changed the bucket");
            }
            check_retry(&o, now, true, |t| token_bucket::check(&before, &p, t, c))?;
        }
        let most = max_in_any_window(&admitted, period);
        prop_assert!(
            most <= u128::from(cap + limit),
            "{} admitted in one period (burst {}, limit {})", most, cap, limit
        );
    }

    /// Fixed window: at most limit per aligned window; retry_after honest and tight.
    #[test]
    fn fixed_window_admits_at_most_limit_per_window((limit, period, _b, start, steps) in scenario()) {
        let p = policy(Algorithm::FixedWindow, limit, period, 0, 1_000, false);
        let mut s = fixed_window::State::default();
        let (mut now, mut admitted) = (T0 + start, Vec::new());
        for (adv, pm) in steps {
            now += adv;
            let c = cost(limit, pm);
            let before = s;
            let o = fixed_window::fixed_window(&mut s, &p, now, c);
            prop_assert_eq!(o.limit, limit);
            check_remaining(&o, limit, |k| fixed_window::check(&s, &p, now, k))?;
            if o.allowed {
                admitted.push((now, c));
            } else {
                prop_assert_eq!(s, before, "a denial changed the window");
            }
            check_retry(&o, now, true, |t| fixed_window::check(&before, &p, t, c))?;
        }
        let most = max_in_aligned_window(&admitted, period);
        prop_assert!(most <= u128::from(limit), "{} admitted in one window", most);
    }

    /// Sliding log: exact, at most limit in every window (t - period, t]; retry_after
    /// honest and tight.
    #[test]
    fn sliding_log_is_exact_over_every_window((limit, period, _b, start, steps) in scenario()) {
        // The server caps a log's limit (10,000 by default); stay well inside it.
        let limit = limit.min(200);
        let p = policy(Algorithm::SlidingLog, limit, period, 0, 1_000, false);
        let mut s = sliding_log::State::default();
        let (mut now, mut admitted) = (T0 + start, Vec::new());
        for (adv, pm) in steps {
            now += adv;
            let c = cost(limit, pm);
            let before = s.clone();
            let o = sliding_log::sliding_log(&mut s, &p, now, c);
            prop_assert_eq!(o.limit, limit);
            check_remaining(&o, limit, |k| sliding_log::check(&s, &p, now, k))?;
            if o.allowed {
                admitted.push((now, c));
            } else {
                prop_assert_eq!(&s, &before, "a denial changed the log");
            }
            check_retry(&o, now, true, |t| sliding_log::check(&before, &p, t, c))?;
            // The log keeps no more than one period's worth of what it admitted.
            let live: u64 = admitted.iter().filter(|&&(t, _)| t + period > now).map(|&(_, c)| c).sum();
            prop_assert_eq!(sliding_log::peek(&s, &p, now).0, limit - live);
        }
        // (t - period, t] for every admission t, i.e. [u, u + period) ending at t.
        let most = max_in_any_window(&admitted, period);
        prop_assert!(most <= u128::from(limit), "{} admitted in one period", most);
    }

    /// Sliding window: at most limit per aligned window, 2 x limit in any period, and the
    /// documented bound: a burst lasting d (<= period) admits at most limit * (1 + d / period).
    /// retry_after honest.
    #[test]
    fn sliding_window_stays_within_its_bound((limit, period, _b, start, steps) in scenario()) {
        let p = policy(Algorithm::SlidingWindow, limit, period, 0, 1_000, false);
        let mut s = sliding_window::State::default();
        let (mut now, mut admitted) = (T0 + start, Vec::new());
        for (adv, pm) in steps {
            now += adv;
            let c = cost(limit, pm);
            let before = s;
            let o = sliding_window::sliding_window(&mut s, &p, now, c);
            prop_assert_eq!(o.limit, limit);
            prop_assert!(o.remaining <= limit);
            if o.allowed {
                admitted.push((now, c));
            } else {
                prop_assert_eq!(s, before, "a denial changed the counters");
            }
            check_retry(&o, now, false, |t| sliding_window::check(&before, &p, t, c))?;
        }
        let (l, per) = (u128::from(limit), u128::from(period));
        let most = max_in_aligned_window(&admitted, period);
        prop_assert!(most <= l, "{} admitted in one aligned window", most);
        let most = max_in_any_window(&admitted, period);
        prop_assert!(most <= 2 * l, "{} admitted in one period", most);
        // Every burst [t_i, t_j] with d = t_j - t_i <= period: sum * period <= limit * (period + d).
        for (i, &(ti, _)) in admitted.iter().enumerate() {
            let mut sum = 0u128;
            for &(tj, cj) in admitted[i..].iter().take_while(|&&(tj, _)| tj - ti <= period) {
                sum += u128::from(cj);
                let d = u128::from(tj - ti);
                prop_assert!(
                    sum * per <= l * (per + d),
                    "{} admitted in a burst of {} us (limit {} per {} us)", sum, d, limit, period
                );
            }
        }
    }

    /// Leases: live slots never exceed the limit; release frees; renew extends; expired
    /// leases free their slots; a denial's retry_after is honest when nothing is released.
    #[test]
    fn concurrency_never_exceeds_its_slots(
        (limit, ttl) in (1u64..=10, prop_oneof![1_000u64..=10_000, 1_000u64..=5_000_000]),
        steps in prop::collection::vec(
            (0u64..=1000, per_mille(), 0u8..10, any::<prop::sample::Index>(), 0u64..=1000),
            1..80,
        ),
    ) {
        let p = policy(Algorithm::Concurrency, limit, 0, 0, ttl, false);
        let mut s = concurrency::State::default();
        // Every lease ever taken: (member, cost, expiry, released).
        let mut model: Vec<(String, u64, Micros, bool)> = Vec::new();
        let used_at = |model: &[(String, u64, Micros, bool)], t: Micros| -> u64 {
            model.iter().filter(|l| !l.3 && l.2 > t).map(|l| l.1).sum()
        };
        let mut now = T0;
        for (i, (adv, pm, action, pick, ttl_pm)) in steps.into_iter().enumerate() {
            // Advances in thousandths of twice the TTL, so leases often expire meanwhile.
            now += 2 * ttl * adv / 1000;
            match action {
                // Release any lease ever taken: true exactly when it was live.
                0..=1 if !model.is_empty() => {
                    let k = pick.index(model.len());
                    let was_live = !model[k].3 && model[k].2 > now;
                    let free_before = concurrency::peek(&s, limit, now).0;
                    prop_assert_eq!(concurrency::release(&mut s, &model[k].0, now), was_live);
                    model[k].3 = true;
                    let freed = if was_live { model[k].1 } else { 0 };
                    prop_assert_eq!(concurrency::peek(&s, limit, now).0, free_before + freed);
                }
                // Renew any lease ever taken, to a TTL of its own: only a live lease renews,
                // and then it holds its slots until exactly now + new TTL.
                2..=3 if !model.is_empty() => {
                    let k = pick.index(model.len());
                    let was_live = !model[k].3 && model[k].2 > now;
                    let new_ttl = (2 * ttl * ttl_pm / 1000).max(1);
                    let r = concurrency::renew(&mut s, &model[k].0, new_ttl, now);
                    prop_assert_eq!(r, was_live.then_some(new_ttl));
                    if was_live {
                        model[k].2 = now + new_ttl;
                        let held = |t| limit - concurrency::peek(&s, limit, t).0;
                        prop_assert!(held(now + new_ttl - 1) >= model[k].1);
                        prop_assert_eq!(held(now + new_ttl - 1), used_at(&model, now + new_ttl - 1));
                        prop_assert_eq!(held(now + new_ttl), used_at(&model, now + new_ttl));
                    }
                }
                _ => {
                    let c = cost(limit, pm);
                    let m = concurrency::member(c, &format!("l{i}"));
                    let before = s.clone();
                    let o = concurrency::concurrency(&mut s, &p, &m, now, c);
                    prop_assert_eq!(o.limit, limit);
                    prop_assert_eq!(o.allowed, used_at(&model, now) + c <= limit);
                    check_remaining(&o, limit, |k| concurrency::decide(&s, limit, ttl, now, k))?;
                    check_retry(&o, now, true, |t| concurrency::decide(&before, limit, ttl, t, c))?;
                    if o.allowed {
                        model.push((m, c, now + ttl, false));
                        prop_assert_eq!(o.remaining, limit - used_at(&model, now));
                    } else {
                        prop_assert_eq!(&s, &before, "a denial changed the leases");
                        prop_assert_eq!(o.remaining, limit - used_at(&model, now));
                    }
                }
            }
            let used = used_at(&model, now);
            prop_assert!(used <= limit, "{} slots held of {}", used, limit);
            prop_assert_eq!(concurrency::peek(&s, limit, now).0, limit - used);
        }
        // Once the last lease has expired every slot is free again.
        let last = model.iter().map(|l| l.2).max().unwrap_or(now).max(now);
        prop_assert_eq!(concurrency::peek(&s, limit, last), (limit, 0));
        prop_assert!(concurrency::decide(&s, limit, ttl, last, limit).allowed);
    }

    /// Acquire over several checks: a denial leaves every state as it was; Status never
    /// changes a state; an allowed Acquire consumes exactly what each single check would;
    /// shadow checks never change the answer nor what the real checks consume.
    #[test]
    fn acquire_is_all_or_nothing(
        specs in prop::collection::vec(
            (0usize..5, 1u64..=6, prop_oneof![1_000u64..=10_000, 10_000u64..=2_000_000],
             prop::bool::weighted(0.3)),
            1..=4,
        ),
        steps in prop::collection::vec(
            (prop_oneof![2 => Just(0u64), 3 => 0u64..=100_000, 1 => 0u64..=3_000_000],
             prop::collection::vec(per_mille(), 4),
             prop::bool::weighted(0.25)),
            1..40,
        ),
    ) {
        let policies: Vec<Policy> = specs
            .iter()
            .map(|&(a, limit, period, shadow)| {
                policy(Algorithm::ALL[a], limit, period, 0, period, shadow)
            })
            .collect();
        let real: Vec<usize> = (0..policies.len()).filter(|&j| !policies[j].shadow()).collect();
        let mut states: Vec<LimitState> =
            policies.iter().map(|p| LimitState::empty(p.algorithm())).collect();
        let mut now = T0;
        for (i, (adv, pms, status)) in steps.into_iter().enumerate() {
            now += adv;
            let costs: Vec<u64> = policies.iter().zip(&pms).map(|(p, &pm)| cost(p.capacity(), pm)).collect();
            let members: Vec<String> = costs
                .iter()
                .enumerate()
                .map(|(j, &c)| concurrency::member(c, &format!("s{i}c{j}")))
                .collect();
            let reqs: Vec<CheckRequest<'_>> = policies
                .iter()
                .zip(&costs)
                .zip(&members)
                .map(|((p, &cost), m)| CheckRequest { policy: p, cost, lease_member: Some(m) })
                .collect();
            let before = states.clone();
            let consume = !status;
            let o = {
                let mut refs: Vec<&mut LimitState> = states.iter_mut().collect();
                acquire(&mut refs, &reqs, now, consume)
            };
            prop_assert_eq!(o.checks.len(), reqs.len());
            let real_allow = real.iter().all(|&j| o.checks[j].allowed);
            prop_assert_eq!(o.allowed, real_allow, "shadow checks decided the answer: {:?}", o);
            if !consume {
                prop_assert_eq!(&states, &before, "Status changed a state");
            }
            if !o.allowed {
                prop_assert_eq!(&states, &before, "a denied Acquire changed a state");
            }
            // Each check decides as the single-check function does on the state as it was,
            // and an allowed Acquire leaves each state as that function would.
            for j in 0..reqs.len() {
                let mut alone = before[j].clone();
                let single = single_check(&mut alone, &reqs[j], now);
                prop_assert_eq!(o.checks[j].allowed, single.allowed);
                prop_assert_eq!(o.checks[j].retry_after, single.retry_after);
                prop_assert_eq!(o.checks[j].limit, single.limit);
                if consume && o.allowed {
                    prop_assert_eq!(o.checks[j], single);
                    prop_assert_eq!(&states[j], &alone, "check {} consumed differently", j);
                }
                if consume && !o.allowed {
                    // Nothing was consumed: every check reports its limit as it is, which is
                    // what Status (consume = false) reports.
                    let mut copy = before[j].clone();
                    let status = acquire(&mut [&mut copy], &reqs[j..=j], now, false);
                    prop_assert_eq!(o.checks[j].remaining, status.checks[0].remaining);
                    prop_assert_eq!(o.checks[j].reset_after, status.checks[0].reset_after);
                }
            }
            // Without the shadow checks: the same answer, and the same real states after.
            let mut without: Vec<LimitState> = real.iter().map(|&j| before[j].clone()).collect();
            let real_reqs: Vec<CheckRequest<'_>> = real.iter().map(|&j| reqs[j]).collect();
            let o2 = {
                let mut refs: Vec<&mut LimitState> = without.iter_mut().collect();
                acquire(&mut refs, &real_reqs, now, consume)
            };
            prop_assert_eq!(o2.allowed, o.allowed, "shadow checks changed the answer");
            for (k, &j) in real.iter().enumerate() {
                prop_assert_eq!(&without[k], &states[j]);
                prop_assert_eq!(o2.checks[k], o.checks[j]);
            }
        }
    }
}

/// What the single-check twin of each Lua script decides (and consumes when it allows).
fn single_check(state: &mut LimitState, req: &CheckRequest<'_>, now: Micros) -> CheckOutcome {
    let (p, c) = (req.policy, req.cost);
    match state {
        LimitState::TokenBucket(s) => token_bucket::token_bucket(s, p, now, c),
        LimitState::SlidingWindow(s) => sliding_window::sliding_window(s, p, now, c),
        LimitState::SlidingLog(s) => sliding_log::sliding_log(s, p, now, c),
        LimitState::FixedWindow(s) => fixed_window::fixed_window(s, p, now, c),
        LimitState::Concurrency(s) => {
            concurrency::concurrency(s, p, req.lease_member.unwrap(), now, c)
        }
    }
}
