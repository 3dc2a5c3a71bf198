//! End to end: the RateLimiter and Admin contract over the wire, against real `floodgate`
//! processes — all-or-nothing multi-check Acquires, request_id replay, validation,
//! configured policies and ResetLimit, graceful shutdown, a flushed script cache, and the
//! standard health and reflection services.
//!
//! Scenarios that apply to both stores are async functions over the servers' URLs, run
//! against servers on one Redis (`redis_fleet`) and one memory-store server (`memory`).
//! Tests that count admissions exactly are named `exact_…` and run in the serial nextest
//! group (`.config/nextest.toml`), asserting `degraded == false` on every answer.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use floodgate_client::{
    Client, Decision, Policy,
    proto::{prost_types, v1 as pb},
};
use floodgate_tests::{
    e2e_support::{
        Fleet, acquire_spread, admitted, assert_not_degraded, clients, code_of,
        period_away_from_edge, untouched_status,
    },
    on_both_stores,
    server::{ServerOptions, TestServer},
    unique_namespace,
};
use tonic::Code;

const HOUR: Duration = Duration::from_secs(3600);

/// Configuration of the servers here: inline policies allowed, plus configured ones.
const CONFIG: &str = r#"
inline_policies = true

[policies.api]
algorithm = "token_bucket"
limit = 3
period = "1h"

[policies.jobs]
algorithm = "concurrency"
limit = 2
lease_ttl = "30s"

[policies.pair]
algorithm = "sliding_log"
limit = 2
period = "1h"
"#;

/// The same policies with inline ones refused.
const CONFIG_NO_INLINE: &str = r#"
inline_policies = false

[policies.api]
algorithm = "token_bucket"
limit = 3
period = "1h"
"#;

on_both_stores!(3, CONFIG =>
    exact_all_or_nothing,
    exact_request_id_replay,
    exact_configured_policies_and_reset,
);
on_both_stores!(1, CONFIG => validation_over_the_wire, health_and_reflection);
on_both_stores!(1, CONFIG => exact_status_reads_the_limit_as_it_is, renew_grants_the_inline_lease_ttl);
on_both_stores!(1, CONFIG => exact_request_id_reused_by_another_request);
on_both_stores!(1, CONFIG_NO_INLINE => inline_policies_disabled);

#[track_caller]
fn ok(d: &Decision, what: &str) {
    assert!(d.allowed && !d.degraded, "{what}: want admitted, got {d:?}");
}

#[track_caller]
fn denied(d: &Decision, what: &str) {
    assert!(!d.allowed && !d.degraded, "{what}: want denied, got {d:?}");
}

// ---------------------------------------------------------------------------------------
// All-or-nothing
// ---------------------------------------------------------------------------------------

/// Two checks where the second denies: nothing is consumed on the first (Status before
/// and after agree), whatever its algorithm; without the denying check, all are consumed.
async fn exact_all_or_nothing(urls: &[String]) {
    let ns = unique_namespace("e2e-aon");
    let cs = clients(urls).await;
    let n = cs.len();
    // Windows are epoch-aligned: keep clear of an edge so Status compares one window.
    let window = period_away_from_edge(HOUR, Duration::from_secs(120));
    let firsts = [
        ("tb", Policy::token_bucket(10, HOUR), 3u64),
        ("sl", Policy::sliding_log(10, HOUR), 3),
        ("sw", Policy::sliding_window(10, window), 3),
        ("cc", Policy::concurrency(10), 3),
        ("fw", Policy::fixed_window(10, window), 3),
    ];
    let blocker = Policy::token_bucket(1, HOUR);
    // Spend the blocker.
    ok(
        &cs[0]
            .acquire(&ns)
            .check("b", blocker.clone())
            .send()
            .await
            .unwrap(),
        "blocker",
    );

    let mut befores = Vec::new();
    for (i, (key, first, cost)) in firsts.iter().enumerate() {
        let c = &cs[i % n];
        let before = c.status(&ns, key, first.clone(), *cost).await.unwrap();
        befores.push(before.clone());
        for attempt in 0..3 {
            let d = cs[(i + attempt) % n]
                .acquire(&ns)
                .check(*key, first.clone())
                .cost(*cost)
                .check("b", blocker.clone())
                .send()
                .await
                .unwrap();
            denied(&d, &format!("{key} + spent blocker"));
            assert!(
                d.checks[0].allowed,
                "{key}: the first check alone would pass: {d:?}"
            );
            assert!(
                !d.checks[1].allowed,
                "{key}: the second check denies: {d:?}"
            );
            assert_eq!(d.leases().count(), 0, "{key}: a denial takes no lease");
            assert!(d.retry_after > Duration::ZERO, "{key}: {d:?}");
        }
        for other in &cs {
            let after = other.status(&ns, key, first.clone(), *cost).await.unwrap();
            assert_eq!(
                (after.allowed, after.remaining, after.limit),
                (before.allowed, before.remaining, before.limit),
                "{key}: a denied multi-check Acquire consumed the first check"
            );
        }
    }

    // The same checks with a roomy second one: all consumed together.
    let roomy = Policy::token_bucket(100, HOUR);
    let mut b = cs[0].acquire(&ns);
    for (key, first, cost) in &firsts {
        b = b.check(*key, first.clone()).cost(*cost);
    }
    let d = b.check("r", roomy).send().await.unwrap();
    ok(&d, "all roomy");
    assert_eq!(d.leases().count(), 1, "one concurrency lease: {d:?}");
    for (i, (key, first, cost)) in firsts.iter().enumerate() {
        assert!(d.checks[i].allowed, "{key}: {d:?}");
        // 10 - 3 left after the first real consumption, for every algorithm.
        assert_eq!(d.checks[i].remaining, 7, "{key}: {d:?}");
        let s = cs[1 % n]
            .status(&ns, key, first.clone(), *cost)
            .await
            .unwrap();
        assert_eq!(
            s.remaining + cost,
            befores[i].remaining,
            "{key}: Status after consuming {cost}: {s:?}, before: {:?}",
            befores[i]
        );
    }
}

// ---------------------------------------------------------------------------------------
// request_id
// ---------------------------------------------------------------------------------------

/// A retried Acquire with the same request_id (through any server, within 60 s) gets the
/// first answer again — the same lease ids — and consumes nothing more; concurrent
/// duplicates consume once; a denial is not recorded (its retry is decided afresh); ids are
/// per namespace.
async fn exact_request_id_replay(urls: &[String]) {
    let ns = unique_namespace("e2e-rid");
    let cs = clients(urls).await;
    let n = cs.len();
    let slots = Policy::concurrency(3);
    let bucket = Policy::token_bucket(10, HOUR);
    let send = |c: &Client, ns: &str, id: &str| {
        c.acquire(ns)
            .check("k", slots.clone())
            .check("k", bucket.clone())
            .request_id(id.to_owned())
            .send()
    };

    let first = send(&cs[0], &ns, "req-1").await.unwrap();
    ok(&first, "req-1");
    let lease = first.leases().next().expect("a lease").to_owned();
    for i in 0..4 {
        let again = send(&cs[i % n], &ns, "req-1").await.unwrap();
        assert_eq!(
            again, first,
            "retry #{i} of req-1 must repeat the first answer"
        );
    }
    // Exactly one Acquire's worth consumed: one slot and one token (Status compared with
    // the Status of an untouched key).
    for (policy, what) in [(&bucket, "token bucket"), (&slots, "slots")] {
        let s = cs[n - 1].status(&ns, "k", policy.clone(), 1).await.unwrap();
        let fresh = untouched_status(&cs[n - 1], &ns, policy).await;
        assert_eq!(
            s.remaining + 1,
            fresh.remaining,
            "{what} after 5 retries: {s:?}"
        );
    }

    // Concurrent duplicates of one id, spread over the servers: one consumption.
    let ds = acquire_spread(&cs, 60, |c, _| {
        c.acquire(&ns)
            .check("k", slots.clone())
            .check("k", bucket.clone())
            .request_id("req-2")
    })
    .await;
    assert_not_degraded(&ds);
    assert_eq!(admitted(&ds), 60);
    for d in &ds {
        assert_eq!(d, &ds[0], "every duplicate gets the one answer");
    }
    let lease2 = ds[0].leases().next().unwrap().to_owned();
    assert_ne!(lease2, lease, "a new id takes a new lease");
    assert_eq!(ds[0].checks[1].remaining + 1, first.checks[1].remaining);

    // Fill the last slot, then a new id is denied. A denial consumed nothing and is not
    // recorded: after a release, the retry of that id is decided afresh and admitted, and
    // from then on replays its lease.
    let third = send(&cs[1 % n], &ns, "req-3").await.unwrap();
    ok(&third, "req-3");
    let late = send(&cs[2 % n], &ns, "req-4").await.unwrap();
    denied(&late, "req-4 with every slot held");
    assert!(cs[0].release(&ns, "k", &lease).await.unwrap());
    let late_again = send(&cs[0], &ns, "req-4").await.unwrap();
    ok(&late_again, "req-4 retried after a release");
    let replay = send(&cs[1 % n], &ns, "req-4").await.unwrap();
    assert_eq!(
        replay, late_again,
        "once admitted, req-4 replays its answer"
    );
    let fresh = send(&cs[1 % n], &ns, "req-5").await.unwrap();
    denied(&fresh, "req-5: every slot held again");

    // The same id in another namespace is another request.
    let ns2 = unique_namespace("e2e-rid");
    let other = send(&cs[0], &ns2, "req-1").await.unwrap();
    ok(&other, "req-1 in another namespace");
    assert_ne!(other.leases().next(), first.leases().next());
    assert_eq!(
        other.checks[1].remaining, 9,
        "a fresh bucket in the other namespace"
    );
}

// ---------------------------------------------------------------------------------------
// Configured policies and ResetLimit
// ---------------------------------------------------------------------------------------

/// Policies named in `[policies.NAME]` work by name on every server, and the admin
/// ResetLimit (through any server) unblocks a key.
async fn exact_configured_policies_and_reset(urls: &[String]) {
    let ns = unique_namespace("e2e-named");
    let cs = clients(urls).await;
    let n = cs.len();

    // `api`: token bucket 3 per hour.
    let ds = acquire_spread(&cs, 40, |c, _| c.acquire(&ns).check("user:42", "api")).await;
    assert_not_degraded(&ds);
    assert_eq!(admitted(&ds), 3, "api = 3/h by name");
    for d in &ds {
        assert_eq!(d.checks[0].policy, "api");
        assert_eq!(d.checks[0].limit, 3);
    }
    let s = cs[0].status(&ns, "user:42", "api", 1).await.unwrap();
    assert!(!s.allowed && s.policy == "api", "{s:?}");
    // Another key is not affected.
    ok(
        &cs[0]
            .acquire(&ns)
            .check("user:43", "api")
            .send()
            .await
            .unwrap(),
        "other key",
    );

    // Reset through another server unblocks the key everywhere.
    assert!(cs[1 % n].reset_limit(&ns, "user:42", "api").await.unwrap());
    assert!(
        !cs[1 % n].reset_limit(&ns, "user:42", "api").await.unwrap(),
        "a second reset finds nothing"
    );
    assert!(!cs[0].reset_limit(&ns, "never-used", "api").await.unwrap());
    let ds = acquire_spread(&cs, 40, |c, _| c.acquire(&ns).check("user:42", "api")).await;
    assert_not_degraded(&ds);
    assert_eq!(admitted(&ds), 3, "after the reset, the full bucket again");

    // `pair`: sliding log 2 per hour.
    for i in 0..2 {
        ok(
            &cs[i % n]
                .acquire(&ns)
                .check("p", "pair")
                .send()
                .await
                .unwrap(),
            "pair",
        );
    }
    denied(
        &cs[2 % n]
            .acquire(&ns)
            .check("p", "pair")
            .send()
            .await
            .unwrap(),
        "pair #3",
    );
    assert!(cs[0].reset_limit(&ns, "p", "pair").await.unwrap());
    ok(
        &cs[1 % n]
            .acquire(&ns)
            .check("p", "pair")
            .send()
            .await
            .unwrap(),
        "pair after reset",
    );

    // `jobs`: concurrency 2, leases of 30 s; the lease id names the policy, and Renew
    // without a ttl uses the configured lease_ttl.
    let d = cs[0].acquire(&ns).check("j", "jobs").send().await.unwrap();
    ok(&d, "jobs");
    let lease = d.leases().next().unwrap().to_owned();
    assert!(lease.starts_with("jobs~"), "{lease}");
    let granted = cs[1 % n].renew(&ns, "j", &lease, None).await.unwrap();
    assert!(
        granted > Duration::from_secs(20) && granted <= Duration::from_secs(30),
        "renew of a jobs lease: {granted:?}"
    );
    ok(
        &cs[1 % n]
            .acquire(&ns)
            .check("j", "jobs")
            .send()
            .await
            .unwrap(),
        "jobs #2",
    );
    denied(
        &cs[2 % n]
            .acquire(&ns)
            .check("j", "jobs")
            .send()
            .await
            .unwrap(),
        "jobs #3",
    );
    assert!(cs[2 % n].reset_limit(&ns, "j", "jobs").await.unwrap());
    ok(
        &cs[0].acquire(&ns).check("j", "jobs").send().await.unwrap(),
        "jobs after reset",
    );

    // ResetLimit of an inline policy works the same way.
    let window = period_away_from_edge(HOUR, Duration::from_secs(120));
    let inline = Policy::fixed_window(1, window);
    ok(
        &cs[0]
            .acquire(&ns)
            .check("i", inline.clone())
            .send()
            .await
            .unwrap(),
        "inline",
    );
    denied(
        &cs[1 % n]
            .acquire(&ns)
            .check("i", inline.clone())
            .send()
            .await
            .unwrap(),
        "inline #2",
    );
    assert!(
        cs[2 % n]
            .reset_limit(&ns, "i", inline.clone())
            .await
            .unwrap()
    );
    ok(
        &cs[0].acquire(&ns).check("i", inline).send().await.unwrap(),
        "inline after reset",
    );
}

/// With `inline_policies = false`, inline policies are PERMISSION_DENIED (Acquire, Status,
/// ResetLimit) while configured ones work.
async fn inline_policies_disabled(urls: &[String]) {
    let ns = unique_namespace("e2e-noinline");
    let c = Client::connect(&urls[0]).await.unwrap();
    let e = c
        .acquire(&ns)
        .check("k", Policy::token_bucket(5, HOUR))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("checks[0].inline") && msg.contains("inline_policies = false"),
        "{msg}"
    );
    // A named check before it does not help, and is not consumed.
    let e = c
        .acquire(&ns)
        .check("k", "api")
        .check("k2", Policy::token_bucket(5, HOUR))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("checks[1].inline"), "{e}");
    let e = c
        .status(&ns, "k", Policy::token_bucket(5, HOUR), 1)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");
    let e = c
        .reset_limit(&ns, "k", Policy::token_bucket(5, HOUR))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::PermissionDenied, "{e}");

    for i in 0..4 {
        let d = c.acquire(&ns).check("k", "api").send().await.unwrap();
        assert!(!d.degraded);
        assert_eq!(d.allowed, i < 3, "named api #{i}: {d:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

fn duration(secs: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: secs,
        nanos,
    })
}

fn inline(
    algorithm: pb::Algorithm,
    limit: u64,
    period: Option<prost_types::Duration>,
) -> pb::Policy {
    pb::Policy {
        algorithm: algorithm as i32,
        limit,
        period,
        ..Default::default()
    }
}

fn check(key: &str, policy: pb::Policy, cost: u64) -> pb::LimitCheck {
    pb::LimitCheck {
        key: key.to_owned(),
        cost,
        policy: Some(pb::limit_check::Policy::Inline(policy)),
    }
}

fn named(key: &str, name: &str) -> pb::LimitCheck {
    pb::LimitCheck {
        key: key.to_owned(),
        cost: 1,
        policy: Some(pb::limit_check::Policy::PolicyName(name.to_owned())),
    }
}

fn acquire(ns: &str, checks: Vec<pb::LimitCheck>) -> pb::AcquireRequest {
    pb::AcquireRequest {
        namespace: ns.to_owned(),
        checks,
        ..Default::default()
    }
}

/// One bad request and what the server must answer.
struct Bad {
    what: &'static str,
    request: pb::AcquireRequest,
    code: Code,
    /// The message starts with the field path…
    field: &'static str,
    /// …and states the rule.
    rule: &'static str,
}

/// The bad Acquires. Each one's first check is a valid, unspent token bucket on `k`, so
/// the test can prove a rejected request consumed nothing.
fn bad_acquires(ns: &str) -> Vec<Bad> {
    let good = || {
        check(
            "k",
            inline(pb::Algorithm::TokenBucket, 5, duration(3600, 0)),
            1,
        )
    };
    let tb = |limit, secs| inline(pb::Algorithm::TokenBucket, limit, duration(secs, 0));
    let with = |extra: pb::LimitCheck| acquire(ns, vec![good(), extra]);
    let day = 24 * 3600;
    let mut bursty = tb(10, 60);
    bursty.burst = 5;
    let mut v = vec![
        Bad {
            what: "namespace with ':'",
            request: acquire("a:b", vec![good()]),
            code: Code::InvalidArgument,
            field: "namespace:",
            rule: "1-64 characters of [A-Za-z0-9_.-]",
        },
        Bad {
            what: "empty namespace",
            request: acquire("", vec![good()]),
            code: Code::InvalidArgument,
            field: "namespace:",
            rule: "1-64 characters",
        },
        Bad {
            what: "65-character namespace",
            request: acquire(&"n".repeat(65), vec![good()]),
            code: Code::InvalidArgument,
            field: "namespace:",
            rule: "1-64 characters",
        },
        Bad {
            what: "empty key",
            request: with(check("", tb(5, 60), 1)),
            code: Code::InvalidArgument,
            field: "checks[1].key:",
            rule: "1-512 bytes",
        },
        Bad {
            what: "key with a control character",
            request: with(check("a\u{7}b", tb(5, 60), 1)),
            code: Code::InvalidArgument,
            field: "checks[1].key:",
            rule: "without control characters",
        },
        Bad {
            what: "513-byte key",
            request: with(check(&"k".repeat(513), tb(5, 60), 1)),
            code: Code::InvalidArgument,
            field: "checks[1].key:",
            rule: "1-512 bytes",
        },
        Bad {
            what: "17 checks",
            request: acquire(
                ns,
                (0..17)
                    .map(|i| check(&format!("k{i}"), tb(5, 60), 1))
                    .collect(),
            ),
            code: Code::InvalidArgument,
            field: "checks:",
            rule: "at most 16 checks",
        },
        Bad {
            what: "no checks and no breakers",
            request: acquire(ns, vec![]),
            code: Code::InvalidArgument,
            field: "checks:",
            rule: "at least one check or breaker",
        },
        Bad {
            what: "cost above the burst",
            request: with(check("c", bursty, 6)),
            code: Code::InvalidArgument,
            field: "checks[1].cost:",
            rule: "exceeds the policy's capacity 5",
        },
        Bad {
            what: "cost above the limit",
            request: with(check(
                "c",
                inline(pb::Algorithm::FixedWindow, 3, duration(60, 0)),
                4,
            )),
            code: Code::InvalidArgument,
            field: "checks[1].cost:",
            rule: "exceeds the policy's capacity 3",
        },
        Bad {
            what: "limit 0",
            request: with(check("c", tb(0, 60), 1)),
            code: Code::InvalidArgument,
            field: "checks[1].inline.limit:",
            rule: "must be between 1 and",
        },
        Bad {
            what: "period 0",
            request: with(check("c", tb(5, 0), 1)),
            code: Code::InvalidArgument,
            field: "checks[1].inline.period:",
            rule: "greater than 0",
        },
        Bad {
            what: "no period",
            request: with(check("c", inline(pb::Algorithm::SlidingLog, 5, None), 1)),
            code: Code::InvalidArgument,
            field: "checks[1].inline.period:",
            rule: "greater than 0",
        },
        Bad {
            what: "period over 366 days",
            request: with(check(
                "c",
                inline(pb::Algorithm::FixedWindow, 5, duration(366 * day + 1, 0)),
                1,
            )),
            code: Code::InvalidArgument,
            field: "checks[1].inline.period:",
            rule: "at most 366 days",
        },
        Bad {
            what: "negative period",
            request: with(check("c", tb(5, -1), 1)),
            code: Code::InvalidArgument,
            field: "checks[1].inline.period:",
            rule: "non-negative",
        },
        Bad {
            what: "unspecified algorithm",
            request: with(check(
                "c",
                inline(pb::Algorithm::Unspecified, 5, duration(60, 0)),
                1,
            )),
            code: Code::InvalidArgument,
            field: "checks[1].inline.algorithm:",
            rule: "ALGORITHM_",
        },
        Bad {
            what: "unknown algorithm number",
            request: with(check(
                "c",
                pb::Policy {
                    algorithm: 99,
                    ..tb(5, 60)
                },
                1,
            )),
            code: Code::InvalidArgument,
            field: "checks[1].inline.algorithm:",
            rule: "ALGORITHM_",
        },
        Bad {
            what: "no policy",
            request: with(pb::LimitCheck {
                key: "c".into(),
                cost: 1,
                policy: None,
            }),
            code: Code::InvalidArgument,
            field: "checks[1]:",
            rule: "a policy is required",
        },
        Bad {
            what: "unknown policy_name",
            request: with(named("c", "no-such-policy")),
            code: Code::NotFound,
            field: "checks[1].policy_name:",
            rule: "no policy named \"no-such-policy\"",
        },
        Bad {
            what: "a named breaker",
            request: pb::AcquireRequest {
                breakers: vec!["payments".into()],
                ..acquire(ns, vec![good()])
            },
            code: Code::NotFound,
            field: "breakers[0]:",
            rule: "no breaker named \"payments\"",
        },
        Bad {
            what: "a breaker alone",
            request: pb::AcquireRequest {
                breakers: vec!["payments".into()],
                ..acquire(ns, vec![])
            },
            code: Code::NotFound,
            field: "breakers[0]:",
            rule: "no breaker named",
        },
    ];
    let long_id = pb::AcquireRequest {
        request_id: "r".repeat(129),
        ..acquire(ns, vec![good()])
    };
    v.push(Bad {
        what: "129-byte request_id",
        request: long_id,
        code: Code::InvalidArgument,
        field: "request_id:",
        rule: "at most 128 bytes",
    });
    v
}

#[track_caller]
fn assert_status(
    r: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    field: &str,
    rule: &str,
    what: &str,
) {
    let s = match r {
        Ok(v) => panic!("{what}: accepted, answered {v:?}"),
        Err(s) => s,
    };
    assert_eq!(s.code(), code, "{what}: {}", s.message());
    assert!(
        s.message().starts_with(field) && s.message().contains(rule),
        "{what}: message {:?} must start with {field:?} and state the rule ({rule:?})",
        s.message()
    );
}

/// Every rule of the request validation answers with its code, field and rule; the server
/// survives a storm of bad requests while answering another client, and rejected requests
/// consume nothing.
async fn validation_over_the_wire(urls: &[String]) {
    let ns = unique_namespace("e2e-valid");
    let url = &urls[0];
    let bad_client = Client::connect(url).await.unwrap();
    let good_client = Client::connect(url).await.unwrap();
    let mut rl = bad_client.rate_limiter();

    for b in bad_acquires(&ns) {
        let r = rl.acquire(b.request).await.map(|r| r.into_inner());
        assert_status(r, b.code, b.field, b.rule, b.what);
    }

    // Status, Release, Renew and ResetLimit validate too.
    let r = rl
        .status(pb::StatusRequest {
            namespace: ns.clone(),
            check: None,
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "check:",
        "is required",
        "status without check",
    );
    let r = rl
        .status(pb::StatusRequest {
            namespace: "bad ns".into(),
            check: Some(named("k", "api")),
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "namespace:",
        "1-64",
        "status with a bad namespace",
    );
    let r = rl
        .status(pb::StatusRequest {
            namespace: ns.clone(),
            check: Some(named("k", "nope")),
        })
        .await;
    assert_status(
        r,
        Code::NotFound,
        "check.policy_name:",
        "no policy named",
        "status of an unknown policy",
    );
    let r = rl
        .release(pb::ReleaseRequest {
            namespace: ns.clone(),
            key: "k".into(),
            lease_id: "not-a-lease".into(),
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "lease_id:",
        "not a lease id",
        "release of garbage",
    );
    let r = rl
        .release(pb::ReleaseRequest {
            namespace: ns.clone(),
            key: "a\nb".into(),
            lease_id: "jobs~60000~1~abc".into(),
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "key:",
        "control characters",
        "release with a bad key",
    );
    let r = rl
        .renew(pb::RenewRequest {
            namespace: ns.clone(),
            key: "k".into(),
            lease_id: "jobs~60000~1~abc".into(),
            ttl: duration(0, 0),
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "ttl:",
        "between 1ms and 366 days",
        "renew with ttl 0",
    );
    let r = rl
        .renew(pb::RenewRequest {
            namespace: ns.clone(),
            key: "k".into(),
            lease_id: "jobs~60000~1~abc".into(),
            ttl: None,
        })
        .await;
    assert_status(
        r,
        Code::NotFound,
        "lease_id:",
        "expired",
        "renew of an unknown lease",
    );
    let r = bad_client
        .admin()
        .reset_limit(pb::ResetLimitRequest {
            namespace: ns.clone(),
            check: Some(check(
                "",
                inline(pb::Algorithm::TokenBucket, 5, duration(60, 0)),
                1,
            )),
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "check.key:",
        "1-512 bytes",
        "reset with an empty key",
    );

    // A storm of bad requests from one client while another keeps working.
    let storm: Vec<_> = (0..10)
        .flat_map(|_| bad_acquires(&ns))
        .map(|b| {
            let mut rl = bad_client.rate_limiter();
            tokio::spawn(async move { (b.what, b.code, rl.acquire(b.request).await) })
        })
        .collect();
    let meanwhile = Policy::token_bucket(1000, HOUR);
    let good = acquire_spread(std::slice::from_ref(&good_client), 100, |c, _| {
        c.acquire(&ns).check("meanwhile", meanwhile.clone())
    })
    .await;
    assert_not_degraded(&good);
    assert_eq!(admitted(&good), 100, "the other client kept being answered");
    for t in storm {
        let (what, code, r) = t.await.unwrap();
        match r {
            Ok(v) => panic!("{what}: accepted in the storm: {v:?}"),
            Err(s) => assert_eq!(s.code(), code, "{what}: {}", s.message()),
        }
    }

    // Nothing any rejected request carried was consumed: `k` is untouched.
    let policy = Policy::token_bucket(5, HOUR);
    let s = good_client
        .status(&ns, "k", policy.clone(), 1)
        .await
        .unwrap();
    let fresh = good_client
        .status(&ns, "never-used", policy.clone(), 1)
        .await
        .unwrap();
    assert_eq!(
        (s.allowed, s.remaining),
        (fresh.allowed, fresh.remaining),
        "a rejected Acquire consumed its valid check"
    );
    // And the server still serves new connections.
    let late = Client::connect(url).await.unwrap();
    let d = late.acquire(&ns).check("k", policy).send().await.unwrap();
    ok(&d, "after the storm");
}

// ---------------------------------------------------------------------------------------
// Health and reflection
// ---------------------------------------------------------------------------------------

/// `grpc.health.v1.Health/Check` answers SERVING for the server ("") and its services;
/// `grpc.reflection.v1` lists the services and serves their descriptors.
async fn health_and_reflection(urls: &[String]) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let channel = tonic::transport::Endpoint::from_shared(urls[0].clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "floodgate.v1.RateLimiter", "floodgate.v1.Admin"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("Health/Check {service:?}: {e}"))
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "service {service:?}");
    }
    let e = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "floodgate.v1.RateLimiter".into(),
            )),
        },
    ];
    let mut stream = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("reflection v1 must be served")
        .into_inner();
    let listed = stream
        .message()
        .await
        .unwrap()
        .expect("a ListServices answer");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("unexpected reflection answer: {listed:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "floodgate.v1.RateLimiter",
        "floodgate.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&want),
            "reflection lists {names:?}, missing {want}"
        );
    }
    let file = stream
        .message()
        .await
        .unwrap()
        .expect("a FileContainingSymbol answer");
    let Some(MessageResponse::FileDescriptorResponse(fds)) = file.message_response else {
        panic!("unexpected reflection answer: {file:?}");
    };
    let joined: Vec<u8> = fds.file_descriptor_proto.concat();
    let has = |s: &str| joined.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(
        has("floodgate/v1/rate_limiter.proto") && has("AcquireRequest"),
        "the descriptor of floodgate.v1.RateLimiter"
    );
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------

async fn terminate(server: TestServer) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(20)))
        .await
        .unwrap()
}

/// SIGTERM while calls are in flight in Redis (held there by `CLIENT PAUSE`): the server
/// drains them — every one is answered from the store, not degraded — and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_calls() {
    let mut fleet = Fleet::on_redis(1, CONFIG).await;
    let server = fleet.servers.pop().unwrap();
    let ns = unique_namespace("e2e-drain");
    let client = server.client().await;
    let policy = Policy::token_bucket(1000, HOUR);
    ok(
        &client
            .acquire(&ns)
            .check("k", policy.clone())
            .send()
            .await
            .unwrap(),
        "warm-up",
    );

    // Hold every Redis command for 1.5 s.
    let mut redis = fleet.redis().async_connection().await;
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    let paused_at = Instant::now();
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(client.acquire(&ns).check("k", policy.clone()).send()))
        .collect();
    // Let the calls reach the server (they then wait on Redis), then ask it to stop.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = tokio::spawn(terminate(server));
    for (i, c) in calls.into_iter().enumerate() {
        let d = c
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("in-flight call #{i} was dropped by the shutdown: {e}"));
        ok(&d, &format!("in-flight call #{i}"));
    }
    assert!(
        paused_at.elapsed() >= Duration::from_millis(1400),
        "the calls were answered before Redis resumed"
    );
    let status = status.await.unwrap();
    assert!(
        status.success(),
        "floodgate exited with {status} after SIGTERM"
    );
}

/// Whether `e` is how a call racing a server's shutdown fails: the connection is gone or
/// going (unavailable, cancelled), or the stream was opened after the server's GOAWAY,
/// which tonic reports as an h2 error (INTERNAL or UNKNOWN) — never a server-side answer.
fn refused_by_shutdown(e: &floodgate_client::Error) -> bool {
    match code_of(e) {
        Code::Unavailable | Code::Cancelled => true,
        Code::Internal | Code::Unknown => {
            let m = e.to_string();
            m.contains("h2 protocol error") || m.contains("transport error")
        }
        _ => false,
    }
}

/// SIGTERM under continuous load on the memory store: the server exits 0; every call is
/// either answered (not degraded) or refused at the transport level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_exits_zero() {
    let server = TestServer::start(ServerOptions {
        config: Some(CONFIG.to_owned()),
        ..Default::default()
    });
    let ns = unique_namespace("e2e-term");
    let client = server.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, ns, stop) = (client.clone(), ns.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut refused) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .acquire(&ns)
                        .check("k", Policy::token_bucket(1_000_000, HOUR))
                        .send()
                        .await
                    {
                        Ok(d) => {
                            assert!(d.allowed && !d.degraded, "{d:?}");
                            answered += 1;
                        }
                        Err(e) => {
                            assert!(
                                refused_by_shutdown(&e),
                                "a call during shutdown failed with {e}"
                            );
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = terminate(server).await;
    // A little more traffic against the stopped server, then stop the workers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(
        status.success(),
        "floodgate exited with {status} after SIGTERM"
    );
    let mut answered = 0;
    for w in workers {
        answered += w.await.unwrap().0;
    }
    assert!(answered > 0, "no call was answered before the shutdown");
}

// ---------------------------------------------------------------------------------------
// Script cache flushed mid-test
// ---------------------------------------------------------------------------------------

/// How many NOSCRIPT errors Redis has answered so far (`INFO errorstats`).
async fn noscript_errors(redis: &mut ::redis::aio::MultiplexedConnection) -> u64 {
    let info: String = ::redis::cmd("INFO")
        .arg("errorstats")
        .query_async(redis)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_NOSCRIPT:count="))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn script_flush(redis: &mut ::redis::aio::MultiplexedConnection) {
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(redis)
        .await
        .unwrap();
}

/// `SCRIPT FLUSH` between and during calls on three servers: every call keeps
/// succeeding, never degraded, and counts stay exact (NOSCRIPT is retried after a reload,
/// and only that error is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_script_flush_mid_test() {
    let fleet = Fleet::on_redis(3, CONFIG).await;
    let mut redis = fleet.redis().async_connection().await;
    let ns = unique_namespace("e2e-flush");
    let cs = clients(&fleet.urls()).await;
    let policy = Policy::token_bucket(30, HOUR);
    let one = |i: usize| {
        cs[i % cs.len()]
            .acquire(&ns)
            .check("k", policy.clone())
            .send()
    };

    for i in 0..6 {
        ok(&one(i).await.unwrap(), "before the flush");
    }
    script_flush(&mut redis).await;
    let before = noscript_errors(&mut redis).await;
    for i in 0..6 {
        ok(&one(i).await.unwrap(), "after a flush");
        script_flush(&mut redis).await;
    }
    assert_eq!(
        noscript_errors(&mut redis).await - before,
        6,
        "each call after a flush met NOSCRIPT once, reloaded and succeeded"
    );
    // 12 spent. Flushed right before a burst of 200 concurrent calls: the first calls meet
    // NOSCRIPT (until one server's reload, which serves all), and the burst still admits
    // exactly 18. (Only one flush: a second flush landing between a server's reload and its retry
    // fails that call — redis-rs retries NOSCRIPT once — and the answer is degraded.)
    script_flush(&mut redis).await;
    let before = noscript_errors(&mut redis).await;
    let ds = acquire_spread(&cs, 200, |c, _| c.acquire(&ns).check("k", policy.clone())).await;
    let met = noscript_errors(&mut redis).await - before;
    assert!(met >= 1, "the burst met NOSCRIPT");
    assert_not_degraded(&ds);
    assert_eq!(admitted(&ds), 18, "exactly the 18 tokens left");

    // Status, Renew and Release reload their scripts too.
    let leases = Policy::concurrency(2);
    script_flush(&mut redis).await;
    let d = cs[0]
        .acquire(&ns)
        .check("c", leases.clone())
        .send()
        .await
        .unwrap();
    ok(&d, "lease after a flush");
    let lease = d.leases().next().unwrap().to_owned();
    script_flush(&mut redis).await;
    let s = cs[1].status(&ns, "c", leases.clone(), 1).await.unwrap();
    assert!(s.allowed, "{s:?}");
    script_flush(&mut redis).await;
    let granted = cs[2].renew(&ns, "c", &lease, None).await.unwrap();
    assert!(granted > Duration::from_secs(50), "{granted:?}");
    script_flush(&mut redis).await;
    assert!(cs[0].release(&ns, "c", &lease).await.unwrap());
    script_flush(&mut redis).await;
    assert!(!cs[1].release(&ns, "c", &lease).await.unwrap());
}

/// Status reports the limit as it is (remaining, reset_after), consuming nothing; only
/// `allowed` and `retry_after` answer for the cost asked about.
async fn exact_status_reads_the_limit_as_it_is(urls: &[String]) {
    let client = Client::connect(&urls[0]).await.unwrap();
    let ns = unique_namespace("status");
    let tb = Policy::token_bucket(5, HOUR);
    let fresh = client.status(&ns, "k", tb.clone(), 2).await.unwrap();
    assert!(fresh.allowed);
    assert_eq!(
        (fresh.remaining, fresh.reset_after),
        (5, Duration::ZERO),
        "{fresh:?}"
    );
    let d = client
        .acquire(&ns)
        .check("k", tb.clone())
        .cost(2)
        .send()
        .await
        .unwrap();
    ok(&d, "take 2 of 5");
    let after = client.status(&ns, "k", tb.clone(), 4).await.unwrap();
    assert_eq!(after.remaining, 3, "{after:?}");
    assert!(
        !after.allowed && after.retry_after > Duration::ZERO,
        "{after:?}"
    );
    assert!(after.reset_after > Duration::from_secs(1400), "{after:?}");
    let again = client.status(&ns, "k", tb, 1).await.unwrap();
    assert_eq!(again.remaining, 3, "Status must consume nothing: {again:?}");
    let cc = Policy::concurrency(3);
    let free = client.status(&ns, "c", cc.clone(), 1).await.unwrap();
    assert_eq!(
        (free.remaining, free.reset_after),
        (3, Duration::ZERO),
        "{free:?}"
    );
}

/// Renew without a ttl grants the lease the lifetime it was taken with, also for an
/// inline policy (whose lease_ttl the server cannot look up by name).
async fn renew_grants_the_inline_lease_ttl(urls: &[String]) {
    let client = Client::connect(&urls[0]).await.unwrap();
    let ns = unique_namespace("renew");
    let policy = Policy::concurrency(1).lease_ttl(Duration::from_secs(7));
    let d = client
        .acquire(&ns)
        .check("db", policy)
        .send()
        .await
        .unwrap();
    ok(&d, "take the lease");
    let lease = d.leases().next().expect("a lease id").to_owned();
    let granted = client.renew(&ns, "db", &lease, None).await.unwrap();
    assert_eq!(granted, Duration::from_secs(7));
    let granted = client
        .renew(&ns, "db", &lease, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(granted, Duration::from_secs(2));
}

/// Found in review: a request_id reused by a *different* Acquire (here one more check) must
/// not replay the first answer (which does not fit it) nor fail open past the limit; it is
/// decided as a new request.
async fn exact_request_id_reused_by_another_request(urls: &[String]) {
    let client = Client::connect(&urls[0]).await.unwrap();
    let ns = unique_namespace("reuse");
    let one = Policy::token_bucket(1, HOUR);
    let d = client
        .acquire(&ns)
        .check("a", one.clone())
        .request_id("r1")
        .send()
        .await
        .unwrap();
    ok(&d, "first");
    let d = client
        .acquire(&ns)
        .check("a", one.clone())
        .send()
        .await
        .unwrap();
    denied(&d, "the bucket is empty");
    for i in 0..3 {
        let d = client
            .acquire(&ns)
            .check("a", one.clone())
            .check("b", one.clone())
            .request_id("r1")
            .send()
            .await
            .unwrap();
        assert!(!d.degraded, "attempt {i}: {d:?}");
        assert!(
            !d.allowed,
            "attempt {i}: key a is empty, yet admitted: {d:?}"
        );
        assert_eq!(d.checks.len(), 2, "one result per check: {d:?}");
    }
}
