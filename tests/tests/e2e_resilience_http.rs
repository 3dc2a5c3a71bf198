//! End to end: the HTTP rate-limit layer in front of an axum app (headers, 429), and the
//! README's payment example (`client/examples/payment.rs`) run against a real server, so
//! neither can rot.
use std::time::Duration;

use axum::body::Body;
use floodgate_client::{
    Client,
    dead_letters::{Filter, ListOptions},
};
use floodgate_tests::{e2e_support::Fleet, unique_namespace};
use futures::TryStreamExt;
use http::{Request, StatusCode};
use tower::ServiceExt;

#[allow(dead_code)]
#[path = "../../client/examples/http_limit.rs"]
mod http_limit;

#[allow(dead_code)]
#[path = "../../client/examples/payment.rs"]
mod payment;

fn get(client_id: Option<&str>) -> Request<Body> {
    let mut r = Request::builder().uri("/hello");
    if let Some(id) = client_id {
        r = r.header("x-client-id", id);
    }
    r.body(Body::empty()).unwrap()
}

fn header(r: &http::Response<Body>, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_http_layer_answers_429_with_ratelimit_headers() {
    let fleet = Fleet::on_redis(1, "").await;
    let client = Client::connect(&fleet.urls()[0]).await.unwrap();
    let app = http_limit::app(&client);
    let id = unique_namespace("peer");
    for left in (0..5).rev() {
        let r = app.clone().oneshot(get(Some(&id))).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "ratelimit-policy").as_deref(),
            Some(r#""per-ip";q=5;w=60"#)
        );
        let limit = header(&r, "ratelimit").unwrap();
        assert!(
            limit.starts_with(&format!(r#""per-ip";r={left};t="#)),
            "{limit}"
        );
        assert!(header(&r, "retry-after").is_none());
    }
    let r = app.clone().oneshot(get(Some(&id))).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    // 5 a minute: the next token comes in 12 s.
    assert!(
        (11..=12).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some(r#""per-ip";q=5;w=60"#)
    );
    assert!(
        header(&r, "ratelimit")
            .unwrap()
            .starts_with(r#""per-ip";r=0;t="#)
    );
    // Another key has its own limit; a request without a key is not limited.
    let other = app
        .clone()
        .oneshot(get(Some(&format!("{id}-b"))))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    for _ in 0..10 {
        let r = app.clone().oneshot(get(None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(header(&r, "ratelimit").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_example_runs_against_a_real_server() {
    let fleet = Fleet::on_redis(1, include_str!("../../client/examples/payment.toml")).await;
    let url = fleet.urls()[0].clone();
    let ns = unique_namespace("payment");
    let summary = tokio::time::timeout(Duration::from_secs(60), payment::run(&url, &ns, 20))
        .await
        .expect("the example finished")
        .expect("the example ran");
    // Orders 7 and 14 are declined (permanent, not retried); every 503 is retried once.
    assert_eq!(summary.paid, 18, "{summary:?}");
    assert_eq!(summary.failed, 2, "{summary:?}");
    let client = Client::connect(&url).await.unwrap();
    let letters: Vec<_> = client
        .dead_letters(&ns, "payments")
        .list(
            ListOptions::new()
                .filter(Filter::all())
                .include_payload(true),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(letters.len(), 2);
    for l in &letters {
        assert_eq!(
            (l.reason.as_str(), l.error_class.as_str(), l.attempts),
            ("permanent_failure", "http_402", 1)
        );
        let body = String::from_utf8_lossy(&l.payload);
        assert!(
            body.contains(r#""order":7"#) || body.contains(r#""order":14"#),
            "{body}"
        );
    }
}
