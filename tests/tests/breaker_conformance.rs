//! Conformance of the shared circuit breaker: `lua/breaker.lua` decides exactly like its
//! `core` twin, on a real Redis with explicit clocks.
//!
//! Random breaker settings and random operation sequences go through three sides:
//! - the Redis store (`RedisStore`: `breaker_report.lua`, `breaker_get.lua`,
//!   `breaker_set_state.lua` and the breaker part of `acquire.lua`, assembled as the server
//!   assembles them);
//! - the pure model, `floodgate_core::breaker::machine` on an `Option<Breaker>`, called
//!   directly (admit then commit, report, set_state, advance then info);
//! - the `MemoryStore` (which runs the same model behind the `Store` interface).
//!
//! Every step must give identical answers on all three: the report's (accepted, state,
//! generation), the Acquire's decision (allowed, state, retry_after, generation), every
//! `Info` field of a read (state, generation, window counts, retry_after, permits in
//! flight, consecutive opens, failing reporters, exists) and the transitions the step made
//! (from, to, reason). After every step a read at the same instant must agree too (and make
//! no transition), and a breaker without state must have none of its four keys in Redis: a
//! Get, Status or Acquire never creates state. At the end of each case the history stream
//! must list every transition the model made, newest first, with the same from, to, at,
//! reason, generation and retry_after.
//!
//! Clock steps include 0, single microseconds, second boundaries ±1 µs (time windows turn
//! over there), the last `retry_after` and the model's next deadline ±1 µs (where OPEN
//! becomes HALF_OPEN and a trial permit expires), `half_open_max_wait` ±1 µs, the instant
//! the oldest failing reporter leaves a time window ±1 µs, jumps past the longest wait in
//! OPEN, and days.
//!
//! Deterministic cases pin a report larger than the count window (proportions kept, also
//! across the ring's wrap), the history of a whole lifecycle, the reporter window edge,
//! and that reads and admissions never create state.
use std::sync::Arc;

use floodgate_core::{
    FailMode, Micros,
    breaker::{
        Admission, Breaker, BreakerConfig, BreakerSpec, Counts, FIRST_GENERATION, Info,
        ReportInput, State, Transition, WindowKind, machine,
    },
    time::SECOND,
};
use floodgate_server::{
    breaker_config::BreakerSettings,
    keys::Keys,
    store::{
        AcquirePlan, BreakerEvent, MadeTransition, PlannedBreaker, ReportCounts, Store,
        StoreDecision, memory::MemoryStore,
    },
};
use floodgate_tests::{
    conformance_support::{EPOCH, Env, runner},
    unique_namespace,
};
use proptest::{prelude::*, test_runner::TestCaseError};

/// Reporter names the operations pick from ("" is the anonymous reporter).
const REPORTERS: [&str; 4] = ["a", "b", "c", ""];

/// Transitions kept per breaker; a case makes far fewer.
const HISTORY_LIMIT: usize = 1_000;

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn threshold() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => prop::sample::select(vec![10.0, 33.3, 50.0, 66.7, 100.0]),
        2 => (1u32..=1_000_000).prop_map(|x| f64::from(x) / 10_000.0),
        1 => (0.0f64..=100.0).prop_filter("above 0", |t| *t > 0.0),
    ]
}

fn wait() -> impl Strategy<Value = Micros> {
    prop_oneof![
        1 => Just(1_000u64),
        1 => Just(SECOND),
        3 => 1_000u64..=3 * SECOND,
    ]
}

/// A valid spec with the ranges of the brief: small windows so they fill and turn over.
fn spec() -> impl Strategy<Value = BreakerSpec> {
    let window = prop_oneof![
        (Just(WindowKind::Count), 1u32..=20),
        (Just(WindowKind::Time), 1u32..=5),
    ];
    let rates = (1u32..=10, threshold(), threshold());
    let waits = (
        wait(),
        prop::sample::select(vec![1.0, 1.5, 2.0]),
        prop_oneof![2 => Just(None), 1 => (0u64..=5 * SECOND).prop_map(Some)],
        prop::sample::select(vec![0.0, 0.3]),
    );
    let half_open = (1u32..=5, wait(), prop::sample::select(vec![0u32, 2, 3]));
    (window, rates, waits, half_open).prop_map(
        |(
            (window, window_size),
            (minimum_calls, failure_rate_threshold, slow_call_rate_threshold),
            (wait_in_open, wait_in_open_multiplier, max_extra, wait_in_open_jitter),
            (half_open_calls, half_open_max_wait, minimum_reporters),
        )| BreakerSpec {
            window,
            window_size,
            minimum_calls,
            failure_rate_threshold,
            slow_call_rate_threshold,
            slow_call_duration: SECOND,
            wait_in_open,
            wait_in_open_multiplier,
            // None: the default (10 x wait_in_open)
            wait_in_open_max: max_extra.map_or(0, |x| wait_in_open + x),
            wait_in_open_jitter,
            half_open_calls,
            half_open_max_wait,
            minimum_reporters,
        },
    )
}

/// How far the clock moves before a step.
#[derive(Debug, Clone, Copy)]
enum Tick {
    /// Same microsecond.
    Zero,
    /// 1..=1000 µs.
    Micros(u64),
    /// 0..=3 s.
    Random(u64),
    /// To the next second boundary, then -1, 0 or +1 µs.
    NextSecond(i64),
    /// Whole seconds.
    Seconds(u64),
    /// By the last non-zero `retry_after` seen, then -1, 0 or +1 µs.
    LastRetry(i64),
    /// By `half_open_max_wait`, then -1, 0 or +1 µs.
    HalfOpenMaxWait(i64),
    /// To the model's next deadline (OPEN: the end of the wait; HALF_OPEN: the expiry of
    /// the oldest trial permit), then -1, 0 or +1 µs.
    Deadline(i64),
    /// To when the oldest tracked failing reporter leaves a time window (its last report
    /// plus `window_size` seconds), then -1, 0 or +1 µs.
    ReporterExpiry(i64),
    /// Beyond the longest possible wait in OPEN (max wait plus full jitter).
    PastOpenWait,
    /// Days.
    Days(u64),
}

impl Tick {
    /// Resolved against the model as it is before the step.
    fn resolve(
        self,
        now: Micros,
        s: &BreakerSpec,
        last_retry: Micros,
        model: Option<&Breaker>,
    ) -> Micros {
        let nudge = |base: Micros, d: i64| base.saturating_add_signed(d);
        match self {
            Tick::Zero => 0,
            Tick::Micros(n) | Tick::Random(n) => n,
            Tick::NextSecond(d) => nudge(SECOND - now % SECOND, d),
            Tick::Seconds(n) => n * SECOND,
            Tick::LastRetry(d) => nudge(last_retry, d),
            Tick::HalfOpenMaxWait(d) => nudge(s.half_open_max_wait, d),
            Tick::Deadline(d) => {
                let deadline = model.and_then(|b| match b.state {
                    State::Open => Some(b.open_until),
                    State::HalfOpen => b.permits.first().copied(),
                    _ => None,
                });
                deadline.map_or(0, |t| nudge(t, d).saturating_sub(now))
            }
            Tick::ReporterExpiry(d) => {
                let oldest = model.and_then(|b| b.reporters.values().min().copied());
                oldest.map_or(0, |t| {
                    nudge(t + u64::from(s.window_size) * SECOND, d).saturating_sub(now)
                })
            }
            Tick::PastOpenWait => {
                let max = s.wait_in_open_max;
                max + (max as f64 * s.wait_in_open_jitter).ceil() as Micros + 1
            }
            Tick::Days(n) => n * 24 * 3_600 * SECOND,
        }
    }
}

fn nudge() -> impl Strategy<Value = i64> {
    -1i64..=1
}

fn tick() -> impl Strategy<Value = Tick> {
    prop_oneof![
        3 => Just(Tick::Zero),
        3 => (1u64..=1_000).prop_map(Tick::Micros),
        3 => (0u64..=3 * SECOND).prop_map(Tick::Random),
        2 => nudge().prop_map(Tick::NextSecond),
        1 => (1u64..=6).prop_map(Tick::Seconds),
        3 => nudge().prop_map(Tick::LastRetry),
        1 => nudge().prop_map(Tick::HalfOpenMaxWait),
        3 => nudge().prop_map(Tick::Deadline),
        2 => nudge().prop_map(Tick::ReporterExpiry),
        1 => Just(Tick::PastOpenWait),
        1 => (1u64..=30).prop_map(Tick::Days),
    ]
}

/// A part (failures or slow calls) of a report's calls.
#[derive(Debug, Clone, Copy)]
enum Part {
    None,
    All,
    Some(u64),
}

impl Part {
    fn resolve(self, calls: u64) -> u64 {
        match self {
            Part::None => 0,
            Part::All => calls,
            Part::Some(r) => r % (calls + 1),
        }
    }
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        2 => Just(Part::None),
        2 => Just(Part::All),
        4 => any::<u64>().prop_map(Part::Some),
    ]
}

/// The generation a report carries, relative to the breaker's current one.
#[derive(Debug, Clone, Copy)]
enum Gen {
    /// 0: "the current one".
    Unset,
    Current,
    Previous,
    Next,
}

impl Gen {
    fn resolve(self, current: u64) -> u64 {
        match self {
            Gen::Unset => 0,
            Gen::Current => current,
            Gen::Previous => current.saturating_sub(1),
            Gen::Next => current + 1,
        }
    }
}

/// What one step does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Report {
        calls: u64,
        failures: Part,
        slow: Part,
        released: u64,
        generation: Gen,
        reporter: usize,
        draw: u32,
    },
    /// A report of no calls handing back 1..=3 unused trial permits, current generation.
    Release(u64),
    /// An Acquire with this breaker only (consume).
    Acquire,
    /// A Status with this breaker only (no permit is taken).
    Status,
    Get,
    SetState(State, u32),
}

fn op() -> impl Strategy<Value = Op> {
    let calls = prop_oneof![
        1 => Just(0u64),
        3 => Just(1u64),
        4 => 1u64..=8,
        2 => 9u64..=45,
        1 => 46u64..=2_000,
    ];
    let generation = prop_oneof![
        3 => Just(Gen::Unset),
        3 => Just(Gen::Current),
        1 => Just(Gen::Previous),
        1 => Just(Gen::Next),
    ];
    let report = (
        calls,
        part(),
        part(),
        prop_oneof![4 => Just(0u64), 1 => 1u64..=3],
        generation,
        0..REPORTERS.len(),
        0u32..1_000_000,
    )
        .prop_map(
            |(calls, failures, slow, released, generation, reporter, draw)| Op::Report {
                calls,
                failures,
                slow,
                released,
                generation,
                reporter,
                draw,
            },
        );
    prop_oneof![
        8 => report,
        2 => (1u64..=3).prop_map(Op::Release),
        5 => Just(Op::Acquire),
        1 => Just(Op::Status),
        2 => Just(Op::Get),
        1 => (prop::sample::select(State::ALL.to_vec()), 0u32..1_000_000)
            .prop_map(|(s, d)| Op::SetState(s, d)),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    spec: BreakerSpec,
    /// Where the clock starts, after [`EPOCH`].
    offset: Micros,
    steps: Vec<(Tick, Op)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        spec(),
        prop_oneof![1 => Just(0u64), 4 => 0u64..=10_000_000_000_000],
        prop::collection::vec((tick(), op()), 10..=40),
    )
        .prop_map(|(spec, offset, steps)| Case {
            spec,
            offset,
            steps,
        })
}

// ---------------------------------------------------------------------------------------
// The three sides
// ---------------------------------------------------------------------------------------

/// One breaker held by Redis, by the model and by the memory store.
struct Sides<'a> {
    env: &'a Env,
    memory: MemoryStore,
    planned: PlannedBreaker,
    cfg: BreakerConfig,
    model: Option<Breaker>,
    /// Every transition the model made, oldest first.
    history: Vec<Transition>,
}

fn planned_breaker(spec: BreakerSpec) -> PlannedBreaker {
    let keys = Keys::new("fg");
    let namespace = unique_namespace("brconf");
    let name = "dep".to_owned();
    let config = BreakerConfig::new(spec).expect("strategies make valid specs");
    PlannedBreaker {
        keys: keys.breaker(&namespace, &name),
        namespace,
        name,
        settings: Arc::new(BreakerSettings {
            config,
            fail_mode: FailMode::Open,
        }),
        channel: keys.breaker_channel(),
    }
}

impl<'a> Sides<'a> {
    fn new(env: &'a Env, spec: BreakerSpec) -> Self {
        let planned = planned_breaker(spec);
        Self {
            env,
            memory: MemoryStore::default(),
            cfg: planned.settings.config.clone(),
            planned,
            model: None,
            history: Vec::new(),
        }
    }

    fn generation(&self) -> u64 {
        self.model
            .as_ref()
            .map_or(FIRST_GENERATION, |b| b.generation)
    }

    /// Keeps the model's transitions and returns them as a store reports them.
    fn made(&mut self, out: Vec<Transition>) -> Vec<MadeTransition> {
        let made = out
            .iter()
            .map(|t| MadeTransition {
                breaker: self.planned.name.clone(),
                from: t.from,
                to: t.to,
                reason: t.reason.to_owned(),
            })
            .collect();
        self.history.extend(out);
        made
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.env.rt.block_on(f)
    }

    /// A report on all three sides; returns the model's answer.
    fn report(
        &mut self,
        r: &ReportCounts,
        draw: u32,
        now: Micros,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let b = &self.planned;
        let redis = self
            .block(self.env.store.breaker_report(b, r, draw, Some(now)))
            .map_err(|e| TestCaseError::fail(format!("{what}: report script failed: {e}")))?;
        let memory = self
            .block(self.memory.breaker_report(b, r, draw, Some(now)))
            .expect("the memory store never fails");
        let mut out = Vec::new();
        let input: ReportInput<'_> = r.input();
        let want = machine::report(&mut self.model, &self.cfg, now, &input, draw, &mut out);
        let made = self.made(out);
        prop_assert_eq!(
            redis.result,
            want,
            "{}: report: Lua (left) vs core (right)",
            what
        );
        prop_assert_eq!(
            &redis.transitions,
            &made,
            "{}: report transitions: Lua (left) vs core (right)",
            what
        );
        prop_assert_eq!(memory.result, want, "{}: report: memory vs core", what);
        prop_assert_eq!(&memory.transitions, &made, "{}: memory transitions", what);
        Ok(())
    }

    /// An Acquire (or Status) with this breaker only; returns the admission.
    fn acquire(
        &mut self,
        consume: bool,
        now: Micros,
        what: &str,
    ) -> Result<Admission, TestCaseError> {
        let plan = AcquirePlan {
            checks: Vec::new(),
            request_record: None,
            breakers: vec![self.planned.clone()],
            consume,
            now: Some(now),
        };
        let redis = self
            .block(self.env.store.acquire(&plan))
            .map_err(|e| TestCaseError::fail(format!("{what}: acquire script failed: {e}")))?;
        let memory = self
            .block(self.memory.acquire(&plan))
            .expect("the memory store never fails");
        let mut out = Vec::new();
        let admission = machine::admit(&mut self.model, &self.cfg, now, &mut out);
        if consume && admission.allowed {
            machine::commit(&mut self.model, &self.cfg, now);
        }
        let want = StoreDecision {
            allowed: admission.allowed,
            checks: Vec::new(),
            leases: Vec::new(),
            breakers: vec![admission],
            transitions: self.made(out),
        };
        prop_assert_eq!(&redis, &want, "{}: Lua (left) vs core (right)", what);
        prop_assert_eq!(&memory, &want, "{}: memory (left) vs core (right)", what);
        Ok(admission)
    }

    /// A read on all three sides; returns the model's info.
    fn get(&mut self, now: Micros, what: &str) -> Result<Info, TestCaseError> {
        let b = &self.planned;
        let redis = self
            .block(self.env.store.breaker_get(b, Some(now)))
            .map_err(|e| TestCaseError::fail(format!("{what}: get script failed: {e}")))?;
        let memory = self
            .block(self.memory.breaker_get(b, Some(now)))
            .expect("the memory store never fails");
        let mut out = Vec::new();
        if let Some(b) = self.model.as_mut() {
            machine::advance(b, &self.cfg, now, &mut out);
        }
        let want = machine::info(&self.model, &self.cfg, now);
        let made = self.made(out);
        prop_assert_eq!(
            &redis.info,
            &want,
            "{}: get: Lua (left) vs core (right)",
            what
        );
        prop_assert_eq!(
            &redis.transitions,
            &made,
            "{}: get transitions: Lua (left) vs core (right)",
            what
        );
        prop_assert_eq!(&memory.info, &want, "{}: get: memory vs core", what);
        prop_assert_eq!(&memory.transitions, &made, "{}: memory transitions", what);
        Ok(want)
    }

    /// An operator's SetState on all three sides.
    fn set_state(
        &mut self,
        to: State,
        draw: u32,
        now: Micros,
        what: &str,
    ) -> Result<Info, TestCaseError> {
        let b = &self.planned;
        let redis = self
            .block(self.env.store.breaker_set_state(b, to, draw, Some(now)))
            .map_err(|e| TestCaseError::fail(format!("{what}: set_state script failed: {e}")))?;
        let memory = self
            .block(self.memory.breaker_set_state(b, to, draw, Some(now)))
            .expect("the memory store never fails");
        let mut out = Vec::new();
        machine::set_state(&mut self.model, &self.cfg, now, to, draw, &mut out);
        let want = machine::info(&self.model, &self.cfg, now);
        let made = self.made(out);
        prop_assert_eq!(
            &redis.info,
            &want,
            "{}: set_state: Lua (left) vs core (right)",
            what
        );
        prop_assert_eq!(
            &redis.transitions,
            &made,
            "{}: set_state transitions: Lua (left) vs core (right)",
            what
        );
        prop_assert_eq!(&memory.info, &want, "{}: set_state: memory vs core", what);
        prop_assert_eq!(&memory.transitions, &made, "{}: memory transitions", what);
        Ok(want)
    }

    /// How many of the breaker's four keys exist in Redis, and whether its state key does.
    fn keys_in_redis(&self) -> (i64, bool) {
        let k = &self.planned.keys;
        let all: i64 = self.env.cmd(
            ::redis::cmd("EXISTS")
                .arg(&k[0])
                .arg(&k[1])
                .arg(&k[2])
                .arg(&k[3]),
        );
        let state: i64 = self.env.cmd(::redis::cmd("EXISTS").arg(&k[0]));
        (all, state == 1)
    }

    /// The model's transitions as a history read answers them: newest first.
    fn expected_history(&self) -> Vec<BreakerEvent> {
        self.history
            .iter()
            .rev()
            .map(|t| BreakerEvent {
                namespace: self.planned.namespace.clone(),
                breaker: self.planned.name.clone(),
                from: t.from,
                to: t.to,
                at: t.at,
                reason: t.reason.to_owned(),
                generation: t.generation,
                retry_after: t.retry_after,
            })
            .collect()
    }

    /// The history on Redis and in memory against the model's.
    fn check_history(&self, limit: usize, what: &str) -> Result<(), TestCaseError> {
        let b = &self.planned;
        let redis = self
            .block(self.env.store.breaker_history(b, limit))
            .map_err(|e| TestCaseError::fail(format!("{what}: XREVRANGE failed: {e}")))?;
        let memory = self
            .block(self.memory.breaker_history(b, limit))
            .expect("the memory store never fails");
        let mut want = self.expected_history();
        want.truncate(limit);
        prop_assert_eq!(
            &redis,
            &want,
            "{}: history: Lua (left) vs core (right)",
            what
        );
        prop_assert_eq!(&memory, &want, "{}: history: memory vs core", what);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Random sequences
// ---------------------------------------------------------------------------------------

fn run_case(env: &Env, case: &Case) -> Result<(), TestCaseError> {
    let mut sides = Sides::new(env, case.spec.clone());
    let spec = sides.cfg.spec().clone();
    let start = EPOCH + case.offset;
    let mut now = start;
    let mut last_retry: Micros = spec.wait_in_open;
    for (i, &(tick, op)) in case.steps.iter().enumerate() {
        now += tick.resolve(now, &spec, last_retry, sides.model.as_ref());
        let what = format!(
            "step {i} ({tick:?} then {op:?}) at +{} us (now {now})",
            now - start
        );
        let mut retry = 0;
        match op {
            Op::Report {
                calls,
                failures,
                slow,
                released,
                generation,
                reporter,
                draw,
            } => {
                let r = ReportCounts {
                    counts: Counts {
                        calls,
                        failures: failures.resolve(calls),
                        slow: slow.resolve(calls),
                    },
                    released,
                    generation: generation.resolve(sides.generation()),
                    reporter: REPORTERS[reporter].to_owned(),
                };
                sides.report(&r, draw, now, &format!("{what} {r:?}"))?;
            }
            Op::Release(released) => {
                let r = ReportCounts {
                    released,
                    generation: sides.generation(),
                    ..ReportCounts::default()
                };
                sides.report(&r, 0, now, &what)?;
            }
            Op::Acquire | Op::Status => {
                let had_state = sides.model.is_some();
                retry = sides
                    .acquire(matches!(op, Op::Acquire), now, &what)?
                    .retry_after;
                if !had_state {
                    let (keys, _) = sides.keys_in_redis();
                    prop_assert_eq!(keys, 0, "{}: an Acquire created breaker keys", what);
                }
            }
            Op::Get => {
                sides.get(now, &what)?;
            }
            Op::SetState(to, draw) => {
                sides.set_state(to, draw, now, &what)?;
            }
        }
        // A read at the same instant agrees and changes nothing.
        let before = sides.history.len();
        let info = sides.get(now, &format!("{what}, then a read"))?;
        prop_assert_eq!(
            sides.history.len(),
            before,
            "{}: a read at the same instant made a transition",
            what
        );
        let (keys, state_key) = sides.keys_in_redis();
        prop_assert_eq!(state_key, info.exists, "{}: state key vs model", what);
        if !info.exists {
            prop_assert_eq!(keys, 0, "{}: keys exist for a breaker without state", what);
        }
        if info.retry_after > 0 {
            last_retry = info.retry_after;
        } else if retry > 0 {
            last_retry = retry;
        }
    }
    sides.check_history(HISTORY_LIMIT, "end of case")?;
    sides.check_history(2, "end of case, last 2")?;
    Ok(())
}

#[test]
fn breaker_lua_decides_like_core() {
    let env = Env::start();
    let mut runner = runner(file!(), 128);
    if let Err(e) = runner.run(&case(), |case| run_case(&env, &case)) {
        panic!("breaker: Lua and core disagree: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic cases
// ---------------------------------------------------------------------------------------

fn fixed_spec(f: impl FnOnce(&mut BreakerSpec)) -> BreakerSpec {
    let mut s = BreakerSpec {
        window: WindowKind::Count,
        window_size: 10,
        minimum_calls: 1_000,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: SECOND,
        wait_in_open: SECOND,
        half_open_calls: 2,
        half_open_max_wait: 2 * SECOND,
        ..BreakerSpec::default()
    };
    f(&mut s);
    s
}

fn counts(calls: u64, failures: u64, slow: u64) -> ReportCounts {
    ReportCounts {
        counts: Counts {
            calls,
            failures,
            slow,
        },
        ..ReportCounts::default()
    }
}

fn check(r: Result<(), TestCaseError>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn check_info(r: Result<Info, TestCaseError>) -> Info {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A report larger than the count window keeps the block's proportions (its failures and
/// slow calls are spread evenly and only its last `window_size` calls stay), identically
/// in Lua and in core, including when the block wraps around the ring.
#[test]
fn a_block_larger_than_the_window_keeps_its_proportions_in_both() {
    let env = Env::start();
    let t = EPOCH + 123_456;
    let mut sides = Sides::new(&env, fixed_spec(|_| {}));
    // (report, window totals after it), worked out by hand from the spreading rule: call i
    // of a block of n with f failures is one when floor((i+1)f/n) > floor(if/n).
    let steps = [
        // 7 of 10 slots, all failed
        ((7, 7, 0), (7, 7, 0)),
        // calls 990..999 stay: odd ones failed (5), i = 3 mod 4 slow (991, 995, 999)
        ((1_000, 500, 250), (10, 5, 3)),
        // 4 clean calls push out 990..993: failures 995, 997, 999; slow 995, 999
        ((4, 0, 0), (10, 3, 2)),
        // exactly the window, all slow
        ((10, 0, 10), (10, 0, 10)),
        // 10,001 calls, 3 failed: the last 10 hold one (i = 10,000)
        ((10_001, 3, 9_999), (10, 1, 10)),
        // 2,000 calls, a third failed (666): the last 10 hold 666 - floor(1990 x 666 / 2000)
        ((2_000, 666, 1), (10, 4, 1)),
    ];
    for (n, ((c, f, s), (wc, wf, ws))) in steps.into_iter().enumerate() {
        let what = format!("report {n}: {c} calls, {f} failed, {s} slow");
        check(sides.report(&counts(c, f, s), 0, t, &what));
        let info = check_info(sides.get(t, &what));
        assert_eq!(
            info.counts,
            Counts {
                calls: wc,
                failures: wf,
                slow: ws
            },
            "{what}: the window's totals"
        );
    }

    // The same rule decides an open: 1,000 calls, 450 failed, leave 5 of the last 10 failed
    // (50 %), 400 failed leave 4 (40 %).
    for (failures, opens) in [(400, false), (450, true)] {
        let mut sides = Sides::new(&env, fixed_spec(|s| s.minimum_calls = 10));
        let what = format!("1,000 calls with {failures} failed");
        check(sides.report(&counts(1_000, failures, 0), 0, t, &what));
        let info = check_info(sides.get(t, &what));
        assert_eq!(info.state == State::Open, opens, "{what}: {info:?}");
    }

    // A time window counts the whole block in its second.
    let mut sides = Sides::new(
        &env,
        fixed_spec(|s| {
            s.window = WindowKind::Time;
            s.window_size = 2;
        }),
    );
    check(sides.report(&counts(5_000, 1_234, 4_321), 0, t, "time window"));
    let info = check_info(sides.get(t, "time window"));
    assert_eq!(info.counts.calls, 5_000);
    let info = check_info(sides.get(t + 2 * SECOND, "time window, 2 s later"));
    assert_eq!(info.counts.calls, 0);
}

/// The history stream lists the transitions the model made, newest first, with the same
/// from, to, at, reason, generation and retry_after (waits grown by the multiplier and
/// jittered by the given draws).
#[test]
fn history_lists_the_models_transitions_newest_first() {
    let env = Env::start();
    let spec = fixed_spec(|s| {
        s.window_size = 4;
        s.minimum_calls = 2;
        s.wait_in_open_multiplier = 2.0;
        s.wait_in_open_jitter = 0.3;
    });
    let mut sides = Sides::new(&env, spec);
    let t0 = EPOCH + 987_654_321;
    let g = |sides: &Sides<'_>| sides.generation();

    // nothing yet: no history, no keys
    check(sides.check_history(HISTORY_LIMIT, "before any state"));
    let info = check_info(sides.get(t0, "a read without state"));
    assert!(!info.exists);
    assert_eq!(sides.keys_in_redis().0, 0);

    // 2 failures of 2: open for 1 s + 30 % x 0.5 of it
    check(sides.report(&counts(2, 2, 0), 500_000, t0, "opening report"));
    let t1 = t0 + 1_150_000;
    // 1 µs early: still open
    let a = sides
        .acquire(true, t1 - 1, "acquire 1 µs before the wait ends")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!a.allowed);
    assert_eq!(a.retry_after, 1);
    // on time: half-open, one trial permit taken
    let a = sides
        .acquire(true, t1, "acquire as the wait ends")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(a.allowed);
    assert_eq!(a.state, State::HalfOpen);
    // the trial fails: open again, twice as long (2 s, no jitter with draw 0)
    let mut failed = counts(1, 1, 0);
    failed.generation = g(&sides);
    check(sides.report(&failed, 0, t1 + 10, "a failed trial"));
    let t2 = t1 + 10 + 2 * SECOND;
    let info = check_info(sides.get(t2, "a read as the second wait ends"));
    assert_eq!(info.state, State::HalfOpen);
    for n in 0..3 {
        let a = sides
            .acquire(true, t2, &format!("trial acquire {n}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.allowed, n < 2, "trial acquire {n}");
    }
    let mut ok = counts(2, 0, 0);
    ok.generation = g(&sides);
    check(sides.report(&ok, 0, t2 + 5, "two successful trials"));
    // operators
    check_info(sides.set_state(State::ForcedOpen, 999_999, t2 + 6, "force open"));
    check_info(sides.set_state(State::Open, 999_999, t2 + 7, "open by hand"));
    check_info(sides.set_state(State::Closed, 0, t2 + 8, "close by hand"));

    let want: Vec<_> = sides
        .expected_history()
        .into_iter()
        .map(|e| (e.from, e.to, e.reason, e.generation, e.retry_after, e.at))
        .collect();
    let s = |from, to, reason: &str, generation, retry_after, at| {
        (from, to, reason.to_owned(), generation, retry_after, at)
    };
    use State::{Closed, ForcedOpen, HalfOpen, Open};
    assert_eq!(
        want,
        vec![
            s(Open, Closed, "set_state", 9, 0, t2 + 8),
            // opens restart at 1 after the close: 1 s + floor(1 s x 0.3 x 0.999999)
            s(ForcedOpen, Open, "set_state", 8, 1_299_999, t2 + 7),
            s(Closed, ForcedOpen, "set_state", 7, 0, t2 + 6),
            s(HalfOpen, Closed, "trial_success", 6, 0, t2 + 5),
            s(Open, HalfOpen, "wait_elapsed", 5, 0, t2),
            s(HalfOpen, Open, "trial_failures", 4, 2 * SECOND, t1 + 10),
            s(Open, HalfOpen, "wait_elapsed", 3, 0, t1),
            s(Closed, Open, "failure_rate", 2, 1_150_000, t0),
        ],
        "the model's own history"
    );
    check(sides.check_history(HISTORY_LIMIT, "after the lifecycle"));
    check(sides.check_history(3, "the last 3"));
}

/// A failing reporter counts towards `minimum_reporters` for exactly `window_size` seconds
/// after its last failing report, to the microsecond, on both sides.
#[test]
fn a_failing_reporter_leaves_a_time_window_on_the_same_microsecond() {
    let env = Env::start();
    let spec = || {
        fixed_spec(|s| {
            s.window = WindowKind::Time;
            s.window_size = 2;
            s.minimum_calls = 1;
            s.minimum_reporters = 2;
        })
    };
    // mid-second, so the reporter outlives its calls' bucket by half a second
    let t = EPOCH + 500_000;
    let from = |reporter: &str| ReportCounts {
        reporter: reporter.to_owned(),
        ..counts(1, 1, 0)
    };
    for (at, reporters, state) in [
        (t + 2 * SECOND - 1, 2, State::Open),
        (t + 2 * SECOND, 1, State::Closed),
    ] {
        let mut sides = Sides::new(&env, spec());
        check(sides.report(&from("a"), 0, t, "a fails"));
        let before = check_info(sides.get(at, "read before b reports"));
        assert_eq!(before.failing_reporters, reporters - 1, "at +{} us", at - t);
        check(sides.report(&from("b"), 0, at, "b fails"));
        let info = check_info(sides.get(at, "read after b reports"));
        assert_eq!(info.state, state, "at +{} us", at - t);
        if state == State::Closed {
            assert_eq!(info.failing_reporters, reporters, "at +{} us", at - t);
        }
    }
}

/// A Get, a Status and an Acquire (in every state they can see: none) never create state:
/// none of the four keys exists afterwards, and all three sides read the default.
#[test]
fn reads_and_admissions_never_create_state() {
    let env = Env::start();
    for window in [WindowKind::Count, WindowKind::Time] {
        let mut sides = Sides::new(&env, fixed_spec(|s| s.window = window));
        let t = EPOCH + 5 * SECOND + 1;
        let info = check_info(sides.get(t, "get"));
        assert!(!info.exists);
        let a = sides
            .acquire(false, t, "status")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.allowed);
        let a = sides
            .acquire(true, t + 1, "acquire")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (a.allowed, a.state, a.generation),
            (true, State::Closed, FIRST_GENERATION)
        );
        check_info(sides.get(t + 2, "get again"));
        assert_eq!(sides.keys_in_redis(), (0, false), "{window:?}");
        // a report creates it
        check(sides.report(&counts(0, 0, 0), 0, t + 3, "empty report"));
        assert!(
            sides.keys_in_redis().1,
            "{window:?}: a report creates state"
        );
        check_info(sides.get(t + 3, "get after the report"));
    }
}
