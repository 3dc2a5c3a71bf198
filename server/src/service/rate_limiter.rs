//! `floodgate.v1.RateLimiter`: Acquire, Release, Renew, Status.
use std::sync::Arc;

use floodgate_core::{
    CheckOutcome,
    policy::{MAX_PERIOD, MIN_LEASE_TTL},
};
use floodgate_proto::v1::{self as pb, rate_limiter_server::RateLimiter};
use tonic::{Request, Response, Status};

use super::{annotate, circuit_breakers::wire_state, observed, state::AppState};
use crate::{
    error::Error,
    metrics,
    store::{PlannedCheck, Store},
    validate::{self, to_duration},
};

/// The RateLimiter service over a store.
#[derive(Debug)]
pub struct RateLimiterService<S> {
    /// Shared server state.
    state: Arc<AppState<S>>,
}

impl<S> RateLimiterService<S> {
    /// A service over `state`.
    pub fn new(state: Arc<AppState<S>>) -> Self {
        Self { state }
    }
}

/// One check's wire result.
pub fn check_result(c: &PlannedCheck, o: &CheckOutcome, lease: Option<&String>) -> pb::CheckResult {
    pb::CheckResult {
        allowed: o.allowed,
        limit: o.limit,
        remaining: o.remaining,
        reset_after: Some(to_duration(o.reset_after)),
        retry_after: Some(to_duration(o.retry_after)),
        lease_id: lease
            .map(|m| validate::lease_id(&c.policy_ref, c.policy.lease_ttl(), m))
            .unwrap_or_default(),
        shadow: c.policy.shadow(),
        policy: c.policy_ref.clone(),
    }
}

#[tonic::async_trait]
impl<S: Store> RateLimiter for RateLimiterService<S> {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        observed("Acquire", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            let plan = validate::acquire_plan(&req, &self.state.config.load(), &self.state.keys)?;
            if let Some(c) = plan.checks.first() {
                annotate(&req.namespace, Some(&c.policy_ref))?;
            }
            let (decision, degraded) = self.state.decide(&plan).await?;
            for ((c, o), wire) in plan.checks.iter().zip(&decision.checks).zip(&req.checks) {
                if !o.allowed && !c.policy.shadow() && !degraded {
                    self.state
                        .top
                        .record(&req.namespace, &wire.key, &c.policy_ref);
                }
                let result = match (o.allowed, c.policy.shadow()) {
                    (true, _) => "allowed",
                    (false, true) => "shadow_denied",
                    (false, false) => "denied",
                };
                // Inline fingerprints are unbounded; they count under one label.
                let inline = validate::is_inline_ref(&c.policy_ref);
                metrics::decision(
                    &req.namespace,
                    if inline { "inline" } else { &c.policy_ref },
                    result,
                );
            }
            for t in &decision.transitions {
                metrics::breaker_transition(&req.namespace, t);
            }
            let breakers: Vec<pb::BreakerDecision> = plan
                .breakers
                .iter()
                .zip(&decision.breakers)
                .map(|(b, a)| {
                    metrics::breaker_decision(&req.namespace, &b.name, a.allowed);
                    pb::BreakerDecision {
                        breaker: b.name.clone(),
                        allowed: a.allowed,
                        state: wire_state(a.state) as i32,
                        retry_after: Some(to_duration(a.retry_after)),
                        generation: a.generation,
                    }
                })
                .collect();
            let retry_after = plan
                .checks
                .iter()
                .zip(&decision.checks)
                .filter(|(c, o)| !o.allowed && !c.policy.shadow())
                .map(|(_, o)| o.retry_after)
                .chain(
                    decision
                        .breakers
                        .iter()
                        .filter(|a| !a.allowed)
                        .map(|a| a.retry_after),
                )
                .max()
                .unwrap_or(0);
            let checks = plan
                .checks
                .iter()
                .zip(&decision.checks)
                .zip(&decision.leases)
                .map(|((c, o), l)| check_result(c, o, l.as_ref()))
                .collect();
            Ok(Response::new(pb::AcquireResponse {
                allowed: decision.allowed,
                retry_after: Some(to_duration(retry_after)),
                checks,
                breakers,
                degraded,
            }))
        })
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        observed("Release", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            let lease =
                validate::lease_target(&req.namespace, &req.key, &req.lease_id, &self.state.keys)?;
            let released = self
                .state
                .with_deadline(
                    "release",
                    self.state.store.release(&lease.key, &lease.member, None),
                )
                .await?;
            Ok(Response::new(pb::ReleaseResponse { released }))
        })
        .await
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        observed("Renew", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            let lease =
                validate::lease_target(&req.namespace, &req.key, &req.lease_id, &self.state.keys)?;
            let ttl = match validate::duration("ttl", req.ttl.as_ref())? {
                Some(t) if (MIN_LEASE_TTL..=MAX_PERIOD).contains(&t) => t,
                Some(_) => {
                    return Err(
                        Error::Invalid("ttl: must be between 1ms and 366 days".into()).into(),
                    );
                }
                // The lifetime the lease was granted with.
                None => lease.ttl.clamp(MIN_LEASE_TTL, MAX_PERIOD),
            };
            let granted = self
                .state
                .with_deadline(
                    "renew",
                    self.state.store.renew(&lease.key, &lease.member, ttl, None),
                )
                .await?
                .ok_or(Error::LeaseNotFound)?;
            Ok(Response::new(pb::RenewResponse {
                expires_in: Some(to_duration(granted)),
            }))
        })
        .await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::CheckResult>, Status> {
        observed("Status", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            let plan = validate::status_plan(
                &req.namespace,
                req.check.as_ref(),
                &self.state.config.load(),
                &self.state.keys,
            )?;
            let decision = self.state.decide_strict(&plan).await?;
            Ok(Response::new(check_result(
                &plan.checks[0],
                &decision.checks[0],
                None,
            )))
        })
        .await
    }
}
