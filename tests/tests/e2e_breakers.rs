//! End to end: shared circuit breakers over real servers, through the wire API.
//!
//! The fleet-wide scenarios run against three `floodgate` servers on one Redis and against
//! one memory-store server: failures reported on different servers open the breaker for
//! all; half-open grants exactly `half_open_calls` permits to concurrent Acquires spread
//! over the fleet; a released or expired permit is granted again; trial outcomes close or
//! reopen it; late reports of an old generation are ignored; Watch on one server sees a
//! transition made on another. Counting tests are named `exact_*` (serial nextest group).
use std::time::{Duration, Instant};

use floodgate_client::proto::v1::{
    self as pb, circuit_breakers_client::CircuitBreakersClient,
    rate_limiter_client::RateLimiterClient,
};
use floodgate_tests::{e2e_support::Fleet, on_both_stores, unique_namespace};
use futures::StreamExt;
use tonic::transport::Channel;

/// Every server's configuration: one tuned breaker and a template for any other name.
const CONFIG: &str = r#"
inline_policies = true

[breakers.pay]
window = "count"
window_size = 10
minimum_calls = 4
failure_rate_threshold = 50.0
slow_call_rate_threshold = 100.0
slow_call_duration = "2s"
wait_in_open = "1s"
half_open_calls = 3
half_open_max_wait = "2s"

[breakers.default]
window = "time"
window_size = 10
minimum_calls = 2
wait_in_open = "10s"
"#;

/// Both gRPC clients of one server.
#[derive(Clone)]
struct Node {
    limits: RateLimiterClient<Channel>,
    breakers: CircuitBreakersClient<Channel>,
}

async fn nodes(urls: &[String]) -> Vec<Node> {
    let mut out = Vec::new();
    for u in urls {
        let channel = Channel::from_shared(u.clone())
            .expect("url")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {u}: {e}"));
        out.push(Node {
            limits: RateLimiterClient::new(channel.clone()),
            breakers: CircuitBreakersClient::new(channel),
        });
    }
    out
}

async fn acquire(n: &Node, ns: &str, breaker: &str) -> pb::AcquireResponse {
    let r = n
        .limits
        .clone()
        .acquire(pb::AcquireRequest {
            namespace: ns.into(),
            breakers: vec![breaker.into()],
            ..Default::default()
        })
        .await
        .expect("Acquire")
        .into_inner();
    assert!(!r.degraded, "decided without the store");
    r
}

/// `n` Acquires at once, spread round-robin over the nodes; returns how many were allowed
/// and the states they were decided in.
async fn acquire_spread(nodes: &[Node], ns: &str, breaker: &str, n: usize) -> (usize, Vec<i32>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let node = nodes[i % nodes.len()].clone();
            let (ns, breaker) = (ns.to_owned(), breaker.to_owned());
            tokio::spawn(async move { acquire(&node, &ns, &breaker).await })
        })
        .collect();
    let mut allowed = 0;
    let mut states = Vec::new();
    for t in futures::future::join_all(tasks).await {
        let r = t.expect("task");
        allowed += usize::from(r.allowed);
        states.push(r.breakers[0].state);
    }
    (allowed, states)
}

fn report(breaker: &str, failures: u64, successes: u64, generation: u64) -> pb::BreakerReport {
    pb::BreakerReport {
        breaker: breaker.into(),
        failures,
        successes,
        generation,
        ..Default::default()
    }
}

async fn send(n: &Node, ns: &str, r: pb::BreakerReport) -> pb::BreakerReportResult {
    n.breakers
        .clone()
        .report(pb::ReportRequest {
            namespace: ns.into(),
            reports: vec![r],
        })
        .await
        .expect("Report")
        .into_inner()
        .results
        .remove(0)
}

async fn get(n: &Node, ns: &str, breaker: &str) -> pb::BreakerInfo {
    n.breakers
        .clone()
        .get(pb::GetBreakerRequest {
            namespace: ns.into(),
            breaker: breaker.into(),
        })
        .await
        .expect("Get")
        .into_inner()
}

const CLOSED: i32 = pb::BreakerState::Closed as i32;
const OPEN: i32 = pb::BreakerState::Open as i32;
const HALF_OPEN: i32 = pb::BreakerState::HalfOpen as i32;

/// Waits until `b` has left OPEN (its wait elapsed), reading through `n`.
async fn until_half_open(n: &Node, ns: &str, b: &str) -> pb::BreakerInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = get(n, ns, b).await;
        if info.state != OPEN || Instant::now() > deadline {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole life of a breaker across the fleet.
async fn exact_lifecycle(urls: &[String]) {
    let nodes = nodes(urls).await;
    let last = nodes.len() - 1;
    let ns = unique_namespace("br");
    // Nobody has reported: it admits, reads as CLOSED generation 1, and asking created nothing.
    let a = acquire(&nodes[0], &ns, "pay").await;
    assert!(a.allowed);
    assert_eq!((a.breakers[0].state, a.breakers[0].generation), (CLOSED, 1));
    assert!(!get(&nodes[last], &ns, "pay").await.exists);

    // Failures reported through different servers add up: 2 + 2 of 4 calls = 100 %.
    let r = send(&nodes[0], &ns, report("pay", 2, 0, 1)).await;
    assert_eq!((r.accepted, r.state), (true, CLOSED));
    let r = send(&nodes[last], &ns, report("pay", 2, 0, 0)).await;
    assert_eq!((r.state, r.generation), (OPEN, 2));
    // Open for every server, with a retry_after within the wait.
    for n in &nodes {
        let a = acquire(n, &ns, "pay").await;
        assert!(!a.allowed);
        assert_eq!(a.breakers[0].state, OPEN);
        let retry = a.retry_after.expect("retry_after");
        assert!(
            retry.seconds == 0 && retry.nanos > 0,
            "retry_after {retry:?}"
        );
    }
    // A late report of the closed generation cannot move the new state.
    let r = send(&nodes[0], &ns, report("pay", 0, 50, 1)).await;
    assert!(!r.accepted);
    assert_eq!(r.state, OPEN);

    // After the wait: 60 concurrent Acquires over the fleet get exactly 3 trial permits.
    assert_eq!(
        until_half_open(&nodes[0], &ns, "pay").await.state,
        HALF_OPEN
    );
    let (allowed, states) = acquire_spread(&nodes, &ns, "pay", 60).await;
    assert_eq!(allowed, 3, "half_open_calls permits, fleet-wide");
    assert!(states.iter().all(|s| *s == HALF_OPEN), "{states:?}");
    let info = get(&nodes[1 % nodes.len()], &ns, "pay").await;
    assert_eq!(info.trial_permits_in_flight, 3);
    let generation = info.generation;

    // One permit handed back is granted again, exactly once.
    let r = send(
        &nodes[0],
        &ns,
        pb::BreakerReport {
            released: 1,
            ..report("pay", 0, 0, generation)
        },
    )
    .await;
    assert!(r.accepted);
    let (allowed, _) = acquire_spread(&nodes, &ns, "pay", 20).await;
    assert_eq!(allowed, 1, "a released permit is granted again");

    // Unreported permits expire after half_open_max_wait (2 s) and are granted again.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (allowed, _) = acquire_spread(&nodes, &ns, "pay", 30).await;
    assert_eq!(allowed, 3, "expired permits are granted again");

    // Three successful trials close it, for everyone.
    let r = send(&nodes[last], &ns, report("pay", 0, 3, generation)).await;
    assert_eq!(r.state, CLOSED);
    let info = get(&nodes[0], &ns, "pay").await;
    assert_eq!(
        (info.state, info.calls, info.consecutive_opens),
        (CLOSED, 0, 0)
    );
    assert!(acquire(&nodes[1 % nodes.len()], &ns, "pay").await.allowed);

    // Open again; this time two failed trials of three reopen it before the third reports.
    let r = send(&nodes[0], &ns, report("pay", 4, 0, 0)).await;
    assert_eq!(r.state, OPEN);
    let info = until_half_open(&nodes[last], &ns, "pay").await;
    assert_eq!(info.state, HALF_OPEN);
    let (allowed, _) = acquire_spread(&nodes, &ns, "pay", 9).await;
    assert_eq!(allowed, 3);
    let r = send(&nodes[0], &ns, report("pay", 1, 0, info.generation)).await;
    assert_eq!(r.state, HALF_OPEN, "1 failure of 3 can still close");
    let r = send(&nodes[last], &ns, report("pay", 1, 0, info.generation)).await;
    assert_eq!(r.state, OPEN, "2 failures of 3 reach 50 %");
    assert_eq!(get(&nodes[0], &ns, "pay").await.consecutive_opens, 2);

    // The history lists every transition, newest first.
    let h = nodes[0]
        .breakers
        .clone()
        .history(pb::BreakerHistoryRequest {
            namespace: ns.clone(),
            breaker: "pay".into(),
            limit: 0,
        })
        .await
        .expect("History")
        .into_inner()
        .events;
    let reasons: Vec<&str> = h.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "trial_failures",
            "wait_elapsed",
            "failure_rate",
            "trial_success",
            "wait_elapsed",
            "failure_rate"
        ]
    );
}

/// Acquire decides checks and breakers together: a refusing breaker takes no token, and a
/// refusing check takes no trial permit.
async fn exact_all_or_nothing(urls: &[String]) {
    let nodes = nodes(urls).await;
    let ns = unique_namespace("br");
    let bucket = pb::LimitCheck {
        key: "k".into(),
        cost: 1,
        policy: Some(pb::limit_check::Policy::Inline(pb::Policy {
            algorithm: pb::Algorithm::TokenBucket as i32,
            limit: 1,
            period: Some(floodgate_client::proto::prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        })),
    };
    let with_check = |n: &Node| {
        let mut c = n.limits.clone();
        let req = pb::AcquireRequest {
            namespace: ns.clone(),
            checks: vec![bucket.clone()],
            breakers: vec!["pay".into()],
            ..Default::default()
        };
        async move { c.acquire(req).await.expect("Acquire").into_inner() }
    };
    let set = |n: &Node, state: pb::BreakerState| {
        let mut c = n.breakers.clone();
        let req = pb::SetBreakerStateRequest {
            namespace: ns.clone(),
            breaker: "pay".into(),
            state: state as i32,
        };
        async move { c.set_state(req).await.expect("SetState").into_inner() }
    };
    // Forced open: denied, and the bucket's one token is still there afterwards.
    set(&nodes[0], pb::BreakerState::ForcedOpen).await;
    let r = with_check(&nodes[0]).await;
    assert!(!r.allowed);
    assert!(r.checks[0].allowed, "the check alone would pass");
    assert!(!r.breakers[0].allowed);
    // Half-open with one permit... after the bucket is empty, a denied check takes no permit.
    set(&nodes[0], pb::BreakerState::Closed).await;
    assert!(
        with_check(&nodes[0]).await.allowed,
        "the token was not consumed before"
    );
    let info = set(&nodes[0], pb::BreakerState::HalfOpen).await;
    assert_eq!(info.trial_permits_in_flight, 0);
    let r = with_check(&nodes[nodes.len() - 1]).await;
    assert!(!r.allowed && !r.checks[0].allowed && r.breakers[0].allowed);
    assert_eq!(get(&nodes[0], &ns, "pay").await.trial_permits_in_flight, 0);
}

/// A Watch on one server sees a transition made through another within a second.
async fn watch_across_servers(urls: &[String]) {
    let nodes = nodes(urls).await;
    let ns = unique_namespace("br");
    let mut stream = nodes[0]
        .breakers
        .clone()
        .watch(pb::WatchBreakersRequest {
            namespace: ns.clone(),
            breakers: vec!["pay".into(), "search".into()],
        })
        .await
        .expect("Watch")
        .into_inner();
    let mut first = Vec::new();
    for _ in 0..2 {
        let e = stream.next().await.expect("event").expect("ok");
        assert_eq!((e.from, e.to, e.reason.as_str()), (0, CLOSED, "current"));
        first.push(e.breaker);
    }
    first.sort();
    assert_eq!(first, ["pay", "search"]);
    // "search" has no table of its own: the default template (minimum_calls 2) applies.
    let other = &nodes[nodes.len() - 1];
    let started = Instant::now();
    let r = send(other, &ns, report("search", 2, 0, 0)).await;
    assert_eq!(r.state, OPEN);
    let e = tokio::time::timeout(Duration::from_secs(1), stream.next())
        .await
        .expect("the transition reached the watcher within a second")
        .expect("event")
        .expect("ok");
    assert_eq!(
        (e.breaker.as_str(), e.from, e.to, e.reason.as_str()),
        ("search", CLOSED, OPEN, "failure_rate")
    );
    assert_eq!(e.retry_after.expect("retry_after").seconds, 10);
    assert!(started.elapsed() < Duration::from_secs(1));
    // List shows the configured breaker and the template one that now has state.
    let listed = nodes[0]
        .breakers
        .clone()
        .list(pb::ListBreakersRequest {
            namespace: ns.clone(),
        })
        .await
        .expect("List")
        .into_inner()
        .breakers;
    let names: Vec<(&str, i32)> = listed
        .iter()
        .map(|b| (b.breaker.as_str(), b.state))
        .collect();
    assert_eq!(names, [("pay", CLOSED), ("search", OPEN)]);
}

/// Bad input is refused with the field and the rule; unknown breakers are NOT_FOUND.
async fn refuses_bad_input(urls: &[String]) {
    let nodes = nodes(urls).await;
    let n = &nodes[0];
    let ns = unique_namespace("br");
    let err = n
        .breakers
        .clone()
        .report(pb::ReportRequest {
            namespace: ns.clone(),
            reports: vec![pb::BreakerReport {
                slow_calls: 3,
                ..report("pay", 1, 1, 0)
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("reports[0].slow_calls:"),
        "{}",
        err.message()
    );
    let err = n
        .breakers
        .clone()
        .set_state(pb::SetBreakerStateRequest {
            namespace: ns.clone(),
            breaker: "pay".into(),
            state: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("state:"), "{}", err.message());
    let err = n
        .breakers
        .clone()
        .get(pb::GetBreakerRequest {
            namespace: ns.clone(),
            breaker: "bad name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = n
        .limits
        .clone()
        .acquire(pb::AcquireRequest {
            namespace: ns.clone(),
            breakers: vec!["pay".into(), "pay".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("breakers[1]:"),
        "{}",
        err.message()
    );
}

on_both_stores!(3, CONFIG =>
        exact_lifecycle,
    exact_all_or_nothing,
    watch_across_servers,
    refuses_bad_input
);

/// Without a table and without a template, a breaker name is NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_breaker_is_not_found() {
    let fleet = Fleet::in_memory("inline_policies = true\n[breakers.pay]\n").await;
    let nodes = nodes(&fleet.urls()).await;
    let err = nodes[0]
        .limits
        .clone()
        .acquire(pb::AcquireRequest {
            namespace: "ns".into(),
            breakers: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("breakers[0]"), "{}", err.message());
    assert!(get(&nodes[0], "ns", "pay").await.state == CLOSED);
}

/// A server's subscription to the fleet's breaker events breaks (the connection is killed)
/// and a transition is made while it is down: its Watch streams still learn of it, because
/// the relay resubscribes and every Watch then re-reads the states it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_catches_up_on_transitions_its_server_missed() {
    use floodgate_tests::{redis::TestRedis, server::TestServer};
    let redis = TestRedis::private();
    let server = TestServer::on_redis(redis.url(), CONFIG);
    let node = nodes(&[server.url().to_owned()]).await.remove(0);
    let ns = unique_namespace("br");
    let mut stream = node
        .breakers
        .clone()
        .watch(pb::WatchBreakersRequest {
            namespace: ns.clone(),
            breakers: vec!["pay".into()],
        })
        .await
        .expect("Watch")
        .into_inner();
    assert_eq!(next(&mut stream).await.reason, "current");
    let set = |state: pb::BreakerState| {
        let mut c = node.breakers.clone();
        let req = pb::SetBreakerStateRequest {
            namespace: ns.clone(),
            breaker: "pay".into(),
            state: state as i32,
        };
        async move { c.set_state(req).await.expect("SetState") }
    };
    // A first transition arrives: the relay is subscribed.
    set(pb::BreakerState::HalfOpen).await;
    assert_eq!(next(&mut stream).await.to, HALF_OPEN);

    // Cut the relay's subscription, transition at once (the relay waits 100 ms before it
    // subscribes again), and keep cutting it every 10 ms for 400 ms, so even a SetState slow
    // on a loaded machine most likely PUBLISHes to no subscriber.
    let mut conn = redis.async_connection().await;
    let kill = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .clone();
    let killed: i64 = kill.query_async(&mut conn).await.unwrap();
    assert_eq!(killed, 1, "the server's one subscription");
    let killer = tokio::spawn(async move {
        for _ in 0..40 {
            let _: i64 = kill.query_async(&mut conn).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    set(pb::BreakerState::ForcedOpen).await;
    killer.await.unwrap();
    // Once the relay resubscribes, the Watch re-reads: FORCED_OPEN arrives (after, perhaps,
    // a "current" HALF_OPEN read before the SetState).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let e = next(&mut stream).await;
        if e.to == pb::BreakerState::ForcedOpen as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "FORCED_OPEN never reached the Watch"
        );
    }
}

/// The next event of a Watch stream, within 10 s.
async fn next(stream: &mut tonic::Streaming<pb::BreakerEvent>) -> pb::BreakerEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("event")
        .expect("ok")
}
