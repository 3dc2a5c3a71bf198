//! Giving back what a reserved Acquire consumed: the twin of `lua/refund.lua`.
//!
//! On Redis Cluster an Acquire whose checks live in several hash slots is reserved slot
//! by slot (`acquire.lua` in `'reserve'` mode); when a later slot denies, the slots
//! already consumed are refunded. [`refund`] undoes one allowed check consumed at
//! `consumed_at`, seen at `now >= consumed_at`:
//!
//! - token bucket: `tat - min(cost * T, what the reservation still weighs at now)`: it
//!   pushed the TAT to `consumed_at + reset_after` (its outcome's `reset_after`), so by
//!   `now` at most `consumed_at + reset_after - now` of it is left. At or before `now` the
//!   bucket is full (state dropped). Exact when no request was admitted in between; when
//!   some were, it may give back less than the reservation took (under-admits briefly),
//!   never more: a request that found the bucket full in between keeps its tokens.
//! - fixed window: `count - cost` when the consumption's window is still current; once it
//!   rolled over nothing is owed (the count no longer weighs). Always exact.
//! - sliding window: `cur - cost` while the consumption's window is the stored current
//!   one, `prev - cost` once the state moved on to the next window (the count then weighs
//!   as the previous window's); nothing when older. Always exact.
//! - sliding log: removes `cost` units stamped exactly `consumed_at`. Always exact.
//! - concurrency: ends the lease (as `release`). Always exact.
//!
//! "Exact" means: every later decision is the one the state would give had the reserved
//! request never been made, provided the requests between the reservation and the refund
//! were decided as they would have been without it (the reservation may have denied one
//! that would otherwise pass; that denial stands). Counts never go below zero, and no
//! state is created. The conformance suite `tests/tests/refund_conformance.rs` checks all
//! of this against Redis.
use crate::{
    acquire::{CheckRequest, LimitState},
    concurrency,
    time::Micros,
};

/// Undoes `check` (consumed at `consumed_at` by an admitted Acquire whose outcome for it
/// said `reset_after`) in `state`, at `now`. Call only for checks that allowed (a denied
/// check, shadow or not, consumed nothing). Twin of `lua/refund.lua`.
pub fn refund(
    state: &mut LimitState,
    check: &CheckRequest<'_>,
    consumed_at: Micros,
    reset_after: Micros,
    now: Micros,
) {
    let (policy, cost) = (check.policy, check.cost);
    match state {
        LimitState::TokenBucket(s) => {
            let weighs = (consumed_at + reset_after).saturating_sub(now);
            let credit = (cost * policy.emission_interval()).min(weighs);
            let tat = s.tat.saturating_sub(credit);
            // At or before `now` the bucket is full, which is the empty state.
            s.tat = if tat <= now { 0 } else { tat };
        }
        LimitState::FixedWindow(s) => {
            let period = policy.period();
            let window = consumed_at - consumed_at % period;
            if s.window == window && now - now % period == window {
                s.count = s.count.saturating_sub(cost);
                if s.count == 0 {
                    *s = Default::default();
                }
            }
        }
        LimitState::SlidingWindow(s) => {
            let window = consumed_at - consumed_at % policy.period();
            if s.window == window {
                s.cur = s.cur.saturating_sub(cost);
            } else if s.window == window + policy.period() {
                s.prev = s.prev.saturating_sub(cost);
            }
            if s.cur == 0 && s.prev == 0 {
                *s = Default::default();
            }
        }
        LimitState::SlidingLog(s) => {
            s.remove_at(consumed_at, cost);
        }
        LimitState::Concurrency(s) => {
            if let Some(member) = check.lease_member {
                concurrency::release(s, member, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Algorithm, Policy, PolicySpec,
        acquire::{CheckRequest, acquire},
        time::SECOND,
    };

    fn policy(algorithm: Algorithm, limit: u64) -> Policy {
        Policy::new(PolicySpec {
            algorithm,
            limit,
            period: SECOND,
            burst: 0,
            fail_mode: None,
            lease_ttl: Some(SECOND),
            shadow: false,
        })
        .unwrap()
    }

    /// Consumes `cost` at `t1`, refunds at `t2`; the state then decides like `before`.
    fn round_trip(
        algorithm: Algorithm,
        prior: &[(Micros, u64)],
        cost: u64,
        t1: Micros,
        t2: Micros,
    ) {
        let p = policy(algorithm, 5);
        let req = |cost| CheckRequest {
            policy: &p,
            cost,
            lease_member: Some(if cost == 1 { "1~x" } else { "2~y" }),
        };
        let mut before = LimitState::empty(algorithm);
        for &(t, c) in prior {
            let r = CheckRequest {
                lease_member: Some("1~prior"),
                ..req(c)
            };
            acquire(&mut [&mut before], &[r], t, true);
        }
        let mut s = before.clone();
        let took = acquire(&mut [&mut s], &[req(cost)], t1, true);
        assert!(took.allowed);
        refund(&mut s, &req(cost), t1, took.checks[0].reset_after, t2);
        for dt in [0, 1, SECOND / 2, SECOND - 1, SECOND, 2 * SECOND] {
            for c in 1..=5 {
                let a = acquire(&mut [&mut s.clone()], &[req(c)], t2 + dt, false);
                let b = acquire(&mut [&mut before.clone()], &[req(c)], t2 + dt, false);
                assert_eq!(a, b, "{algorithm:?} cost {c} at t2 + {dt}");
            }
        }
    }

    #[test]
    fn every_algorithm_is_as_if_never_consumed() {
        let t = 100 * SECOND;
        for a in Algorithm::ALL {
            round_trip(a, &[], 2, t, t);
            round_trip(a, &[(t - 300_000, 2)], 2, t, t + 100_000);
            round_trip(a, &[(t, 1), (t, 1)], 1, t, t);
            // the window rolls between the consumption and the refund
            round_trip(a, &[(t - SECOND, 3)], 2, t + 900_000, t + 1_200_000);
        }
    }

    #[test]
    fn never_below_zero_and_never_creates_state() {
        let t = 100 * SECOND;
        for a in Algorithm::ALL {
            let p = policy(a, 5);
            let req = CheckRequest {
                policy: &p,
                cost: 3,
                lease_member: Some("3~z"),
            };
            let mut s = LimitState::empty(a);
            refund(&mut s, &req, t, SECOND, t);
            assert_eq!(s, LimitState::empty(a), "{a:?}");
        }
    }

    #[test]
    fn sliding_log_removes_only_the_consumption_stamp() {
        let p = policy(Algorithm::SlidingLog, 5);
        let req = |cost| CheckRequest {
            policy: &p,
            cost,
            lease_member: None,
        };
        let t = 100 * SECOND;
        let mut s = LimitState::empty(Algorithm::SlidingLog);
        acquire(&mut [&mut s], &[req(2)], t, true);
        acquire(&mut [&mut s], &[req(1)], t + 1, true);
        // a refund stamped otherwise (or for more than was stamped) takes nothing else
        refund(&mut s, &req(3), t, 0, t + 1);
        let o = acquire(&mut [&mut s], &[req(5)], t + 1, false);
        assert_eq!(o.checks[0].remaining, 4);
        refund(&mut s, &req(1), t + 2, 0, t + 2);
        let o = acquire(&mut [&mut s], &[req(5)], t + 2, false);
        assert_eq!(o.checks[0].remaining, 4);
    }

    /// The reviewer's case: a 1/ms bucket of burst 1 reserved at t, full again at t + 1.5 ms
    /// (a request B takes the token), refunded at t + 1.6 ms: giving back the whole cost
    /// would admit a request C that the world without the reservation denies.
    #[test]
    fn a_token_bucket_refund_never_gives_back_what_already_drained() {
        let p = Policy::new(PolicySpec {
            algorithm: Algorithm::TokenBucket,
            limit: 1_000,
            period: SECOND,
            burst: 1,
            fail_mode: None,
            lease_ttl: None,
            shadow: false,
        })
        .unwrap();
        let req = CheckRequest {
            policy: &p,
            cost: 1,
            lease_member: None,
        };
        let t = 100 * SECOND;
        let mut with = LimitState::empty(Algorithm::TokenBucket);
        let mut without = with.clone();
        let took = acquire(&mut [&mut with], &[req], t, true);
        assert!(took.allowed);
        for s in [&mut with, &mut without] {
            assert!(acquire(&mut [s], &[req], t + 1_500, true).allowed, "B");
        }
        refund(&mut with, &req, t, took.checks[0].reset_after, t + 1_600);
        let c_with = acquire(&mut [&mut with], &[req], t + 1_600, true);
        let c_without = acquire(&mut [&mut without], &[req], t + 1_600, true);
        assert!(!c_without.allowed);
        assert_eq!(c_with, c_without, "C");
    }
}
