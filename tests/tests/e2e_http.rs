//! End to end: the HTTP side port of a real server — `/healthz`, `/metrics` in Prometheus
//! text format with families that move when calls are made, and `/readyz` following Redis
//! down and back up.
use std::time::{Duration, Instant};

use floodgate_client::Policy;
use floodgate_tests::{redis::TestRedis, server::TestServer, unique_namespace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET: (status, body).
async fn get(base: &str, path: &str) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to the HTTP port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Parses Prometheus text: every sample line is `name{labels} value` or `name value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            let name = series.split('{').next().unwrap();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {l:?}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "bad labels in {l:?}"
                );
            }
            (series.to_owned(), value)
        })
        .collect()
}

fn value(samples: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.split('{').next() == Some(name) && labels.iter().all(|l| s.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move() {
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(redis.url(), "");
    let (code, body) = get(server.http_url(), "/healthz").await;
    assert_eq!((code, body.trim()), (200, "ok"));
    let client = server.client().await;
    let ns = unique_namespace("metrics");
    let before = samples(&get(server.http_url(), "/metrics").await.1);
    let policy = Policy::fixed_window(2, Duration::from_secs(3600));
    for _ in 0..3 {
        client
            .acquire(&ns)
            .check("k", policy.clone())
            .send()
            .await
            .unwrap();
    }
    let _ = client
        .acquire("bad:ns")
        .check("k", policy.clone())
        .send()
        .await;
    let (code, text) = get(server.http_url(), "/metrics").await;
    assert_eq!(code, 200);
    let after = samples(&text);
    let ok = |s: &[(String, f64)]| {
        value(
            s,
            "floodgate_requests_total",
            &["rpc=\"Acquire\"", "code=\"Ok\""],
        )
    };
    assert_eq!(ok(&after) - ok(&before), 3.0, "{text}");
    let invalid = value(
        &after,
        "floodgate_requests_total",
        &["code=\"InvalidArgument\""],
    );
    assert!(invalid >= 1.0, "{text}");
    let ns_label = format!("namespace=\"{ns}\"");
    assert_eq!(
        value(
            &after,
            "floodgate_decisions_total",
            &[&ns_label, "result=\"allowed\"", "policy=\"inline\""]
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "floodgate_decisions_total",
            &[&ns_label, "result=\"denied\""]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "floodgate_store_call_duration_seconds_count",
            &["op=\"acquire\""]
        ) >= 3.0,
        "{text}"
    );
    assert_eq!(value(&after, "floodgate_build_info", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis() {
    let mut redis = TestRedis::private();
    let server = TestServer::on_redis(redis.url(), "");
    let (code, _) = get(server.http_url(), "/readyz").await;
    assert_eq!(code, 200);
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = get(server.http_url(), "/readyz").await;
        if code == 503 {
            assert!(body.starts_with("not ready:"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {code} 5 s after Redis died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = get(server.http_url(), "/healthz").await;
    assert_eq!(code, 200, "the process is still up");
    redis.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(server.http_url(), "/readyz").await.0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 within 10 s of Redis returning"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_is_ready() {
    let server = TestServer::in_memory("");
    assert_eq!(get(server.http_url(), "/readyz").await.0, 200);
}

/// The breaker and dead-letter families move when those calls are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_and_dead_letter_metrics_move() {
    use floodgate_client::proto::v1::{
        self as pb, circuit_breakers_client::CircuitBreakersClient,
        dead_letters_client::DeadLettersClient,
    };
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(
        redis.url(),
        "[breakers.pay]\nminimum_calls = 1\n\n[queues.orders]\n",
    );
    let ns = unique_namespace("metrics");
    let channel = tonic::transport::Channel::from_shared(server.url().to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rl =
        floodgate_client::proto::v1::rate_limiter_client::RateLimiterClient::new(channel.clone());
    rl.acquire(pb::AcquireRequest {
        namespace: ns.clone(),
        breakers: vec!["pay".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    CircuitBreakersClient::new(channel.clone())
        .report(pb::ReportRequest {
            namespace: ns.clone(),
            reports: vec![pb::BreakerReport {
                breaker: "pay".into(),
                failures: 1,
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    DeadLettersClient::new(channel)
        .publish(pb::PublishRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ns_label = format!("namespace=\"{ns}\"");
    // The state gauge follows the fleet's events, relayed through Redis Pub/Sub.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let after = loop {
        let s = samples(&get(server.http_url(), "/metrics").await.1);
        if value(
            &s,
            "floodgate_breaker_state",
            &[&ns_label, "breaker=\"pay\""],
        ) == 2.0
            || std::time::Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v = |name: &str, labels: &[&str]| value(&after, name, labels);
    assert_eq!(
        v("floodgate_breaker_state", &[&ns_label, "breaker=\"pay\""]),
        2.0
    );
    assert_eq!(
        v(
            "floodgate_breaker_decisions_total",
            &[&ns_label, "breaker=\"pay\"", "result=\"allowed\""]
        ),
        1.0
    );
    assert_eq!(
        v(
            "floodgate_breaker_transitions_total",
            &[&ns_label, "from=\"closed\"", "to=\"open\""]
        ),
        1.0
    );
    assert!(v("floodgate_breaker_reports_total", &["result=\"accepted\""]) >= 1.0);
    assert_eq!(
        v(
            "floodgate_dlq_published_total",
            &[&ns_label, "queue=\"orders\"", "result=\"stored\""]
        ),
        1.0
    );
    assert!(
        v(
            "floodgate_requests_total",
            &["rpc=\"Publish\"", "code=\"Ok\""]
        ) >= 1.0
    );
}
