//! floodgate-client: ask a floodgate fleet "may I make this call now?" from any Rust service.
//!
//! ```no_run
//! use std::time::Duration;
//! use floodgate_client::{Client, Policy};
//!
//! # async fn demo() -> Result<(), floodgate_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let decision = client
//!     .acquire("shop")
//!     .check("user:42", Policy::token_bucket(100, Duration::from_secs(60)))
//!     .cost(1)
//!     .send()
//!     .await?;
//! if !decision.allowed {
//!     println!("slow down, retry in {:?}", decision.retry_after);
//! }
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`client`]: [`Client`], connecting to one or several servers.
//! - [`auth`]: [`AuthChannel`], the channel that sends a bearer token ([`Client::with_token`]).
//! - [`acquire`]: the [`AcquireBuilder`] and its [`Decision`].
//! - [`breaker`]: [`Breaker`] handles on shared circuit breakers ([`Client::breaker`]).
//! - [`dead_letters`]: [`DeadLetterQueue`] handles ([`Client::dead_letters`]): publish,
//!   inspect, claim/ack, redrive, and the [`Consumer`] loop.
//! - [`policy`]: [`Policy`] (inline limits) and [`PolicyRef`] (inline or by name).
//! - [`resilience`]: retry, timeout, bulkhead, rate limit with waiting, fallback and the
//!   HTTP rate-limit layer, composed with the shared parts in one [`Resilience`] policy.
//! - [`tls`]: [`Tls`], for `https://` servers (CA file or system roots, mTLS identity).
//! - [`error`]: the [`Error`] type.
#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod acquire;
pub mod auth;
pub mod breaker;
pub mod client;
pub mod dead_letters;
pub mod error;
pub mod policy;
pub mod resilience;
pub mod tls;

pub use acquire::{AcquireBuilder, CheckResult, Decision};
pub use auth::AuthChannel;
pub use breaker::{Breaker, CallError, Outcome};
pub use client::Client;
pub use dead_letters::{Consumer, DeadLetterQueue};
pub use error::Error;
pub use floodgate_proto as proto;
pub use policy::{Algorithm, FailMode, Policy, PolicyRef};
pub use resilience::Resilience;
pub use tls::Tls;
