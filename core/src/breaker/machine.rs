//! The breaker state machine (twin of `lua/breaker.lua`): admission, reports, operator
//! overrides and reads, each a pure function of (state, config, now, input).
//!
//! ```text
//!            failure or slow-call rate >= threshold
//!            (>= minimum_calls, >= minimum_reporters)
//!   CLOSED ───────────────────────────────────────────▶ OPEN ◀─────────────┐
//!     ▲                                                  │ wait_in_open    │ trial outcomes
//!     │ trial outcomes can no longer                     │ (x multiplier,  │ reach a threshold
//!     │ reach a threshold                                ▼  + jitter)      │
//!     └──────────────────────────────────────────── HALF_OPEN ─────────────┘
//!                                         half_open_calls permits, fleet-wide
//!
//!   FORCED_OPEN, DISABLED, METRICS_ONLY: set by an operator, left only by SetState.
//! ```
//!
//! Every transition bumps `generation` and starts a fresh window; a report carrying another
//! generation than the breaker's is ignored, so late outcomes cannot move a new state.
//! OPEN becomes HALF_OPEN lazily, on the first admission, report or read after the wait.
use std::collections::BTreeMap;

use super::{
    config::{BreakerConfig, MAX_TRACKED_REPORTERS, WindowKind},
    window::{Counts, Window},
};
use crate::time::{Micros, SECOND};

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass; outcomes fill the window.
    Closed,
    /// Calls are refused until the wait has passed.
    Open,
    /// A bounded number of trial calls pass.
    HalfOpen,
    /// Refuses every call until an operator changes it.
    ForcedOpen,
    /// Lets every call pass and records nothing.
    Disabled,
    /// Lets every call pass, records outcomes, never opens.
    MetricsOnly,
}

impl State {
    /// Every state.
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// The name stored in Redis and shown to people.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether an operator put the breaker in this state (it then never expires).
    pub fn is_forced(self) -> bool {
        matches!(
            self,
            State::ForcedOpen | State::Disabled | State::MetricsOnly
        )
    }
}

/// The first generation of a breaker (0 on the wire means "not given").
pub const FIRST_GENERATION: u64 = 1;

/// One breaker's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    /// Current state.
    pub state: State,
    /// Bumped on every transition.
    pub generation: u64,
    /// OPEN: when trial calls may start.
    pub open_until: Micros,
    /// Consecutive opens since the last close.
    pub opens: u32,
    /// Outcomes since the last transition (CLOSED, METRICS_ONLY).
    pub window: Window,
    /// Reporters of failures or slow calls, with the time of their last such report.
    pub reporters: BTreeMap<String, Micros>,
    /// HALF_OPEN: expiry times of the trial permits granted and not yet reported, ascending.
    pub permits: Vec<Micros>,
    /// HALF_OPEN: trial outcomes reported.
    pub trial: Counts,
}

impl Breaker {
    /// A breaker as first reported to: CLOSED, first generation, empty window.
    pub fn fresh(cfg: &BreakerConfig) -> Self {
        Self {
            state: State::Closed,
            generation: FIRST_GENERATION,
            open_until: 0,
            opens: 0,
            window: Window::new(cfg.window(), cfg.window_size()),
            reporters: BTreeMap::new(),
            permits: Vec::new(),
            trial: Counts::default(),
        }
    }
}

/// A state change, as published to watchers and kept in the breaker's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// When.
    pub at: Micros,
    /// Why: `failure_rate`, `slow_call_rate`, `wait_elapsed`, `trial_failures`,
    /// `trial_slow_calls`, `trial_success` or `set_state`.
    pub reason: &'static str,
    /// The generation after it.
    pub generation: u64,
    /// OPEN: the wait before trial calls.
    pub retry_after: Micros,
}

/// What a breaker said to one Acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The call may go ahead (in HALF_OPEN: it holds a trial permit once committed).
    pub allowed: bool,
    /// The state the decision was taken in.
    pub state: State,
    /// When refused: when asking again can succeed.
    pub retry_after: Micros,
    /// The generation to report outcomes with.
    pub generation: u64,
}

/// Outcomes reported for one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportInput<'a> {
    /// Calls, failures and slow calls.
    pub counts: Counts,
    /// Trial permits handed back unused.
    pub released: u64,
    /// The generation the calls were admitted in; 0: the current one.
    pub generation: u64,
    /// Who reports; empty: not given (counted as one anonymous reporter).
    pub reporter: &'a str,
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportResult {
    /// False when the report's generation was not the breaker's.
    pub accepted: bool,
    /// State after the report.
    pub state: State,
    /// Generation after the report.
    pub generation: u64,
}

/// A breaker's state as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Current state.
    pub state: State,
    /// Current generation.
    pub generation: u64,
    /// Window totals (HALF_OPEN: trial outcomes).
    pub counts: Counts,
    /// See `BreakerInfo.retry_after`.
    pub retry_after: Micros,
    /// HALF_OPEN: permits granted and not reported.
    pub permits_in_flight: u32,
    /// Consecutive opens.
    pub opens: u32,
    /// Distinct failing reporters in the window.
    pub failing_reporters: u32,
    /// The breaker has stored state.
    pub exists: bool,
}

/// Moves `b` to `to`: bumps the generation, starts a fresh window, and for OPEN computes
/// the wait of this consecutive open (`draw` is the jitter draw, 0..1_000_000).
fn transition(
    b: &mut Breaker,
    cfg: &BreakerConfig,
    now: Micros,
    to: State,
    reason: &'static str,
    draw: u32,
    out: &mut Vec<Transition>,
) {
    let from = b.state;
    b.state = to;
    b.generation += 1;
    b.window = Window::new(cfg.window(), cfg.window_size());
    b.reporters.clear();
    b.permits.clear();
    b.trial = Counts::default();
    let mut retry_after = 0;
    match to {
        State::Open => {
            b.opens = b.opens.saturating_add(1);
            retry_after = cfg.wait(b.opens, draw);
            b.open_until = now + retry_after;
        }
        State::Closed => b.opens = 0,
        _ => {}
    }
    out.push(Transition {
        from,
        to,
        at: now,
        reason,
        generation: b.generation,
        retry_after,
    });
}

/// The lazy steps every operation starts with: OPEN past its wait becomes HALF_OPEN, and
/// expired trial permits are dropped (so they can be granted again).
pub fn advance(b: &mut Breaker, cfg: &BreakerConfig, now: Micros, out: &mut Vec<Transition>) {
    if b.state == State::Open && now >= b.open_until {
        transition(b, cfg, now, State::HalfOpen, "wait_elapsed", 0, out);
    }
    if b.state == State::HalfOpen {
        b.permits.retain(|&expiry| expiry > now);
    }
}

/// Decides whether a call may pass (after [`advance`]). Nothing is taken: an admitted
/// HALF_OPEN call takes its permit in [`commit`], only when the whole Acquire is admitted.
pub fn admit(
    b: &mut Option<Breaker>,
    cfg: &BreakerConfig,
    now: Micros,
    out: &mut Vec<Transition>,
) -> Admission {
    let Some(b) = b else {
        return Admission {
            allowed: true,
            state: State::Closed,
            retry_after: 0,
            generation: FIRST_GENERATION,
        };
    };
    advance(b, cfg, now, out);
    let (allowed, retry_after) = match b.state {
        State::Closed | State::Disabled | State::MetricsOnly => (true, 0),
        State::Open => (false, b.open_until - now),
        State::ForcedOpen => (false, cfg.spec().wait_in_open),
        State::HalfOpen => {
            let used = b.permits.len() as u64 + b.trial.calls;
            if used < u64::from(cfg.spec().half_open_calls) {
                (true, 0)
            } else {
                (false, b.permits.first().map_or(0, |&e| e - now))
            }
        }
    };
    Admission {
        allowed,
        state: b.state,
        retry_after,
        generation: b.generation,
    }
}

/// Takes the trial permit of an admitted HALF_OPEN call.
pub fn commit(b: &mut Option<Breaker>, cfg: &BreakerConfig, now: Micros) {
    if let Some(b) = b
        && b.state == State::HalfOpen
    {
        let expiry = now + cfg.spec().half_open_max_wait;
        let at = b.permits.partition_point(|&e| e <= expiry);
        b.permits.insert(at, expiry);
    }
}

fn rate_reached(part: u64, threshold: f64, whole: u64) -> bool {
    (part as f64) * 100.0 >= threshold * whole as f64
}

/// Records outcomes. Creates the breaker when it has no state.
/// Twin of `lua/breaker_report.lua` (`br_report` in `lua/breaker.lua`).
pub fn report(
    b: &mut Option<Breaker>,
    cfg: &BreakerConfig,
    now: Micros,
    input: &ReportInput<'_>,
    draw: u32,
    out: &mut Vec<Transition>,
) -> ReportResult {
    let b = b.get_or_insert_with(|| Breaker::fresh(cfg));
    advance(b, cfg, now, out);
    let accepted = input.generation == 0 || input.generation == b.generation;
    if accepted {
        let s = cfg.spec();
        match b.state {
            State::Closed | State::MetricsOnly => {
                if !b.window.fits(cfg.window(), cfg.window_size()) {
                    b.window = Window::new(cfg.window(), cfg.window_size());
                }
                b.window.advance(now);
                b.window.add(now, input.counts);
                if s.minimum_reporters > 1 {
                    track_reporter(b, cfg, now, input);
                }
                let t = b.window.totals(now);
                if b.state == State::Closed && t.calls >= u64::from(s.minimum_calls) {
                    let reason = if rate_reached(t.failures, s.failure_rate_threshold, t.calls) {
                        Some("failure_rate")
                    } else if rate_reached(t.slow, s.slow_call_rate_threshold, t.calls) {
                        Some("slow_call_rate")
                    } else {
                        None
                    };
                    let enough_reporters = s.minimum_reporters <= 1
                        || b.reporters.len() as u64 >= u64::from(s.minimum_reporters);
                    if let Some(reason) = reason
                        && enough_reporters
                    {
                        transition(b, cfg, now, State::Open, reason, draw, out);
                    }
                }
            }
            State::HalfOpen => {
                let released = input.released.min(b.permits.len() as u64) as usize;
                b.permits.drain(..released);
                let done = input.counts.calls.min(b.permits.len() as u64) as usize;
                b.permits.drain(..done);
                b.trial.calls += input.counts.calls;
                b.trial.failures += input.counts.failures;
                b.trial.slow += input.counts.slow;
                let total = u64::from(s.half_open_calls);
                let whole = total.max(b.trial.calls);
                let left = total.saturating_sub(b.trial.calls);
                let t = b.trial;
                if rate_reached(t.failures, s.failure_rate_threshold, whole) {
                    transition(b, cfg, now, State::Open, "trial_failures", draw, out);
                } else if rate_reached(t.slow, s.slow_call_rate_threshold, whole) {
                    transition(b, cfg, now, State::Open, "trial_slow_calls", draw, out);
                } else if !rate_reached(t.failures + left, s.failure_rate_threshold, whole)
                    && !rate_reached(t.slow + left, s.slow_call_rate_threshold, whole)
                {
                    transition(b, cfg, now, State::Closed, "trial_success", draw, out);
                }
            }
            // Nothing is let through (OPEN, FORCED_OPEN) or nothing is recorded (DISABLED).
            State::Open | State::ForcedOpen | State::Disabled => {}
        }
    }
    ReportResult {
        accepted,
        state: b.state,
        generation: b.generation,
    }
}

/// Remembers that `input.reporter` reported failures or slow calls; forgets reporters that
/// left a time window, and the oldest beyond [`MAX_TRACKED_REPORTERS`].
fn track_reporter(b: &mut Breaker, cfg: &BreakerConfig, now: Micros, input: &ReportInput<'_>) {
    if input.counts.failures > 0 || input.counts.slow > 0 {
        b.reporters.insert(input.reporter.to_owned(), now);
    }
    if cfg.window() == WindowKind::Time {
        let span = u64::from(cfg.window_size()) * SECOND;
        b.reporters.retain(|_, t| *t + span > now);
    }
    while b.reporters.len() > MAX_TRACKED_REPORTERS {
        let oldest = b
            .reporters
            .iter()
            .min_by(|a, c| (a.1, a.0).cmp(&(c.1, c.0)))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            b.reporters.remove(&k);
        }
    }
}

/// An operator's override: moves the breaker to `to` (any state), creating it if needed.
/// CLOSED starts an empty window and forgets consecutive opens.
/// Twin of `lua/breaker_set_state.lua`.
pub fn set_state(
    b: &mut Option<Breaker>,
    cfg: &BreakerConfig,
    now: Micros,
    to: State,
    draw: u32,
    out: &mut Vec<Transition>,
) {
    let b = b.get_or_insert_with(|| Breaker::fresh(cfg));
    advance(b, cfg, now, out);
    transition(b, cfg, now, to, "set_state", draw, out);
}

/// Reads the breaker as of `now` (after [`advance`], which the caller applies when the
/// breaker exists).
/// With [`advance`], the twin of `lua/breaker_get.lua`.
pub fn info(b: &Option<Breaker>, cfg: &BreakerConfig, now: Micros) -> Info {
    let Some(b) = b else {
        return Info {
            state: State::Closed,
            generation: FIRST_GENERATION,
            counts: Counts::default(),
            retry_after: 0,
            permits_in_flight: 0,
            opens: 0,
            failing_reporters: 0,
            exists: false,
        };
    };
    let counts = match b.state {
        State::HalfOpen => b.trial,
        _ if b.window.fits(cfg.window(), cfg.window_size()) => b.window.totals(now),
        _ => Counts::default(),
    };
    let s = cfg.spec();
    let retry_after = match b.state {
        State::Open => b.open_until.saturating_sub(now),
        State::HalfOpen
            if b.permits.len() as u64 + b.trial.calls >= u64::from(s.half_open_calls) =>
        {
            b.permits.first().map_or(0, |&e| e.saturating_sub(now))
        }
        _ => 0,
    };
    let failing_reporters = match cfg.window() {
        WindowKind::Time => {
            let span = u64::from(cfg.window_size()) * SECOND;
            b.reporters.values().filter(|&&t| t + span > now).count()
        }
        WindowKind::Count => b.reporters.len(),
    };
    Info {
        state: b.state,
        generation: b.generation,
        counts,
        retry_after,
        permits_in_flight: b.permits.len() as u32,
        opens: b.opens,
        failing_reporters: failing_reporters as u32,
        exists: true,
    }
}
