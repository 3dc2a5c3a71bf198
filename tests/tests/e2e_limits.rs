//! End to end: fleet-wide exactness of every algorithm through the client crate.
//!
//! Each scenario is written once, as an async function over the servers' URLs, and runs
//! twice: against three `floodgate` servers on one Redis (`redis_fleet`) and against one
//! memory-store server (`memory`). Requests are spread round-robin over the servers, one
//! client per server, all started at once.
//!
//! Every test here counts admissions exactly, so its name starts with `exact_`: nextest
//! runs those in the serial `serial-exact` group (`.config/nextest.toml`), the harness
//! gives each server a 5 s store deadline, and every answer must have `degraded == false`
//! (DESIGN "Testing rules").
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use floodgate_client::{Client, Decision, Error, Policy};
use floodgate_tests::{
    e2e_support::{
        Fleet, acquire_spread, admitted, assert_not_degraded, clients, code_of,
        period_away_from_edge, untouched_status,
    },
    on_both_stores, unique_namespace,
};

/// Concurrent Acquires per scenario.
const N: usize = 400;
const HOUR: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

/// Configuration of every server in this file (inline policies only).
const CONFIG: &str = "inline_policies = true\n";

on_both_stores!(3, CONFIG =>
        exact_token_bucket,
    exact_fixed_window,
    exact_sliding_log,
    exact_sliding_window_within_bound,
    exact_per_second_and_per_hour_independent,
    exact_shadow_never_denies,
    exact_concurrency_leases,
    exact_lease_renew_and_expiry,
);

/// Asserts that exactly `limit` of `decisions` were admitted, that the admitted ones saw
/// every `remaining` from `limit - 1` down to 0 exactly once (each decision saw the state
/// the one before it left: no two were decided against the same state), and that every
/// denial says when to retry.
#[track_caller]
fn assert_exactly(decisions: &[Decision], limit: u64, what: &str) {
    assert_not_degraded(decisions);
    assert_eq!(
        admitted(decisions),
        limit as usize,
        "{what}: admitted {} of {}, want exactly {limit}",
        admitted(decisions),
        decisions.len()
    );
    let mut remaining: Vec<u64> = decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.checks[0].remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..limit).collect::<Vec<_>>(),
        "{what}: the admitted requests' `remaining` must count down once each"
    );
    for d in decisions {
        assert_eq!(d.checks.len(), 1, "{what}: one check per request");
        assert_eq!(d.checks[0].limit, limit, "{what}: CheckResult.limit");
        assert_eq!(d.checks[0].allowed, d.allowed, "{what}: check vs overall");
        if !d.allowed {
            assert_eq!(d.checks[0].remaining, 0, "{what}: remaining of a denial");
            assert!(
                d.retry_after > Duration::ZERO && d.checks[0].retry_after > Duration::ZERO,
                "{what}: a denial must say when to retry: {d:?}"
            );
        }
    }
}

/// Token bucket, 50 per hour: one token refills every 72 s, far longer than the test, so
/// exactly the burst (50) is admitted.
async fn exact_token_bucket(urls: &[String]) {
    let ns = unique_namespace("e2e-tb");
    let cs = clients(urls).await;
    let policy = Policy::token_bucket(50, HOUR);
    let ds = acquire_spread(&cs, N, |c, _| c.acquire(&ns).check("k", policy.clone())).await;
    assert_exactly(&ds, 50, "token bucket 50/h");
    // Nothing is left for anyone, on any server.
    for c in &cs {
        let s = c.status(&ns, "k", policy.clone(), 1).await.unwrap();
        assert!(!s.allowed && s.remaining == 0, "status after: {s:?}");
    }
}

/// Fixed window, 50 per window; the window is chosen so that no edge falls in the test.
async fn exact_fixed_window(urls: &[String]) {
    let ns = unique_namespace("e2e-fw");
    let cs = clients(urls).await;
    let period = period_away_from_edge(HOUR, Duration::from_secs(120));
    let policy = Policy::fixed_window(50, period);
    let ds = acquire_spread(&cs, N, |c, _| c.acquire(&ns).check("k", policy.clone())).await;
    assert_exactly(&ds, 50, "fixed window 50/window");
}

/// Sliding log, 50 per hour: exact over any hour.
async fn exact_sliding_log(urls: &[String]) {
    let ns = unique_namespace("e2e-sl");
    let cs = clients(urls).await;
    let policy = Policy::sliding_log(50, HOUR);
    let ds = acquire_spread(&cs, N, |c, _| c.acquire(&ns).check("k", policy.clone())).await;
    assert_exactly(&ds, 50, "sliding log 50/h");
}

/// Sliding window, 50 per period: within the bound `core/src/sliding_window.rs`
/// documents — a burst lasting `d` admits at most `limit * (1 + d / period)` — and never
/// fewer than `limit` on a fresh key. The period keeps clear of a window edge, where the
/// estimate is exact, so this is in practice exactly 50.
async fn exact_sliding_window_within_bound(urls: &[String]) {
    let ns = unique_namespace("e2e-sw");
    let cs = clients(urls).await;
    let limit = 50u64;
    let period = period_away_from_edge(HOUR, Duration::from_secs(120));
    let policy = Policy::sliding_window(limit, period);
    let start = Instant::now();
    let ds = acquire_spread(&cs, N, |c, _| c.acquire(&ns).check("k", policy.clone())).await;
    let d = start.elapsed();
    assert_not_degraded(&ds);
    let bound = (limit as f64 * (1.0 + d.as_secs_f64() / period.as_secs_f64())).floor() as usize;
    let got = admitted(&ds);
    assert!(
        (limit as usize..=bound).contains(&got),
        "sliding window {limit}/{period:?}: admitted {got}, documented bound is \
         [{limit}, {bound}] for a burst of {d:?}"
    );
    for d in ds.iter().filter(|d| !d.allowed) {
        assert!(
            d.retry_after > Duration::ZERO,
            "denial without retry_after: {d:?}"
        );
    }
}

/// A per-second and a per-hour limit on the same key (same algorithm and limit, only the
/// period differs) keep separate state: exhausting the hourly one leaves the per-second
/// one full, and spending the per-second one does not move the hourly one.
async fn exact_per_second_and_per_hour_independent(urls: &[String]) {
    let ns = unique_namespace("e2e-periods");
    let cs = clients(urls).await;
    let hourly = Policy::token_bucket(10, HOUR);
    let per_second = Policy::token_bucket(10, SECOND);

    let ds = acquire_spread(&cs, N / 2, |c, _| c.acquire(&ns).check("k", hourly.clone())).await;
    assert_exactly(&ds, 10, "hourly 10/h");

    // The per-second bucket on the same key is full: 10 at once, plus what refills (10/s)
    // while the burst lasts.
    let start = Instant::now();
    let ds = acquire_spread(&cs, N / 2, |c, _| {
        c.acquire(&ns).check("k", per_second.clone())
    })
    .await;
    let d = start.elapsed();
    assert_not_degraded(&ds);
    let got = admitted(&ds);
    let most = 10 + (10.0 * d.as_secs_f64()).ceil() as usize;
    assert!(
        (10..=most).contains(&got),
        "per-second 10/s on a key whose hourly limit is spent: admitted {got}, want 10..={most}"
    );
    let first = ds.iter().find(|d| d.allowed).unwrap();
    let hourly_ref = cs[0]
        .status(&ns, "k", hourly.clone(), 1)
        .await
        .unwrap()
        .policy;
    assert_ne!(
        first.checks[0].policy, hourly_ref,
        "the two policies must have different fingerprints"
    );

    // The hourly limit is still spent, untouched by the per-second traffic.
    for c in &cs {
        let s = c.status(&ns, "k", hourly.clone(), 1).await.unwrap();
        assert!(!s.allowed && s.remaining == 0, "hourly after: {s:?}");
        let d = c
            .acquire(&ns)
            .check("k", hourly.clone())
            .send()
            .await
            .unwrap();
        assert!(!d.allowed && !d.degraded, "hourly must stay denied: {d:?}");
    }
}

/// A shadow policy is counted and reports what it would decide, but never denies: 400
/// requests with a shadow 5/h check next to a roomy real one are all admitted; the shadow
/// check says allowed for exactly 5 of them.
async fn exact_shadow_never_denies(urls: &[String]) {
    let ns = unique_namespace("e2e-shadow");
    let cs = clients(urls).await;
    let shadow = Policy::sliding_log(5, HOUR).shadow();
    let real = Policy::token_bucket(1000, HOUR);
    let ds = acquire_spread(&cs, N, |c, _| {
        c.acquire(&ns)
            .check("k", shadow.clone())
            .check("k", real.clone())
    })
    .await;
    assert_not_degraded(&ds);
    assert_eq!(admitted(&ds), N, "a shadow policy must never deny");
    let shadow_yes = ds.iter().filter(|d| d.checks[0].allowed).count();
    assert_eq!(
        shadow_yes, 5,
        "the shadow check counts exactly like a real one"
    );
    for d in &ds {
        assert!(
            d.checks[0].shadow && !d.checks[1].shadow,
            "shadow flags: {d:?}"
        );
        assert_eq!(d.retry_after, Duration::ZERO, "admitted: no retry_after");
        assert!(d.checks[1].allowed);
    }
    // The real check was consumed by all 400.
    let mut real_remaining: Vec<u64> = ds.iter().map(|d| d.checks[1].remaining).collect();
    real_remaining.sort_unstable();
    assert_eq!(real_remaining, (600..1000).collect::<Vec<_>>());

    // A shadow check alone, past its limit, still admits.
    let window = period_away_from_edge(HOUR, Duration::from_secs(120));
    let alone = Policy::fixed_window(1, window).shadow();
    for i in 0..3 {
        let d = cs[i % cs.len()]
            .acquire(&ns)
            .check("alone", alone.clone())
            .send()
            .await
            .unwrap();
        assert!(d.allowed && !d.degraded, "shadow alone #{i}: {d:?}");
        assert_eq!(d.checks[0].allowed, i == 0, "shadow alone #{i}: {d:?}");
    }
}

/// Releases `leases` of `key`, spread over the clients; each must report it released.
async fn release_all(cs: &[Client], ns: &str, key: &str, leases: &[String], expect: bool) {
    for (i, l) in leases.iter().enumerate() {
        let released = cs[i % cs.len()].release(ns, key, l).await.unwrap();
        assert_eq!(released, expect, "release of {l}");
    }
}

/// Concurrency 10: 400 at once take exactly 10 leases; releasing them frees every slot
/// (a second release is a no-op), and the next 400 again take exactly 10.
async fn exact_concurrency_leases(urls: &[String]) {
    let ns = unique_namespace("e2e-cc");
    let cs = clients(urls).await;
    let policy = Policy::concurrency(10);
    for round in 0..2 {
        let ds = acquire_spread(&cs, N, |c, _| c.acquire(&ns).check("k", policy.clone())).await;
        assert_exactly(&ds, 10, &format!("concurrency 10, round {round}"));
        let leases: Vec<String> = ds
            .iter()
            .flat_map(|d| d.leases())
            .map(String::from)
            .collect();
        assert_eq!(leases.len(), 10, "one lease per admitted request");
        assert_eq!(
            leases.iter().collect::<HashSet<_>>().len(),
            10,
            "lease ids must be distinct"
        );
        for d in ds.iter().filter(|d| !d.allowed) {
            assert_eq!(d.leases().count(), 0, "a denial takes no lease: {d:?}");
        }
        let s = cs[0].status(&ns, "k", policy.clone(), 1).await.unwrap();
        assert!(!s.allowed && s.remaining == 0, "all slots held: {s:?}");

        release_all(&cs, &ns, "k", &leases, true).await;
        release_all(&cs, &ns, "k", &leases, false).await;
        let s = cs[0].status(&ns, "k", policy.clone(), 1).await.unwrap();
        let fresh = untouched_status(&cs[0], &ns, &policy).await;
        assert!(s.allowed, "all slots free again: {s:?}");
        assert_eq!(s.remaining, fresh.remaining, "all slots free again: {s:?}");
    }
}

/// Polls an Acquire of `policy` on `key` until admitted (at most 15 s); returns the
/// decision and when its answer arrived.
async fn acquire_when_free(
    c: &Client,
    ns: &str,
    key: &str,
    policy: &Policy,
) -> (Decision, Instant) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = c
            .acquire(ns)
            .check(key, policy.clone())
            .send()
            .await
            .unwrap();
        let at = Instant::now();
        assert!(!d.degraded, "degraded: {d:?}");
        if d.allowed {
            return (d, at);
        }
        assert!(at < deadline, "no slot was freed within 15 s: {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Renew extends a lease; an unrenewed lease expires and frees its slot; an expired lease
/// can be neither renewed nor released. Time bounds are one-sided (a slot is never freed
/// *before* its lease's TTL, and it is freed within a generous 15 s) so a loaded machine
/// cannot make this flaky.
async fn exact_lease_renew_and_expiry(urls: &[String]) {
    let ns = unique_namespace("e2e-lease");
    let cs = clients(urls).await;
    let n = cs.len();
    let margin = Duration::from_millis(100);

    // 1. Policy lease_ttl 300 ms, one slot.
    let short = Policy::concurrency(1).lease_ttl(Duration::from_millis(300));
    let t0 = Instant::now();
    let first = cs[0]
        .acquire(&ns)
        .check("short", short.clone())
        .send()
        .await
        .unwrap();
    assert!(first.allowed && !first.degraded, "{first:?}");
    let lease = first.leases().next().unwrap().to_owned();
    let again = cs[1 % n]
        .acquire(&ns)
        .check("short", short.clone())
        .send()
        .await
        .unwrap();
    assert!(!again.degraded);
    if again.allowed {
        // Only possible when the machine stalled past the TTL.
        assert!(t0.elapsed() >= Duration::from_millis(300) - margin);
    } else {
        assert!(
            again.checks[0].retry_after <= Duration::from_millis(300),
            "retry_after of a 300 ms lease: {again:?}"
        );
        let (_, at) = acquire_when_free(&cs[2 % n], &ns, "short", &short).await;
        assert!(
            at.duration_since(t0) >= Duration::from_millis(300) - margin,
            "a 300 ms lease freed its slot after {:?}",
            at.duration_since(t0)
        );
    }
    let e = cs[0].renew(&ns, "short", &lease, None).await.unwrap_err();
    assert_eq!(
        code_of(&e),
        tonic::Code::NotFound,
        "renew of an expired lease: {e}"
    );
    assert!(!cs[1 % n].release(&ns, "short", &lease).await.unwrap());

    // 2. Policy lease_ttl 60 s, two slots: renew one long, renew the other short.
    let long = Policy::concurrency(2);
    let a = cs[0]
        .acquire(&ns)
        .check("long", long.clone())
        .send()
        .await
        .unwrap();
    let b = cs[1 % n]
        .acquire(&ns)
        .check("long", long.clone())
        .send()
        .await
        .unwrap();
    assert!(a.allowed && b.allowed && !a.degraded && !b.degraded);
    let (la, lb) = (
        a.leases().next().unwrap().to_owned(),
        b.leases().next().unwrap().to_owned(),
    );
    let full = cs[2 % n]
        .acquire(&ns)
        .check("long", long.clone())
        .send()
        .await
        .unwrap();
    assert!(!full.allowed && !full.degraded, "{full:?}");

    let extended = cs[2 % n]
        .renew(&ns, "long", &la, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert!(
        extended > Duration::from_secs(100) && extended <= Duration::from_secs(120),
        "renew to 120 s granted {extended:?}"
    );
    let default = cs[0].renew(&ns, "long", &la, None).await.unwrap();
    assert!(
        default > Duration::from_secs(50) && default <= Duration::from_secs(60),
        "renew without ttl uses the policy's 60 s: {default:?}"
    );
    let extended = cs[0]
        .renew(&ns, "long", &la, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert!(extended > Duration::from_secs(100));

    let t1 = Instant::now();
    let shortened = cs[1 % n]
        .renew(&ns, "long", &lb, Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(shortened <= Duration::from_millis(300), "{shortened:?}");
    let (c, at) = acquire_when_free(&cs[2 % n], &ns, "long", &long).await;
    assert!(
        at.duration_since(t1) >= Duration::from_millis(300) - margin,
        "a lease renewed to 300 ms freed its slot after {:?}",
        at.duration_since(t1)
    );
    // The renewed lease still holds the other slot.
    let d = cs[0]
        .acquire(&ns)
        .check("long", long.clone())
        .send()
        .await
        .unwrap();
    assert!(
        !d.allowed && !d.degraded,
        "the lease renewed to 120 s must hold: {d:?}"
    );
    let e = cs[0].renew(&ns, "long", &lb, None).await.unwrap_err();
    assert_eq!(code_of(&e), tonic::Code::NotFound, "{e}");
    assert!(matches!(e, Error::NotFound(_)));

    // Clean up: both live leases release once.
    let lc = c.leases().next().unwrap().to_owned();
    release_all(&cs, &ns, "long", &[la, lc], true).await;
    let s = cs[0].status(&ns, "long", long.clone(), 1).await.unwrap();
    let fresh = untouched_status(&cs[0], &ns, &long).await;
    assert!(
        s.allowed && s.remaining == fresh.remaining,
        "{s:?} vs {fresh:?}"
    );
}
