//! The client's errors. A denial is a [`crate::Decision`], never an error.
use thiserror::Error;

/// Why a call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint URL is malformed.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it is invalid.
        message: String,
    },
    /// A TLS setting cannot be used (e.g. a CA or certificate file cannot be read).
    #[error("invalid TLS settings: {message}")]
    InvalidTls {
        /// What is wrong, naming the file.
        message: String,
    },
    /// Could not connect.
    #[error("cannot connect to floodgate: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The request broke a rule; the message names the field and the rule.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A named policy, breaker or lease does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The server refuses this kind of request (e.g. inline policies disabled).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The call carried no valid token (missing, unknown, expired or malformed).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token given to the client cannot be sent (empty, or not visible ASCII).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The server or its store is unavailable; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Any other gRPC status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
}

impl Error {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Connect(_))
            || matches!(self, Error::Status(s) if matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted | tonic::Code::Aborted))
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let msg = s.message().to_owned();
        match s.code() {
            tonic::Code::InvalidArgument => Error::InvalidArgument(msg),
            tonic::Code::NotFound => Error::NotFound(msg),
            tonic::Code::PermissionDenied => Error::PermissionDenied(msg),
            tonic::Code::Unauthenticated => Error::Unauthenticated(msg),
            tonic::Code::Unavailable => Error::Unavailable(msg),
            _ => Error::Status(s),
        }
    }
}
