//! What stores exchange about circuit breakers: a breaker resolved for a call, the
//! transitions a call made, and the events every server relays to `Watch`.
use std::sync::Arc;

use floodgate_core::{Micros, breaker::State};

use crate::breaker_config::BreakerSettings;

/// One breaker, resolved and ready for a store.
#[derive(Debug, Clone)]
pub struct PlannedBreaker {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// State, window, reporters and history keys (from [`crate::keys::Keys::breaker`]).
    pub keys: [String; 4],
    /// Its settings.
    pub settings: Arc<BreakerSettings>,
    /// The Pub/Sub channel its transitions are published on.
    pub channel: String,
}

/// A transition, as published to every server and kept in the breaker's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerEvent {
    /// The breaker's namespace.
    pub namespace: String,
    /// The breaker.
    pub breaker: String,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// When (store clock).
    pub at: Micros,
    /// Why (see `Transition::reason`).
    pub reason: String,
    /// Generation after the transition.
    pub generation: u64,
    /// OPEN: the wait before trial calls.
    pub retry_after: Micros,
}

/// A transition made by one store call (for metrics and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeTransition {
    /// The breaker.
    pub breaker: String,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Why.
    pub reason: String,
}

/// A breaker's state as read, plus what the read changed.
#[derive(Debug, Clone)]
pub struct BreakerRead {
    /// The state.
    pub info: floodgate_core::breaker::Info,
    /// Transitions made by the read (the lazy OPEN -> HALF_OPEN step).
    pub transitions: Vec<MadeTransition>,
}

/// What a report did.
#[derive(Debug, Clone)]
pub struct BreakerReported {
    /// Accepted, and the state after.
    pub result: floodgate_core::breaker::ReportResult,
    /// Transitions made by the report.
    pub transitions: Vec<MadeTransition>,
}

/// Outcomes for one breaker, owned (the core type borrows its reporter).
#[derive(Debug, Clone, Default)]
pub struct ReportCounts {
    /// Calls, failures and slow calls.
    pub counts: floodgate_core::breaker::Counts,
    /// Trial permits handed back.
    pub released: u64,
    /// Generation the calls were admitted in (0: current).
    pub generation: u64,
    /// Who reports.
    pub reporter: String,
}

impl ReportCounts {
    /// The core model's view.
    pub fn input(&self) -> floodgate_core::breaker::ReportInput<'_> {
        floodgate_core::breaker::ReportInput {
            counts: self.counts,
            released: self.released,
            generation: self.generation,
            reporter: &self.reporter,
        }
    }
}

/// Random draw for `wait_in_open_jitter`, uniform in 0..1_000_000.
pub fn jitter_draw() -> u32 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u32
}
