//! Authentication and authorization: bearer tokens bound to namespaces and a role.
//!
//! - [`token`]: the `[[tokens]]` configuration, hashing, lookup in constant time.
//! - [`rpc`]: which role each RPC needs, and which RPCs are audited.
//! - [`layer`]: the tower layer in front of every service: authenticates the token,
//!   checks the RPC's role and the token's own request rate, and runs the call inside a
//!   [`Context`] so the services can check each namespace they are asked about
//!   ([`allow_namespace`]) and the layer can audit the outcome.
//!
//! With no token configured authentication is off and every call may do everything; the
//! server only allows that on a loopback address or with `--insecure`.
pub mod layer;
pub mod rpc;
pub mod token;

use std::sync::Arc;

use parking_lot::Mutex;

pub use token::{Token, Tokens};

/// What a token may call; each role may call everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Limits, breakers (read and report), publishing dead letters.
    App,
    /// App + consuming dead letters (Get, List, Stats, Claim, Ack, Nack).
    Worker,
    /// Worker + overrides and queue maintenance, status, top keys, audit.
    Operator,
    /// Operator + Purge.
    Admin,
}

impl Role {
    /// Parses `app`, `worker`, `operator` or `admin`.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "app" => Self::App,
            "worker" => Self::Worker,
            "operator" => Self::Operator,
            "admin" => Self::Admin,
            _ => return None,
        })
    }

    /// The name as configured.
    pub fn name(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Worker => "worker",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// The caller of one RPC, as the layer authenticated it.
#[derive(Debug)]
pub struct Context {
    /// The token; `None` when authentication is off.
    pub token: Option<Arc<Token>>,
    /// The namespaces the call asked about, in order (for the audit entry).
    pub namespaces: Mutex<Vec<String>>,
}

impl Context {
    /// The caller's name for logs and audit entries (`anonymous` when auth is off).
    pub fn caller(&self) -> &str {
        self.token.as_ref().map_or("anonymous", |t| t.name.as_str())
    }
}

tokio::task_local! {
    /// The context of the RPC being served (set by [`layer`]).
    pub static CONTEXT: Arc<Context>;
}

/// Checks that the caller may use namespace `ns`, and records it for the audit entry.
/// Every service calls this for each namespace a request names before touching state.
/// Outside a call served through the layer (services called directly in tests) there is
/// no caller to check and everything is allowed.
/// An empty namespace (server-wide views such as ServerStatus without one) needs a token
/// granted `*`.
pub fn allow_namespace(ns: &str) -> Result<(), crate::error::Error> {
    let Ok(ctx) = CONTEXT.try_with(Arc::clone) else {
        return Ok(());
    };
    {
        let mut seen = ctx.namespaces.lock();
        if !seen.iter().any(|s| s == ns) {
            seen.push(ns.to_owned());
        }
    }
    match &ctx.token {
        Some(t) if !t.covers(ns) => {
            crate::metrics::auth_refused("namespace");
            Err(crate::error::Error::NamespaceDenied {
                namespace: ns.to_owned(),
                token: t.name.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// The caller's name in the current call (`anonymous` when auth is off or outside a call).
pub fn caller() -> String {
    CONTEXT
        .try_with(|c| c.caller().to_owned())
        .unwrap_or_else(|_| "anonymous".into())
}

/// Whether the current caller's grant covers `ns` (without recording or refusing it);
/// true outside a call or with authentication off.
pub fn may_see(ns: &str) -> bool {
    CONTEXT
        .try_with(|c| c.token.as_ref().is_none_or(|t| t.covers(ns)))
        .unwrap_or(true)
}

/// Refuses to serve without tokens on a non-loopback address unless `insecure`, and logs
/// how the server authenticates.
pub fn check_exposure(
    listen: std::net::SocketAddr,
    tokens: &Tokens,
    insecure: bool,
) -> anyhow::Result<()> {
    if tokens.enabled() {
        tracing::info!(
            tokens = tokens.tokens.len(),
            "authentication on: every call needs a bearer token"
        );
        return Ok(());
    }
    if listen.ip().is_loopback() {
        tracing::info!("authentication off: no [[tokens]] configured (loopback only)");
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            %listen,
            "authentication OFF on a non-loopback address (--insecure): anyone who reaches this port may do everything"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve on {listen} without authentication: configure [[tokens]] in the configuration file (`floodgate token new` makes one), listen on 127.0.0.1, or pass --insecure"
    )
}
