//! Sliding window as a weighted two-window counter: O(1) state however large the limit.
//!
//! Windows of `period` are aligned to the Unix epoch. At elapsed time `e` into the current
//! window, the estimate of the last period's usage is `prev * (period - e) / period + cur`,
//! which assumes the previous window's requests were spread evenly. A request is admitted
//! when `estimate + cost <= limit`.
//!
//! **Error bound.** Within one aligned window at most `limit` are admitted. Across a window
//! edge, a burst lasting `d` admits at most `limit * (1 + d / period)`, so any span of one
//! period admits at most `2 * limit` in the adversarial worst case (the previous window's
//! traffic all at its very end); with evenly spread traffic the estimate is exact.
//!
//! The arithmetic is done in IEEE doubles in exactly the order `lua/sliding_window.lua` does
//! it, so the Lua script and this model decide identically. Lua twin: `lua/sliding_window.lua`.
use crate::{CheckOutcome, Policy, time::Micros};

/// Counters of the current and the previous window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// Start of the window `cur` counts.
    pub window: Micros,
    /// Units admitted in that window.
    pub cur: u64,
    /// Units admitted in the window before it.
    pub prev: u64,
}

impl State {
    /// When the state can be forgotten.
    pub fn expires_at(&self, period: Micros) -> Micros {
        self.window + 2 * period
    }
}

/// The current window's start and the (current, previous) counts as of `now`.
fn counts(state: &State, period: Micros, now: Micros) -> (Micros, u64, u64) {
    let start = now - now % period;
    if state.window == start {
        (start, state.cur, state.prev)
    } else if state.window + period == start {
        (start, 0, state.cur)
    } else {
        (start, 0, 0)
    }
}

/// Time until both windows' counts have stopped weighing.
fn reset_after(start: Micros, period: Micros, now: Micros, cur: u64, prev: u64) -> Micros {
    if cur > 0 {
        start + 2 * period - now
    } else if prev > 0 {
        start + period - now
    } else {
        0
    }
}

fn floor_remaining(x: f64) -> u64 {
    if x > 0.0 { x.floor() as u64 } else { 0 }
}

fn estimate(prev: u64, cur: u64, period: Micros, elapsed: Micros) -> f64 {
    prev as f64 * (period - elapsed) as f64 / period as f64 + cur as f64
}

/// The algorithm with the script's parameters; returns the state to store if committed.
pub fn decide(
    state: &State,
    limit: u64,
    period: Micros,
    now: Micros,
    cost: u64,
) -> (CheckOutcome, State) {
    let (start, cur, prev) = counts(state, period, now);
    let e = now - start;
    let est = estimate(prev, cur, period, e);
    let reset_after = |cur: u64| reset_after(start, period, now, cur, prev);
    if est + cost as f64 <= limit as f64 {
        let next = State {
            window: start,
            cur: cur + cost,
            prev,
        };
        let outcome = CheckOutcome {
            allowed: true,
            limit,
            remaining: floor_remaining(limit as f64 - (est + cost as f64)),
            reset_after: reset_after(next.cur),
            retry_after: 0,
        };
        return (outcome, next);
    }
    let retry_after = if cur + cost <= limit {
        // Wait inside this window until the previous window's weight has fallen enough.
        let x = (limit - cur - cost) as f64 * period as f64 / prev as f64;
        let mut e2 = (period as f64 - x).ceil().max(0.0) as u64;
        if e2 <= e {
            e2 = e + 1;
        }
        while e2 < period && estimate(prev, cur, period, e2) + cost as f64 > limit as f64 {
            e2 += 1;
        }
        e2 - e
    } else {
        // Wait into the next window, where today's count becomes the previous one.
        let x = (limit - cost) as f64 * period as f64 / cur as f64;
        let mut e2 = (period as f64 - x).ceil().max(0.0) as u64;
        while e2 < period && estimate(cur, 0, period, e2) + cost as f64 > limit as f64 {
            e2 += 1;
        }
        (period - e) + e2
    };
    let outcome = CheckOutcome {
        allowed: false,
        limit,
        remaining: floor_remaining(limit as f64 - est),
        reset_after: reset_after(cur),
        retry_after,
    };
    (outcome, *state)
}

/// Decides `cost` at `now` without changing the state.
pub fn check(state: &State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    decide(state, policy.limit(), policy.period(), now, cost).0
}

/// Consumes `cost` at `now` (call only when [`check`] allowed it).
pub fn commit(state: &mut State, policy: &Policy, now: Micros, cost: u64) {
    *state = decide(state, policy.limit(), policy.period(), now, cost).1;
}

/// The limit as it is at `now`: (units left, time until fully available). What Status
/// reports; the same values a denial carries.
pub fn peek(state: &State, policy: &Policy, now: Micros) -> (u64, Micros) {
    let (limit, period) = (policy.limit(), policy.period());
    let (start, cur, prev) = counts(state, period, now);
    let left = limit as f64 - estimate(prev, cur, period, now - start);
    (
        floor_remaining(left),
        reset_after(start, period, now, cur, prev),
    )
}

/// Decides and, when allowed, consumes: the single-check twin of `lua/sliding_window.lua`.
pub fn sliding_window(state: &mut State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    let (outcome, next) = decide(state, policy.limit(), policy.period(), now, cost);
    if outcome.allowed {
        *state = next;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SECOND;

    #[test]
    fn previous_window_weighs_in() {
        let mut s = State::default();
        let p = 10 * SECOND;
        let t0 = 100 * SECOND;
        for _ in 0..10 {
            assert!(decide(&s, 10, p, t0, 1).0.allowed);
            s = decide(&s, 10, p, t0, 1).1;
        }
        // Half-way into the next window half of the previous count still weighs.
        let t1 = t0 + p + p / 2;
        let (o, next) = decide(&s, 10, p, t1, 5);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        let (o, _) = decide(&next, 10, p, t1, 1);
        assert!(!o.allowed);
        assert!(o.retry_after > 0);
        let later = decide(&next, 10, p, t1 + o.retry_after, 1).0;
        assert!(later.allowed, "retry_after must be honest: {o:?}");
    }
}
