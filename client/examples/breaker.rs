//! A shared circuit breaker in front of a flaky dependency.
//!
//! Start a server with a breaker configured, e.g. `floodgate serve --config breaker.toml`
//! where breaker.toml holds
//!
//! ```toml
//! [breakers.payments]
//! window_size = 20
//! minimum_calls = 10
//! wait_in_open = "5s"
//! half_open_calls = 2
//! ```
//!
//! then `cargo run -p floodgate-client --example breaker [http://127.0.0.1:50051]`.
use std::time::Duration;

use floodgate_client::{CallError, Client, Outcome};

/// The dependency: fails every third call.
async fn charge(n: u32) -> Result<&'static str, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if n.is_multiple_of(3) {
        Err(format!("card declined #{n}"))
    } else {
        Ok("charged")
    }
}

#[tokio::main]
async fn main() -> Result<(), floodgate_client::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let client = Client::connect(&url).await?;
    let payments = client.breaker("shop", "payments");
    for n in 0..60 {
        // A declined card is the customer's problem, not the dependency's: ignore it.
        let result = payments
            .call_classified(charge(n), |r| match r {
                Err(e) if e.starts_with("card declined") && n.is_multiple_of(2) => Outcome::Ignore,
                Err(_) => Outcome::Failure,
                Ok(_) => Outcome::Success,
            })
            .await;
        match result {
            Ok(v) => println!("{n}: {v}"),
            Err(CallError::Inner(e)) => println!("{n}: failed: {e}"),
            Err(CallError::Open { retry_after, .. }) => {
                println!("{n}: breaker open, not calling; retry in {retry_after:?}");
                tokio::time::sleep(retry_after.min(Duration::from_millis(500))).await;
            }
            Err(CallError::Floodgate(e)) => println!("{n}: floodgate unreachable: {e}"),
            Err(other) => println!("{n}: {other}"),
        }
    }
    // Send the last outcomes before exiting.
    client.shutdown().await;
    let r = client.reporter();
    println!(
        "{} Report calls for 60 calls ({} failed, {} outcomes dropped)",
        r.sent(),
        r.failed(),
        r.dropped()
    );
    Ok(())
}
