//! Envoy's `ShouldRateLimit` end to end: real servers reading the envoyproxy/ratelimit-format
//! files of `tests/fixtures/rls/`, driven through a client generated from Envoy's protos
//! (the vendored `proto/envoy`): nested descriptors, exact, wildcard and key-only values,
//! `hits_addend`, shadow mode, unlimited, `replaces`, the `limit` override, all-or-nothing
//! versus independent counting, unknown descriptors and domains, headers, bad input, and
//! three servers on one Redis staying exact for fixed window and token bucket limits.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use floodgate_proto::envoy::{
    extensions::common::ratelimit::v3::{
        RateLimitDescriptor,
        rate_limit_descriptor::{Entry, RateLimitOverride},
    },
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{Code, rate_limit::Unit},
        rate_limit_service_client::RateLimitServiceClient,
    },
};
use floodgate_tests::{
    e2e_support::unix_now,
    redis::TestRedis,
    server::{ServerOptions, TestServer},
};
use tonic::transport::Channel;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rls")
}

/// Starts `n` servers reading the fixtures, with `toml` as their configuration file.
async fn servers(n: usize, redis: Option<&TestRedis>, toml: &str) -> Vec<TestServer> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let opts = ServerOptions {
                redis_url: redis.map(|r| r.url().to_owned()),
                config: Some(toml.to_owned()),
                extra_args: vec!["--rls-config".into(), fixtures().display().to_string()],
                ..Default::default()
            };
            tokio::task::spawn_blocking(move || TestServer::start(opts))
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("server start"));
    }
    out
}

async fn client(s: &TestServer) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(s.url().to_owned())
        .await
        .expect("connect")
}

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 0,
    }
}

async fn ask(c: &mut RateLimitServiceClient<Channel>, r: RateLimitRequest) -> RateLimitResponse {
    c.should_rate_limit(r)
        .await
        .expect("ShouldRateLimit")
        .into_inner()
}

fn codes(r: &RateLimitResponse) -> Vec<Code> {
    r.statuses
        .iter()
        .map(|s| Code::try_from(s.code).unwrap_or(Code::Unknown))
        .collect()
}

fn overall(r: &RateLimitResponse) -> Code {
    Code::try_from(r.overall_code).unwrap_or(Code::Unknown)
}

/// A value no other test uses.
fn fresh(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Waits until the current epoch-aligned window of `unit_secs` has at least 20 s left, so a
/// test that counts in it cannot straddle a window edge.
async fn clear_of_edge(unit_secs: u64) {
    let into = unix_now().as_secs_f64() % unit_secs as f64;
    let left = unit_secs as f64 - into;
    if left < 20.0 {
        tokio::time::sleep(Duration::from_secs_f64(left + 0.5)).await;
    }
}

/// The scenarios that hold on every store, against one server.
async fn semantics(s: &TestServer) {
    let mut c = client(s).await;
    // ServerStatus names the files and their domains.
    let status = s
        .client()
        .await
        .admin()
        .server_status(floodgate_proto::v1::ServerStatusRequest::default())
        .await
        .expect("ServerStatus")
        .into_inner();
    assert!(status.rls_config.ends_with("fixtures/rls"), "{status:?}");
    assert_eq!(
        status.rls_domains,
        [
            "bench",
            "edge_proxy_per_ip",
            "example6",
            "example7",
            "internal",
            "messaging",
            "shop"
        ]
    );
    clear_of_edge(3_600).await;

    // Nested descriptors: 5 marketing messages a day per number, 100 messages per number.
    let number = fresh("206");
    let both = || {
        request(
            "messaging",
            vec![
                desc(&[("message_type", "marketing"), ("to_number", &number)]),
                desc(&[("to_number", &number)]),
            ],
        )
    };
    for i in 0..5 {
        let r = ask(&mut c, both()).await;
        assert_eq!(overall(&r), Code::Ok, "request {i}: {r:?}");
        let s0 = &r.statuses[0];
        assert_eq!(s0.limit_remaining, 4 - i);
        let limit = s0.current_limit.as_ref().expect("current_limit");
        assert_eq!((limit.requests_per_unit, limit.unit), (5, Unit::Day as i32));
        assert_eq!(r.statuses[1].limit_remaining, 99 - i);
        let reset = s0.duration_until_reset.as_ref().expect("reset");
        assert!(reset.seconds > 0 && reset.seconds <= 86_400, "{reset:?}");
    }
    let r = ask(&mut c, both()).await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok]);
    // TopKeys of the domain shows the refused descriptor under its limit's reference.
    let top = s
        .client()
        .await
        .admin()
        .top_keys(floodgate_proto::v1::TopKeysRequest {
            namespace: "messaging".into(),
            ..Default::default()
        })
        .await
        .expect("TopKeys")
        .into_inner();
    let want = format!("message_type=marketing|to_number={number}");
    assert!(
        top.keys
            .iter()
            .any(|k| k.key == want && k.policy == "rls@day" && k.denied == 1),
        "{top:?}"
    );
    // All-or-nothing: the per-number count did not move on the refused request.
    let r = ask(
        &mut c,
        request("messaging", vec![desc(&[("to_number", &number)])]),
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 94, "{r:?}");

    // A placeholder level without a limit, an unknown key, an unknown domain: OK, no limit.
    let r = ask(
        &mut c,
        request(
            "messaging",
            vec![
                desc(&[("message_type", "marketing")]),
                desc(&[("nobody", "x")]),
                desc(&[("to_number", "1"), ("deeper", "x")]),
            ],
        ),
    )
    .await;
    assert_eq!(overall(&r), Code::Ok);
    assert!(
        r.statuses.iter().all(|s| s.current_limit.is_none()),
        "{r:?}"
    );
    let r = ask(&mut c, request("no-such-domain", vec![desc(&[("a", "b")])])).await;
    assert_eq!((overall(&r), r.statuses.len()), (Code::Ok, 1));

    // Exact value before the key alone: 50.0.0.5 is blocked, others get 10 an hour.
    let r = ask(
        &mut c,
        request(
            "edge_proxy_per_ip",
            vec![desc(&[("remote_address", "50.0.0.5")])],
        ),
    )
    .await;
    assert_eq!(overall(&r), Code::OverLimit);
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        0
    );
    let ip = fresh("192.0.2");
    let r = ask(
        &mut c,
        request("edge_proxy_per_ip", vec![desc(&[("remote_address", &ip)])]),
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 9);
    // A blocked value beside a limited one: over, and (all-or-nothing) the other is read,
    // not counted.
    let other = fresh("192.0.2");
    let r = ask(
        &mut c,
        request(
            "edge_proxy_per_ip",
            vec![
                desc(&[("remote_address", "50.0.0.5")]),
                desc(&[("remote_address", &other)]),
            ],
        ),
    )
    .await;
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok], "{r:?}");
    let r = ask(
        &mut c,
        request(
            "edge_proxy_per_ip",
            vec![desc(&[("remote_address", &other)])],
        ),
    )
    .await;
    assert_eq!(
        r.statuses[0].limit_remaining, 9,
        "nothing was counted before"
    );
    // hits_addend: the request's, then a descriptor's own (which wins).
    let mut hr = request("edge_proxy_per_ip", vec![desc(&[("remote_address", &ip)])]);
    hr.hits_addend = 4;
    let r = ask(&mut c, hr.clone()).await;
    assert_eq!((overall(&r), r.statuses[0].limit_remaining), (Code::Ok, 5));
    hr.descriptors[0].hits_addend = Some(6);
    let r = ask(&mut c, hr.clone()).await;
    assert_eq!(overall(&r), Code::OverLimit, "6 > 5 left");
    hr.descriptors[0].hits_addend = Some(5);
    let r = ask(&mut c, hr.clone()).await;
    assert_eq!((overall(&r), r.statuses[0].limit_remaining), (Code::Ok, 0));
    // A descriptor's hits_addend of 0: OK, nothing counted.
    let mut zero = request(
        "edge_proxy_per_ip",
        vec![desc(&[("remote_address", &other)])],
    );
    zero.descriptors[0].hits_addend = Some(0);
    let r = ask(&mut c, zero).await;
    assert_eq!(overall(&r), Code::Ok);
    let r = ask(
        &mut c,
        request(
            "edge_proxy_per_ip",
            vec![desc(&[("remote_address", &other)])],
        ),
    )
    .await;
    assert_eq!(
        r.statuses[0].limit_remaining, 8,
        "the zero-hit call counted nothing"
    );
    // A limited descriptor's key longer than a key may be is bad input, naming the field.
    let long = "x".repeat(600);
    let e = c
        .should_rate_limit(request(
            "edge_proxy_per_ip",
            vec![desc(&[("remote_address", &long)])],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("descriptors[0].entries:"), "{e}");
    // More hits than the limit holds at all: over, without a store call.
    hr.descriptors[0].hits_addend = Some(11);
    assert_eq!(overall(&ask(&mut c, hr.clone()).await), Code::OverLimit);

    // Wildcards: 10.1.* counts each address alone; 10.2.* (share_threshold) shares one count.
    for addr in ["10.1.0.1", "10.1.0.2"] {
        let a = format!("{addr}.{}", fresh("x"));
        for _ in 0..3 {
            let r = ask(
                &mut c,
                request("edge_proxy_per_ip", vec![desc(&[("remote_address", &a)])]),
            )
            .await;
            assert_eq!(overall(&r), Code::Ok);
            assert_eq!(
                r.statuses[0]
                    .current_limit
                    .as_ref()
                    .unwrap()
                    .requests_per_unit,
                3
            );
        }
        let r = ask(
            &mut c,
            request("edge_proxy_per_ip", vec![desc(&[("remote_address", &a)])]),
        )
        .await;
        assert_eq!(overall(&r), Code::OverLimit);
    }

    let shared = |a: &str| request("edge_proxy_per_ip", vec![desc(&[("remote_address", a)])]);
    let before = ask(&mut c, shared("10.2.0.1")).await.statuses[0].limit_remaining;
    let after = ask(&mut c, shared("10.2.9.9")).await.statuses[0].limit_remaining;
    assert_eq!(after + 1, before, "10.2.* addresses share one count");

    // Unlimited: OK with the largest remaining; the limited sibling counts.
    let azure = fresh("az");
    let r = ask(
        &mut c,
        request(
            "internal",
            vec![desc(&[("ldap", "x")]), desc(&[("azure", &azure)])],
        ),
    )
    .await;
    assert_eq!(codes(&r), [Code::Ok, Code::Ok]);
    assert_eq!(r.statuses[0].limit_remaining, u32::MAX);
    assert!(r.statuses[0].current_limit.is_none());
    assert_eq!(r.statuses[1].limit_remaining, 99);

    // Shadow mode: counted and reported, never OVER_LIMIT.
    let svc = fresh("auth");
    let shadowed = || {
        request(
            "example6",
            vec![desc(&[("service", &svc), ("user", "user-a")])],
        )
    };
    for _ in 0..12 {
        let r = ask(&mut c, shadowed()).await;
        assert_eq!(overall(&r), Code::Ok);
    }
    let r = ask(&mut c, shadowed()).await;
    assert_eq!(
        r.statuses[0].limit_remaining, 0,
        "counted up to its limit: {r:?}"
    );
    let r = ask(
        &mut c,
        request(
            "example6",
            vec![desc(&[("service", &svc), ("user", "user-b")])],
        ),
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 19);

    // Replaces: with both matching, only the replacing limit counts.
    let user = fresh("bk");
    let r1 = desc(&[("key_1", "value_1"), ("user", &user)]);
    let r2 = desc(&[("key_2", "value_2"), ("user", &user)]);
    for i in 0..7 {
        let r = ask(&mut c, request("example7", vec![r1.clone(), r2.clone()])).await;
        assert_eq!(overall(&r), Code::Ok, "request {i}");
        assert!(r.statuses[0].current_limit.is_none(), "replaced");
        assert_eq!(r.statuses[1].limit_remaining, 9 - i);
    }
    let r = ask(&mut c, request("example7", vec![r1.clone()])).await;
    assert_eq!(
        r.statuses[0].limit_remaining, 4,
        "the replaced limit never moved"
    );

    // The override is ignored unless the server allows it.
    let mut o = desc(&[("user", &fresh("u"))]);
    o.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 3, // HOUR
    });
    let r = ask(&mut c, request("shop", vec![o.clone()])).await;
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        100
    );
    // Ignored altogether: not even its unit is checked.
    o.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 0,
    });
    assert_eq!(
        overall(&ask(&mut c, request("shop", vec![o.clone()])).await),
        Code::Ok
    );

    // Algorithms per limit: a token bucket and a sliding window.
    let key = fresh("k");
    let r = ask(&mut c, request("shop", vec![desc(&[("api_key", &key)])])).await;
    assert_eq!(r.statuses[0].limit_remaining, 99);
    let tenant = fresh("t");
    for _ in 0..3 {
        let r = ask(&mut c, request("shop", vec![desc(&[("tenant", &tenant)])])).await;
        assert_eq!(overall(&r), Code::Ok);
    }
    let r = ask(&mut c, request("shop", vec![desc(&[("tenant", &tenant)])])).await;
    assert_eq!(overall(&r), Code::OverLimit);

    // The same descriptor twice in one request counts twice.
    let u = fresh("twice");
    let r = ask(
        &mut c,
        request("shop", vec![desc(&[("user", &u)]), desc(&[("user", &u)])]),
    )
    .await;
    assert_eq!(codes(&r), [Code::Ok, Code::Ok]);
    assert_eq!(r.statuses[1].limit_remaining, 98);

    // Bad input names the field and the rule.
    for (req, want) in [
        (request("", vec![desc(&[("a", "b")])]), "domain:"),
        (request("shop", vec![]), "descriptors:"),
        (request("shop", vec![desc(&[])]), "descriptors[0].entries:"),
        (
            request("shop", vec![desc(&[("a", "b")]), desc(&[("", "b")])]),
            "descriptors[1].entries[0].key:",
        ),
    ] {
        let e = c.should_rate_limit(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with(want), "{}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_semantics_on_redis() {
    let redis = TestRedis::start().await;
    let s = servers(1, Some(&redis), "").await;
    semantics(&s[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_semantics_on_memory() {
    let s = servers(1, None, "").await;
    semantics(&s[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_independent_counting_override_and_headers() {
    let redis = TestRedis::start().await;
    let s = servers(
        1,
        Some(&redis),
        "rls_counting = \"independent\"\nrls_allow_limit_override = true\nrls_headers = \"both\"\n",
    )
    .await;
    let mut c = client(&s[0]).await;
    clear_of_edge(3_600).await;
    // Independent counting: the per-number limit keeps counting after the marketing one is
    // over, as envoy ratelimit does.
    let number = fresh("206");
    let both = || {
        request(
            "messaging",
            vec![
                desc(&[("message_type", "marketing"), ("to_number", &number)]),
                desc(&[("to_number", &number)]),
            ],
        )
    };
    for _ in 0..6 {
        ask(&mut c, both()).await;
    }
    let r = ask(
        &mut c,
        request("messaging", vec![desc(&[("to_number", &number)])]),
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 93, "{r:?}");

    // The override, when allowed: a fixed window of its own numbers.
    let mut o = desc(&[("user", &fresh("u"))]);
    o.limit = Some(RateLimitOverride {
        requests_per_unit: 2,
        unit: 3, // HOUR
    });
    let r = ask(&mut c, request("shop", vec![o.clone()])).await;
    let limit = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (2, Unit::Hour as i32)
    );
    ask(&mut c, request("shop", vec![o.clone()])).await;
    let r = ask(&mut c, request("shop", vec![o.clone()])).await;
    assert_eq!(overall(&r), Code::OverLimit);
    // A bad override unit is bad input.
    o.limit = Some(RateLimitOverride {
        requests_per_unit: 2,
        unit: 0,
    });
    let e = c
        .should_rate_limit(request("shop", vec![o]))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("descriptors[0].limit.unit:"), "{e}");

    // Headers: the draft fields for every limit, the X-RateLimit trio for the closest.
    let user = fresh("h");
    let r = ask(&mut c, request("shop", vec![desc(&[("user", &user)])])).await;
    let h: Vec<(&str, &str)> = r
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(h[0], ("RateLimit-Policy", "\"shop.user\";q=100;w=86400"));
    assert_eq!(h[1].0, "RateLimit");
    assert!(h[1].1.starts_with("\"shop.user\";r=99;t="), "{h:?}");
    assert_eq!(h[2], ("X-RateLimit-Limit", "100"));
    assert_eq!(h[3], ("X-RateLimit-Remaining", "99"));
    assert_eq!(h[4].0, "X-RateLimit-Reset");
}

/// `per_server` concurrent requests through each of three servers on one Redis against one
/// descriptor limited to 100: exactly 100 are OK.
async fn exact_across_three(domain_key: &str) {
    let redis = TestRedis::start().await;
    let s = servers(3, Some(&redis), "").await;
    clear_of_edge(86_400).await;
    let value = fresh("exact");
    let mut clients = Vec::new();
    for server in &s {
        clients.push(client(server).await);
    }
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let mut c = clients[i % 3].clone();
            let r = request("shop", vec![desc(&[(domain_key, &value)])]);
            tokio::spawn(async move { ask(&mut c, r).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if overall(&t.await.expect("task")) == Code::Ok {
            ok += 1;
        }
    }
    // RLS answers carry no `degraded` flag: the servers' metrics show none was degraded.
    for server in &s {
        let metrics = http_get(server.http_url(), "/metrics").await;
        assert!(
            !metrics.contains("floodgate_degraded_total{"),
            "a decision was taken without the store:\n{metrics}"
        );
    }
    assert_eq!(ok, 100, "{domain_key}: exactly the limit is admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rls_fixed_window_three_servers() {
    exact_across_three("user").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rls_token_bucket_three_servers() {
    exact_across_three("api_key").await;
}

/// A plain HTTP/1.1 GET of the side port's `path`: the body.
async fn http_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("HTTP port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_store_failure_answers_by_fail_mode() {
    let redis = TestRedis::start().await;
    let s = servers(1, Some(&redis), "").await;
    let mut c = client(&s[0]).await;
    let both = || {
        request(
            "shop",
            vec![desc(&[("user", "u")]), desc(&[("payment", "p")])],
        )
    };
    let r = ask(&mut c, both()).await;
    assert_eq!(codes(&r), [Code::Ok, Code::Ok]);
    // Redis goes away: each limit's fail mode answers (user: the default, open; payment:
    // closed), never an error status.
    drop(redis);
    let r = ask(&mut c, both()).await;
    assert_eq!(codes(&r), [Code::Ok, Code::OverLimit], "{r:?}");
    assert_eq!(overall(&r), Code::OverLimit);
    let r = ask(&mut c, request("shop", vec![desc(&[("user", "u")])])).await;
    assert_eq!(overall(&r), Code::Ok, "fail mode open: {r:?}");
    let metrics = http_get(s[0].http_url(), "/metrics").await;
    assert!(metrics.contains("floodgate_degraded_total"), "{metrics}");
    assert!(
        metrics.contains(
            "floodgate_rls_decisions_total{domain=\"shop\",rule=\"shop.user\",result=\"ok\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("floodgate_requests_total{rpc=\"ShouldRateLimit\",code=\"Ok\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_config_errors_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("limits.yaml");
    std::fs::write(
        &file,
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n",
    )
    .unwrap();
    // A bad file stops the start, naming the file, line and rule.
    let out = std::process::Command::new(floodgate_tests::server::binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--rls-config")
        .arg(&file)
        .env_remove("FLOODGATE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:13: descriptors[0].rate_limit.unit: invalid rate limit unit 'fortnight'",
            file.display()
        )),
        "{err}"
    );
    // A good one serves (the folder is given); a change reloads; a bad change keeps the old
    // one; a file added to the folder is read.
    std::fs::write(
        &file,
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
    )
    .unwrap();
    let s = TestServer::start(ServerOptions {
        extra_args: vec!["--rls-config".into(), dir.path().display().to_string()],
        ..Default::default()
    });
    let mut c = client(&s).await;
    let limit_of = |r: &RateLimitResponse| {
        r.statuses[0]
            .current_limit
            .as_ref()
            .map(|l| l.requests_per_unit)
    };
    let r = ask(&mut c, request("d", vec![desc(&[("k", &fresh("v"))])])).await;
    assert_eq!(limit_of(&r), Some(1));
    std::fs::write(
        &file,
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 7}\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(&mut c, request("d", vec![desc(&[("k", &fresh("v"))])])).await;
        if limit_of(&r) == Some(7) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&file, "domain: d\ndescriptors: [\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let r = ask(&mut c, request("d", vec![desc(&[("k", &fresh("v"))])])).await;
    assert_eq!(limit_of(&r), Some(7), "the old configuration stays");
    assert!(
        s.logs()
            .iter()
            .any(|l| l.contains("NOT reloaded") && l.contains("limits.yaml")),
        "{:?}",
        s.logs()
    );
    std::fs::write(
        &file,
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 7}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("more.yml"),
        "domain: e\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 3}\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(&mut c, request("e", vec![desc(&[("k", &fresh("v"))])])).await;
        if limit_of(&r) == Some(3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the added file was not read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_api_rls_drives_should_rate_limit() {
    let s = servers(1, None, "").await;
    let run = |domain: &str| {
        std::process::Command::new(floodgate_tests::server::binary())
            .args([
                "bench",
                "--server",
                s[0].url(),
                "--api",
                "rls",
                "--namespace",
                domain,
            ])
            .args(["--duration", "1s", "--warmup", "0s", "--concurrency", "4"])
            .args(["--keys", "10", "--json"])
            .output()
            .unwrap()
    };
    let out = run("bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["api"], "rls");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0);
    // A domain without the bench's descriptor is refused up front, saying what to configure.
    let out = run("shop");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no limit for the descriptor"), "{err}");
}
