//! When Redis fails (issue #6, DESIGN "Failure"): real servers in front of a real, private
//! Redis reached through the harness's fault proxy, which blackholes, resets or passes.
//! Every caller gets an answer within the store deadline plus a margin, decided by its
//! policy's fail mode; nothing leaks; the service recovers by itself; dead letters
//! published during an outage are stored once.
use std::time::{Duration, Instant};

use floodgate_client::{Client, Decision, Error, PolicyRef, dead_letters::Message};
use floodgate_tests::{
    e2e_support::{admitted, assert_not_degraded},
    fault_proxy::FaultProxy,
    redis::TestRedis,
    server::{ServerOptions, TestServer},
    unique_namespace,
};

/// The servers' store deadline in these tests.
const DEADLINE: Duration = Duration::from_millis(100);
/// The issue's margin over the deadline for every answer.
const MARGIN: Duration = Duration::from_millis(250);

const CONFIG: &str = r#"
fleet_size = 2

[policies.open]
algorithm = "token_bucket"
limit = 1000
period = "1m"
fail_mode = "open"

[policies.closed]
algorithm = "token_bucket"
limit = 1000
period = "1m"
fail_mode = "closed"

[policies.local]
algorithm = "fixed_window"
limit = 20
period = "1h"
fail_mode = "local"

[queues.orders]

[breakers.payments]
window = "count"
window_size = 10
minimum_calls = 5
"#;

fn start_server(redis_url: &str) -> TestServer {
    TestServer::start(ServerOptions {
        redis_url: Some(redis_url.to_owned()),
        config: Some(CONFIG.to_owned()),
        store_timeout: Some(DEADLINE),
        ..Default::default()
    })
}

/// Sends `n` concurrent Acquires of `policy` on distinct keys of `ns`; returns each
/// decision with how long it took.
async fn burst(client: &Client, ns: &str, policy: &str, n: usize) -> Vec<(Decision, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let b = client
                .acquire(ns)
                .check(format!("k{}", i % 4), PolicyRef::Named(policy.to_owned()));
            tokio::spawn(async move {
                let started = Instant::now();
                let d = b.send().await;
                (d, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in futures::future::join_all(tasks).await {
        let (d, took) = t.expect("task");
        out.push((
            d.unwrap_or_else(|e| panic!("Acquire failed instead of a fail mode: {e}")),
            took,
        ));
    }
    out
}

/// Asserts that every answer came within the deadline and margin, degraded.
#[track_caller]
fn assert_all_degraded_in_time(what: &str, answers: &[(Decision, Duration)]) {
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    assert!(
        slowest <= DEADLINE + MARGIN,
        "{what}: slowest answer took {slowest:?} (deadline {DEADLINE:?} + margin {MARGIN:?})"
    );
    let fresh = answers.iter().filter(|(d, _)| !d.degraded).count();
    assert_eq!(fresh, 0, "{what}: {fresh} answers were not degraded");
}

/// Polls until an Acquire of the `open` policy is answered from the store again.
async fn recovers_within(client: &Client, ns: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let d = client
            .acquire(ns)
            .check("recovery", PolicyRef::Named("open".into()))
            .send()
            .await;
        if matches!(&d, Ok(d) if !d.degraded) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still degraded {within:?} after the fault was healed: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_redis_every_fail_mode_answers_in_time_without_leaks_then_recovers() {
    let redis = TestRedis::private();
    let proxy = FaultProxy::start(redis.addr()).await;
    let server = start_server(&proxy.url());
    let client = server.client().await;
    let ns = unique_namespace("blackhole");

    let warm = burst(&client, &ns, "open", 20).await;
    assert_not_degraded(&warm.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>());

    proxy.blackhole();
    // open: everyone allowed; closed: everyone denied; local: exactly this server's share
    // (fleet_size = 2, so 10 of the limit of 20 per key; 4 keys).
    let open = burst(&client, &ns, "open", 200).await;
    assert_all_degraded_in_time("open", &open);
    assert!(
        open.iter().all(|(d, _)| d.allowed),
        "open must allow every call"
    );
    let closed = burst(&client, &ns, "closed", 200).await;
    assert_all_degraded_in_time("closed", &closed);
    assert!(
        closed.iter().all(|(d, _)| !d.allowed),
        "closed must deny every call"
    );
    let local = burst(&client, &ns, "local", 200).await;
    assert_all_degraded_in_time("local", &local);
    let decisions: Vec<Decision> = local.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(admitted(&decisions), 4 * 10, "local: 4 keys × half of 20");

    // Reports never block and are dropped (counted) while the store is out.
    let started = Instant::now();
    let dropped = client
        .circuit_breakers()
        .report(floodgate_client::proto::v1::ReportRequest {
            namespace: ns.clone(),
            reports: vec![floodgate_client::proto::v1::BreakerReport {
                breaker: "payments".into(),
                failures: 3,
                ..Default::default()
            }],
        })
        .await
        .expect("Report answers during an outage")
        .into_inner();
    assert!(started.elapsed() <= DEADLINE + MARGIN);
    assert!(dropped.results[0].dropped, "{dropped:?}");

    // 10,000 more calls: no task, socket or connection pile-up.
    let fds_before = open_fds(server.pid());
    let mut took: Vec<Duration> = Vec::with_capacity(10_000);
    for _ in 0..50 {
        let answers = burst(&client, &ns, "open", 200).await;
        assert_all_degraded_in_time("open (leak run)", &answers);
        took.extend(answers.iter().map(|(_, t)| *t));
    }
    eprintln!(
        "blackhole: 10,000 degraded answers in bursts of 200, p99 {:?}",
        {
            took.sort();
            took[took.len() * 99 / 100]
        }
    );
    // The server's own store breaker is open by now: one call at a time, each takes its
    // fail mode at once instead of waiting out the deadline.
    let mut alone = Vec::new();
    for _ in 0..50 {
        let answers = burst(&client, &ns, "open", 1).await;
        alone.push(answers[0].1);
    }
    alone.sort();
    let median = alone[alone.len() / 2];
    assert!(
        median < DEADLINE / 4,
        "a lone degraded answer took {median:?} (median): the store breaker should answer without waiting the {DEADLINE:?} deadline"
    );
    // Status still answers, and says what is wrong: the store is not ready, the guard is
    // open, and the breaker state it could not read is named instead of failing the call.
    let status = client
        .admin()
        .server_status(floodgate_client::proto::v1::ServerStatusRequest {
            namespace: ns.clone(),
        })
        .await
        .expect("ServerStatus answers during an outage")
        .into_inner();
    assert!(
        !status.store_ready && status.store_breaker_open,
        "{status:?}"
    );
    assert!(!status.store_error.is_empty(), "{status:?}");
    assert!(status.breakers.is_empty(), "{status:?}");
    for part in [
        "breaker index",
        "breaker payments: ",
        "schema version: ",
        "queue index",
    ] {
        assert!(
            status.incomplete.iter().any(|i| i.starts_with(part)),
            "incomplete names no {part:?}: {:?}",
            status.incomplete
        );
    }
    assert_eq!(status.store_max_in_flight, 1024);
    let fds_after = open_fds(server.pid());
    assert!(
        fds_after <= fds_before + 8,
        "file descriptors grew from {fds_before} to {fds_after} over 10,000 degraded calls"
    );
    assert!(
        proxy.connections() <= 8,
        "{} connections to the blackholed Redis are still open",
        proxy.connections()
    );

    proxy.pass();
    let took = recovers_within(&client, &ns, Duration::from_secs(5)).await;
    eprintln!("blackhole healed: answers from the store again after {took:?}");
    let after = burst(&client, &ns, "closed", 50).await;
    assert_not_degraded(&after.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>());
    let status = client
        .admin()
        .server_status(floodgate_client::proto::v1::ServerStatusRequest {
            namespace: ns.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.store_ready && !status.store_breaker_open,
        "{status:?}"
    );
    assert!(
        status.incomplete.is_empty() && status.breakers.len() == 1,
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_and_a_restarted_redis_recover_within_five_seconds() {
    let mut redis = TestRedis::private();
    let proxy = FaultProxy::start(redis.addr()).await;
    let server = start_server(&proxy.url());
    let client = server.client().await;
    let ns = unique_namespace("restart");
    recovers_within(&client, &ns, Duration::from_secs(5)).await;

    proxy.reset();
    let answers = burst(&client, &ns, "open", 100).await;
    assert_all_degraded_in_time("reset", &answers);
    proxy.pass();
    let took = recovers_within(&client, &ns, Duration::from_secs(5)).await;
    eprintln!("reset healed after {took:?}");

    redis.kill();
    let answers = burst(&client, &ns, "closed", 100).await;
    assert_all_degraded_in_time("killed", &answers);
    redis.restart();
    let took = recovers_within(&client, &ns, Duration::from_secs(5)).await;
    eprintln!("restarted Redis answers after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_costs_one_deadline_and_dead_letters_are_stored_once() {
    let mut redis = TestRedis::private();
    let server = start_server(redis.url());
    let client = server.client().await;
    let ns = unique_namespace("pause");
    let queue = client.dead_letters(&ns, "orders");
    queue
        .publish(Message::new(b"before".to_vec()))
        .await
        .expect("publish while healthy");

    redis.pause();
    let answers = burst(&client, &ns, "open", 200).await;
    assert_all_degraded_in_time("paused", &answers);
    // Publishes during the outage: the server answers UNAVAILABLE and the client keeps
    // retrying with the same idempotency key; the Redis holds the first attempts in its
    // socket buffers and runs them when it wakes up.
    let publishes: Vec<_> = (0..20)
        .map(|i| {
            let q = queue.clone();
            tokio::spawn(async move {
                q.publish(Message::new(format!("during-{i}").into_bytes()))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    for p in publishes {
        let published: Result<_, Error> = p.await.expect("task");
        published.expect("the client retried the publish until Redis was back");
    }
    recovers_within(&client, &ns, Duration::from_secs(5)).await;
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        stats.count, 21,
        "every dead letter stored exactly once: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_starts_without_redis_and_becomes_ready_when_it_appears() {
    let mut redis = TestRedis::private();
    let url = redis.url().to_owned();
    redis.kill();
    let server = start_server(&url);
    let client = server.client().await;
    let ns = unique_namespace("late");
    let ready = reqwest_status(&format!("{}/readyz", server.http_url())).await;
    assert_eq!(ready, 503, "not ready while Redis is unreachable");
    let answers = burst(&client, &ns, "closed", 20).await;
    assert_all_degraded_in_time("no Redis yet", &answers);
    assert!(answers.iter().all(|(d, _)| !d.allowed));

    redis.restart();
    let took = recovers_within(&client, &ns, Duration::from_secs(5)).await;
    eprintln!("Redis appeared: answers from the store after {took:?}");
    assert_eq!(
        reqwest_status(&format!("{}/readyz", server.http_url())).await,
        200
    );
}

/// The HTTP status of a GET (the side port speaks plain HTTP/1.1).
async fn reqwest_status(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("path");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}
