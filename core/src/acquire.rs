//! All-or-nothing decisions over several checks: the twin of `lua/acquire.lua`, and what
//! the in-memory store runs.
//!
//! Every check is decided against the state as it was; only if every non-shadow check
//! allows are the allowed checks consumed. A shadow check reports what it would have
//! decided and never blocks the others.
use crate::{
    Algorithm, CheckOutcome, Policy, concurrency, fixed_window, sliding_log, sliding_window,
    time::Micros, token_bucket,
};

/// The state of one limit, whichever its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitState {
    /// Token bucket state.
    TokenBucket(token_bucket::State),
    /// Sliding window state.
    SlidingWindow(sliding_window::State),
    /// Sliding log state.
    SlidingLog(sliding_log::State),
    /// Fixed window state.
    FixedWindow(fixed_window::State),
    /// Concurrency leases.
    Concurrency(concurrency::State),
}

impl LimitState {
    /// The empty state for `algorithm`.
    pub fn empty(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::TokenBucket => Self::TokenBucket(Default::default()),
            Algorithm::SlidingWindow => Self::SlidingWindow(Default::default()),
            Algorithm::SlidingLog => Self::SlidingLog(Default::default()),
            Algorithm::FixedWindow => Self::FixedWindow(Default::default()),
            Algorithm::Concurrency => Self::Concurrency(Default::default()),
        }
    }

    /// When this state is equivalent to the empty one and can be dropped.
    pub fn expires_at(&self, policy: &Policy) -> Micros {
        match self {
            Self::TokenBucket(s) => s.expires_at(),
            Self::SlidingWindow(s) => s.expires_at(policy.period()),
            Self::SlidingLog(s) => s.expires_at(policy.period()),
            Self::FixedWindow(s) => s.expires_at(policy.period()),
            Self::Concurrency(s) => s.expires_at(),
        }
    }

    fn check(&self, req: &CheckRequest<'_>, now: Micros) -> CheckOutcome {
        let (p, cost) = (req.policy, req.cost);
        match self {
            Self::TokenBucket(s) => token_bucket::check(s, p, now, cost),
            Self::SlidingWindow(s) => sliding_window::check(s, p, now, cost),
            Self::SlidingLog(s) => sliding_log::check(s, p, now, cost),
            Self::FixedWindow(s) => fixed_window::check(s, p, now, cost),
            Self::Concurrency(s) => concurrency::decide(s, p.limit(), p.lease_ttl(), now, cost),
        }
    }

    /// (remaining, reset_after) of the state as it is, consuming nothing.
    fn peek(&self, req: &CheckRequest<'_>, now: Micros) -> (u64, Micros) {
        let p = req.policy;
        match self {
            Self::TokenBucket(s) => token_bucket::peek(s, p, now),
            Self::SlidingWindow(s) => sliding_window::peek(s, p, now),
            Self::SlidingLog(s) => sliding_log::peek(s, p, now),
            Self::FixedWindow(s) => fixed_window::peek(s, p, now),
            Self::Concurrency(s) => concurrency::peek(s, p.limit(), now),
        }
    }

    fn commit(&mut self, req: &CheckRequest<'_>, now: Micros) {
        let (p, cost) = (req.policy, req.cost);
        match self {
            Self::TokenBucket(s) => token_bucket::commit(s, p, now, cost),
            Self::SlidingWindow(s) => sliding_window::commit(s, p, now, cost),
            Self::SlidingLog(s) => sliding_log::commit(s, p, now, cost),
            Self::FixedWindow(s) => fixed_window::commit(s, p, now, cost),
            Self::Concurrency(s) => {
                let member = req.lease_member.unwrap_or_default().to_owned();
                concurrency::record(s, member, cost, p.lease_ttl(), now)
            }
        }
    }
}

/// One check of an Acquire: its policy, cost and (for concurrency) the lease to take.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    /// The validated policy.
    pub policy: &'a Policy,
    /// Units to take (at most the policy's capacity).
    pub cost: u64,
    /// Concurrency only: the lease member `<cost>~<id>` to record when admitted.
    pub lease_member: Option<&'a str>,
}

/// What an Acquire decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireOutcome {
    /// Every non-shadow check allowed (and so the allowed checks were consumed).
    pub allowed: bool,
    /// Per check, in request order.
    pub checks: Vec<CheckOutcome>,
}

/// Decides all checks against `states` (same order, one distinct state per check) at `now`;
/// when `consume` and every non-shadow check allows, consumes the allowed ones.
///
/// Without `consume` (Status) `allowed` and `retry_after` answer "would this cost be
/// admitted now", while `remaining` and `reset_after` describe the limit as it is; so do
/// they for every check of a denied Acquire, since nothing was consumed.
pub fn acquire(
    states: &mut [&mut LimitState],
    checks: &[CheckRequest<'_>],
    now: Micros,
    consume: bool,
) -> AcquireOutcome {
    let outcomes: Vec<CheckOutcome> = states
        .iter()
        .zip(checks)
        .map(|(s, c)| {
            let mut o = s.check(c, now);
            if !consume {
                (o.remaining, o.reset_after) = s.peek(c, now);
            }
            o
        })
        .collect();
    let allowed = outcomes
        .iter()
        .zip(checks)
        .all(|(o, c)| o.allowed || c.policy.shadow());
    // Denied: nothing is consumed, so the checks that would pass report their limit as it
    // is rather than as it would be after this request.
    let mut outcomes = outcomes;
    if consume && !allowed {
        for ((o, s), c) in outcomes.iter_mut().zip(states.iter()).zip(checks) {
            if o.allowed {
                (o.remaining, o.reset_after) = s.peek(c, now);
            }
        }
    }
    if consume && allowed {
        for ((s, c), o) in states.iter_mut().zip(checks).zip(&outcomes) {
            if o.allowed {
                s.commit(c, now);
            }
        }
    }
    AcquireOutcome {
        allowed,
        checks: outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PolicySpec, time::SECOND};

    fn policy(algorithm: Algorithm, limit: u64, shadow: bool) -> Policy {
        Policy::new(PolicySpec {
            algorithm,
            limit,
            period: SECOND,
            burst: 0,
            fail_mode: None,
            lease_ttl: None,
            shadow,
        })
        .unwrap()
    }

    #[test]
    fn a_denied_check_consumes_nothing_anywhere() {
        let big = policy(Algorithm::FixedWindow, 10, false);
        let small = policy(Algorithm::TokenBucket, 1, false);
        let mut a = LimitState::empty(Algorithm::FixedWindow);
        let mut b = LimitState::empty(Algorithm::TokenBucket);
        let reqs = [
            CheckRequest {
                policy: &big,
                cost: 1,
                lease_member: None,
            },
            CheckRequest {
                policy: &small,
                cost: 1,
                lease_member: None,
            },
        ];
        assert!(acquire(&mut [&mut a, &mut b], &reqs, SECOND, true).allowed);
        let o = acquire(&mut [&mut a, &mut b], &reqs, SECOND, true);
        assert!(!o.allowed);
        assert!(o.checks[0].allowed);
        // The fixed window was not charged for the denied request, and says so: 9 of 10
        // left (the first Acquire took one), not the 8 this request would have left.
        assert_eq!(o.checks[0].remaining, 9);
        let o = acquire(&mut [&mut a], &reqs[..1], SECOND, true);
        assert_eq!(o.checks[0].remaining, 8);
    }

    #[test]
    fn shadow_checks_never_deny() {
        let shadow = policy(Algorithm::FixedWindow, 1, true);
        let mut s = LimitState::empty(Algorithm::FixedWindow);
        let req = [CheckRequest {
            policy: &shadow,
            cost: 1,
            lease_member: None,
        }];
        for i in 0..3 {
            let o = acquire(&mut [&mut s], &req, SECOND, true);
            assert!(o.allowed);
            assert_eq!(o.checks[0].allowed, i == 0);
        }
    }

    #[test]
    fn status_reports_the_limit_as_it_is() {
        let p = policy(Algorithm::TokenBucket, 5, false);
        let mut s = LimitState::empty(Algorithm::TokenBucket);
        let req = [CheckRequest {
            policy: &p,
            cost: 2,
            lease_member: None,
        }];
        let o = acquire(&mut [&mut s], &req, SECOND, false);
        assert!(o.checks[0].allowed);
        assert_eq!((o.checks[0].remaining, o.checks[0].reset_after), (5, 0));
        acquire(&mut [&mut s], &req, SECOND, true);
        let o = acquire(&mut [&mut s], &req, SECOND, false);
        assert_eq!(
            (o.checks[0].remaining, o.checks[0].reset_after),
            (3, 400_000)
        );
    }

    #[test]
    fn status_never_consumes() {
        let p = policy(Algorithm::SlidingLog, 1, false);
        let mut s = LimitState::empty(Algorithm::SlidingLog);
        let req = [CheckRequest {
            policy: &p,
            cost: 1,
            lease_member: None,
        }];
        assert!(acquire(&mut [&mut s], &req, SECOND, false).allowed);
        assert!(acquire(&mut [&mut s], &req, SECOND, false).allowed);
    }
}
