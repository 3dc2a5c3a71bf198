//! Transport: puts the services (floodgate.v1 and Envoy's RateLimitService), health and
//! reflection on a listener and serves until the
//! shutdown future resolves, then drains in-flight calls.
use std::{future::Future, sync::Arc};

use floodgate_proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use floodgate_proto::v1::{
    admin_server::AdminServer, circuit_breakers_server::CircuitBreakersServer,
    dead_letters_server::DeadLettersServer, rate_limiter_server::RateLimiterServer,
};
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

use crate::{
    rls::service::RlsService,
    service::{
        admin::AdminService, circuit_breakers::CircuitBreakersService,
        dead_letters::DeadLettersService, rate_limiter::RateLimiterService, state::AppState,
    },
    store::Store,
};

/// Serves every floodgate service for `state` on `listener` until `shutdown` resolves.
pub async fn run<S: Store>(
    state: Arc<AppState<S>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
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
    Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RateLimiterServer::new(RateLimiterService::new(
            state.clone(),
        )))
        .add_service(CircuitBreakersServer::new(CircuitBreakersService::new(
            state.clone(),
        )))
        .add_service(
            DeadLettersServer::new(DeadLettersService::new(state.clone()))
                // A Publish carries up to 4 MiB - 64 KiB of payload plus its fields.
                .max_decoding_message_size(5 * 1024 * 1024),
        )
        .add_service(AdminServer::new(AdminService::new(state.clone())))
        // Envoy's global rate limiting, on the same port.
        .add_service(RateLimitServiceServer::new(RlsService::new(state.clone())))
        // TCP_NODELAY: an answer is one small frame; Nagle plus delayed ACKs would hold it
        // back for ~40 ms.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                // Watch streams never end by themselves; end them so the drain can finish.
                state.begin_shutdown();
            },
        )
        .await?;
    Ok(())
}
