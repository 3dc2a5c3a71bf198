//! End to end: the client crate's breaker handle against real servers on one Redis. A
//! flaky fake dependency sits behind `call`: the breaker opens, calls stop reaching the
//! dependency, and after the wait trial calls close it again; outcomes travel in a few
//! batched Report calls; a cancelled trial call, and an abandoned admission, hand their
//! permits back; shutdown delivers the last outcomes.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use floodgate_client::{CallError, Client, Outcome, proto::v1 as pb};
use floodgate_tests::{e2e_support::Fleet, unique_namespace};

const CONFIG: &str = r#"
[breakers.flaky]
window = "count"
window_size = 10
minimum_calls = 5
failure_rate_threshold = 50.0
slow_call_rate_threshold = 100.0
slow_call_duration = "2s"
wait_in_open = "1s"
half_open_calls = 2
half_open_max_wait = "5s"
"#;

/// A dependency that fails while `down` is set, counting the calls that reach it.
#[derive(Clone, Default)]
struct Dependency {
    down: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl Dependency {
    async fn call(&self) -> Result<u32, std::io::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(std::io::Error::other("dependency down"))
        } else {
            Ok(7)
        }
    }
}

/// Calls of `rpc` answered by the fleet, from the servers' /metrics.
async fn served(fleet: &Fleet, rpc: &str) -> f64 {
    let mut n = 0.0;
    for s in &fleet.servers {
        let body = reqwest_get(&format!("{}/metrics", s.http_url())).await;
        let label = format!("rpc=\"{rpc}\"");
        n += body
            .lines()
            .filter(|l| l.starts_with("floodgate_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    n
}

async fn reqwest_get(url: &str) -> String {
    // A tiny HTTP/1.0 GET: the tests crate has no HTTP client.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_flaky_dependency_opens_stops_and_recovers() {
    let fleet = Fleet::on_redis(2, CONFIG).await;
    let urls = fleet.urls();
    let client = Client::connect_many(&urls).expect("client");
    let ns = unique_namespace("cb");
    let breaker = client.breaker(&ns, "flaky");
    let dep = Dependency::default();

    // Healthy: 200 calls in well under a second, reported in a handful of Reports, and
    // (once the Watch stream is up) admitted from the cache without asking.
    let (reports_before, acquires_before) = (
        served(&fleet, "Report").await,
        served(&fleet, "Acquire").await,
    );
    breaker.call(dep.call()).await.expect("first call");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..200 {
        let v = breaker.call(dep.call()).await.expect("healthy call");
        assert_eq!(v, 7);
    }
    client.flush().await;
    let reports = served(&fleet, "Report").await - reports_before;
    assert!(
        (1.0..=15.0).contains(&reports),
        "201 calls took {reports} Report calls; they should be batched"
    );
    let acquires = served(&fleet, "Acquire").await - acquires_before;
    assert!(
        acquires <= 2.0,
        "a CLOSED breaker was asked {acquires} times"
    );
    let info = client.breaker_info(&ns, "flaky").await.unwrap();
    assert_eq!(info.state, pb::BreakerState::Closed as i32);
    assert_eq!(info.calls, 10, "the count window holds the last 10 calls");

    // Down: failures are reported, the breaker opens, calls stop reaching the dependency.
    dep.down.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match breaker.call(dep.call()).await {
            Err(CallError::Inner(_)) => {}
            Err(CallError::Open { state, .. }) => {
                assert_eq!(state, pb::BreakerState::Open);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "the breaker never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reached = dep.calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        match breaker.call(dep.call()).await {
            Err(CallError::Open { retry_after, .. }) => {
                assert!(retry_after <= Duration::from_secs(1))
            }
            other => panic!("an open breaker let a call through: {other:?}"),
        }
    }
    assert_eq!(
        dep.calls.load(Ordering::SeqCst),
        reached,
        "calls reached the dependency"
    );

    // Recovered: after the wait, trial calls succeed and close it.
    dep.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match breaker.call(dep.call()).await {
            Ok(_) => {}
            Err(CallError::Open { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        client.flush().await;
        let info = client.breaker_info(&ns, "flaky").await.unwrap();
        if info.state == pb::BreakerState::Closed as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never closed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(breaker.call(dep.call()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_trial_call_hands_its_permit_back() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.expect("client");
    let ns = unique_namespace("cb");
    client
        .set_breaker_state(&ns, "flaky", pb::BreakerState::HalfOpen)
        .await
        .unwrap();
    // Without the cache, so each call asks (a half-open breaker is always asked anyway).
    let breaker = client.breaker(&ns, "flaky").without_cache();
    // Two permits: one call hangs and is cancelled, one never reports.
    let hung = breaker.call(async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, std::io::Error>(())
    });
    let cancelled = tokio::time::timeout(Duration::from_millis(200), hung).await;
    assert!(cancelled.is_err(), "the call should have been cancelled");
    let ignored = breaker
        .call_classified(
            async { Err::<(), _>(std::io::Error::other("caller's fault")) },
            |_| Outcome::Ignore,
        )
        .await;
    assert!(matches!(ignored, Err(CallError::Inner(_))));
    // Both permits went back (batched): two more trial calls are admitted well before the
    // 5 s half_open_max_wait.
    client.flush().await;
    let info = client.breaker_info(&ns, "flaky").await.unwrap();
    assert_eq!(info.trial_permits_in_flight, 0, "{info:?}");
    let started = Instant::now();
    let mut admitted = 0;
    for _ in 0..2 {
        let r = client
            .rate_limiter()
            .acquire(pb::AcquireRequest {
                namespace: ns.clone(),
                breakers: vec!["flaky".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        admitted += usize::from(r.allowed);
    }
    assert_eq!(admitted, 2);
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// Polls `Get` (flushing first) until `done` holds, within `within`.
async fn until_info(
    client: &Client,
    ns: &str,
    within: Duration,
    done: impl Fn(&pb::BreakerInfo) -> bool,
) -> pb::BreakerInfo {
    let deadline = Instant::now() + within;
    loop {
        client.flush().await;
        let info = client.breaker_info(ns, "flaky").await.unwrap();
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "not reached in {within:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_admission_hands_a_won_permit_back() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.expect("client");
    let ns = unique_namespace("cb");
    client
        .set_breaker_state(&ns, "flaky", pb::BreakerState::HalfOpen)
        .await
        .unwrap();
    // An admission deadline too short for any answer: the Acquire is abandoned in flight
    // (or, if the server is that quick, the call runs and is ignored). Either way, the
    // permits come back well before the 5 s half_open_max_wait.
    let impatient = client
        .breaker(&ns, "flaky")
        .admission_timeout(Duration::from_nanos(1));
    let mut never_ran = 0;
    for _ in 0..2 {
        let r = impatient
            .call_classified(async { Ok::<_, std::io::Error>(()) }, |_| Outcome::Ignore)
            .await;
        match r {
            Err(CallError::Floodgate(_)) => never_ran += 1,
            Ok(()) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    println!("{never_ran} of 2 admissions abandoned in flight");
    let started = Instant::now();
    let info = until_info(&client, &ns, Duration::from_secs(4), |i| {
        i.trial_permits_in_flight == 0
    })
    .await;
    assert_eq!(info.state, pb::BreakerState::HalfOpen as i32);
    assert!(started.elapsed() < Duration::from_secs(4));
    // Both permits are free again: two trial calls get in. (On a loaded machine an
    // abandoned Acquire may reach the server only now and win a permit again; the client
    // hands that one back too, so each trial call gets in well within the 5 s
    // half_open_max_wait that would otherwise free it.)
    let patient = client.breaker(&ns, "flaky").without_cache();
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match patient.call(async { Ok::<_, std::io::Error>(()) }).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    println!("trial call refused for now: {e:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("a trial call is admitted within 3 s: {e:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_the_last_outcomes_and_the_client_still_works() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.expect("client");
    let ns = unique_namespace("cb");
    let breaker = client.breaker(&ns, "flaky");
    for i in 0..4u32 {
        let r = breaker
            .call(async move {
                if i % 2 == 0 {
                    Ok(i)
                } else {
                    Err(std::io::Error::other("down"))
                }
            })
            .await;
        assert_eq!(r.is_ok(), i % 2 == 0);
    }
    // No wait for the 100 ms tick: shutdown sends what is pending.
    client.shutdown().await;
    let info = client.breaker_info(&ns, "flaky").await.unwrap();
    assert_eq!((info.calls, info.failures), (4, 2), "{info:?}");
    // After shutdown the handle asks every time, and flush still sends.
    assert_eq!(
        breaker
            .call(async { Ok::<_, std::io::Error>(9) })
            .await
            .unwrap(),
        9
    );
    client.flush().await;
    let info = client.breaker_info(&ns, "flaky").await.unwrap();
    assert_eq!(info.calls, 5);
    assert_eq!(client.reporter().dropped(), 0);
}
