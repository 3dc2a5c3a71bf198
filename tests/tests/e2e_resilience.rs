//! End to end: the client's resilience kit against real servers on one Redis. A flaky
//! dependency (30% transient failures) behind retries, with permanent failures going to a
//! dead-letter queue once; an outage under steady load from 20 instances sharing a breaker
//! and a fleet-wide retry budget; the fleet-wide bulkhead across two servers (renewed,
//! given back by cancelled and panicking calls).
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use floodgate_client::{
    Client, Policy,
    dead_letters::{Filter, ListOptions},
    proto::v1 as pb,
    resilience::*,
};
use floodgate_tests::{e2e_support::Fleet, unique_namespace};
use futures::TryStreamExt;

const CONFIG: &str = r#"
[breakers.dep]
window = "count"
window_size = 20
minimum_calls = 10
failure_rate_threshold = 50.0
slow_call_rate_threshold = 100.0
slow_call_duration = "5s"
wait_in_open = "1s"
half_open_calls = 2
half_open_max_wait = "5s"

[policies.retry_budget]
algorithm = "token_bucket"
limit = 10
period = "1s"
burst = 10

[queues.payments]
retention = "1d"
"#;

#[derive(Debug, Clone, PartialEq)]
struct DepError {
    status: u16,
}

impl std::fmt::Display for DepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dependency answered {}", self.status)
    }
}

/// A dependency that counts the calls reaching it (first attempts and retries apart).
#[derive(Debug, Clone, Default)]
struct Dependency {
    down: Arc<AtomicBool>,
    firsts: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
}

impl Dependency {
    async fn call(&self, first: bool, fail: bool) -> Result<&'static str, DepError> {
        if first {
            self.firsts.fetch_add(1, Ordering::SeqCst);
        } else {
            self.retries.fetch_add(1, Ordering::SeqCst);
        }
        if fail || self.down.load(Ordering::SeqCst) {
            Err(DepError { status: 503 })
        } else {
            Ok("real")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_dependency_retries_and_dead_letters_once() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.expect("client");
    let ns = unique_namespace("res-flaky");
    let queue = client.dead_letters(&ns, "payments");
    let policy = Resilience::<&'static str, DepError>::builder()
        .name("flaky")
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(Backoff::new(
                    Duration::from_millis(1),
                    Duration::from_millis(5),
                ))
                .retry_if(|e: &DepError| e.status >= 500)
                .budget(RetryBudget::new().ratio(1.0)),
        )
        .dead_letter(queue.clone())
        .error_class(|e: &DepError| format!("http_{}", e.status))
        .build()
        .unwrap();
    let dep = Dependency::default();
    let rng = SeededJitter::new(8);
    let n = 600u64;
    let mut ok = 0u64;
    for i in 0..n {
        let mut k = 0;
        let r = policy
            .call_with_input(format!("order {i}"), || {
                k += 1;
                let (dep, fail) = (dep.clone(), rng.next_unit() < 0.3);
                async move { dep.call(k == 1, fail).await }
            })
            .await;
        ok += u64::from(r.is_ok());
    }
    let rate = ok as f64 / n as f64;
    let calls = dep.firsts.load(Ordering::SeqCst) + dep.retries.load(Ordering::SeqCst);
    let per_call = calls as f64 / n as f64;
    println!(
        "flaky: success rate {rate:.4} (expected 0.973), {per_call:.3} calls per call (expected 1.39)"
    );
    assert!((rate - 0.973).abs() < 0.02, "success rate {rate}");
    assert!((per_call - 1.39).abs() < 0.08, "calls per call {per_call}");
    let exhausted = n - ok;

    // Permanent failures: one attempt each, one dead letter each with attempts 1.
    for i in 0..5 {
        let calls = AtomicUsize::new(0);
        let r = policy
            .call_with_input(format!("bad order {i}"), || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<&str, _>(DepError { status: 404 }) }
            })
            .await;
        assert!(matches!(
            r,
            Err(ResilienceError::Inner(DepError { status: 404 }))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a 404 was retried");
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        stats.by_reason.get("permanent_failure"),
        Some(&5),
        "{stats:?}"
    );
    assert_eq!(
        stats
            .by_reason
            .get("retries_exhausted")
            .copied()
            .unwrap_or(0),
        exhausted,
        "{stats:?}"
    );
    let permanent: Vec<_> = queue
        .list(
            ListOptions::new()
                .filter(Filter::all().reason("permanent_failure"))
                .include_payload(true),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(permanent.len(), 5);
    for d in &permanent {
        assert_eq!(d.attempts, 1);
        assert_eq!(d.error_class, "http_404");
        assert_eq!(d.source, "flaky");
        assert!(!d.trace_id.is_empty());
        assert!(String::from_utf8_lossy(&d.payload).starts_with("bad order"));
    }
    let exhausted_letters: Vec<_> = queue
        .list(ListOptions::new().filter(Filter::all().reason("retries_exhausted")))
        .try_collect()
        .await
        .unwrap();
    assert!(
        exhausted_letters
            .iter()
            .all(|d| d.attempts == 3 && d.error_class == "http_503")
    );
}

/// What one simulated instance saw.
#[derive(Debug, Default)]
struct Seen {
    real: AtomicU64,
    fallback_open: AtomicU64,
    fallback_other: AtomicU64,
    real_after_recovery_window: AtomicU64,
    calls_in_recovery_window: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_outage_across_twenty_instances_stays_within_the_retry_budget() {
    let fleet = Fleet::on_redis(2, CONFIG).await;
    let urls = fleet.urls();
    let ns = unique_namespace("res-outage");
    let dep = Dependency::default();
    dep.down.store(true, Ordering::SeqCst);
    let phase = Arc::new(AtomicU64::new(0)); // 0 outage, 1 recovering, 2 measuring, 3 stop
    let mut instances = Vec::new();
    for i in 0..20 {
        let client = Client::connect(&urls[i % urls.len()])
            .await
            .expect("client");
        let policy = Resilience::<&'static str, DepError>::builder()
            .name("outage")
            .breaker(client.breaker(&ns, "dep"))
            .retry(
                Retry::new()
                    .max_attempts(3)
                    .backoff(Backoff::new(
                        Duration::from_millis(5),
                        Duration::from_millis(50),
                    ))
                    .budget(RetryBudget::new().fleet(&client, &ns, "dep", "retry_budget")),
            )
            .timeout(Timeout::new().attempt(Duration::from_millis(500)))
            .fallback(Fallback::with(|reason: FallbackReason| async move {
                Ok(if reason == FallbackReason::BreakerOpen {
                    "open"
                } else {
                    "other"
                })
            }))
            .build()
            .unwrap();
        let (dep, phase, seen) = (dep.clone(), phase.clone(), Arc::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut firsts = 0u64;
            while phase.load(Ordering::SeqCst) < 3 {
                let mut k = 0;
                let r = policy
                    .call(|| {
                        k += 1;
                        let dep = dep.clone();
                        async move { dep.call(k == 1, false).await }
                    })
                    .await
                    .expect("the fallback answers everything");
                firsts += 1;
                match r {
                    "real" => s.real.fetch_add(1, Ordering::SeqCst),
                    "open" => s.fallback_open.fetch_add(1, Ordering::SeqCst),
                    _ => s.fallback_other.fetch_add(1, Ordering::SeqCst),
                };
                if phase.load(Ordering::SeqCst) == 2 {
                    s.calls_in_recovery_window.fetch_add(1, Ordering::SeqCst);
                    if r == "real" {
                        s.real_after_recovery_window.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(client);
            firsts
        });
        instances.push((task, seen));
    }

    // Three seconds of outage.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outage = started.elapsed();
    let (firsts_out, retries_out) = (
        dep.firsts.load(Ordering::SeqCst),
        dep.retries.load(Ordering::SeqCst),
    );
    let admin = Client::connect(&urls[0]).await.unwrap();
    let info = admin.breaker_info(&ns, "dep").await.unwrap();
    assert_eq!(info.state, pb::BreakerState::Open as i32, "{info:?}");
    for (i, (_, seen)) in instances.iter().enumerate() {
        assert!(
            seen.fallback_open.load(Ordering::SeqCst) > 0,
            "instance {i} never saw the open breaker"
        );
    }

    // Recovery: the dependency is back; after the breaker's wait, trial calls close it.
    dep.down.store(false, Ordering::SeqCst);
    phase.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    phase.store(3, Ordering::SeqCst);
    let mut total_calls = 0;
    for (task, _) in &mut instances {
        total_calls += task.await.unwrap();
    }
    let budget = 10.0 + 10.0 * outage.as_secs_f64();
    let (open, other): (u64, u64) = instances.iter().fold((0, 0), |(o, x), (_, s)| {
        (
            o + s.fallback_open.load(Ordering::SeqCst),
            x + s.fallback_other.load(Ordering::SeqCst),
        )
    });
    println!("fallbacks: {open} for the open breaker, {other} for exhausted retries");
    println!(
        "outage {outage:?}: {total_calls} calls in all; during the outage the dependency saw \
         {firsts_out} first attempts and {retries_out} retries (fleet retry budget {budget:.0}); \
         three attempts for every call, with no breaker and no budget, would be {} calls",
        3 * 20 * (outage.as_millis() / 20)
    );
    assert!(
        retries_out as f64 <= budget,
        "{retries_out} retries reached the dependency, budget {budget}"
    );
    for (i, (_, seen)) in instances.iter().enumerate() {
        let (real, calls) = (
            seen.real_after_recovery_window.load(Ordering::SeqCst),
            seen.calls_in_recovery_window.load(Ordering::SeqCst),
        );
        assert!(
            calls > 0 && real == calls,
            "instance {i}: {real} of {calls} calls real after recovery"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_fleet_bulkhead_holds_across_two_servers_and_leases_come_back() {
    let fleet = Fleet::on_redis(2, CONFIG).await;
    let urls = fleet.urls();
    let ns = unique_namespace("res-bulk");
    let limit = Policy::concurrency(3).lease_ttl(Duration::from_secs(1));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut policies = Vec::new();
    for url in &urls {
        let client = Client::connect(url).await.unwrap();
        policies.push(
            Resilience::<(), DepError>::builder()
                .fleet_bulkhead(
                    FleetBulkhead::new(&client, &ns, "dep", limit.clone())
                        .renew_every(Duration::from_millis(250))
                        .max_wait(Duration::from_secs(20)),
                )
                .build()
                .unwrap(),
        );
    }
    // 12 calls from two "processes", each holding its lease 1.5 s (longer than the lease's
    // 1 s lifetime: only renewals keep it).
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (p, now, peak) = (policies[i % 2].clone(), in_flight.clone(), peak.clone());
            tokio::spawn(async move {
                p.call(|| {
                    let (now, peak) = (now.clone(), peak.clone());
                    async move {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1_500)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    }
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every call gets a lease in time");
    }
    let peak = peak.load(Ordering::SeqCst);
    println!("fleet bulkhead: peak in flight {peak} of 3");
    assert_eq!(peak, 3, "never more than the limit, and the limit was used");

    // A cancelled call and a panicking call give their leases back at once.
    let c = Client::connect(&urls[0]).await.unwrap();
    let p = policies[0].clone();
    // The leases below are taken just after this and live 1 s unless given back.
    let spawned = Instant::now();
    let hung = tokio::spawn(async move {
        p.call(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await
    });
    let p = policies[1].clone();
    let boom = tokio::spawn(async move {
        p.call(|| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!("the dependency's client panicked");
        })
        .await
    });
    // Both calls hold their leases (two of the three places are taken) before one is
    // cancelled and the other panics.
    while c
        .status(&ns, "dep", limit.clone(), 2)
        .await
        .unwrap()
        .allowed
    {
        assert!(
            spawned.elapsed() < Duration::from_millis(500),
            "the two calls never took their leases"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hung.abort();
    let _ = hung.await;
    assert!(boom.await.unwrap_err().is_panic());
    // All three places are free again, long before the 1 s leases would expire. The
    // releases run in the background: look (without taking a place) until they land, for
    // up to 800 ms after the leases were taken, so a busy machine gets slack while an
    // expiry could not pass for a release.
    loop {
        let free = c.status(&ns, "dep", limit.clone(), 3).await.unwrap();
        if free.allowed {
            break;
        }
        assert!(
            spawned.elapsed() < Duration::from_millis(800),
            "leases were not given back: {free:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..3 {
        let d = c
            .acquire(&ns)
            .check("dep", limit.clone())
            .send()
            .await
            .unwrap();
        assert!(d.allowed, "place {i}: leases were not given back: {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_up_to_waits_for_room_but_never_past_its_deadline() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.unwrap();
    let ns = unique_namespace("res-wait");
    let one_a_second = Policy::token_bucket(1, Duration::from_secs(1));
    let take = || client.acquire(&ns).check("k", one_a_second.clone());
    assert!(take().send().await.unwrap().allowed);
    // The next token is ~1 s away: 300 ms is not enough, and nothing sleeps.
    let t0 = Instant::now();
    let d = take().wait_up_to(Duration::from_millis(300)).await.unwrap();
    assert!(!d.allowed);
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "slept {:?}",
        t0.elapsed()
    );
    // 2.5 s is: admitted after about the retry_after.
    let t0 = Instant::now();
    let d = take()
        .wait_up_to(Duration::from_millis(2_500))
        .await
        .unwrap();
    assert!(d.allowed);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(2_000),
        "{waited:?}"
    );

    // In a policy, a denied attempt is retried after the denial's retry_after (longer
    // than the backoff), and every attempt spends rate.
    let rec = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r2 = rec.clone();
    let policy = Resilience::<u32, DepError>::builder()
        .rate_limit(RateLimit::new(&client, &ns, "p", one_a_second.clone()))
        .retry(Retry::new().max_attempts(3).backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
        )))
        .listener(FnListener(move |_: &str, e: &Event| {
            r2.lock().unwrap().push(e.clone())
        }))
        .build()
        .unwrap();
    assert_eq!(policy.call(|| async { Ok(1) }).await.unwrap(), 1);
    let t0 = Instant::now();
    assert_eq!(policy.call(|| async { Ok(2) }).await.unwrap(), 2);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "the retry did not wait for the limit: {waited:?}"
    );
    let events = rec.lock().unwrap();
    let retries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Retry { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 1, "{events:?}");
    assert!(retries[0] >= Duration::from_millis(500), "{retries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_that_opens_mid_retry_stops_the_retries() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.unwrap();
    let ns = unique_namespace("res-open");
    let policy = Resilience::<u32, DepError>::builder()
        .breaker(client.breaker(&ns, "dep").without_cache())
        .retry(Retry::new().max_attempts(5).backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
        )))
        .build()
        .unwrap();
    let calls = AtomicUsize::new(0);
    // The first attempt fails, and meanwhile an operator (or the fleet) opens the breaker.
    let r = policy
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            let c = client.clone();
            let ns = ns.clone();
            async move {
                c.set_breaker_state(&ns, "dep", pb::BreakerState::ForcedOpen)
                    .await
                    .unwrap();
                Err::<u32, _>(DepError { status: 503 })
            }
        })
        .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the open breaker was hammered"
    );
    assert!(
        matches!(r, Err(ResilienceError::BreakerOpen { .. })),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_timed_out_attempts_are_breaker_failures_bulkhead_rejections_are_not_counted() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.unwrap();
    let ns = unique_namespace("res-count");
    let policy = Resilience::<u32, DepError>::builder()
        .breaker(client.breaker(&ns, "dep"))
        .bulkhead(Bulkhead::new(1))
        .timeout(Timeout::new().attempt(Duration::from_millis(200)))
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = policy
            .call(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(1)
            })
            .await;
        assert!(matches!(
            r,
            Err(ResilienceError::Timeout {
                scope: TimeoutScope::Attempt,
                ..
            })
        ));
    }
    let p = policy.clone();
    let holder = tokio::spawn(async move {
        p.call(|| async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok(2)
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    for _ in 0..5 {
        let r = policy.call(|| async { Ok(3) }).await;
        assert!(
            matches!(r, Err(ResilienceError::BulkheadFull { .. })),
            "{r:?}"
        );
    }
    assert_eq!(holder.await.unwrap().unwrap(), 2);
    client.flush().await;
    let info = client.breaker_info(&ns, "dep").await.unwrap();
    assert_eq!((info.calls, info.failures), (4, 3), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_an_attempt_cut_by_the_overall_timeout_is_a_breaker_failure() {
    // No attempt timeout: a hung dependency behind an overall timeout alone must still
    // count as failing for the breaker (a cancelled call would be reported to nobody).
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let client = Client::connect(&fleet.urls()[0]).await.unwrap();
    let ns = unique_namespace("res-overall");
    let policy = Resilience::<u32, DepError>::builder()
        .breaker(client.breaker(&ns, "dep"))
        .retry(Retry::new().max_attempts(3))
        .timeout(Timeout::new().overall(Duration::from_millis(200)))
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = policy
            .call(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(1)
            })
            .await;
        assert!(
            matches!(
                r,
                Err(ResilienceError::Timeout {
                    scope: TimeoutScope::Overall,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    client.flush().await;
    let info = client.breaker_info(&ns, "dep").await.unwrap();
    assert_eq!((info.calls, info.failures), (3, 3), "{info:?}");
}

/// The child half of `exact_a_dead_process_lease_expires_on_the_server`: takes a fleet-wide
/// lease and aborts the process in the middle of the call (no Drop, no Release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by exact_a_dead_process_lease_expires_on_the_server"]
async fn child_process_dies_holding_a_lease() {
    let (Ok(url), Ok(ns)) = (std::env::var("FG_CHILD_URL"), std::env::var("FG_CHILD_NS")) else {
        return;
    };
    let client = Client::connect(&url).await.unwrap();
    let policy = Resilience::<(), DepError>::builder()
        .fleet_bulkhead(
            FleetBulkhead::new(
                &client,
                &ns,
                "dep",
                Policy::concurrency(1).lease_ttl(Duration::from_secs(1)),
            )
            .renew_every(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let _ = policy
        .call(|| async {
            // Long enough for a few renewals, then die.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            std::process::abort();
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_a_dead_process_lease_expires_on_the_server() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let url = fleet.urls()[0].clone();
    let ns = unique_namespace("res-dead");
    let status = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_dies_holding_a_lease",
            "--ignored",
            "--nocapture",
        ])
        .env("FG_CHILD_URL", &url)
        .env("FG_CHILD_NS", &ns)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    let died = Instant::now();
    assert!(!status.success(), "the child should have aborted");
    let client = Client::connect(&url).await.unwrap();
    let one = Policy::concurrency(1).lease_ttl(Duration::from_secs(1));
    // Held past the 1 s TTL by renewals, so still held right after the death ...
    let d = client
        .acquire(&ns)
        .check("dep", one.clone())
        .send()
        .await
        .unwrap();
    assert!(
        !d.allowed,
        "the dead process's lease was not held (renewals did not keep it?)"
    );
    // ... and free within the TTL after it.
    let d = client
        .acquire(&ns)
        .check("dep", one.clone())
        .wait_up_to(Duration::from_secs(3))
        .await
        .unwrap();
    let freed = died.elapsed();
    assert!(d.allowed, "the lease never expired");
    println!("lease of a dead process freed {freed:?} after its death (TTL 1 s)");
    assert!(freed <= Duration::from_millis(1_500), "{freed:?}");
}

/// A call cancelled while its fleet bulkhead's Acquire is on the wire (a proxy delays the
/// client's traffic 300 ms each way; the call's timeout is 100 ms) leaves no lease behind:
/// the Acquire finishes in the background and the lease it won is released, long before
/// its 30 s lifetime would end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_won_after_its_caller_gave_up_is_released() {
    use floodgate_tests::{fault_proxy::FaultProxy, server::TestServer};
    let server = TestServer::in_memory(CONFIG);
    let upstream = server
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let proxy = FaultProxy::start(upstream).await;
    let slow = Client::connect(&format!("http://{}", proxy.addr()))
        .await
        .unwrap();
    proxy.delay(Duration::from_millis(300));
    let ns = unique_namespace("res-cancel");
    let limit = Policy::concurrency(1).lease_ttl(Duration::from_secs(30));
    let policy = Resilience::<(), DepError>::builder()
        .fleet_bulkhead(FleetBulkhead::new(&slow, &ns, "dep", limit.clone()))
        .build()
        .unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), policy.call(|| async { Ok(()) })).await;
    assert!(gave_up.is_err(), "the call finished before its timeout");
    // The Acquire reaches the server ~300 ms later and takes the one place; its answer comes
    // back ~300 ms after that, and the lease is released through the proxy (~300 ms more).
    let direct = server.client().await;
    let started = Instant::now();
    let mut taken_seen = false;
    loop {
        let free = direct.status(&ns, "dep", limit.clone(), 1).await.unwrap();
        taken_seen |= !free.allowed;
        if free.allowed && taken_seen {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the lease taken after its caller gave up was never released (taken seen: {taken_seen})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "lease released {:?} after the caller gave up",
        started.elapsed()
    );
}
