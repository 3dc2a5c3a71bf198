//! The tower layer in front of every gRPC service: reads `authorization: Bearer <token>`,
//! refuses a missing, unknown, expired or malformed token (UNAUTHENTICATED) and an RPC
//! above the token's role (PERMISSION_DENIED), spends one unit of the token's own rate
//! (RESOURCE_EXHAUSTED with `retry-after-ms` when it is used up), then serves the call
//! inside its [`Context`] and writes the audit entry of operator and admin actions.
use std::{
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::SystemTime,
};

use floodgate_core::Algorithm;
use futures::future::BoxFuture;
use http::{Request, Response};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use super::{
    CONTEXT, Context,
    rpc::{self, Access},
    token::{Rejected, Token},
};
use crate::{
    audit,
    service::state::AppState,
    store::{AcquirePlan, PlannedCheck, Store},
};

/// Puts [`Auth`] in front of a service.
#[derive(Debug)]
pub struct AuthLayer<S> {
    /// The live configuration (tokens reload with it), the store for rates and audit.
    state: Arc<AppState<S>>,
}

impl<S> AuthLayer<S> {
    /// A layer checking calls against `state`'s tokens.
    pub fn new(state: Arc<AppState<S>>) -> Self {
        Self { state }
    }
}

impl<S> Clone for AuthLayer<S> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<S, I> Layer<I> for AuthLayer<S> {
    type Service = Auth<S, I>;
    fn layer(&self, inner: I) -> Self::Service {
        Auth {
            state: self.state.clone(),
            inner,
        }
    }
}

/// The authenticating service around `I`.
#[derive(Debug)]
pub struct Auth<S, I> {
    /// As in [`AuthLayer`].
    state: Arc<AppState<S>>,
    /// The services.
    inner: I,
}

impl<S, I: Clone> Clone for Auth<S, I> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// The token of `authorization: Bearer <token>` (the scheme in any case).
fn bearer(req: &Request<Body>) -> Result<&str, String> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| {
            "missing token: send the metadata `authorization: Bearer <token>`".to_owned()
        })?;
    let text = value
        .to_str()
        .map_err(|_| "malformed authorization metadata: not ASCII text".to_owned())?;
    match text.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err("malformed authorization metadata: expected `Bearer <token>`".to_owned()),
    }
}

impl<S, I> Auth<S, I>
where
    S: Store,
{
    /// Authenticates and authorizes; the context to run the call in, or the refusal.
    async fn admit(
        state: &AppState<S>,
        path: &str,
        token: Result<String, String>,
    ) -> Result<Arc<Context>, (Status, Option<Arc<Token>>)> {
        let tokens = state.config.load().tokens.clone();
        let (access, _) = rpc::access(path);
        let context = |token| {
            Arc::new(Context {
                token,
                namespaces: Default::default(),
            })
        };
        if !tokens.enabled() || access == Access::Open {
            return Ok(context(None));
        }
        let refuse = |reason: &'static str, msg: String| {
            crate::metrics::auth_refused(reason);
            (Status::unauthenticated(msg), None)
        };
        let presented = token.map_err(|m| refuse("malformed", m))?;
        let token = match tokens.find(&presented, SystemTime::now()) {
            Ok(t) => t,
            Err(Rejected::Unknown) => {
                return Err(refuse("unknown", "unknown token".into()));
            }
            Err(Rejected::Expired(name)) => {
                return Err(refuse("expired", format!("token {name:?} has expired")));
            }
        };
        if let Access::Role(need) = access
            && token.role < need
        {
            crate::metrics::auth_refused("role");
            let msg = format!(
                "{} needs the {} role; token {:?} has the {} role",
                rpc::method(path),
                need.name(),
                token.name,
                token.role.name()
            );
            return Err((Status::permission_denied(msg), Some(token)));
        }
        if let Some(policy) = &token.rate {
            let plan = AcquirePlan {
                checks: vec![PlannedCheck {
                    key: state.keys.token_rate(&token.name, Algorithm::TokenBucket),
                    policy: policy.clone(),
                    policy_ref: crate::keys::TOKEN_RATE_POLICY.to_owned(),
                    cost: 1,
                    lease_member: None,
                }],
                consume: true,
                ..Default::default()
            };
            // A failing store admits: the token-rate policy fails open (README "Security").
            if let Ok((d, _)) = state.decide(&plan).await
                && !d.allowed
            {
                crate::metrics::auth_refused("rate");
                let wait_ms = d.checks.first().map_or(0, |c| c.retry_after.div_ceil(1000));
                let mut status = Status::resource_exhausted(format!(
                    "token {:?} is over its request rate; retry after {wait_ms} ms",
                    token.name
                ));
                if let Ok(v) = wait_ms.to_string().parse() {
                    status.metadata_mut().insert("retry-after-ms", v);
                }
                return Err((status, Some(token)));
            }
        }
        Ok(context(Some(token)))
    }
}

/// The gRPC code of a unary answer: `grpc-status` in the headers (a trailers-only error),
/// else OK (success puts it in the trailers).
fn code_of(res: &Response<Body>) -> Code {
    res.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// `grpc-message` is percent-encoded on the wire (gRPC over HTTP/2); the text back.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied(), raw.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The audit entry of an audited call that was dropped before it finished (its deadline
/// passed, or the client reset the stream), written from `Drop` unless disarmed.
struct CutShort<S: Store> {
    state: Arc<AppState<S>>,
    ctx: Arc<Context>,
    rpc: String,
    armed: bool,
}

impl<S: Store> Drop for CutShort<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let namespaces = self.ctx.namespaces.lock().join(",");
        let entry = audit::Entry::new(
            self.ctx.caller(),
            self.ctx.token.as_ref().map(|t| t.role),
            &self.rpc,
            &namespaces,
            tonic::Code::Cancelled,
            "cut short before it finished (its deadline passed or the client went away); what it did until then stands",
        );
        let state = self.state.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { audit::record(&state, entry).await });
            }
            Err(_) => audit::log(&entry),
        }
    }
}

impl<S, I> Service<Request<Body>> for Auth<S, I>
where
    S: Store,
    I: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    I::Future: Send,
{
    type Response = Response<Body>;
    type Error = I::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, I::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone is ready only if polled; keep the polled one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let (_, audited) = rpc::access(&path);
            let token = bearer(&req).map(str::to_owned);
            match Self::admit(&state, &path, token).await {
                Err((status, token)) => {
                    if audited {
                        let entry = audit::Entry::new(
                            token
                                .as_ref()
                                .map_or("unauthenticated", |t| t.name.as_str()),
                            token.as_ref().map(|t| t.role),
                            rpc::method(&path),
                            "",
                            status.code(),
                            status.message(),
                        );
                        match token {
                            Some(_) => audit::record(&state, entry).await,
                            // Without a valid token anyone could send these as fast as they
                            // like: logged, never stored, so they cannot push the operators'
                            // entries out of the bounded trail.
                            None => audit::log(&entry),
                        }
                    }
                    Ok(status.into_http())
                }
                Ok(ctx) => {
                    // An audited call cut short (its deadline, a client reset) still leaves
                    // an entry: what it did before it was dropped stands.
                    // (Only audited calls pay for it: Acquire is the hot path.)
                    let mut cut_short = audited.then(|| CutShort {
                        state: state.clone(),
                        ctx: ctx.clone(),
                        rpc: rpc::method(&path).to_owned(),
                        armed: true,
                    });
                    let res = CONTEXT.scope(ctx.clone(), inner.call(req)).await;
                    // It finished: its own entry follows.
                    if let Some(c) = cut_short.as_mut() {
                        c.armed = false;
                    }
                    let res = res?;
                    if audited {
                        let code = code_of(&res);
                        let message = res
                            .headers()
                            .get("grpc-message")
                            .map(|v| percent_decode(v.as_bytes()))
                            .unwrap_or_default();
                        let namespaces = ctx.namespaces.lock().join(",");
                        let entry = audit::Entry::new(
                            ctx.caller(),
                            ctx.token.as_ref().map(|t| t.role),
                            rpc::method(&path),
                            &namespaces,
                            code,
                            &message,
                        );
                        audit::record(&state, entry).await;
                    }
                    Ok(res)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn grpc_messages_are_decoded() {
        assert_eq!(
            percent_decode(b"namespace%20%22b%22: 100%"),
            "namespace \"b\": 100%"
        );
    }
}
