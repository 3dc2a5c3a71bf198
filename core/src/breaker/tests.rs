//! The state machine's rules, one test each, with an explicit clock.
use super::{
    machine::{admit, advance, commit, info, report, set_state},
    *,
};
use crate::time::SECOND;

fn cfg(f: impl FnOnce(&mut BreakerSpec)) -> BreakerConfig {
    let mut s = BreakerSpec {
        window: WindowKind::Count,
        window_size: 10,
        minimum_calls: 4,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: SECOND,
        wait_in_open: 10 * SECOND,
        half_open_calls: 2,
        half_open_max_wait: 5 * SECOND,
        ..BreakerSpec::default()
    };
    f(&mut s);
    BreakerConfig::new(s).unwrap()
}

fn outcomes(calls: u64, failures: u64, slow: u64) -> ReportInput<'static> {
    ReportInput {
        counts: Counts {
            calls,
            failures,
            slow,
        },
        ..ReportInput::default()
    }
}

const T0: u64 = 1_000 * SECOND;

#[test]
fn reading_or_admitting_never_creates_state() {
    let c = cfg(|_| {});
    let mut b = None;
    let a = admit(&mut b, &c, T0, &mut Vec::new());
    assert!(a.allowed);
    assert_eq!((a.state, a.generation), (State::Closed, FIRST_GENERATION));
    commit(&mut b, &c, T0);
    assert!(b.is_none());
    assert!(!info(&b, &c, T0).exists);
}

#[test]
fn opens_at_the_failure_rate_once_minimum_calls_are_in() {
    let c = cfg(|_| {});
    let mut b = None;
    let mut ev = Vec::new();
    // 3 calls, all failed: below minimum_calls
    report(&mut b, &c, T0, &outcomes(3, 3, 0), 0, &mut ev);
    assert_eq!(b.as_ref().unwrap().state, State::Closed);
    // a 4th call: 3/4 failed >= 50 %
    let r = report(&mut b, &c, T0, &outcomes(1, 0, 0), 0, &mut ev);
    assert_eq!((r.state, r.generation), (State::Open, 2));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].reason, "failure_rate");
    assert_eq!(ev[0].retry_after, 10 * SECOND);
    let a = admit(&mut b, &c, T0 + SECOND, &mut ev);
    assert!(!a.allowed);
    assert_eq!(a.retry_after, 9 * SECOND);
}

#[test]
fn slow_calls_open_it_too() {
    let c = cfg(|s| s.slow_call_rate_threshold = 50.0);
    let mut b = None;
    let mut ev = Vec::new();
    report(&mut b, &c, T0, &outcomes(4, 0, 2), 0, &mut ev);
    assert_eq!(ev[0].reason, "slow_call_rate");
}

#[test]
fn half_open_grants_exactly_its_permits_and_closes_on_success() {
    let c = cfg(|_| {});
    let mut b = None;
    let mut ev = Vec::new();
    set_state(&mut b, &c, T0, State::Open, 0, &mut ev);
    let at = T0 + 10 * SECOND;
    let mut granted = 0;
    for _ in 0..5 {
        let a = admit(&mut b, &c, at, &mut ev);
        if a.allowed {
            granted += 1;
            commit(&mut b, &c, at);
        }
    }
    assert_eq!(granted, 2);
    assert_eq!(ev.last().unwrap().reason, "wait_elapsed");
    let generation = b.as_ref().unwrap().generation;
    // one success: the second outcome can still fail (1/2 = 50 %), so no decision yet
    let r = report(
        &mut b,
        &c,
        at,
        &ReportInput {
            generation,
            ..outcomes(1, 0, 0)
        },
        0,
        &mut ev,
    );
    assert_eq!(r.state, State::HalfOpen);
    let r = report(&mut b, &c, at, &outcomes(1, 0, 0), 0, &mut ev);
    assert_eq!(r.state, State::Closed);
    assert_eq!(ev.last().unwrap().reason, "trial_success");
    assert_eq!(b.as_ref().unwrap().opens, 0);
}

#[test]
fn enough_trial_failures_reopen_early_with_a_longer_wait() {
    let c = cfg(|s| {
        s.half_open_calls = 4;
        s.wait_in_open_multiplier = 2.0;
    });
    let mut b = None;
    let mut ev = Vec::new();
    set_state(&mut b, &c, T0, State::Open, 0, &mut ev);
    let at = T0 + 10 * SECOND;
    advance(b.as_mut().unwrap(), &c, at, &mut ev);
    // 2 failures of 4 trials = 50 %: decided before the other two report
    let r = report(&mut b, &c, at, &outcomes(2, 2, 0), 0, &mut ev);
    assert_eq!(r.state, State::Open);
    assert_eq!(ev.last().unwrap().reason, "trial_failures");
    assert_eq!(ev.last().unwrap().retry_after, 20 * SECOND);
}

#[test]
fn released_and_expired_permits_are_granted_again() {
    let c = cfg(|s| s.half_open_calls = 1);
    let mut b = None;
    let mut ev = Vec::new();
    set_state(&mut b, &c, T0, State::HalfOpen, 0, &mut ev);
    assert!(admit(&mut b, &c, T0, &mut ev).allowed);
    commit(&mut b, &c, T0);
    let denied = admit(&mut b, &c, T0 + SECOND, &mut ev);
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after, 4 * SECOND);
    // handed back
    report(
        &mut b,
        &c,
        T0 + SECOND,
        &ReportInput {
            released: 1,
            ..ReportInput::default()
        },
        0,
        &mut ev,
    );
    assert!(admit(&mut b, &c, T0 + SECOND, &mut ev).allowed);
    commit(&mut b, &c, T0 + SECOND);
    // expired after half_open_max_wait
    assert!(!admit(&mut b, &c, T0 + 5 * SECOND, &mut ev).allowed);
    assert!(admit(&mut b, &c, T0 + 6 * SECOND, &mut ev).allowed);
}

#[test]
fn reports_of_another_generation_are_ignored() {
    let c = cfg(|_| {});
    let mut b = None;
    let mut ev = Vec::new();
    report(&mut b, &c, T0, &outcomes(4, 4, 0), 0, &mut ev);
    let opened = b.as_ref().unwrap().generation;
    let late = ReportInput {
        generation: FIRST_GENERATION,
        ..outcomes(10, 0, 0)
    };
    let r = report(&mut b, &c, T0, &late, 0, &mut ev);
    assert!(!r.accepted);
    assert_eq!((r.state, r.generation), (State::Open, opened));
}

#[test]
fn minimum_reporters_keeps_one_sick_client_from_opening_it() {
    let c = cfg(|s| s.minimum_reporters = 2);
    let mut b = None;
    let mut ev = Vec::new();
    let from = |reporter| ReportInput {
        reporter,
        ..outcomes(4, 4, 0)
    };
    report(&mut b, &c, T0, &from("a"), 0, &mut ev);
    report(&mut b, &c, T0, &from("a"), 0, &mut ev);
    assert_eq!(b.as_ref().unwrap().state, State::Closed);
    assert_eq!(info(&b, &c, T0).failing_reporters, 1);
    report(&mut b, &c, T0, &from("b"), 0, &mut ev);
    assert_eq!(b.as_ref().unwrap().state, State::Open);
}

#[test]
fn forced_states_stick_and_closed_resets_the_window() {
    let c = cfg(|_| {});
    let mut b = None;
    let mut ev = Vec::new();
    set_state(&mut b, &c, T0, State::ForcedOpen, 0, &mut ev);
    assert!(!admit(&mut b, &c, T0 + 1_000 * SECOND, &mut ev).allowed);
    set_state(&mut b, &c, T0, State::MetricsOnly, 0, &mut ev);
    report(&mut b, &c, T0, &outcomes(10, 10, 0), 0, &mut ev);
    assert_eq!(b.as_ref().unwrap().state, State::MetricsOnly);
    assert_eq!(info(&b, &c, T0).counts.failures, 10);
    set_state(&mut b, &c, T0, State::Disabled, 0, &mut ev);
    report(&mut b, &c, T0, &outcomes(10, 10, 0), 0, &mut ev);
    assert!(admit(&mut b, &c, T0, &mut ev).allowed);
    set_state(&mut b, &c, T0, State::Closed, 0, &mut ev);
    assert_eq!(info(&b, &c, T0).counts, Counts::default());
    assert_eq!(b.as_ref().unwrap().generation, 5);
}

#[test]
fn a_time_window_forgets_failures_older_than_its_span() {
    let c = cfg(|s| {
        s.window = WindowKind::Time;
        s.window_size = 5;
    });
    let mut b = None;
    let mut ev = Vec::new();
    report(&mut b, &c, T0, &outcomes(3, 3, 0), 0, &mut ev);
    report(&mut b, &c, T0 + 5 * SECOND, &outcomes(1, 0, 0), 0, &mut ev);
    assert_eq!(b.as_ref().unwrap().state, State::Closed);
    report(&mut b, &c, T0 + 6 * SECOND, &outcomes(3, 3, 0), 0, &mut ev);
    assert_eq!(b.as_ref().unwrap().state, State::Open);
}

#[test]
fn jitter_spreads_the_wait() {
    let c = cfg(|s| s.wait_in_open_jitter = 0.5);
    let mut b = None;
    let mut ev = Vec::new();
    set_state(&mut b, &c, T0, State::Open, 999_999, &mut ev);
    assert_eq!(ev[0].retry_after, 10 * SECOND + 4_999_995);
}
