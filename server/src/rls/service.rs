//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over the floodgate store.
//!
//! The request's `domain` is the namespace. Each descriptor that hits a configured limit (or
//! carries an allowed `limit` override) becomes one check of one plan, keyed by its entries,
//! costing its hits (`descriptors[i].hits_addend` when set, else the request's
//! `hits_addend`, 0 meaning 1). The plan is decided in one store call, all-or-nothing:
//! when one descriptor is over its limit nothing is counted. With
//! `rls_counting = "independent"` each check is its own plan (concurrent calls), so the
//! others are counted anyway, as in envoy ratelimit. Descriptors that hit nothing, and
//! `unlimited` ones, are OK without a store call; `requests_per_unit: 0` is over the limit
//! without one. When the store fails, each limit's fail mode answers
//! ([`AppState::decide`]), so Envoy gets an answer, never an error.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use floodgate_core::{
    Algorithm, CheckOutcome,
    names::validate_key,
    time::{Micros, SECOND},
};
use floodgate_proto::envoy::{
    extensions::common::ratelimit::v3::RateLimitDescriptor,
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit as WireUnit},
        rate_limit_service_server::RateLimitService,
    },
    r#type::v3::RateLimitUnit,
};
use tonic::{Request, Response, Status};

use super::{
    Counting, RlsSettings,
    config::{Action, Rule, Unit},
    headers::{self, LimitFigures},
    matcher::{self, Entry},
};
use crate::{
    error::Error,
    metrics,
    service::{annotate, observed, state::AppState},
    store::{AcquirePlan, PlannedCheck, Store, StoreError},
    validate::to_duration,
};

/// Most descriptors in one request.
pub const MAX_DESCRIPTORS: usize = 64;
/// Most entries in one descriptor.
pub const MAX_ENTRIES: usize = 16;

/// The RLS service over a store.
#[derive(Debug)]
pub struct RlsService<S> {
    /// Shared server state.
    state: Arc<AppState<S>>,
}

impl<S> RlsService<S> {
    /// A service over `state`.
    pub fn new(state: Arc<AppState<S>>) -> Self {
        Self { state }
    }
}

/// What one descriptor comes to.
#[derive(Debug, Clone)]
enum Slot {
    /// No configured limit (or replaced by another): OK, no call.
    NoLimit,
    /// `unlimited: true`: OK, no call.
    Unlimited,
    /// Over the limit without a call: `requests_per_unit: 0`, or more hits than the limit.
    Over(Arc<Rule>),
    /// A zero-hit descriptor: OK without a call (floodgate never counts past a limit, so a
    /// check that adds nothing cannot be over it).
    Zero(Arc<Rule>),
    /// Decided by the store: the index of its check.
    Check(Arc<Rule>, usize),
}

fn invalid(field: String, rule: &str) -> Error {
    Error::Invalid(format!("{field}: {rule}"))
}

/// Checks the request's shape; errors name the field and the rule.
fn validate(req: &RateLimitRequest) -> Result<(), Error> {
    if req.domain.is_empty() {
        return Err(invalid("domain".into(), "must not be empty"));
    }
    if req.descriptors.is_empty() {
        return Err(invalid(
            "descriptors".into(),
            "at least one descriptor is required",
        ));
    }
    if req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(invalid(
            "descriptors".into(),
            &format!("at most {MAX_DESCRIPTORS} descriptors per request"),
        ));
    }
    for (i, d) in req.descriptors.iter().enumerate() {
        if d.entries.is_empty() {
            return Err(invalid(
                format!("descriptors[{i}].entries"),
                "at least one entry is required",
            ));
        }
        if d.entries.len() > MAX_ENTRIES {
            return Err(invalid(
                format!("descriptors[{i}].entries"),
                &format!("at most {MAX_ENTRIES} entries per descriptor"),
            ));
        }
        for (j, e) in d.entries.iter().enumerate() {
            if e.key.is_empty() {
                return Err(invalid(
                    format!("descriptors[{i}].entries[{j}].key"),
                    "must not be empty",
                ));
            }
        }
    }
    Ok(())
}

/// A request's `limit` override as a rule (a fixed window, as envoy ratelimit).
fn override_rule(i: usize, d: &RateLimitDescriptor) -> Result<Option<Arc<Rule>>, Error> {
    let Some(o) = &d.limit else { return Ok(None) };
    let unit = match RateLimitUnit::try_from(o.unit) {
        Ok(RateLimitUnit::Second) => Unit::Second,
        Ok(RateLimitUnit::Minute) => Unit::Minute,
        Ok(RateLimitUnit::Hour) => Unit::Hour,
        Ok(RateLimitUnit::Day) => Unit::Day,
        Ok(RateLimitUnit::Month) => Unit::Month,
        Ok(RateLimitUnit::Year) => Unit::Year,
        Ok(RateLimitUnit::Unknown) | Err(_) => {
            return Err(invalid(
                format!("descriptors[{i}].limit.unit"),
                "must be SECOND, MINUTE, HOUR, DAY, MONTH or YEAR",
            ));
        }
    };
    let rule = Rule::build(
        "override".into(),
        o.requests_per_unit,
        unit,
        Algorithm::FixedWindow,
        false,
        None,
    )
    .map_err(|e| Error::Invalid(format!("descriptors[{i}].limit.{e}")))?;
    Ok(Some(Arc::new(rule)))
}

/// The wire form of a unit.
fn wire_unit(u: Unit) -> WireUnit {
    match u {
        Unit::Second => WireUnit::Second,
        Unit::Minute => WireUnit::Minute,
        Unit::Hour => WireUnit::Hour,
        Unit::Day => WireUnit::Day,
        Unit::Week => WireUnit::Week,
        Unit::Month => WireUnit::Month,
        Unit::Year => WireUnit::Year,
    }
}

fn current_limit(rule: &Rule) -> Option<RateLimit> {
    rule.unit.map(|u| RateLimit {
        name: rule.name.clone(),
        requests_per_unit: rule.requests_per_unit,
        unit: wire_unit(u) as i32,
    })
}

/// Time until the unit's epoch-aligned window ends (for answers given without the store).
fn until_window_end(unit: Unit) -> Micros {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0);
    let period = unit.seconds() * SECOND;
    period - now % period
}

/// The label a rule counts under in metrics: its name, else its path.
fn rule_label(rule: &Rule) -> &str {
    if rule.name.is_empty() {
        &rule.path
    } else {
        &rule.name
    }
}

impl<S: Store> RlsService<S> {
    /// Decides `plan`, all together or each check alone; returns the outcomes in check
    /// order and whether any came from a fail mode.
    async fn decide(
        &self,
        checks: Vec<PlannedCheck>,
        counting: Counting,
        consume: bool,
    ) -> Result<(Vec<CheckOutcome>, bool), Error> {
        if checks.is_empty() {
            return Ok((Vec::new(), false));
        }
        let plan = |checks| AcquirePlan {
            checks,
            request_record: None,
            breakers: Vec::new(),
            consume,
            now: None,
        };
        match counting {
            Counting::AllOrNothing => {
                let (d, degraded) = self.state.decide(&plan(checks)).await?;
                Ok((d.checks, degraded))
            }
            Counting::Independent => {
                let plans: Vec<AcquirePlan> = checks.into_iter().map(|c| plan(vec![c])).collect();
                let results =
                    futures::future::join_all(plans.iter().map(|p| self.state.decide(p))).await;
                let mut outcomes = Vec::with_capacity(results.len());
                let mut degraded = false;
                for r in results {
                    let (d, deg) = r?;
                    degraded |= deg;
                    outcomes.extend(d.checks);
                }
                Ok((outcomes, degraded))
            }
        }
    }

    async fn answer(&self, req: RateLimitRequest) -> Result<RateLimitResponse, Error> {
        validate(&req)?;
        let config = self.state.config.load();
        let settings: &RlsSettings = &config.rls;
        let domain = req.domain.as_str();
        let tree = settings.config.domains.get(domain);
        // 1. Which rule each descriptor hits (an unknown domain hits nothing).
        let mut matched: Vec<Option<(Arc<Rule>, String)>> =
            Vec::with_capacity(req.descriptors.len());
        for (i, d) in req.descriptors.iter().enumerate() {
            let entries: Vec<Entry<'_>> = d
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            // The override counts only where the server allows it; elsewhere it is ignored
            // altogether (not even validated), as if Envoy had not sent it.
            let overridden = match settings.allow_limit_override {
                true => override_rule(i, d)?,
                false => None,
            };
            let hit = match (tree, overridden) {
                (None, _) => None,
                (Some(_), Some(rule)) => Some((rule, matcher::state_key(&entries, &[]))),
                (Some(tree), None) => matcher::find(tree, &entries).map(|m| (m.rule, m.key)),
            };
            matched.push(hit);
        }
        // 2. `replaces`: a matched rule drops every other matched rule of that name.
        let replaced: HashSet<&str> = matched
            .iter()
            .flatten()
            .flat_map(|(r, _)| r.replaces.iter().map(String::as_str))
            .collect();
        // 3. Checks for the store; everything else is answered here.
        let mut slots = Vec::with_capacity(matched.len());
        let mut checks: Vec<PlannedCheck> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut refused = false;
        for (i, (hit, d)) in matched.iter().zip(&req.descriptors).enumerate() {
            let Some((rule, key)) = hit else {
                slots.push(Slot::NoLimit);
                continue;
            };
            if !rule.name.is_empty() && replaced.contains(rule.name.as_str()) {
                slots.push(Slot::NoLimit);
                continue;
            }
            let hits = match &d.hits_addend {
                Some(h) => *h,
                None => u64::from(req.hits_addend.max(1)),
            };
            let (policy, policy_ref) = match &rule.action {
                Action::Unlimited => {
                    slots.push(Slot::Unlimited);
                    continue;
                }
                Action::Blocked => {
                    refused |= !rule.shadow;
                    slots.push(Slot::Over(rule.clone()));
                    continue;
                }
                Action::Limit { policy, policy_ref } => (policy, policy_ref),
            };
            if hits == 0 {
                slots.push(Slot::Zero(rule.clone()));
                continue;
            }
            validate_key(key).map_err(|_| {
                invalid(
                    format!("descriptors[{i}].entries"),
                    "the descriptor's entries, joined as key=value|key=value, must be at most 512 bytes",
                )
            })?;
            let state_key = self
                .state
                .keys
                .limit(domain, key, policy.algorithm(), policy_ref);
            // The same descriptor twice in one request is one check with the hits added.
            let index = match by_key.get(&state_key) {
                Some(&j) => {
                    checks[j].cost = checks[j].cost.saturating_add(hits);
                    j
                }
                None => {
                    checks.push(PlannedCheck {
                        key: state_key.clone(),
                        policy: policy.clone(),
                        policy_ref: policy_ref.clone(),
                        cost: hits,
                        lease_member: None,
                    });
                    by_key.insert(state_key, checks.len() - 1);
                    checks.len() - 1
                }
            };
            slots.push(Slot::Check(rule.clone(), index));
        }
        // More hits than a limit holds can never be admitted: over, without the store.
        let mut keep = vec![true; checks.len()];
        for slot in &mut slots {
            if let Slot::Check(rule, j) = slot
                && checks[*j].policy.check_cost(checks[*j].cost).is_err()
            {
                keep[*j] = false;
                refused |= !rule.shadow;
                *slot = Slot::Over(rule.clone());
            }
        }
        let mut renumber = vec![usize::MAX; checks.len()];
        let mut kept = Vec::with_capacity(checks.len());
        for (j, c) in checks.into_iter().enumerate() {
            if keep[j] {
                renumber[j] = kept.len();
                kept.push(c);
            }
        }
        for slot in &mut slots {
            if let Slot::Check(_, j) = slot {
                *j = renumber[*j];
            }
        }
        // 4. Decide. All-or-nothing with a descriptor already over: count nothing, read the
        //    others' state.
        let consume = !(refused && settings.counting == Counting::AllOrNothing);
        let (outcomes, degraded) = self
            .decide(kept.clone(), settings.counting, consume)
            .await?;
        // 5. Answer.
        let mut statuses = Vec::with_capacity(slots.len());
        let mut figures = Vec::new();
        let mut overall = Code::Ok;
        for (slot, d) in slots.iter().zip(&req.descriptors) {
            let status = match slot {
                Slot::NoLimit => DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                },
                Slot::Unlimited => DescriptorStatus {
                    code: Code::Ok as i32,
                    limit_remaining: u32::MAX,
                    ..Default::default()
                },
                Slot::Zero(rule) => DescriptorStatus {
                    code: Code::Ok as i32,
                    current_limit: current_limit(rule),
                    ..Default::default()
                },
                Slot::Over(rule) => {
                    let reset = rule.unit.map(until_window_end).unwrap_or(0);
                    metrics::rls_descriptor(domain, rule_label(rule), rule.shadow, false);
                    figures.push(figures_of(rule, 0, reset, !rule.shadow));
                    DescriptorStatus {
                        code: if rule.shadow {
                            Code::Ok
                        } else {
                            Code::OverLimit
                        } as i32,
                        current_limit: current_limit(rule),
                        limit_remaining: 0,
                        duration_until_reset: Some(to_duration(reset)),
                    }
                }
                Slot::Check(rule, j) => {
                    let Some(o) = outcomes.get(*j).copied() else {
                        return Err(Error::Store(StoreError::Protocol(format!(
                            "{} outcomes for {} checks",
                            outcomes.len(),
                            kept.len()
                        ))));
                    };
                    let over = !o.allowed && !rule.shadow;
                    metrics::rls_descriptor(domain, rule_label(rule), rule.shadow, o.allowed);
                    if over
                        && !degraded
                        && let Some(check) = kept.get(*j)
                    {
                        self.state
                            .top
                            .record(domain, &descriptor_text(d), &check.policy_ref);
                    }
                    figures.push(figures_of(rule, o.remaining, o.reset_after, over));
                    DescriptorStatus {
                        code: if over { Code::OverLimit } else { Code::Ok } as i32,
                        current_limit: current_limit(rule),
                        limit_remaining: u32::try_from(o.remaining).unwrap_or(u32::MAX),
                        duration_until_reset: Some(to_duration(o.reset_after)),
                    }
                }
            };
            if status.code == Code::OverLimit as i32 {
                overall = Code::OverLimit;
            }
            statuses.push(status);
        }
        Ok(RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            // Answers of fail modes carry no real figures: no headers then.
            response_headers_to_add: if degraded {
                Vec::new()
            } else {
                headers::build(settings.headers, &figures)
            },
            request_headers_to_add: Vec::new(),
            raw_body: Vec::new(),
        })
    }
}

/// A descriptor as people read it (TopKeys): `key=value|key=value`.
fn descriptor_text(d: &RateLimitDescriptor) -> String {
    let entries: Vec<Entry<'_>> = d
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    matcher::state_key(&entries, &[])
}

fn figures_of(rule: &Rule, remaining: u64, reset: Micros, over: bool) -> LimitFigures {
    LimitFigures {
        name: rule_label(rule).to_owned(),
        quota: u64::from(rule.requests_per_unit),
        window: rule.unit.map(Unit::seconds).unwrap_or(0),
        remaining: if over { 0 } else { remaining },
        reset: reset.div_ceil(SECOND),
        over,
    }
}

#[tonic::async_trait]
impl<S: Store> RateLimitService for RlsService<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        observed("ShouldRateLimit", async move {
            let req = request.into_inner();
            annotate(&req.domain, None)?;
            Ok(Response::new(self.answer(req).await?))
        })
        .await
    }
}
