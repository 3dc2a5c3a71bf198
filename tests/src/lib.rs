//! floodgate-tests: the harness for end-to-end tests against real Redis and real servers.
//!
//! Layout:
//! - [`redis`]: obtains a Redis for a test — `FLOODGATE_TEST_REDIS_URL`, else a private
//!   `redis-server` on a free port, else testcontainers when Docker runs, else a failure
//!   saying what to install. It never silently skips.
//! - [`server`]: starts `floodgate serve` processes on ephemeral ports and stops them.
//! - `tests/`: the scenarios (conformance of Lua against `core`, end to end, Python client).

pub mod conformance_support;
pub mod dlq_support;
pub mod e2e_support;
pub mod redis;
pub mod server;

/// A namespace no other test uses, so tests can share one Redis.
pub fn unique_namespace(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}
