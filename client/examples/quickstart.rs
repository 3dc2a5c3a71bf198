//! Ten requests against a limit of five per second, from one process.
//!
//! Start a server (`cargo run -p floodgate-server -- serve`), then:
//! `cargo run -p floodgate-client --example quickstart [http://127.0.0.1:50051]`
use std::time::Duration;

use floodgate_client::{Client, Policy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let client = Client::connect(&url).await?;
    let policy = Policy::token_bucket(5, Duration::from_secs(1));
    for i in 1..=10 {
        let d = client
            .acquire("quickstart")
            .check("user:42", policy.clone())
            .send()
            .await?;
        let c = &d.checks[0];
        if d.allowed {
            println!("request {i:>2}: allowed, {} left", c.remaining);
        } else {
            println!("request {i:>2}: denied, retry in {:?}", d.retry_after);
        }
    }
    Ok(())
}
