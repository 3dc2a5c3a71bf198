//! The server's errors, and the one place they become gRPC statuses.
use tonic::Status;

use crate::store::StoreError;

/// Why a request failed. A denial is an answer, never one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: the message starts with the field path and states the rule.
    #[error("{0}")]
    Invalid(String),
    /// A `policy_name` the configuration does not define.
    #[error("{field}: no policy named {name:?} is configured")]
    PolicyNotFound {
        /// Where it was named.
        field: String,
        /// The name.
        name: String,
    },
    /// A breaker that no configuration defines.
    #[error(
        "{field}: no breaker named {name:?} is configured (add [breakers.{name}] or a [breakers.default] template)"
    )]
    BreakerNotFound {
        /// Where it was named.
        field: String,
        /// The name.
        name: String,
    },
    /// A queue that no configuration defines.
    #[error(
        "{field}: no queue named {name:?} is configured (add [queues.{name}] or a [queues.default] template)"
    )]
    QueueNotFound {
        /// Where it was named.
        field: String,
        /// The name.
        name: String,
    },
    /// A dead letter that is not (or no longer) in the queue or its archive.
    #[error(
        "id: no dead letter {0:?} in this queue or its archive (acked, purged, trimmed, or never published)"
    )]
    LetterNotFound(String),
    /// The store cannot do this (e.g. Redrive on the memory store).
    #[error("{0}")]
    Unsupported(String),
    /// An inline policy while the server has `inline_policies = false`.
    #[error(
        "{0}: inline policies are disabled on this server (inline_policies = false); name a configured policy"
    )]
    InlineDisabled(String),
    /// Renew of a lease that has expired or never existed.
    #[error("lease_id: the lease has expired or was released; acquire a new one")]
    LeaseNotFound,
    /// The caller's token does not grant this namespace (`crate::auth`).
    #[error("{}: token {token:?} is not granted it", if namespace.is_empty() { "namespace \"\" (the whole server)".to_owned() } else { format!("namespace {namespace:?}") })]
    NamespaceDenied {
        /// The namespace asked for; empty for server-wide views.
        namespace: String,
        /// The token's name.
        token: String,
    },
    /// The store failed and no fail mode answers for this call.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            // The caller must fix the request.
            Error::Invalid(_) => Status::invalid_argument(msg),
            // The name refers to nothing; like a missing resource.
            Error::PolicyNotFound { .. }
            | Error::BreakerNotFound { .. }
            | Error::QueueNotFound { .. }
            | Error::LetterNotFound(_)
            | Error::LeaseNotFound => Status::not_found(msg),
            // The server cannot do this in its current setup.
            Error::Unsupported(_) => Status::failed_precondition(msg),
            // The server's configuration forbids this form of request.
            Error::InlineDisabled(_) => Status::permission_denied(msg),
            // Authenticated, but the token's grant does not reach this namespace.
            Error::NamespaceDenied { .. } => Status::permission_denied(msg),
            // Transient: the caller may retry (a retried Acquire should carry a request_id).
            Error::Store(_) => Status::unavailable(msg),
        }
    }
}
