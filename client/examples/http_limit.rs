//! An axum server rate-limited per client IP through floodgate: 5 requests a minute, then
//! 429 with `Retry-After`, `RateLimit` and `RateLimit-Policy`.
//!
//! Start a server (`cargo run -p floodgate-server -- serve`), then
//! `cargo run -p floodgate-client --example http_limit [http://127.0.0.1:50051]` and
//! `curl -i http://127.0.0.1:3000/` a few times.
use std::{net::SocketAddr, time::Duration};

use axum::{Router, extract::ConnectInfo, routing::get};
use floodgate_client::{
    Client, Policy,
    resilience::{HttpRateLimitLayer, Key},
};

/// The app behind the limit: `/hello` limited per peer IP.
pub fn app(client: &Client) -> Router {
    let per_ip = Key::from_fn(|p| {
        p.extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .or_else(|| {
                p.headers
                    .get("x-client-id")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
    });
    let limit = HttpRateLimitLayer::new(
        client,
        "http-example",
        Policy::token_bucket(5, Duration::from_secs(60)),
        per_ip,
    )
    .name("per-ip")
    .key_prefix("ip:");
    Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .layer(limit)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let client = Client::connect(&url).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000/hello");
    axum::serve(
        listener,
        app(&client).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
