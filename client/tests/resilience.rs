//! The resilience kit without a server: retry, backoff, budget, timeouts, bulkhead,
//! fallback, events, the builder's refusals and the tower layer, all on tokio's paused
//! clock with seeded jitter (no real sleeps).
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use floodgate_client::resilience::*;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
struct HttpError {
    status: u16,
    retry_after: Option<Duration>,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)
    }
}

fn e503() -> HttpError {
    HttpError {
        status: 503,
        retry_after: None,
    }
}

fn fixed_backoff(ms: u64) -> Backoff {
    Backoff::new(Duration::from_millis(ms), Duration::from_secs(10)).jitter(Jitter::None)
}

/// Records every event.
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Listener for Recorder {
    fn on_event(&self, _policy: &str, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.name() == name)
            .count()
    }
}

#[test]
fn seeded_jitter_is_deterministic_and_bounded() {
    let b = |seed| {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
            .jitter_source(SeededJitter::new(seed))
    };
    let (x, y) = (b(42), b(42));
    for n in 1..20 {
        let d = x.delay(n, Duration::ZERO);
        assert_eq!(d, y.delay(n, Duration::ZERO));
        let cap =
            Duration::from_millis(100 * (1u64 << (n - 1).min(10))).min(Duration::from_secs(2));
        assert!(d <= cap, "full jitter {d:?} above {cap:?} at retry {n}");
    }
    let dec = b(7).jitter(Jitter::Decorrelated);
    let mut prev = Duration::ZERO;
    for n in 1..50 {
        let d = dec.delay(n, prev);
        assert!(
            d >= Duration::from_millis(100) && d <= Duration::from_secs(2),
            "{d:?}"
        );
        assert!(d <= (prev * 3).max(Duration::from_millis(100)));
        prev = d;
    }
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff_permanent_ones_are_not() {
    let rec = Recorder::default();
    let policy = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(4)
                .backoff(fixed_backoff(100))
                .retry_if(|e: &HttpError| e.status >= 500),
        )
        .listener(rec.clone())
        .build()
        .unwrap();
    // Fails twice with 503, then succeeds: attempts at 0, 100 ms, 300 ms.
    let calls = AtomicU32::new(0);
    let t0 = Instant::now();
    let r = policy
        .call(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(e503()) } else { Ok(7) } }
        })
        .await;
    assert_eq!(r.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
    assert_eq!(rec.count("retry"), 2);
    assert_eq!(rec.count("success"), 1);

    // A 404 is permanent: one attempt, returned as is.
    let calls = AtomicU32::new(0);
    let r = policy
        .call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<u32, _>(HttpError {
                    status: 404,
                    retry_after: None,
                })
            }
        })
        .await;
    assert!(matches!(
        r,
        Err(ResilienceError::Inner(HttpError { status: 404, .. }))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Always 503: four attempts, then RetriesExhausted with the last error.
    let r = policy.call(|| async { Err::<u32, _>(e503()) }).await;
    match r {
        Err(ResilienceError::RetriesExhausted {
            attempts,
            stop,
            last,
        }) => {
            assert_eq!((attempts, stop), (4, RetryStop::MaxAttempts));
            assert!(matches!(
                *last,
                ResilienceError::Inner(HttpError { status: 503, .. })
            ));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn result_predicate_and_server_hint_set_the_wait() {
    let policy = Resilience::<u16, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(fixed_backoff(10))
                .retry_on_result(|status: &u16| *status == 503)
                .retry_after_hint(|e: &HttpError| e.retry_after),
        )
        .build()
        .unwrap();
    // A 503 *result* is retried; the last one is returned when retries end.
    let t0 = Instant::now();
    assert_eq!(policy.call(|| async { Ok(503) }).await.unwrap(), 503);
    assert_eq!(t0.elapsed(), Duration::from_millis(10 + 20));

    // Retry-After: 2 s is the minimum wait, though the backoff says 10 ms.
    let calls = AtomicU32::new(0);
    let t0 = Instant::now();
    let r = policy
        .call(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(HttpError {
                        status: 429,
                        retry_after: Some(Duration::from_secs(2)),
                    })
                } else {
                    Ok(200)
                }
            }
        })
        .await;
    assert_eq!(r.unwrap(), 200);
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_retries_before_it_would_pass() {
    let policy = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(100)
                .backoff(fixed_backoff(100))
                .deadline(Duration::from_millis(1_000)),
        )
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = policy.call(|| async { Err::<u32, _>(e503()) }).await;
    // Delays 100, 200, 400 end at 700 ms; the next (800 ms) would end at 1.5 s.
    match r {
        Err(ResilienceError::RetriesExhausted { attempts, stop, .. }) => {
            assert_eq!((attempts, stop), (4, RetryStop::Deadline));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t0.elapsed(), Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_caps_retries_at_a_share_of_first_attempts() {
    let budget = RetryBudget::new().ratio(0.1).min_per_sec(0);
    let policy = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(fixed_backoff(1))
                .budget(budget),
        )
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (p, c) = (policy.clone(), calls.clone());
            tokio::spawn(async move {
                p.call(|| {
                    c.fetch_add(1, Ordering::SeqCst);
                    async { Err::<u32, _>(e503()) }
                })
                .await
            })
        })
        .collect();
    let mut by_budget = 0;
    for t in tasks {
        if let Err(ResilienceError::RetriesExhausted {
            stop: RetryStop::Budget,
            ..
        }) = t.await.unwrap()
        {
            by_budget += 1;
        }
    }
    let calls = calls.load(Ordering::SeqCst);
    // 200 first attempts may bring at most 20 retries (without a budget: 400).
    assert!(calls <= 220, "dependency saw {calls} calls");
    assert!(calls >= 200);
    assert!(
        by_budget >= 180,
        "{by_budget} calls were stopped by the budget"
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_transient_overall_timeout_ends_the_call() {
    let rec = Recorder::default();
    let policy = Resilience::<u32, HttpError>::builder()
        .retry(Retry::new().max_attempts(3).backoff(fixed_backoff(10)))
        .timeout(
            Timeout::new()
                .attempt(Duration::from_millis(100))
                .overall(Duration::from_secs(1)),
        )
        .listener(rec.clone())
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let r = policy
        .call(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok(1)
            }
        })
        .await;
    assert_eq!(r.unwrap(), 1);
    assert_eq!(rec.count("timeout"), 1);

    let slow = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(50)
                .backoff(fixed_backoff(200))
                .retry_if(|_| true),
        )
        .timeout(
            Timeout::new()
                .attempt(Duration::from_millis(300))
                .overall(Duration::from_millis(500)),
        )
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = slow.call(|| async { Err::<u32, _>(e503()) }).await;
    // Attempts at 0 and 200 ms; the next would start at 600 ms (the backoff doubles),
    // past the overall deadline, so the retries stop at 200 ms instead of sleeping until
    // the overall timeout cuts the wait.
    assert!(
        matches!(
            r,
            Err(ResilienceError::RetriesExhausted {
                attempts: 2,
                stop: RetryStop::Deadline,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(t0.elapsed(), Duration::from_millis(200));

    // A slow attempt is cut by the overall timeout, exactly at 500 ms.
    let t0 = Instant::now();
    let r = slow
        .call(|| async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Err::<u32, _>(e503())
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
    assert_eq!(t0.elapsed(), Duration::from_millis(500));

    // A denial asking for more time than is left: no blind wait until the overall timeout,
    // the caller (or the fallback) gets the denial and its retry_after at once.
    let hinted = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(fixed_backoff(10))
                .retry_after_hint(|e: &HttpError| e.retry_after),
        )
        .timeout(Timeout::new().overall(Duration::from_secs(2)))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = hinted
        .call(|| async {
            Err::<u32, _>(HttpError {
                status: 429,
                retry_after: Some(Duration::from_secs(30)),
            })
        })
        .await;
    assert!(
        matches!(
            r,
            Err(ResilienceError::RetriesExhausted {
                attempts: 1,
                stop: RetryStop::Deadline,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_limits_in_flight_and_gets_places_back_from_cancelled_and_panicked_calls() {
    let bulkhead = Bulkhead::new(3).max_wait(Duration::from_millis(50));
    let policy = Resilience::<u32, HttpError>::builder()
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (p, now, peak) = (policy.clone(), now.clone(), peak.clone());
            tokio::spawn(async move {
                p.call(|| {
                    let (now, peak) = (now.clone(), peak.clone());
                    async move {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok(1)
                    }
                })
                .await
            })
        })
        .collect();
    let mut full = 0;
    for t in tasks {
        if let Err(ResilienceError::BulkheadFull {
            scope: BulkheadScope::Local,
            ..
        }) = t.await.unwrap()
        {
            full += 1;
        }
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    // 3 run at 0 ms, 3 more at 30 ms (within the 50 ms wait), the other 4 are refused at 50 ms.
    assert_eq!(full, 4);
    assert_eq!(bulkhead.available(), 3);

    // A cancelled call gives its place back.
    let p = policy.clone();
    let hung = tokio::spawn(async move {
        p.call(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(1)
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(bulkhead.available(), 2);
    hung.abort();
    let _ = hung.await;
    assert_eq!(bulkhead.available(), 3);

    // So does a panicking one.
    let p = policy.clone();
    let boom = tokio::spawn(async move {
        p.call(|| async {
            if true {
                panic!("the dependency's client panicked");
            }
            Ok(1)
        })
        .await
    });
    assert!(boom.await.unwrap_err().is_panic());
    assert_eq!(bulkhead.available(), 3);
}

#[tokio::test(start_paused = true)]
async fn fallback_is_told_why_and_does_not_replace_permanent_errors() {
    let rec = Recorder::default();
    let policy = Resilience::<String, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(2)
                .backoff(fixed_backoff(1))
                .retry_if(|e: &HttpError| e.status >= 500),
        )
        .fallback(Fallback::with(|reason: FallbackReason| async move {
            Ok(format!("fallback: {}", reason.as_str()))
        }))
        .listener(rec.clone())
        .build()
        .unwrap();
    let r = policy.call(|| async { Err::<String, _>(e503()) }).await;
    assert_eq!(r.unwrap(), "fallback: retries_exhausted");
    assert_eq!(rec.count("fallback"), 1);
    let r = policy
        .call(|| async {
            Err::<String, _>(HttpError {
                status: 400,
                retry_after: None,
            })
        })
        .await;
    assert!(matches!(r, Err(ResilienceError::Inner(_))));

    let full = Resilience::<&str, HttpError>::builder()
        .bulkhead(Bulkhead::new(1))
        .fallback(Fallback::value("busy"))
        .build()
        .unwrap();
    let f2 = full.clone();
    let holder = tokio::spawn(async move {
        f2.call(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok("done")
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(full.call(|| async { Ok("ran") }).await.unwrap(), "busy");
    assert_eq!(holder.await.unwrap().unwrap(), "done");
}

#[test]
fn the_builder_refuses_contradictions() {
    let b = || Resilience::<u32, HttpError>::builder();
    let e = b()
        .timeout(
            Timeout::new()
                .attempt(Duration::from_secs(2))
                .overall(Duration::from_secs(1)),
        )
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::AttemptTimeoutExceedsOverall { .. }));
    let e = b()
        .retry(Retry::new().deadline(Duration::from_secs(5)))
        .timeout(Timeout::new().overall(Duration::from_secs(1)))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::RetryDeadlineExceedsOverall { .. }));
    for (builder, field) in [
        (b().retry(Retry::new().max_attempts(0)), "max_attempts"),
        (
            b().retry(Retry::new().backoff(Backoff::default().multiplier(0.5))),
            "backoff.multiplier",
        ),
        (
            b().retry(
                Retry::new().backoff(Backoff::new(Duration::from_secs(5), Duration::from_secs(1))),
            ),
            "backoff.base",
        ),
        (
            b().retry(Retry::new().budget(RetryBudget::new().ratio(1.5))),
            "budget.ratio",
        ),
        (
            b().retry(Retry::new().budget(RetryBudget::new().window(Duration::ZERO))),
            "budget.window",
        ),
        (b().bulkhead(Bulkhead::new(0)), "bulkhead.max_concurrent"),
        (
            b().timeout(Timeout::new().attempt(Duration::ZERO)),
            "timeout",
        ),
        (b().name(""), "name"),
    ] {
        match builder.build() {
            Err(BuildError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
}

/// A dependency failing 30% of calls (seeded), behind 3 attempts with a generous budget:
/// the success rate is 1 - 0.3^3 = 97.3%, and the dependency sees 1 + 0.3 + 0.09 = 1.39
/// calls per call.
#[tokio::test(start_paused = true)]
async fn flaky_dependency_success_rate_matches_the_arithmetic() {
    let policy = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(fixed_backoff(1))
                .budget(RetryBudget::new().ratio(1.0)),
        )
        .build()
        .unwrap();
    let rng = SeededJitter::new(2026);
    let calls = AtomicU32::new(0);
    let n = 20_000;
    let mut ok = 0;
    for _ in 0..n {
        let r = policy
            .call(|| {
                calls.fetch_add(1, Ordering::Relaxed);
                let fail = rng.next_unit() < 0.3;
                async move { if fail { Err(e503()) } else { Ok(1) } }
            })
            .await;
        ok += u32::from(r.is_ok());
    }
    let rate = f64::from(ok) / f64::from(n);
    let per_call = f64::from(calls.load(Ordering::Relaxed)) / f64::from(n);
    assert!((rate - 0.973).abs() < 0.005, "success rate {rate}");
    assert!((per_call - 1.39).abs() < 0.02, "calls per call {per_call}");
}

#[tokio::test(start_paused = true)]
async fn the_policy_is_a_tower_layer() {
    use tower::{Service, ServiceExt};
    let policy = Resilience::<String, HttpError>::builder()
        .retry(Retry::new().max_attempts(3).backoff(fixed_backoff(5)))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let inner = tower::service_fn(move |name: String| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err(e503())
            } else {
                Ok(format!("hello {name}"))
            }
        }
    });
    let mut svc = tower::Layer::layer(&ResilienceLayer::new(policy), inner);
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call("fleet".into())
        .await
        .unwrap();
    assert_eq!(answer, "hello fleet");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn each_pattern_is_a_layer_on_its_own() {
    use tower::{Service, ServiceExt};
    let slow = tower::service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<u32, HttpError>(1)
    });
    let layer = Timeout::new()
        .attempt(Duration::from_millis(100))
        .into_layer::<u32, HttpError>()
        .unwrap();
    let mut svc = tower::Layer::layer(&layer, slow);
    let t0 = Instant::now();
    let r = svc.ready().await.unwrap().call(()).await;
    assert!(matches!(
        r,
        Err(ResilienceError::Timeout {
            scope: TimeoutScope::Attempt,
            ..
        })
    ));
    assert_eq!(t0.elapsed(), Duration::from_millis(100));

    let failing = tower::service_fn(|_: ()| async { Err::<&str, _>(e503()) });
    let layer = Retry::new().max_attempts(1).into_layer().unwrap();
    let mut svc = tower::Layer::layer(&layer, failing);
    assert!(svc.ready().await.unwrap().call(()).await.is_err());
    let layer = Fallback::value("spare").into_layer().unwrap();
    let mut svc = tower::Layer::layer(
        &layer,
        tower::service_fn(|_: ()| async { Ok::<&str, HttpError>("real") }),
    );
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "real");
    assert!(
        Bulkhead::new(0).into_layer::<u32, HttpError>().is_err(),
        "bad input is a typed error"
    );
}

/// Counts every counter by `name{event}`.
#[derive(Debug, Default)]
struct CountingRecorder(
    Mutex<std::collections::HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
);

impl metrics::Recorder for CountingRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let event = key
            .labels()
            .find(|l| l.key() == "event")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        let name = format!("{}{{{event}}}", key.name());
        let slot = self.0.lock().unwrap().entry(name).or_default().clone();
        metrics::Counter::from_arc(slot)
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn events_are_counted_as_metrics() {
    let recorder = CountingRecorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let policy = Resilience::<u32, HttpError>::builder()
                .name("metered")
                .retry(Retry::new().max_attempts(3).backoff(fixed_backoff(1)))
                .build()
                .unwrap();
            let calls = AtomicU32::new(0);
            let r = policy
                .call(|| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move { if n < 2 { Err(e503()) } else { Ok(1) } }
                })
                .await;
            assert_eq!(r.unwrap(), 1);
        })
    });
    let counts = recorder.0.lock().unwrap();
    let get = |e: &str| {
        counts
            .get(&format!("floodgate_client_resilience_events_total{{{e}}}"))
            .map_or(0, |c| c.load(Ordering::SeqCst))
    };
    assert_eq!(
        (get("attempt"), get("failure"), get("retry"), get("success")),
        (3, 2, 2, 1)
    );
}

/// A client of a fleet that is not there (connects lazily; every call fails).
fn unreachable_client() -> floodgate_client::Client {
    floodgate_client::Client::connect_many(["http://127.0.0.1:9"]).expect("a valid endpoint")
}

#[tokio::test(start_paused = true)]
async fn extreme_durations_never_panic() {
    // A retry deadline too far to represent is no deadline (it used to overflow `Instant`).
    let far = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(2)
                .backoff(fixed_backoff(10))
                .deadline(Duration::MAX),
        )
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let r = far
        .call(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(e503()) } else { Ok(7) } }
        })
        .await;
    assert_eq!(r.unwrap(), 7);

    // A server hint of Duration::MAX with a deadline: the retry stops at once, no panic.
    let hinted = Resilience::<u32, HttpError>::builder()
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(fixed_backoff(10))
                .deadline(Duration::from_secs(1))
                .retry_after_hint(|e: &HttpError| e.retry_after),
        )
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = hinted
        .call(|| async {
            Err::<u32, _>(HttpError {
                status: 503,
                retry_after: Some(Duration::MAX),
            })
        })
        .await;
    assert!(
        matches!(
            r,
            Err(ResilienceError::RetriesExhausted {
                attempts: 1,
                stop: RetryStop::Deadline,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn unbounded_waits_for_floodgate_give_typed_errors_not_panics() {
    let client = unreachable_client();
    let limit = floodgate_client::Policy::token_bucket(1, Duration::from_secs(1));
    const BOUND: Duration = Duration::from_secs(30);
    // wait_up_to(Duration::MAX) used to panic computing its deadline.
    let r = tokio::time::timeout(
        BOUND,
        client
            .acquire("ns")
            .check("k", limit.clone())
            .wait_up_to(Duration::MAX),
    )
    .await
    .expect("an unreachable fleet is reported");
    assert!(r.is_err(), "{r:?}");

    let policy = Resilience::<u32, HttpError>::builder()
        .rate_limit(RateLimit::new(&client, "ns", "k", limit.clone()).max_wait(Duration::MAX))
        .build()
        .unwrap();
    let r = tokio::time::timeout(BOUND, policy.call(|| async { Ok(1) }))
        .await
        .expect("an unreachable fleet is reported");
    assert!(matches!(r, Err(ResilienceError::Floodgate(_))), "{r:?}");

    // The fleet bulkhead's max_wait too.
    let policy = Resilience::<u32, HttpError>::builder()
        .fleet_bulkhead(
            FleetBulkhead::new(&client, "ns", "k", floodgate_client::Policy::concurrency(1))
                .max_wait(Duration::MAX),
        )
        .build()
        .unwrap();
    let r = tokio::time::timeout(BOUND, policy.call(|| async { Ok(1) }))
        .await
        .expect("an unreachable fleet is reported");
    assert!(matches!(r, Err(ResilienceError::Floodgate(_))), "{r:?}");
}

#[tokio::test]
async fn a_retry_the_fleet_budget_refuses_does_not_spend_the_local_budget() {
    // Local room: 1 a second over 10 s = 10 retries, no share of first attempts.
    let budget = RetryBudget::new().ratio(0.0).min_per_sec(1).fleet(
        &unreachable_client(),
        "ns",
        "retry_budget",
        floodgate_client::Policy::token_bucket(1, Duration::from_secs(1)),
    );
    for _ in 0..15 {
        assert!(!budget.try_withdraw().await, "floodgate cannot be asked");
    }
    // No retry was made, so the local budget is untouched.
    assert!(budget.try_withdraw_local());
}

#[tokio::test(start_paused = true)]
async fn an_attempt_the_overall_timeout_cuts_is_a_timed_out_attempt() {
    // Only an overall timeout: a hung attempt ends at it as a timeout the attempt's own
    // steps (the breaker among them) see, with exactly one timeout event, and no retry.
    let rec = Recorder::default();
    let policy = Resilience::<u32, HttpError>::builder()
        .retry(Retry::new().max_attempts(3).backoff(fixed_backoff(10)))
        .timeout(Timeout::new().overall(Duration::from_millis(500)))
        .listener(rec.clone())
        .build()
        .unwrap();
    let t0 = Instant::now();
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
                after,
            }) if after == Duration::from_millis(500)
        ),
        "{r:?}"
    );
    assert_eq!(t0.elapsed(), Duration::from_millis(500));
    let events = rec.0.lock().unwrap().clone();
    assert!(
        events.contains(&Event::Failure {
            attempt: 1,
            kind: "timeout",
            transient: false,
        }),
        "{events:?}"
    );
    assert_eq!(rec.count("timeout"), 1, "{events:?}");
    assert_eq!(rec.count("attempt"), 1, "{events:?}");
}

#[tokio::test]
async fn a_fleet_bulkhead_renews_within_its_leases_lifetime() {
    let client = unreachable_client();
    let short = floodgate_client::Policy::concurrency(5).lease_ttl(Duration::from_secs(3));
    // The default renewal (20 s) would let a 3 s lease expire mid-call: it follows the TTL.
    let b = FleetBulkhead::new(&client, "ns", "k", short.clone());
    assert!(
        Resilience::<u32, HttpError>::builder()
            .fleet_bulkhead(b)
            .build()
            .is_ok()
    );
    // An explicit renewal no shorter than the lease is a contradiction.
    let err = Resilience::<u32, HttpError>::builder()
        .fleet_bulkhead(
            FleetBulkhead::new(&client, "ns", "k", short).renew_every(Duration::from_secs(3)),
        )
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::Invalid {
            field: "fleet_bulkhead.renew_every",
            rule: "must be shorter than the policy's lease_ttl",
        }
    );
}
