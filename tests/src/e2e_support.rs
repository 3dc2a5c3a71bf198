//! Helpers for the end-to-end suites (`tests/tests/e2e_*.rs`): fleets of real servers,
//! concurrent Acquires spread over them, and the assertions every scenario shares.
//!
//! A scenario is an async function taking the servers' URLs, so the same scenario runs
//! against three servers on one Redis and against one memory-store server.
use std::{
    panic::resume_unwind,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use floodgate_client::{AcquireBuilder, CheckResult, Client, Decision, Policy};

use crate::{
    redis::TestRedis,
    server::{ServerOptions, TestServer},
};

/// Real `floodgate serve` processes, on one Redis or on the memory store.
#[derive(Debug)]
pub struct Fleet {
    /// The Redis every server uses; `None` for the memory store.
    pub redis: Option<TestRedis>,
    /// The servers, in start order.
    pub servers: Vec<TestServer>,
}

async fn start_servers(n: usize, redis_url: Option<String>, config: &str) -> Vec<TestServer> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let opts = ServerOptions {
                redis_url: redis_url.clone(),
                config: Some(config.to_owned()),
                ..Default::default()
            };
            tokio::task::spawn_blocking(move || TestServer::start(opts))
        })
        .collect();
    let mut servers = Vec::with_capacity(n);
    for h in handles {
        match h.await {
            Ok(s) => servers.push(s),
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(e) => panic!("server start task failed: {e}"),
        }
    }
    servers
}

impl Fleet {
    /// `n` servers sharing one Redis ([`TestRedis::start`]), all with `config`.
    pub async fn on_redis(n: usize, config: &str) -> Self {
        let redis = TestRedis::start().await;
        let servers = start_servers(n, Some(redis.url().to_owned()), config).await;
        Self {
            redis: Some(redis),
            servers,
        }
    }

    /// One server on the memory store with `config`.
    pub async fn in_memory(config: &str) -> Self {
        Self {
            redis: None,
            servers: start_servers(1, None, config).await,
        }
    }

    /// The servers' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url().to_owned()).collect()
    }

    /// The Redis (panics on a memory fleet).
    pub fn redis(&self) -> &TestRedis {
        self.redis.as_ref().expect("this fleet has no Redis")
    }
}

/// One connected client per URL.
pub async fn clients(urls: &[String]) -> Vec<Client> {
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        out.push(
            Client::connect(u)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {u}: {e}")),
        );
    }
    out
}

/// Sends `n` Acquires at once, the i-th through `clients[i % len]` and built by
/// `build(client, i)`; returns the decisions in index order. Any error fails the test.
pub async fn acquire_spread<F>(clients: &[Client], n: usize, build: F) -> Vec<Decision>
where
    F: Fn(&Client, usize) -> AcquireBuilder,
{
    assert!(!clients.is_empty(), "no clients");
    // Build every request first, then start them all, so they really are concurrent.
    let builders: Vec<AcquireBuilder> = (0..n)
        .map(|i| build(&clients[i % clients.len()], i))
        .collect();
    let tasks: Vec<_> = builders
        .into_iter()
        .map(|b| tokio::spawn(b.send()))
        .collect();
    let mut out = Vec::with_capacity(n);
    for (i, t) in futures::future::join_all(tasks)
        .await
        .into_iter()
        .enumerate()
    {
        match t {
            Ok(Ok(d)) => out.push(d),
            Ok(Err(e)) => panic!("Acquire #{i} failed: {e}"),
            Err(e) => panic!("Acquire task #{i} failed: {e}"),
        }
    }
    out
}

/// Asserts that no decision was taken without the store (exact counts mean nothing
/// otherwise; DESIGN "Testing rules").
#[track_caller]
pub fn assert_not_degraded(decisions: &[Decision]) {
    let degraded = decisions.iter().filter(|d| d.degraded).count();
    assert_eq!(
        degraded,
        0,
        "{degraded} of {} answers were degraded (decided without the store)",
        decisions.len()
    );
}

/// How many decisions admitted the request.
pub fn admitted(decisions: &[Decision]) -> usize {
    decisions.iter().filter(|d| d.allowed).count()
}

/// Status of `policy` on a key nobody has used in `ns`: the baseline of a fully available
/// limit. Status reports `remaining` as if its `cost` were taken, so scenarios compare with
/// this baseline instead of hard-coding that convention.
pub async fn untouched_status(c: &Client, ns: &str, policy: &Policy) -> CheckResult {
    let key = format!("untouched-{}", uuid::Uuid::new_v4().simple());
    c.status(ns, &key, policy.clone(), 1)
        .await
        .unwrap_or_else(|e| panic!("Status of an untouched key: {e}"))
}

/// Wall-clock now since the Unix epoch (the servers and Redis run on this machine).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
}

/// A period of whole seconds, at least `base`, whose epoch-aligned window has at least
/// `margin` left on both sides of now. Fixed and sliding windows align to the epoch, so a
/// test that counts within one window uses this to keep clear of a window edge.
pub fn period_away_from_edge(base: Duration, margin: Duration) -> Duration {
    let now = unix_now().as_secs();
    let margin = margin.as_secs().max(1);
    let mut p = base.as_secs().max(3 * margin);
    loop {
        let into = now % p;
        if into >= margin && p - into >= margin {
            return Duration::from_secs(p);
        }
        p += 60;
    }
}

/// The gRPC code a client error carries, for assertions on error kinds.
pub fn code_of(e: &floodgate_client::Error) -> tonic::Code {
    use floodgate_client::Error;
    match e {
        Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
        Error::NotFound(_) => tonic::Code::NotFound,
        Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
        Error::Unavailable(_) => tonic::Code::Unavailable,
        Error::Status(s) => s.code(),
        _ => tonic::Code::Unknown,
    }
}

/// Runs each scenario (an async fn taking the servers' URLs) against `$n` servers on one
/// Redis (test `<name>::redis_fleet`) and against one memory-store server
/// (`<name>::memory`), all started with `$config`. The calling file imports
/// [`Fleet`].
#[macro_export]
macro_rules! on_both_stores {
    ($n:expr, $config:expr => $($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_fleet() {
                let fleet = Fleet::on_redis($n, $config).await;
                super::$scenario(&fleet.urls()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let fleet = Fleet::in_memory($config).await;
                super::$scenario(&fleet.urls()).await;
            }
        }
    )*};
}

/// A token for a test configuration: (name, token, namespaces as a TOML array, role, extra
/// TOML lines such as `rate = "5/h"`).
pub type TestToken<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// `[[tokens]]` tables for `tokens`, each with the SHA-256 of its token (as `floodgate
/// token new` prints them), to append to a server configuration.
pub fn token_tables(tokens: &[TestToken<'_>]) -> String {
    tokens
        .iter()
        .map(|(name, token, namespaces, role, extra)| {
            format!(
                "\n[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nnamespaces = {namespaces}\nrole = \"{role}\"\n{extra}\n",
                hex::encode(floodgate_server::auth::token::sha256(token))
            )
        })
        .collect()
}
