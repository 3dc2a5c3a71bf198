//! Sliding log: every admitted unit's arrival time, kept for one period. Exact; memory
//! O(limit), so the server caps its limit (10,000 by default).
//!
//! An entry stamped `t` counts while `now - period < t`. Lua twin: `lua/sliding_log.lua`,
//! which keeps one sorted-set member per unit.
use std::collections::VecDeque;

use crate::{CheckOutcome, Policy, time::Micros};

/// Arrival times, oldest first, run-length encoded as `(time, units)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    entries: VecDeque<(Micros, u64)>,
}

impl State {
    /// When every entry has expired and the state can be forgotten.
    pub fn expires_at(&self, period: Micros) -> Micros {
        self.entries.back().map_or(0, |&(t, _)| t + period)
    }

    /// Units recorded, expired or not.
    pub fn len(&self) -> u64 {
        self.entries.iter().map(|&(_, n)| n).sum()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes up to `units` units stamped exactly `at` (never another stamp's); how many
    /// it removed. The refund of a reserved Acquire ([`crate::refund`]).
    pub fn remove_at(&mut self, at: Micros, units: u64) -> u64 {
        let Some(i) = self.entries.iter().position(|&(t, _)| t == at) else {
            return 0;
        };
        let taken = units.min(self.entries[i].1);
        self.entries[i].1 -= taken;
        if self.entries[i].1 == 0 {
            self.entries.remove(i);
        }
        taken
    }

    fn live(&self, period: Micros, now: Micros) -> impl Iterator<Item = &(Micros, u64)> {
        self.entries.iter().filter(move |&&(t, _)| t + period > now)
    }
}

/// Decides `cost` at `now` with the script's parameters, without changing the state.
pub fn decide(state: &State, limit: u64, period: Micros, now: Micros, cost: u64) -> CheckOutcome {
    let n: u64 = state.live(period, now).map(|&(_, k)| k).sum();
    let newest = state.live(period, now).last().map(|&(t, _)| t);
    if n + cost <= limit {
        return CheckOutcome {
            allowed: true,
            limit,
            remaining: limit - n - cost,
            reset_after: period,
            retry_after: 0,
        };
    }
    // The `need`-th oldest live unit must expire before `cost` fits.
    let need = n + cost - limit;
    let mut seen = 0;
    let mut retry_after = 0;
    for &(t, k) in state.live(period, now) {
        seen += k;
        if seen >= need {
            retry_after = t + period - now;
            break;
        }
    }
    CheckOutcome {
        allowed: false,
        limit,
        remaining: limit.saturating_sub(n),
        reset_after: newest.map_or(0, |t| t + period - now),
        retry_after,
    }
}

/// Drops expired entries and records `cost` units at `now` (call only when allowed).
pub fn record(state: &mut State, period: Micros, now: Micros, cost: u64) {
    while state
        .entries
        .front()
        .is_some_and(|&(t, _)| t + period <= now)
    {
        state.entries.pop_front();
    }
    match state.entries.back_mut() {
        Some((t, k)) if *t == now => *k += cost,
        _ => state.entries.push_back((now, cost)),
    }
}

/// Decides `cost` at `now` without changing the state.
pub fn check(state: &State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    decide(state, policy.limit(), policy.period(), now, cost)
}

/// Consumes `cost` at `now` (call only when [`check`] allowed it).
pub fn commit(state: &mut State, policy: &Policy, now: Micros, cost: u64) {
    record(state, policy.period(), now, cost);
}

/// The log as it is at `now`: (units left, time until every entry has expired). What
/// Status reports.
pub fn peek(state: &State, policy: &Policy, now: Micros) -> (u64, Micros) {
    let period = policy.period();
    let n: u64 = state.live(period, now).map(|&(_, k)| k).sum();
    let newest = state.live(period, now).last().map(|&(t, _)| t);
    (
        policy.limit().saturating_sub(n),
        newest.map_or(0, |t| t + period - now),
    )
}

/// Decides and, when allowed, consumes: the single-check twin of `lua/sliding_log.lua`.
pub fn sliding_log(state: &mut State, policy: &Policy, now: Micros, cost: u64) -> CheckOutcome {
    let outcome = check(state, policy, now, cost);
    if outcome.allowed {
        commit(state, policy, now, cost);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SECOND;

    #[test]
    fn exact_over_any_window() {
        let mut s = State::default();
        let p = SECOND;
        for i in 0..3 {
            let o = decide(&s, 3, p, 10 * SECOND + i * 100_000, 1);
            assert!(o.allowed);
            record(&mut s, p, 10 * SECOND + i * 100_000, 1);
        }
        let o = decide(&s, 3, p, 10 * SECOND + 500_000, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, 500_000);
        assert!(decide(&s, 3, p, 11 * SECOND, 1).allowed);
        let o = decide(&s, 3, p, 10 * SECOND + 500_000, 2);
        assert_eq!(o.retry_after, 600_000);
    }
}
