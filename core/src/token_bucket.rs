//! Token bucket as GCRA (generic cell rate algorithm): the whole state is one
//! "theoretical arrival time" (TAT).
//!
//! With emission interval `T = ceil(period / limit)` and capacity `C` (the burst), the bucket
//! is full when `tat <= now`; each unit of cost pushes `tat` forward by `T`; a request is
//! admitted when the pushed `tat` stays within `C * T` of `now`. So at most `C + limit` are
//! admitted in any window of one period. Lua twin: `lua/token_bucket.lua`.
use crate::{CheckOutcome, Policy, time::Micros};

/// A bucket's state. `tat <= now` means full; the default is a full bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// Theoretical arrival time, microseconds since the epoch.
    pub tat: Micros,
}

impl State {
    /// When the bucket is full again and the state can be forgotten.
    pub fn expires_at(&self) -> Micros {
        self.tat
    }
}

/// Decides `cost` at `now` without changing the state.
pub fn check(state: &State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    decide(
        state,
        policy.emission_interval(),
        policy.capacity(),
        now,
        cost,
    )
    .0
}

/// Consumes `cost` at `now` (call only when [`check`] allowed it).
pub fn commit(state: &mut State, policy: &Policy, now: Micros, cost: u64) {
    let (_, next) = decide(
        state,
        policy.emission_interval(),
        policy.capacity(),
        now,
        cost,
    );
    *state = next;
}

/// The algorithm with the same parameters as the Lua script: emission interval `t`
/// and capacity `cap`. Returns the outcome and the state to store if it is committed.
pub fn decide(state: &State, t: Micros, cap: u64, now: Micros, cost: u64) -> (CheckOutcome, State) {
    let tau = cap * t;
    let tat = state.tat.max(now);
    let new_tat = tat + cost * t;
    if new_tat - now <= tau {
        let outcome = CheckOutcome {
            allowed: true,
            limit: cap,
            remaining: (tau - (new_tat - now)) / t,
            reset_after: new_tat - now,
            retry_after: 0,
        };
        (outcome, State { tat: new_tat })
    } else {
        let outcome = CheckOutcome {
            allowed: false,
            limit: cap,
            // The state may be further ahead than `tau` when a reload lowered the burst.
            remaining: tau.saturating_sub(tat - now) / t,
            reset_after: tat - now,
            retry_after: new_tat - tau - now,
        };
        (outcome, *state)
    }
}

/// The bucket as it is at `now`: (whole tokens left, time until full). What Status reports.
pub fn peek(state: &State, policy: &Policy, now: Micros) -> (u64, Micros) {
    let (t, tau) = (
        policy.emission_interval(),
        policy.capacity() * policy.emission_interval(),
    );
    let tat = state.tat.max(now);
    (tau.saturating_sub(tat - now) / t, tat - now)
}

/// Decides and, when allowed, consumes: the single-check twin of `lua/token_bucket.lua`.
pub fn token_bucket(state: &mut State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    let (outcome, next) = decide(
        state,
        policy.emission_interval(),
        policy.capacity(),
        now,
        cost,
    );
    if outcome.allowed {
        *state = next;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, PolicySpec, time::SECOND};

    fn policy(limit: u64, burst: u64) -> Policy {
        Policy::new(PolicySpec {
            algorithm: Algorithm::TokenBucket,
            limit,
            period: SECOND,
            burst,
            fail_mode: None,
            lease_ttl: None,
            shadow: false,
        })
        .unwrap()
    }

    #[test]
    fn full_bucket_admits_burst_then_refills() {
        let p = policy(10, 0);
        let mut s = State::default();
        let now = 1_000 * SECOND;
        for i in 0..10 {
            let o = token_bucket(&mut s, &p, now, 1);
            assert!(o.allowed);
            assert_eq!(o.remaining, 9 - i);
        }
        let o = token_bucket(&mut s, &p, now, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, 100_000);
        assert_eq!(o.reset_after, SECOND);
        assert!(!token_bucket(&mut s, &p, now + 99_999, 1).allowed);
        assert!(token_bucket(&mut s, &p, now + 100_000, 1).allowed);
    }

    #[test]
    fn burst_is_capacity() {
        let p = policy(10, 3);
        let mut s = State::default();
        let admitted = (0..10)
            .filter(|_| token_bucket(&mut s, &p, 5 * SECOND, 1).allowed)
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn check_does_not_consume() {
        let p = policy(1, 0);
        let s = State::default();
        assert!(check(&s, &p, SECOND, 1).allowed);
        assert!(check(&s, &p, SECOND, 1).allowed);
    }
}
