//! `floodgate.v1.CircuitBreakers`: Report, Get, List, SetState, Watch, History.
use std::{collections::BTreeSet, pin::Pin, sync::Arc, time::Duration};

use floodgate_core::{
    SystemClock,
    breaker::{Counts, Info, State},
    time::Clock,
};
use floodgate_proto::v1::{self as pb, circuit_breakers_server::CircuitBreakers};
use futures::{Stream, future::join_all};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{annotate, observed, state::AppState};
use crate::{
    breaker_config::DEFAULT_BREAKER,
    error::Error,
    metrics,
    store::{
        BreakerEvent, MadeTransition, PlannedBreaker, ReportCounts, Store, breaker::jitter_draw,
    },
    validate::{self, to_duration},
};

/// Most reports in one Report call.
pub const MAX_REPORTS: usize = 64;
/// Most calls one report may count (successes + failures + single outcomes).
pub const MAX_CALLS_PER_REPORT: u64 = 1_000_000;
/// Most single outcomes in one report.
pub const MAX_OUTCOMES_PER_REPORT: usize = 10_000;
/// Most breakers one Watch may follow.
pub const MAX_WATCHED: usize = 100;
/// Longest `reporter`.
pub const MAX_REPORTER_LEN: usize = 128;
/// History entries returned when the request says 0, and the most it may ask for.
const HISTORY_DEFAULT: usize = 100;
const HISTORY_MAX: usize = 1_000;

/// The wire value of a state.
pub fn wire_state(s: State) -> pb::BreakerState {
    match s {
        State::Closed => pb::BreakerState::Closed,
        State::Open => pb::BreakerState::Open,
        State::HalfOpen => pb::BreakerState::HalfOpen,
        State::ForcedOpen => pb::BreakerState::ForcedOpen,
        State::Disabled => pb::BreakerState::Disabled,
        State::MetricsOnly => pb::BreakerState::MetricsOnly,
    }
}

/// A wire state as the model's, `None` for UNSPECIFIED or unknown values.
pub fn model_state(v: i32) -> Option<State> {
    Some(match pb::BreakerState::try_from(v).ok()? {
        pb::BreakerState::Unspecified => return None,
        pb::BreakerState::Closed => State::Closed,
        pb::BreakerState::Open => State::Open,
        pb::BreakerState::HalfOpen => State::HalfOpen,
        pb::BreakerState::ForcedOpen => State::ForcedOpen,
        pb::BreakerState::Disabled => State::Disabled,
        pb::BreakerState::MetricsOnly => State::MetricsOnly,
    })
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A breaker's wire info.
pub fn breaker_info(b: &PlannedBreaker, i: &Info) -> pb::BreakerInfo {
    let spec = b.settings.config.spec();
    pb::BreakerInfo {
        breaker: b.name.clone(),
        state: wire_state(i.state) as i32,
        failure_rate: rate(i.counts.failures, i.counts.calls),
        slow_call_rate: rate(i.counts.slow, i.counts.calls),
        calls: i.counts.calls,
        retry_after: Some(to_duration(i.retry_after)),
        generation: i.generation,
        failures: i.counts.failures,
        slow_calls: i.counts.slow,
        trial_permits_in_flight: i.permits_in_flight,
        half_open_calls: spec.half_open_calls,
        consecutive_opens: i.opens,
        failing_reporters: i.failing_reporters,
        exists: i.exists,
        slow_call_duration: Some(to_duration(spec.slow_call_duration)),
    }
}

fn timestamp(us: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1_000) as i32,
    }
}

/// A transition's wire event.
pub fn wire_event(e: &BreakerEvent) -> pb::BreakerEvent {
    pb::BreakerEvent {
        breaker: e.breaker.clone(),
        from: wire_state(e.from) as i32,
        to: wire_state(e.to) as i32,
        at: Some(timestamp(e.at)),
        reason: e.reason.clone(),
        generation: e.generation,
        namespace: e.namespace.clone(),
        retry_after: Some(to_duration(e.retry_after)),
    }
}

fn invalid(field: &str, rule: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{field}: {rule}"))
}

/// Validates one report and sums it into counts, classifying single outcomes as slow by
/// the breaker's `slow_call_duration`.
fn report_counts(
    field: &str,
    r: &pb::BreakerReport,
    b: &PlannedBreaker,
) -> Result<ReportCounts, Error> {
    if r.calls.len() > MAX_OUTCOMES_PER_REPORT {
        return Err(invalid(
            &format!("{field}.calls"),
            format!("at most {MAX_OUTCOMES_PER_REPORT} outcomes per report; send counts"),
        ));
    }
    let counted = r.successes.checked_add(r.failures);
    if counted.is_none_or(|c| r.slow_calls > c) {
        return Err(invalid(
            &format!("{field}.slow_calls"),
            "must not exceed successes + failures (slow calls are counted in addition to their outcome)",
        ));
    }
    let mut counts = Counts {
        calls: counted.unwrap_or(0),
        failures: r.failures,
        slow: r.slow_calls,
    };
    for (i, c) in r.calls.iter().enumerate() {
        let d = validate::duration(&format!("{field}.calls[{i}].duration"), c.duration.as_ref())?
            .unwrap_or(0);
        counts.calls += 1;
        counts.failures += u64::from(!c.success);
        counts.slow += u64::from(b.settings.config.is_slow(d));
    }
    if counts.calls > MAX_CALLS_PER_REPORT {
        return Err(invalid(
            field,
            format!("at most {MAX_CALLS_PER_REPORT} calls per report"),
        ));
    }
    if r.reporter.len() > MAX_REPORTER_LEN || r.reporter.chars().any(char::is_control) {
        return Err(invalid(
            &format!("{field}.reporter"),
            format!("must be at most {MAX_REPORTER_LEN} bytes without control characters"),
        ));
    }
    Ok(ReportCounts {
        counts,
        released: r.released,
        generation: r.generation,
        reporter: r.reporter.clone(),
    })
}

/// The CircuitBreakers service over a store.
#[derive(Debug)]
pub struct CircuitBreakersService<S> {
    /// Shared server state.
    state: Arc<AppState<S>>,
}

impl<S> CircuitBreakersService<S> {
    /// A service over `state`.
    pub fn new(state: Arc<AppState<S>>) -> Self {
        Self { state }
    }
}

impl<S: Store> CircuitBreakersService<S> {
    fn planned(&self, field: &str, ns: &str, name: &str) -> Result<PlannedBreaker, Error> {
        validate::namespace_rule(ns)?;
        validate::planned_breaker(field, ns, name, &self.state.config.load(), &self.state.keys)
    }

    fn count_transitions(&self, ns: &str, made: &[MadeTransition]) {
        for t in made {
            metrics::breaker_transition(ns, t);
        }
    }

    async fn get(&self, b: &PlannedBreaker) -> Result<pb::BreakerInfo, Error> {
        let read = self
            .state
            .with_deadline("breaker_get", self.state.store.breaker_get(b, None))
            .await?;
        self.count_transitions(&b.namespace, &read.transitions);
        Ok(breaker_info(b, &read.info))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BreakerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> CircuitBreakers for CircuitBreakersService<S> {
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        observed("Report", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            validate::namespace_rule(&req.namespace)?;
            if req.reports.is_empty() || req.reports.len() > MAX_REPORTS {
                return Err(invalid(
                    "reports",
                    format!(
                        "must hold 1 to {MAX_REPORTS} reports, got {}",
                        req.reports.len()
                    ),
                )
                .into());
            }
            let mut planned = Vec::with_capacity(req.reports.len());
            for (i, r) in req.reports.iter().enumerate() {
                let field = format!("reports[{i}]");
                let b = self.planned(&format!("{field}.breaker"), &req.namespace, &r.breaker)?;
                let counts = report_counts(&field, r, &b)?;
                planned.push((b, counts));
            }
            let results = join_all(planned.iter().map(|(b, counts)| async move {
                let reported = self
                    .state
                    .with_deadline(
                        "breaker_report",
                        self.state
                            .store
                            .breaker_report(b, counts, jitter_draw(), None),
                    )
                    .await;
                if reported.is_ok() {
                    self.state.note_breaker(b).await;
                }
                reported
            }))
            .await;
            let mut out = Vec::with_capacity(results.len());
            for ((b, _), r) in planned.iter().zip(results) {
                let r = match r {
                    Ok(r) => r,
                    // DESIGN "Failure": Report never blocks; a lost report is counted.
                    Err(e) => {
                        tracing::debug!(error = %e, breaker = %b.name, "breaker report dropped");
                        metrics::breaker_report("dropped");
                        out.push(pb::BreakerReportResult {
                            breaker: b.name.clone(),
                            dropped: true,
                            ..Default::default()
                        });
                        continue;
                    }
                };
                metrics::breaker_report(if r.result.accepted {
                    "accepted"
                } else {
                    "stale"
                });
                self.count_transitions(&req.namespace, &r.transitions);
                out.push(pb::BreakerReportResult {
                    breaker: b.name.clone(),
                    accepted: r.result.accepted,
                    state: wire_state(r.result.state) as i32,
                    generation: r.result.generation,
                    dropped: false,
                });
            }
            Ok(Response::new(pb::ReportResponse { results: out }))
        })
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetBreakerRequest>,
    ) -> Result<Response<pb::BreakerInfo>, Status> {
        observed("GetBreaker", async move {
            let req = request.into_inner();
            annotate(&req.namespace, Some(&req.breaker))?;
            let b = self.planned("breaker", &req.namespace, &req.breaker)?;
            Ok(Response::new(self.get(&b).await?))
        })
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListBreakersRequest>,
    ) -> Result<Response<pb::ListBreakersResponse>, Status> {
        observed("ListBreakers", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            validate::namespace_rule(&req.namespace)?;
            let config = self.state.config.load();
            let index = self.state.keys.breaker_index(&req.namespace);
            let mut names: BTreeSet<String> = config
                .breakers
                .keys()
                .filter(|n| *n != DEFAULT_BREAKER)
                .cloned()
                .collect();
            let noted = self
                .state
                .with_deadline("breaker_index", self.state.store.breaker_index(&index))
                .await?;
            // Names reported under a template that has since been removed are not listed.
            names.extend(noted.into_iter().filter(|n| config.breaker(n).is_some()));
            let planned = names
                .iter()
                .map(|n| self.planned("breaker", &req.namespace, n))
                .collect::<Result<Vec<_>, _>>()?;
            let infos = join_all(planned.iter().map(|b| self.get(b))).await;
            let breakers = infos.into_iter().collect::<Result<Vec<_>, _>>()?;
            Ok(Response::new(pb::ListBreakersResponse { breakers }))
        })
        .await
    }

    async fn set_state(
        &self,
        request: Request<pb::SetBreakerStateRequest>,
    ) -> Result<Response<pb::BreakerInfo>, Status> {
        observed("SetBreakerState", async move {
            let req = request.into_inner();
            annotate(&req.namespace, Some(&req.breaker))?;
            let b = self.planned("breaker", &req.namespace, &req.breaker)?;
            let to = model_state(req.state).ok_or_else(|| {
                invalid(
                    "state",
                    "must be CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED or METRICS_ONLY",
                )
            })?;
            let read = self
                .state
                .with_deadline(
                    "breaker_set_state",
                    self.state
                        .store
                        .breaker_set_state(&b, to, jitter_draw(), None),
                )
                .await?;
            self.count_transitions(&b.namespace, &read.transitions);
            self.state.note_breaker(&b).await;
            Ok(Response::new(breaker_info(&b, &read.info)))
        })
        .await
    }

    async fn history(
        &self,
        request: Request<pb::BreakerHistoryRequest>,
    ) -> Result<Response<pb::BreakerHistoryResponse>, Status> {
        observed("BreakerHistory", async move {
            let req = request.into_inner();
            annotate(&req.namespace, Some(&req.breaker))?;
            let b = self.planned("breaker", &req.namespace, &req.breaker)?;
            let limit = match req.limit as usize {
                0 => HISTORY_DEFAULT,
                n if n <= HISTORY_MAX => n,
                _ => return Err(invalid("limit", format!("at most {HISTORY_MAX}")).into()),
            };
            let events = self
                .state
                .with_deadline(
                    "breaker_history",
                    self.state.store.breaker_history(&b, limit),
                )
                .await?;
            Ok(Response::new(pb::BreakerHistoryResponse {
                events: events.iter().map(wire_event).collect(),
            }))
        })
        .await
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchBreakersRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        observed("Watch", async move {
            // Held by the relay task: freed when the stream ends.
            let slot = self
                .state
                .watch_slots
                .take(request.remote_addr(), &self.state.config.load().limits)?;
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            validate::namespace_rule(&req.namespace)?;
            if req.breakers.is_empty() || req.breakers.len() > MAX_WATCHED {
                return Err(invalid(
                    "breakers",
                    format!(
                        "must name 1 to {MAX_WATCHED} breakers, got {}",
                        req.breakers.len()
                    ),
                )
                .into());
            }
            let mut planned = Vec::with_capacity(req.breakers.len());
            for (i, name) in req.breakers.iter().enumerate() {
                if req.breakers[..i].contains(name) {
                    return Err(invalid(&format!("breakers[{i}]"), "names a breaker twice").into());
                }
                planned.push(self.planned(&format!("breakers[{i}]"), &req.namespace, name)?);
            }
            // Subscribe before reading the current states, so no transition falls between.
            let events = self.state.store.breaker_events();
            let mut gaps = self.state.store.breaker_event_gaps();
            gaps.mark_unchanged();
            let (tx, rx) = mpsc::channel(64);
            let state = self.state.clone();
            let first = self.current(&planned).await?;
            // The stream outlives this call: whose token opened it, checked again while it runs.
            let holder = crate::auth::CONTEXT
                .try_with(|c| c.token.clone())
                .ok()
                .flatten()
                .map(|t| (t, req.namespace.clone()));
            tokio::spawn(async move {
                let _slot = slot;
                relay_watch(state, planned, first, events, gaps, holder, tx).await
            });
            let stream: EventStream = Box::pin(ReceiverStream::new(rx));
            Ok(Response::new(stream))
        })
        .await
    }
}

impl<S: Store> CircuitBreakersService<S> {
    /// The "current" events a Watch starts with.
    async fn current(&self, planned: &[PlannedBreaker]) -> Result<Vec<pb::BreakerEvent>, Error> {
        current_events(&self.state, planned).await
    }
}

/// Why a running Watch must end: its token was removed, expired or no longer covers the
/// namespace (after a reload, or with time); `None` while it still allows the stream.
fn revoked<S: Store>(
    state: &AppState<S>,
    holder: Option<&(Arc<crate::auth::token::Token>, String)>,
) -> Option<Status> {
    let (token, ns) = holder?;
    let tokens = state.config.load().tokens.clone();
    (!tokens.still_allows(token, ns, std::time::SystemTime::now())).then(|| {
        Status::unauthenticated(format!(
            "token {:?} was removed, has expired or no longer covers namespace {ns:?}; the Watch ends",
            token.name
        ))
    })
}

/// How often a running Watch checks that its token still allows it.
const TOKEN_RECHECK: Duration = Duration::from_secs(1);

async fn current_events<S: Store>(
    state: &AppState<S>,
    planned: &[PlannedBreaker],
) -> Result<Vec<pb::BreakerEvent>, Error> {
    let now = SystemClock.now();
    let reads = join_all(
        planned
            .iter()
            .map(|b| state.with_deadline("breaker_get", state.store.breaker_get(b, None))),
    )
    .await;
    planned
        .iter()
        .zip(reads)
        .map(|(b, r)| {
            let info = r?.info;
            Ok(pb::BreakerEvent {
                breaker: b.name.clone(),
                from: pb::BreakerState::Unspecified as i32,
                to: wire_state(info.state) as i32,
                at: Some(timestamp(now)),
                reason: "current".into(),
                generation: info.generation,
                namespace: b.namespace.clone(),
                retry_after: Some(to_duration(info.retry_after)),
            })
        })
        .collect()
}

/// Feeds one Watch stream: the current states, then every matching transition, until the
/// client goes away or the server shuts down. When the relay falls behind (events were
/// dropped) it sends the current states again, so a client's cache never stays wrong.
async fn relay_watch<S: Store>(
    state: Arc<AppState<S>>,
    planned: Vec<PlannedBreaker>,
    first: Vec<pb::BreakerEvent>,
    mut events: broadcast::Receiver<BreakerEvent>,
    mut gaps: tokio::sync::watch::Receiver<u64>,
    holder: Option<(Arc<crate::auth::token::Token>, String)>,
    tx: mpsc::Sender<Result<pb::BreakerEvent, Status>>,
) {
    let mut recheck = tokio::time::interval(TOKEN_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for e in first {
        if tx.send(Ok(e)).await.is_err() {
            return;
        }
    }
    let mut shutdown = state.shutdown_signal();
    let watched = |e: &BreakerEvent| {
        planned
            .iter()
            .any(|b| b.namespace == e.namespace && b.name == e.breaker)
    };
    // When a resync that could not read the store tries again (events keep flowing
    // meanwhile, so the retry has a fixed time, not a fresh timer per pass).
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            e = events.recv() => e,
            // The fleet's feed was down for a while: treat it as missed events.
            Ok(()) = gaps.changed() => Err(broadcast::error::RecvError::Lagged(0)),
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                if retry_at.is_some() => Err(broadcast::error::RecvError::Lagged(0)),
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            () = tx.closed() => return,
            _ = recheck.tick(), if holder.is_some() => match revoked(&state, holder.as_ref()) {
                Some(ended) => {
                    // Without waiting (the select holds its branches): a full channel ends
                    // the stream without the reason.
                    let _ = tx.try_send(Err(ended));
                    return;
                }
                None => continue,
            },
        };
        match next {
            Ok(e) if watched(&e) => {
                if tx.send(Ok(wire_event(&e))).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Missed some (or the feed had a gap): send every watched breaker's
                // current state again, retrying every 100 ms until the store answers.
                let Ok(current) = current_events(&state, &planned).await else {
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(100));
                    continue;
                };
                retry_at = None;
                for e in current {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
