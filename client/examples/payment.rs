//! The classic: a payment call behind a fleet-wide rate limit, a shared breaker, retries,
//! timeouts and a dead-letter queue. A fake gateway fails now and then (503, retried) and
//! declines some cards (402, permanent: dead-lettered at once).
//!
//! `floodgate serve --config client/examples/payment.toml`, then
//! `cargo run -p floodgate-client --example payment [http://127.0.0.1:50051]`.
//! `tests/tests/e2e_resilience_http.rs` runs this same code against a real server.
use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use floodgate_client::{
    Client, Outcome, Policy,
    resilience::{Backoff, RateLimit, Resilience, ResilienceError, Retry, Timeout},
};

/// What the gateway answers instead of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// 402 declined (permanent), 503 unavailable (transient).
    pub status: u16,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gateway answered {}", self.status)
    }
}

/// A fake payment gateway: orders divisible by 7 are declined; every third call is a 503.
#[derive(Debug, Default)]
pub struct Gateway {
    calls: AtomicU32,
}

impl Gateway {
    /// Charges `order`.
    pub async fn charge(&self, order: u32) -> Result<String, GatewayError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        if order.is_multiple_of(7) {
            Err(GatewayError { status: 402 })
        } else if n % 3 == 2 {
            Err(GatewayError { status: 503 })
        } else {
            Ok(format!("receipt-{order}"))
        }
    }

    /// Calls that reached the gateway.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// How the run went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Orders paid.
    pub paid: u32,
    /// Orders that failed for good (and went to the dead-letter queue).
    pub failed: u32,
    /// Calls that reached the gateway.
    pub gateway_calls: u32,
}

/// The payment policy: every attempt spends the rate limit and passes the shared breaker.
pub fn payment_policy(
    client: &Client,
    namespace: &str,
) -> Result<Resilience<String, GatewayError>, Box<dyn std::error::Error>> {
    Ok(Resilience::<String, GatewayError>::builder()
        .name("payments")
        .rate_limit(
            RateLimit::new(
                client,
                namespace,
                "gateway",
                Policy::token_bucket(50, Duration::from_secs(1)),
            )
            .max_wait(Duration::from_millis(200)),
        )
        // A declined card is the gateway working: only 5xx and timeouts open the breaker.
        .breaker_classified(client.breaker(namespace, "payments"), |r| match r {
            Err(e) if e.status >= 500 => Outcome::Failure,
            _ => Outcome::Success,
        })
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(Backoff::new(
                    Duration::from_millis(20),
                    Duration::from_millis(500),
                ))
                .retry_if(|e: &GatewayError| e.status >= 500),
        )
        .timeout(
            Timeout::new()
                .attempt(Duration::from_millis(300))
                .overall(Duration::from_secs(2)),
        )
        .dead_letter(client.dead_letters(namespace, "payments"))
        .error_class(|e: &GatewayError| format!("http_{}", e.status))
        .build()?)
}

/// Pays orders 1..=`orders` in `namespace`.
pub async fn run(
    url: &str,
    namespace: &str,
    orders: u32,
) -> Result<Summary, Box<dyn std::error::Error>> {
    let client = Client::connect(url).await?;
    let policy = payment_policy(&client, namespace)?;
    let gateway = Gateway::default();
    let mut summary = Summary::default();
    for order in 1..=orders {
        let input = format!(r#"{{"order":{order},"amount_cents":1999}}"#);
        match policy
            .call_with_input(input, || gateway.charge(order))
            .await
        {
            Ok(receipt) => {
                summary.paid += 1;
                println!("order {order}: paid ({receipt})");
            }
            Err(ResilienceError::Inner(e)) => {
                summary.failed += 1;
                println!("order {order}: {e}; dead-lettered");
            }
            Err(e) => {
                summary.failed += 1;
                println!("order {order}: {e}");
            }
        }
    }
    summary.gateway_calls = gateway.calls();
    client.shutdown().await;
    let stats = client.dead_letters(namespace, "payments").stats().await?;
    println!("{summary:?}; dead letters by reason: {:?}", stats.by_reason);
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    run(&url, "shop", 20).await?;
    Ok(())
}
