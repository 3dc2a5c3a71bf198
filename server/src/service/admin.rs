//! `floodgate.v1.Admin`: operator actions (ResetLimit).
use std::sync::Arc;

use floodgate_proto::v1::{self as pb, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::{annotate, observed, state::AppState};
use crate::{store::Store, validate};

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
            annotate(&req.namespace, None);
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
}
