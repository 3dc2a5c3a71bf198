//! floodgate-tests: the harness for end-to-end tests against real Redis and real servers.
//!
//! Layout:
//! - [`redis`]: obtains a Redis for a test — `FLOODGATE_TEST_REDIS_URL`, else a private
//!   `redis-server` on a free port, else testcontainers when Docker runs, else a failure
//!   saying what to install. It never silently skips.
//! - [`redis_proc`]: one `redis-server` process a test owns: pause, resume, kill, restart.
//! - [`fault_proxy`]: a TCP proxy between servers and Redis that delays, blackholes or
//!   resets traffic on demand.
//! - [`redis_cluster`]: a local 6-node Redis Cluster with kill, pause and failover waits.
//! - [`sentinel`]: a master, a replica and three Sentinels, with kill and failover waits.
//! - [`tls_support`]: certificates made at test time and a TLS-only `redis-server`.
//! - [`server`]: starts `floodgate serve` processes on ephemeral ports and stops them.
//! - `tests/`: the scenarios (conformance of Lua against `core`, end to end, Python client).

pub mod conformance_support;
pub mod dlq_support;
pub mod e2e_support;
pub mod fault_proxy;
pub mod redis;
pub mod redis_cluster;
pub mod redis_proc;
pub mod sentinel;
pub mod server;
pub mod tls_support;

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
