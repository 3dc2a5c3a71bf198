//! Fixed window: one counter per window of `period`, windows aligned to the Unix epoch.
//! Exact within a window; admits up to 2x the limit across a window edge, by design.
//! Lua twin: `lua/fixed_window.lua`.
use crate::{CheckOutcome, Policy, time::Micros};

/// The current window's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// Start of the window the count belongs to.
    pub window: Micros,
    /// Units admitted in that window.
    pub count: u64,
}

impl State {
    /// When the state can be forgotten.
    pub fn expires_at(&self, period: Micros) -> Micros {
        self.window + period
    }
}

/// The algorithm with the script's parameters; returns the state to store if committed.
pub fn decide(
    state: &State,
    limit: u64,
    period: Micros,
    now: Micros,
    cost: u64,
) -> (CheckOutcome, State) {
    let start = now - now % period;
    let count = if state.window == start {
        state.count
    } else {
        0
    };
    let end = start + period - now;
    if count + cost <= limit {
        let next = State {
            window: start,
            count: count + cost,
        };
        let outcome = CheckOutcome {
            allowed: true,
            limit,
            remaining: limit - next.count,
            reset_after: if next.count > 0 { end } else { 0 },
            retry_after: 0,
        };
        (outcome, next)
    } else {
        let outcome = CheckOutcome {
            allowed: false,
            limit,
            // The count may exceed a limit a reload lowered.
            remaining: limit.saturating_sub(count),
            reset_after: if count > 0 { end } else { 0 },
            retry_after: end,
        };
        (outcome, *state)
    }
}

/// Decides `cost` at `now` without changing the state.
pub fn check(state: &State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    decide(state, policy.limit(), policy.period(), now, cost).0
}

/// Consumes `cost` at `now` (call only when [`check`] allowed it).
pub fn commit(state: &mut State, policy: &Policy, now: Micros, cost: u64) {
    *state = decide(state, policy.limit(), policy.period(), now, cost).1;
}

/// The window as it is at `now`: (units left, time until it resets). What Status reports.
pub fn peek(state: &State, policy: &Policy, now: Micros) -> (u64, Micros) {
    let (limit, period) = (policy.limit(), policy.period());
    let start = now - now % period;
    let count = if state.window == start {
        state.count
    } else {
        0
    };
    let reset = if count > 0 { start + period - now } else { 0 };
    (limit.saturating_sub(count), reset)
}

/// Decides and, when allowed, consumes: the single-check twin of `lua/fixed_window.lua`.
pub fn fixed_window(state: &mut State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    let (outcome, next) = decide(state, policy.limit(), policy.period(), now, cost);
    if outcome.allowed {
        *state = next;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, PolicySpec, time::SECOND};

    #[test]
    fn counts_per_aligned_window() {
        let p = Policy::new(PolicySpec {
            algorithm: Algorithm::FixedWindow,
            limit: 2,
            period: SECOND,
            burst: 0,
            fail_mode: None,
            lease_ttl: None,
            shadow: false,
        })
        .unwrap();
        let mut s = State::default();
        let t = 10 * SECOND + 250_000;
        assert!(fixed_window(&mut s, &p, t, 1).allowed);
        assert!(fixed_window(&mut s, &p, t, 1).allowed);
        let o = fixed_window(&mut s, &p, t, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, 750_000);
        assert!(fixed_window(&mut s, &p, 11 * SECOND, 2).allowed);
    }
}
