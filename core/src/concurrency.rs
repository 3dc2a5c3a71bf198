//! Concurrency leases: a distributed semaphore whose slots are held by leases that expire
//! after their TTL unless renewed, so a holder that dies cannot leak its slots.
//!
//! A lease taking `cost` slots is one member named `<cost>~<id>`, scored by its expiry.
//! Lua twins: `lua/concurrency.lua` (acquire), `lua/release.lua`, `lua/renew.lua`.
use crate::{CheckOutcome, Policy, time::Micros};

/// One live or expired lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `<cost>~<id>`: the member name in Redis.
    pub member: String,
    /// Slots held.
    pub cost: u64,
    /// Expiry, microseconds since the epoch.
    pub expires_at: Micros,
}

/// The leases of one limit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    leases: Vec<Lease>,
}

/// The member name of a lease of `cost` slots with the unique id `id`.
pub fn member(cost: u64, id: &str) -> String {
    format!("{cost}~{id}")
}

impl State {
    /// When every lease has expired and the state can be forgotten.
    pub fn expires_at(&self) -> Micros {
        self.leases.iter().map(|l| l.expires_at).max().unwrap_or(0)
    }

    fn live(&self, now: Micros) -> impl Iterator<Item = &Lease> {
        self.leases.iter().filter(move |l| l.expires_at > now)
    }

    fn trim(&mut self, now: Micros) {
        self.leases.retain(|l| l.expires_at > now);
    }
}

/// Decides a lease of `cost` slots at `now` without changing the state; `ttl` is the new
/// lease's lifetime.
pub fn decide(state: &State, limit: u64, ttl: Micros, now: Micros, cost: u64) -> CheckOutcome {
    let used: u64 = state.live(now).map(|l| l.cost).sum();
    let latest = state.live(now).map(|l| l.expires_at).max();
    if used + cost <= limit {
        return CheckOutcome {
            allowed: true,
            limit,
            remaining: limit - used - cost,
            reset_after: latest.unwrap_or(0).max(now + ttl) - now,
            retry_after: 0,
        };
    }
    // Leases end in expiry order (ties by member name, as a Redis sorted set orders them).
    let mut live: Vec<&Lease> = state.live(now).collect();
    live.sort_by(|a, b| {
        a.expires_at
            .cmp(&b.expires_at)
            .then_with(|| a.member.as_bytes().cmp(b.member.as_bytes()))
    });
    let mut freed = 0;
    let mut retry_after = 0;
    for l in live {
        freed += l.cost;
        if used - freed + cost <= limit {
            retry_after = l.expires_at - now;
            break;
        }
    }
    CheckOutcome {
        allowed: false,
        limit,
        remaining: limit.saturating_sub(used),
        reset_after: latest.map_or(0, |t| t - now),
        retry_after,
    }
}

/// Records a lease (call only when [`decide`] allowed it).
pub fn record(state: &mut State, member: String, cost: u64, ttl: Micros, now: Micros) {
    state.trim(now);
    state.leases.push(Lease {
        member,
        cost,
        expires_at: now + ttl,
    });
}

/// The leases as they are at `now`: (free slots, time until the last lease expires). What
/// Status reports.
pub fn peek(state: &State, limit: u64, now: Micros) -> (u64, Micros) {
    let used: u64 = state.live(now).map(|l| l.cost).sum();
    let latest = state.live(now).map(|l| l.expires_at).max();
    (limit.saturating_sub(used), latest.map_or(0, |t| t - now))
}

/// Decides and, when allowed, takes the lease `member`: the single-check twin of
/// `lua/concurrency.lua`.
pub fn concurrency(
    state: &mut State,
    policy: &Policy,
    member: &str,
    now: Micros,
    cost: u64,
) -> CheckOutcome {
    let outcome = decide(state, policy.limit(), policy.lease_ttl(), now, cost);
    if outcome.allowed {
        record(state, member.to_owned(), cost, policy.lease_ttl(), now);
    }
    outcome
}

/// Ends a lease. True when it was live; an expired or unknown lease is just forgotten.
/// Twin of `lua/release.lua`.
pub fn release(state: &mut State, member: &str, now: Micros) -> bool {
    let live = state.live(now).any(|l| l.member == member);
    state.leases.retain(|l| l.member != member);
    state.trim(now);
    live
}

/// Extends a live lease to `now + ttl`; `None` when it has expired or never existed.
/// Twin of `lua/renew.lua`.
pub fn renew(state: &mut State, member: &str, ttl: Micros, now: Micros) -> Option<Micros> {
    state.trim(now);
    let lease = state.leases.iter_mut().find(|l| l.member == member)?;
    lease.expires_at = now + ttl;
    Some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SECOND;

    #[test]
    fn leases_hold_slots_until_released_or_expired() {
        let mut s = State::default();
        let t = 50 * SECOND;
        assert!(decide(&s, 2, SECOND, t, 1).allowed);
        record(&mut s, member(1, "a"), 1, SECOND, t);
        record(&mut s, member(1, "b"), 1, 2 * SECOND, t);
        let o = decide(&s, 2, SECOND, t, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, SECOND);
        assert!(release(&mut s, &member(1, "b"), t));
        assert!(!release(&mut s, &member(1, "b"), t));
        assert!(decide(&s, 2, SECOND, t, 1).allowed);
        assert_eq!(
            renew(&mut s, &member(1, "a"), 5 * SECOND, t + 1),
            Some(5 * SECOND)
        );
        assert!(renew(&mut s, &member(1, "a"), SECOND, t + 6 * SECOND).is_none());
    }

    #[test]
    fn cost_takes_several_slots() {
        let mut s = State::default();
        record(&mut s, member(3, "x"), 3, SECOND, 0);
        assert!(!decide(&s, 4, SECOND, 10, 2).allowed);
        assert!(decide(&s, 4, SECOND, 10, 1).allowed);
    }
}
