//! `floodgate.v1.Admin`: operator actions and views (ResetLimit, ServerStatus, TopKeys,
//! AuditLog).
use std::{collections::BTreeSet, sync::Arc};

use floodgate_core::{Algorithm, FailMode, Policy};
use floodgate_proto::v1::{self as pb, admin_server::Admin};
use futures::future::join_all;
use tonic::{Request, Response, Status};

use super::{annotate, circuit_breakers::breaker_info, observed, state::AppState};
use crate::{
    breaker_config::DEFAULT_BREAKER,
    error::Error,
    store::{Store, redis::schema::CURRENT_SCHEMA},
    top,
    validate::{self, to_duration},
};

/// A configured policy on the wire.
fn wire_policy(p: &Policy) -> pb::Policy {
    let algorithm = match p.algorithm() {
        Algorithm::TokenBucket => pb::Algorithm::TokenBucket,
        Algorithm::SlidingWindow => pb::Algorithm::SlidingWindow,
        Algorithm::SlidingLog => pb::Algorithm::SlidingLog,
        Algorithm::FixedWindow => pb::Algorithm::FixedWindow,
        Algorithm::Concurrency => pb::Algorithm::Concurrency,
    };
    let fail_mode = match p.fail_mode() {
        None => pb::FailMode::Unspecified,
        Some(FailMode::Open) => pb::FailMode::Open,
        Some(FailMode::Closed) => pb::FailMode::Closed,
        Some(FailMode::Local) => pb::FailMode::Local,
    };
    let tb = p.algorithm() == Algorithm::TokenBucket;
    let cc = p.algorithm() == Algorithm::Concurrency;
    pb::Policy {
        algorithm: algorithm as i32,
        limit: p.limit(),
        period: (!cc).then(|| to_duration(p.period())),
        burst: if tb { p.capacity() } else { 0 },
        fail_mode: fail_mode as i32,
        lease_ttl: cc.then(|| to_duration(p.lease_ttl())),
        shadow: p.shadow(),
        local_share: p.local_share().unwrap_or(0.0),
    }
}

/// The Admin service over a store.
#[derive(Debug)]
pub struct AdminService<S> {
    /// Shared server state.
    state: Arc<AppState<S>>,
}

impl<S> AdminService<S> {
    /// A service over `state`.
    pub fn new(state: Arc<AppState<S>>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl<S: Store> Admin for AdminService<S> {
    async fn reset_limit(
        &self,
        request: Request<pb::ResetLimitRequest>,
    ) -> Result<Response<pb::ResetLimitResponse>, Status> {
        observed("ResetLimit", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            let plan = validate::status_plan(
                &req.namespace,
                req.check.as_ref(),
                &self.state.config.load(),
                &self.state.keys,
            )?;
            let key = &plan.checks[0].key;
            let existed = self
                .state
                .with_deadline("reset", self.state.store.reset(key))
                .await?;
            tracing::info!(namespace = %req.namespace, key = %key, existed, "limit reset");
            Ok(Response::new(pb::ResetLimitResponse { existed }))
        })
        .await
    }

    async fn server_status(
        &self,
        request: Request<pb::ServerStatusRequest>,
    ) -> Result<Response<pb::ServerStatusResponse>, Status> {
        observed("ServerStatus", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            let st = &self.state;
            let config = st.config.load();
            let mut policies: Vec<pb::PolicySummary> = config
                .policies
                .iter()
                .map(|(name, p)| pb::PolicySummary {
                    name: name.clone(),
                    policy: Some(wire_policy(p)),
                })
                .collect();
            policies.sort_by(|a, b| a.name.cmp(&b.name));
            // Without a namespace: every configured table, read in a namespace nobody
            // uses is not meaningful, so only names and settings (state CLOSED, no counts).
            let ns = if req.namespace.is_empty() {
                None
            } else {
                validate::namespace_rule(&req.namespace)?;
                Some(req.namespace.as_str())
            };
            // What the store could not answer: left out, named in `incomplete`.
            let mut incomplete = Vec::new();
            let mut names: BTreeSet<String> = config.breakers.keys().cloned().collect();
            if let Some(ns) = ns {
                names.remove(DEFAULT_BREAKER);
                let index = st.keys.breaker_index(ns);
                match st
                    .with_deadline("breaker_index", st.store.breaker_index(&index))
                    .await
                {
                    Ok(noted) => {
                        names.extend(noted.into_iter().filter(|n| config.breaker(n).is_some()))
                    }
                    Err(e) => incomplete
                        .push(format!("breaker index (template breakers with state): {e}")),
                }
            }
            let planned = names
                .iter()
                .map(|n| {
                    validate::planned_breaker(
                        "breaker",
                        ns.unwrap_or("status"),
                        n,
                        &config,
                        &st.keys,
                    )
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let breakers = match ns {
                Some(_) => {
                    let reads =
                        join_all(planned.iter().map(|b| {
                            st.with_deadline("breaker_get", st.store.breaker_get(b, None))
                        }))
                        .await;
                    let mut infos = Vec::with_capacity(planned.len());
                    for (b, r) in planned.iter().zip(reads) {
                        match r {
                            Ok(r) => infos.push(breaker_info(b, &r.info)),
                            Err(e) => incomplete.push(format!("breaker {}: {e}", b.name)),
                        }
                    }
                    infos
                }
                None => planned
                    .iter()
                    .map(|b| {
                        breaker_info(
                            b,
                            &floodgate_core::breaker::machine::info(&None, &b.settings.config, 0),
                        )
                    })
                    .collect(),
            };
            let ping = st.with_deadline("ping", st.store.ping()).await;
            let store_ready = ping.is_ok();
            let store_error = ping.err().map(|e| e.to_string()).unwrap_or_default();
            let schema_version = match st
                .with_deadline("schema", st.store.schema_version(&st.keys))
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    incomplete.push(format!("schema version: {e}"));
                    0
                }
            };
            let memory = st.store.describe() == "memory";
            let mut queues = Vec::new();
            let listed = crate::queue_watch::queues(st, ns, 100)
                .await
                .unwrap_or_else(|e| {
                    incomplete.push(format!("queue index (queues with state): {e}"));
                    Vec::new()
                });
            for q in listed {
                let s = match st
                    .with_deadline("dlq_stats", st.store.dlq_stats(&q, None))
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        incomplete.push(format!("queue {}/{}: {e}", q.namespace, q.name));
                        continue;
                    }
                };
                queues.push(pb::QueueSummary {
                    namespace: q.namespace.clone(),
                    queue: q.name.clone(),
                    count: s.count,
                    oldest_age: Some(to_duration(s.oldest_age)),
                    over_threshold: s.count >= q.settings.alert_threshold,
                    archived: s.archived,
                });
            }
            Ok(Response::new(pb::ServerStatusResponse {
                version: env!("CARGO_PKG_VERSION").into(),
                store: st.store.describe(),
                schema_version,
                supported_schema_version: if memory { 0 } else { CURRENT_SCHEMA },
                uptime: Some(to_duration(
                    u64::try_from(st.started.elapsed().as_micros()).unwrap_or(u64::MAX),
                )),
                policies,
                breakers,
                store_ready,
                inline_policies: config.inline_policies,
                queues,
                rls_config: config
                    .rls
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                // Domains are namespaces: only those the caller's grant covers.
                rls_domains: {
                    let mut d: Vec<String> = config
                        .rls
                        .config
                        .domains
                        .keys()
                        .filter(|d| crate::auth::may_see(d))
                        .cloned()
                        .collect();
                    d.sort();
                    d
                },
                store_error,
                store_breaker_open: st.guard.is_open(),
                store_calls_in_flight: u32::try_from(st.guard.in_flight()).unwrap_or(u32::MAX),
                store_max_in_flight: u32::try_from(st.guard.max_in_flight()).unwrap_or(u32::MAX),
                incomplete,
            }))
        })
        .await
    }

    async fn top_keys(
        &self,
        request: Request<pb::TopKeysRequest>,
    ) -> Result<Response<pb::TopKeysResponse>, Status> {
        observed("TopKeys", async move {
            let req = request.into_inner();
            annotate(&req.namespace, None)?;
            validate::namespace_rule(&req.namespace)?;
            let minutes = match req.minutes {
                0 => 5,
                m if u64::from(m) <= top::MAX_MINUTES => u64::from(m),
                _ => {
                    return Err(Error::Invalid(format!(
                        "minutes: must be between 1 and {}",
                        top::MAX_MINUTES
                    ))
                    .into());
                }
            };
            let limit = match req.limit {
                0 => 10,
                l @ 1..=100 => l as usize,
                _ => return Err(Error::Invalid("limit: must be between 1 and 100".into()).into()),
            };
            let st = &self.state;
            // This server's own unflushed counts go in first, so an operator sees them now.
            top::flush(&st.store, &st.keys, &st.top).await;
            let now = top::minute_now();
            let keys: Vec<String> = (0..minutes)
                .map(|m| st.keys.top(&req.namespace, now.saturating_sub(m)))
                .collect();
            let reads = join_all(
                keys.iter()
                    .map(|k| st.with_deadline("top_read", st.store.top_read(k))),
            )
            .await;
            let per_minute = reads.into_iter().collect::<Result<Vec<_>, Error>>()?;
            let keys = top::merge(per_minute, limit)
                .into_iter()
                .map(|(m, denied)| {
                    let (key, policy) = top::split_member(&m);
                    pb::TopKey {
                        key: key.to_owned(),
                        policy: policy.to_owned(),
                        denied,
                    }
                })
                .collect();
            Ok(Response::new(pb::TopKeysResponse { keys }))
        })
        .await
    }

    async fn audit_log(
        &self,
        request: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        observed("AuditLog", async move {
            let req = request.into_inner();
            let limit = match req.limit {
                0 => 100,
                l @ 1..=1000 => l as usize,
                _ => {
                    return Err(Error::Invalid("limit: must be between 1 and 1000".into()).into());
                }
            };
            // A token sees the entries of its own namespaces only: every namespace an
            // entry names must be granted (entries naming none need a `*` grant).
            let visible = |ns: &str| {
                if ns.is_empty() {
                    crate::auth::may_see("")
                } else {
                    ns.split(',').all(crate::auth::may_see)
                }
            };
            let entries = crate::audit::read(&self.state, crate::audit::AUDIT_MAX_LEN)
                .await?
                .into_iter()
                .filter(|(_, e)| visible(&e.namespace))
                .take(limit)
                .map(|(id, e)| e.to_wire(id))
                .collect();
            Ok(Response::new(pb::AuditLogResponse { entries }))
        })
        .await
    }
}
