//! Transport: puts the services (floodgate.v1 and Envoy's RateLimitService), health and
//! reflection on a listener and serves until the
//! shutdown future resolves, then drains in-flight calls. Plain text or TLS (`crate::tls`);
//! the limits on clients (`crate::limits`) are applied here and in `crate::listener`.
use std::{future::Future, sync::Arc};

use floodgate_proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use floodgate_proto::v1::{
    admin_server::AdminServer, circuit_breakers_server::CircuitBreakersServer,
    dead_letters_server::DeadLettersServer, rate_limiter_server::RateLimiterServer,
};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::{
    rls::service::RlsService,
    service::{
        admin::AdminService, circuit_breakers::CircuitBreakersService,
        dead_letters::DeadLettersService, rate_limiter::RateLimiterService, state::AppState,
    },
    store::Store,
    tls::Reloading,
};

/// Sets a generated service's message size limits.
macro_rules! sized {
    ($svc:expr, $max:expr) => {
        $svc.max_decoding_message_size($max)
            .max_encoding_message_size($max)
    };
}

/// Serves every floodgate service for `state` on `listener` (over TLS when `tls` is given)
/// until `shutdown` resolves.
pub async fn run<S: Store>(
    state: Arc<AppState<S>>,
    listener: TcpListener,
    tls: Option<Reloading>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let limits = state.config.load().limits;
    let max = limits.max_message_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RateLimiterServer<RateLimiterService<S>>>()
        .await;
    health.set_serving::<AdminServer<AdminService<S>>>().await;
    health
        .set_serving::<RateLimitServiceServer<RlsService<S>>>()
        .await;
    health
        .set_serving::<DeadLettersServer<DeadLettersService<S>>>()
        .await;
    health
        .set_serving::<CircuitBreakersServer<CircuitBreakersService<S>>>()
        .await;
    // Reflection in both versions: grpcurl speaks v1, many other tools still v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(floodgate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let router = Server::builder()
        // A longer grpc-timeout (or none) is cut to max_deadline; Watch streams are not
        // affected once their response has started.
        .timeout(limits.max_deadline)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        // Rapid-reset floods (CVE-2023-44487) and headers beyond 16 KiB end the connection.
        .http2_max_pending_accept_reset_streams(Some(64))
        .http2_max_header_list_size(16 * 1024)
        .tcp_keepalive(Some(limits.keepalive_interval))
        // Authentication, roles, token rates and the audit trail (crate::auth).
        .layer(crate::auth::layer::AuthLayer::new(state.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(sized!(
            RateLimiterServer::new(RateLimiterService::new(state.clone())),
            max
        ))
        .add_service(sized!(
            CircuitBreakersServer::new(CircuitBreakersService::new(state.clone())),
            max
        ))
        // A Publish carries up to 4 MiB - 64 KiB of payload plus its fields (the default
        // max_message_bytes is 5 MiB).
        .add_service(sized!(
            DeadLettersServer::new(DeadLettersService::new(state.clone())),
            max
        ))
        .add_service(sized!(
            AdminServer::new(AdminService::new(state.clone())),
            max
        ))
        // Envoy's global rate limiting, on the same port.
        .add_service(sized!(
            RateLimitServiceServer::new(RlsService::new(state.clone())),
            max
        ));
    let mut stopping = state.shutdown_signal();
    let shutdown = async move {
        shutdown.await;
        // Watch streams never end by themselves; end them so the drain can finish.
        state.begin_shutdown();
    };
    // Streams the server cannot end (a health Watch, a call stuck on a client that stopped
    // reading) must not hold the exit forever: after DRAIN_DEADLINE the rest is cut.
    let drain_deadline = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN_DEADLINE).await;
        tracing::warn!(
            "connections still open {DRAIN_DEADLINE:?} after the shutdown began; closing them"
        );
    };
    // TCP_NODELAY (set by the listener): an answer is one small frame; Nagle plus delayed
    // ACKs would hold it back for ~40 ms.
    let served = async move {
        match tls {
            Some(tls) => {
                let incoming = crate::listener::incoming(listener, limits, move |tcp| {
                    let tls = tls.clone();
                    async move { tls.accept(tcp).await }
                });
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            None => {
                let incoming =
                    crate::listener::incoming(listener, limits, |tcp| async move { Ok(tcp) });
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        }
    };
    tokio::select! {
        served = served => served?,
        () = drain_deadline => {}
    }
    Ok(())
}

/// How long a shutting-down server waits for open calls and streams to finish.
pub const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
