//! Hostile clients (DESIGN: one client cannot starve the rest): unread Watch streams on
//! 1,000 connections, slow-loris connections and oversize messages, while a well-behaved
//! client on its own connection keeps getting answers within 1 s and the server's RSS stays
//! bounded; the Watch limits; 10,000 concurrent calls on one connection; the limits over TLS.
use std::time::{Duration, Instant};

use floodgate_client::{Client, Policy, Tls, proto::v1 as pb};
use floodgate_server::cli::{
    attack::{Attack, AttackArgs},
    common::ServerArgs,
};
use floodgate_tests::{
    server::{ServerOptions, TestServer},
    tls_support::Ca,
    unique_namespace,
};
use tokio::io::AsyncReadExt;

/// The server's resident memory in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// `n` sequential Acquires; each answer's latency.
async fn latencies(client: &Client, ns: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        client
            .acquire(ns)
            .check(
                format!("k{}", i % 50),
                Policy::token_bucket(1_000_000, Duration::from_secs(1)),
            )
            .send()
            .await
            .expect("a well-behaved Acquire failed");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn args(url: &str) -> ServerArgs {
    ServerArgs {
        server: url.to_owned(),
        timeout: Duration::from_secs(10),
        ca_file: None,
        client_cert: None,
        client_key: None,
        token: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn well_behaved_clients_keep_their_answers_under_attack() {
    let server =
        TestServer::in_memory("[breakers.default]\n[limits]\nheader_read_timeout = \"1s\"\n");
    let ns = unique_namespace("hostile");
    let good = server.client().await;
    latencies(&good, &ns, 100).await;
    let idle = latencies(&good, &ns, 500).await;
    let rss_idle = rss_kib(server.pid());

    let spec = AttackArgs {
        attack_watches: 1_000,
        attack_slow_loris: 200,
        attack_oversize: 4,
    };
    let attack = Attack::start(&args(server.url()), &ns, &spec)
        .await
        .unwrap();
    // Transitions of the watched breaker go to 1,000 streams nobody reads.
    let flipper = {
        let c = good.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let state = if i % 2 == 0 {
                    pb::BreakerState::ForcedOpen
                } else {
                    pb::BreakerState::Disabled
                };
                let _ = c.set_breaker_state(&ns, "attack", state).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let under = latencies(&good, &ns, 500).await;
    let rss_attack = rss_kib(server.pid());
    flipper.abort();
    let c = &attack.counters;
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "idle: p50 {:?} p99 {:?} max {:?}; under attack: p50 {:?} p99 {:?} max {:?}; \
         RSS {} MiB idle, {} MiB under attack; {}",
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        idle[idle.len() - 1],
        pct(&under, 0.5),
        pct(&under, 0.99),
        under[under.len() - 1],
        rss_idle / 1024,
        rss_attack / 1024,
        attack.describe()
    );
    assert!(
        under[under.len() - 1] < Duration::from_secs(1),
        "an answer waited 1 s or more"
    );
    assert_eq!(c.watches.load(Relaxed), 1_000);
    assert!(
        c.loris_closed.load(Relaxed) >= 200,
        "slow-loris connections were closed"
    );
    assert!(c.oversize_refused.load(Relaxed) > 0);
    assert_eq!(c.oversize_accepted.load(Relaxed), 0);
    assert!(
        rss_attack < rss_idle + 512 * 1024,
        "RSS grew from {rss_idle} KiB to {rss_attack} KiB"
    );
    drop(attack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_limits_and_streams_outlive_the_deadline_cap() {
    let server = TestServer::in_memory(
        "[breakers.default]\n[limits]\nmax_watches_per_connection = 3\nmax_deadline = \"300ms\"\n",
    );
    let ns = unique_namespace("watch");
    let one = server.client().await;
    let watch = |c: &Client, name: &str| {
        let mut cb = c.circuit_breakers();
        let req = pb::WatchBreakersRequest {
            namespace: ns.clone(),
            breakers: vec![name.to_owned()],
        };
        async move { cb.watch(req).await }
    };
    let mut first = watch(&one, "a").await.unwrap().into_inner();
    let _b = watch(&one, "b").await.unwrap();
    let _c = watch(&one, "c").await.unwrap();
    let refused = watch(&one, "d").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("limits.max_watches_per_connection"),
        "{refused:?}"
    );
    // Another connection is not affected.
    let two = server.client().await;
    let _d = watch(&two, "d").await.unwrap();

    // A Watch lives past max_deadline: an event a second later still arrives.
    first.message().await.unwrap().unwrap(); // the current state
    tokio::time::sleep(Duration::from_secs(1)).await;
    two.set_breaker_state(&ns, "a", pb::BreakerState::ForcedOpen)
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), first.message())
        .await
        .expect("no event")
        .unwrap()
        .unwrap();
    assert_eq!(e.to, pb::BreakerState::ForcedOpen as i32);
    // Dropping streams frees their slots.
    drop((first, _b));
    tokio::time::sleep(Duration::from_millis(200)).await;
    watch(&one, "e").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_on_one_connection_all_get_answers() {
    let server = TestServer::in_memory("");
    let ns = unique_namespace("streams");
    let client = server.client().await;
    let calls = (0..10_000).map(|i| {
        let c = client.clone();
        let ns = ns.clone();
        async move {
            c.acquire(&ns)
                .check(
                    format!("k{}", i % 100),
                    Policy::token_bucket(1_000_000, Duration::from_secs(1)),
                )
                .send()
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let cert = ca.server(dir.path(), "server");
    let config = "[limits]\nheader_read_timeout = \"1s\"\nmax_message_bytes = 65536\n";
    let server = TestServer::start(ServerOptions {
        config: Some(config.into()),
        extra_args: vec![
            "--tls-cert".into(),
            cert.cert.display().to_string(),
            "--tls-key".into(),
            cert.key.display().to_string(),
        ],
        ..Default::default()
    });
    let addr = server.url().trim_start_matches("http://").to_owned();
    // A connection that never starts its TLS handshake is closed.
    let t = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server kept a silent connection open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    let https = format!("https://{addr}");
    let client = Client::connect_tls(&https, &Tls::default().ca_file(&ca.pem).unwrap())
        .await
        .unwrap();
    let ns = unique_namespace("size");
    let e = client
        .acquire(&ns)
        .check(
            "x".repeat(100_000),
            Policy::token_bucket(10, Duration::from_secs(1)),
        )
        .send()
        .await
        .unwrap_err();
    let code = floodgate_tests::e2e_support::code_of(&e);
    assert!(
        matches!(
            code,
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );
    // The connection still serves normal calls.
    client
        .acquire(&ns)
        .check("k", Policy::token_bucket(10, Duration::from_secs(1)))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_grpc_timeout_is_cut_to_max_deadline() {
    // A private Redis we can freeze, so a call hangs on the store.
    let dir = tempfile::tempdir().unwrap();
    let port = floodgate_tests::free_port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let url = format!("redis://127.0.0.1:{port}");
    floodgate_tests::redis::wait_for_ping(&url, Duration::from_secs(5));
    let server = TestServer::start(ServerOptions {
        redis_url: Some(url),
        config: Some("[limits]\nmax_deadline = \"500ms\"\n".into()),
        store_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let client = server.client().await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(redis.id() as i32, libc::SIGSTOP) };
    // No grpc-timeout at all: the server's cap is the deadline.
    let t = Instant::now();
    let call = client.status(
        "cap",
        "k",
        Policy::token_bucket(10, Duration::from_secs(1)),
        1,
    );
    let r = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call was not cut");
    let took = t.elapsed();
    unsafe { libc::kill(redis.id() as i32, libc::SIGCONT) };
    let _ = redis.kill();
    let _ = redis.wait();
    let e = r.expect_err("the store was frozen");
    assert!(took < Duration::from_secs(5), "waited {took:?}: {e:?}");
    let code = floodgate_tests::e2e_support::code_of(&e);
    assert_eq!(code, tonic::Code::Cancelled, "{e:?}");
}
