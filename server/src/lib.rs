//! floodgate-server: the gRPC service and the `floodgate` command line.
//!
//! Layout:
//! - [`cli`]: the `floodgate` subcommands (`serve`, `acquire`, `limit`, `bench`, `migrate`); `main.rs`
//!   only calls [`cli::main`].
//! - [`auth`]: bearer tokens, roles and namespace grants; the layer in front of the services.
//! - [`audit`]: the audit trail of operator and admin actions (log and store stream).
//! - [`breaker_config`]: `[breakers.NAME]` tables into validated breaker settings.
//! - [`config`]: the TOML file, environment and flags, merged and validated.
//! - [`queue_config`]: `[queues.NAME]` tables into validated dead-letter queue settings.
//! - [`queue_watch`]: the dead-letter queue gauges, refreshed in the background.
//! - [`http`]: the HTTP side port (`/metrics`, `/healthz`, `/readyz`).
//! - [`metrics`]: metric names and where they are recorded.
//! - [`reload`]: live reload of the configuration file (on change and on SIGHUP).
//! - [`rls`]: Envoy's `ShouldRateLimit` and envoyproxy/ratelimit's YAML configuration.
//! - [`limits`]: limits on clients (message sizes, streams, Watch slots, deadlines).
//! - [`listener`]: accepting connections (connection cap, TLS handshake, preface deadline).
//! - [`tls`]: TLS files of the gRPC server (with mTLS and reload) and of Redis.
//! - [`server`]: transport — services, health and reflection on a listener, graceful drain.
//! - [`service`]: the gRPC services (`RateLimiter`, `Admin`) and their shared state.
//! - [`validate`]: wire requests into store plans; every rule checked once at the edge.
//! - [`store`]: the [`store::Store`] trait, its Redis and memory implementations.
//! - [`top`]: top denied keys per namespace, counted in process and flushed to the store.
//! - [`keys`]: every Redis key.
//! - [`error`]: the server's errors and their gRPC statuses.
#![deny(unreachable_pub)]

pub mod audit;
pub mod auth;
pub mod breaker_config;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod queue_config;
pub mod queue_watch;
pub mod reload;
pub mod rls;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod top;
pub mod validate;
