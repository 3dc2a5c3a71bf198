//! End to end: the client crate's dead-letter handle ([`floodgate_client::DeadLetterQueue`])
//! against real servers, on a real Redis and on the memory store: publish retried with the
//! same idempotency key until a replica confirms it, the list stream walking every page once
//! in both orders, every call of the handle, and the [`floodgate_client::Consumer`] loop
//! (two consumers on two servers handle each entry once; a failing handler nacks and the
//! entry comes back with delivery_count 2).
use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use floodgate_client::{
    Client, Error,
    dead_letters::{Filter, ListOptions, Message, RetryPolicy},
};
use floodgate_tests::{
    e2e_support::{Fleet, clients},
    redis::TestRedis,
    server::{ServerOptions, TestServer},
    unique_namespace,
};
use futures::TryStreamExt;
use tokio::sync::watch;

const CONFIG: &str = r#"
[queues.orders]
retention = "7d"
visibility_timeout = "30s"
max_deliveries = 5
redrive_targets = ["app:orders:retry"]

[queues.default]
"#;

/// A shutdown signal for consumers: the future completes once `true` is sent.
fn shutdown_signal() -> (
    watch::Sender<bool>,
    impl Fn() -> futures::future::BoxFuture<'static, ()>,
) {
    let (tx, rx) = watch::channel(false);
    let make = move || {
        let mut rx = rx.clone();
        let f: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        });
        f
    };
    (tx, make)
}

/// Publishes `n` entries (reasons alternate a/b) and returns their ids in publish order.
async fn publish_n(client: &Client, ns: &str, queue: &str, n: usize) -> Vec<String> {
    let q = client.dead_letters(ns, queue);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let p = q
            .publish(
                Message::new(format!("payload {i}").into_bytes())
                    .reason(if i % 2 == 0 { "a" } else { "b" })
                    .meta("i", i.to_string()),
            )
            .await
            .unwrap_or_else(|e| panic!("publish #{i}: {e}"));
        assert!(!p.duplicate, "a fresh random key was a duplicate");
        ids.push(p.id);
    }
    ids
}

/// The list stream walks every page exactly once, oldest first and newest first, with tiny
/// pages and with payloads; a filter narrows it.
async fn list_stream_walks_every_page_once(urls: &[String]) {
    let ns = unique_namespace("dlqc");
    let c = &clients(urls).await[0];
    let ids = publish_n(c, &ns, "orders", 53).await;
    let q = c.dead_letters(&ns, "orders");
    for page_size in [1, 7, 0] {
        let oldest: Vec<String> = q
            .list(ListOptions::new().page_size(page_size))
            .map_ok(|d| d.id)
            .try_collect()
            .await
            .expect("list oldest first");
        assert_eq!(oldest, ids, "oldest first, pages of {page_size}");
        let newest: Vec<String> = q
            .list(ListOptions::new().page_size(page_size).newest_first(true))
            .map_ok(|d| d.id)
            .try_collect()
            .await
            .expect("list newest first");
        let mut want = ids.clone();
        want.reverse();
        assert_eq!(newest, want, "newest first, pages of {page_size}");
    }
    let with_payload: Vec<_> = q
        .list(ListOptions::new().page_size(10).include_payload(true))
        .try_collect()
        .await
        .expect("list with payloads");
    for (i, d) in with_payload.iter().enumerate() {
        assert_eq!(d.payload, format!("payload {i}").into_bytes());
        assert_eq!(d.payload_size, d.payload.len() as u64);
    }
    let without: Vec<_> = q.list(Filter::all()).try_collect().await.unwrap();
    assert!(
        without
            .iter()
            .all(|d| d.payload.is_empty() && d.payload_size > 0)
    );
    let b: Vec<String> = q
        .list(
            ListOptions::new()
                .filter(Filter::all().reason("b"))
                .page_size(4),
        )
        .map_ok(|d| d.id)
        .try_collect()
        .await
        .unwrap();
    let want_b: Vec<String> = ids.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(b, want_b);
    let one: Vec<_> = q
        .list(Filter::all().meta("i", "17"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, ids[17]);
    // An empty queue is an empty stream.
    let none: Vec<_> = c
        .dead_letters(&ns, "empty")
        .list(ListOptions::new())
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Every call of the handle: get, stats by reason, duplicate keys, archive and restore,
/// purge, and typed errors.
async fn handle_round_trip(urls: &[String]) {
    let ns = unique_namespace("dlqc");
    let c = &clients(urls).await[0];
    let q = c.dead_letters(&ns, "orders");
    let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let m = Message::new(vec![0u8, 159, 146, 150, 255])
        .reason("payment_declined")
        .error_class("CardError")
        .source("billing")
        .attempts(4)
        .meta("tenant", "acme")
        .trace_id("trace-1")
        .first_failed_at(at)
        .idempotency_key("order-42");
    let first = q.publish(m.clone()).await.expect("publish");
    assert!(!first.duplicate);
    assert_eq!(first.idempotency_key, "order-42");
    let again = q.publish(m).await.expect("publish again");
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    let d = q.get(&first.id).await.expect("get");
    assert_eq!(d.payload, vec![0u8, 159, 146, 150, 255]);
    assert_eq!(
        (d.reason.as_str(), d.error_class.as_str(), d.source.as_str()),
        ("payment_declined", "CardError", "billing")
    );
    assert_eq!(d.attempts, 4);
    assert_eq!(
        d.metadata,
        BTreeMap::from([("tenant".into(), "acme".into())])
    );
    assert_eq!(d.trace_id, "trace-1");
    assert_eq!(d.first_failed_at, Some(at));
    assert!(d.published_at.is_some());
    assert_eq!(d.idempotency_key, "order-42");
    publish_n(c, &ns, "orders", 4).await;
    let s = q.stats().await.expect("stats");
    assert_eq!(s.count, 5);
    assert_eq!(
        s.by_reason,
        BTreeMap::from([
            ("payment_declined".into(), 1),
            ("a".into(), 2),
            ("b".into(), 2)
        ])
    );
    assert_eq!(s.duplicates_total, 1);

    assert_eq!(q.archive([first.id.clone()]).await.unwrap(), 1);
    assert_eq!(q.stats().await.unwrap().archived, 1);
    let archived: Vec<_> = q
        .list(ListOptions::new().archived(true))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(archived.len(), 1);
    assert!(archived[0].archived);
    assert_eq!(archived[0].original_id, first.id);
    let restored = q
        .restore([archived[0].id.clone(), "1-0".to_owned()])
        .await
        .unwrap();
    assert_eq!(restored.len(), 2);
    let new_id = restored[0].clone().expect("restored");
    assert_eq!(restored[1], None);
    assert_eq!(q.get(&new_id).await.unwrap().payload.len(), 5);

    assert_eq!(q.purge(&Filter::all().reason("a"), false).await.unwrap(), 2);
    assert_eq!(q.stats().await.unwrap().count, 3);
    assert_eq!(q.purge(&Filter::all(), false).await.unwrap(), 3);
    assert!(matches!(q.get(&new_id).await, Err(Error::NotFound(_))));
    assert_eq!(q.ack(Vec::<String>::new()).await.unwrap(), 0);

    // Typed errors: an oversized payload is INVALID_ARGUMENT (and not retried).
    let big = q
        .publish(Message::new(vec![7u8; (1 << 20) + 1]))
        .await
        .unwrap_err();
    assert!(matches!(big, Error::InvalidArgument(_)), "{big}");
    let bad = c.dead_letters(&ns, "bad name!").stats().await.unwrap_err();
    assert!(
        matches!(bad, Error::InvalidArgument(ref m) if m.starts_with("queue")),
        "{bad}"
    );
    let redrive = q
        .redrive("not:allowed", &Filter::all(), 0)
        .await
        .unwrap_err();
    assert!(matches!(redrive, Error::InvalidArgument(_)), "{redrive}");
}

/// Two consumers, each through its own server, share one queue: every entry is handled
/// exactly once and acked; the queue ends empty with nothing in flight.
async fn two_consumers_handle_each_entry_once(urls: &[String]) {
    let ns = unique_namespace("dlqc");
    let cs = clients(urls).await;
    let total = 120;
    let ids = publish_n(&cs[0], &ns, "orders", total).await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop, signal) = shutdown_signal();
    let mut tasks = Vec::new();
    for (i, c) in cs.iter().cycle().take(2).enumerate() {
        let consumer = c
            .dead_letters(&ns, "orders")
            .consumer(&format!("worker-{i}"))
            .batch_size(7)
            .concurrency(3)
            .visibility_timeout(Duration::from_secs(60))
            .idle_backoff(Duration::from_millis(20), Duration::from_millis(200));
        let seen = seen.clone();
        let shutdown = signal();
        tasks.push(tokio::spawn(async move {
            consumer
                .run(
                    move |d| {
                        let seen = seen.clone();
                        async move {
                            assert_eq!(d.delivery_count, 1, "{} delivered again", d.id);
                            assert_eq!(d.payload_size, d.payload.len() as u64);
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            seen.lock().unwrap().push(d.id);
                            Ok::<(), String>(())
                        }
                    },
                    shutdown,
                )
                .await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < total {
        assert!(Instant::now() < deadline, "consumers stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment for stray double deliveries to show, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let mut acked = 0;
    let mut batches_per_consumer = Vec::new();
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("consumer did not stop on shutdown")
            .unwrap()
            .expect("consumer failed");
        assert_eq!(r.nacked, 0);
        assert_eq!(r.acked, r.handled);
        acked += r.acked;
        batches_per_consumer.push(r.batches);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), total, "handled more than once");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    assert_eq!(acked, total as u64);
    let s = cs[0].dead_letters(&ns, "orders").stats().await.unwrap();
    assert_eq!((s.count, s.in_flight), (0, 0));
}

/// A failing handler nacks: the entry is claimable again at once, comes back with
/// delivery_count 2, and a succeeding handler acks it. A consumer on an empty queue idles
/// and stops promptly on shutdown.
async fn failing_handler_nacks_and_the_entry_returns(urls: &[String]) {
    let ns = unique_namespace("dlqc");
    let c = &clients(urls).await[0];
    let ids = publish_n(c, &ns, "orders", 1).await;
    let q = c.dead_letters(&ns, "orders");
    let (_stop, signal) = shutdown_signal();
    let first = q
        .consumer("flaky")
        .max_messages(1)
        .run(
            |d| async move {
                assert_eq!(d.delivery_count, 1);
                Err::<(), _>("downstream still failing")
            },
            signal(),
        )
        .await
        .expect("first consumer");
    assert_eq!((first.handled, first.acked, first.nacked), (1, 0, 1));
    // (A nacked entry still counts in `in_flight` until it is claimed again or acked: the
    // server keeps its claim record with an expired deadline.)
    let counts = Arc::new(Mutex::new(Vec::new()));
    let seen = counts.clone();
    let second = q
        .consumer("healthy")
        .max_messages(1)
        .run(
            move |d| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((d.id, d.delivery_count));
                    Ok::<(), String>(())
                }
            },
            signal(),
        )
        .await
        .expect("second consumer");
    assert_eq!((second.handled, second.acked, second.nacked), (1, 1, 0));
    assert_eq!(*counts.lock().unwrap(), vec![(ids[0].clone(), 2)]);
    assert_eq!(q.stats().await.unwrap().count, 0);

    // Empty queue: the consumer idles, then stops on shutdown.
    let (stop, signal) = shutdown_signal();
    let started = Instant::now();
    let idle = tokio::spawn({
        let q = q.clone();
        let shutdown = signal();
        async move {
            q.consume("idle", |_d| async { Ok::<(), String>(()) }, shutdown)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), idle)
        .await
        .expect("idle consumer did not stop")
        .unwrap()
        .unwrap();
    assert_eq!(r.handled, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}

macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_fleet() {
                let fleet = Fleet::on_redis(2, CONFIG).await;
                super::$scenario(&fleet.urls()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let fleet = Fleet::in_memory(CONFIG).await;
                super::$scenario(&fleet.urls()).await;
            }
        }
    )*};
}

on_both_stores!(
    list_stream_walks_every_page_once,
    handle_round_trip,
    two_consumers_handle_each_entry_once,
    failing_handler_nacks_and_the_entry_returns,
);

/// Publish answers UNAVAILABLE while no replica confirms a "replicated" queue's entry; the
/// client retries with the same (generated) idempotency key until a replica appears, and the
/// answer is the first attempt's entry, flagged duplicate: stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_retries_with_the_same_key_until_a_replica_confirms() {
    let primary = TestRedis::private();
    let replica = TestRedis::private();
    let port = primary.url().rsplit(':').next().unwrap().to_owned();
    let mut pc = primary.async_connection().await;
    let _: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg("0")
        .query_async(&mut pc)
        .await
        .unwrap();
    let server = TestServer::start(ServerOptions {
        redis_url: Some(primary.url().to_owned()),
        config: Some("[queues.safe]\ndurability = \"replicated\"\n".into()),
        store_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    let ns = unique_namespace("dlqc");
    let client = server.client().await;
    let q = client.dead_letters(&ns, "safe");

    // No replica and a short deadline: the last UNAVAILABLE comes back after several tries.
    let started = Instant::now();
    let err = q
        .clone()
        .with_retry(RetryPolicy::with_deadline(Duration::from_millis(1_500)))
        .publish(Message::new(b"lonely".to_vec()).idempotency_key("k-lonely"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "it did not retry"
    );

    // A replica joins 3 s later, while the client is retrying (the first attempt's WAIT
    // gives up after 1.5 s, so it cannot see the replica even on a loaded machine).
    let mut rc = replica.async_connection().await;
    let join = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _: String = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(&port)
            .query_async(&mut rc)
            .await
            .unwrap();
    });
    let p = q
        .clone()
        .with_retry(RetryPolicy::with_deadline(Duration::from_secs(30)))
        .publish(Message::new(b"important".to_vec()).reason("r"))
        .await
        .expect("publish once a replica confirms");
    join.await.unwrap();
    assert!(p.attempts > 1, "answered at once: {p:?}");
    assert!(
        p.duplicate,
        "the retry must find the first attempt's entry: {p:?}"
    );
    let s = q.stats().await.unwrap();
    assert_eq!(s.by_reason.get("r"), Some(&1), "{s:?}");
    assert_eq!(q.get(&p.id).await.unwrap().payload, b"important");
    // The key of the lonely message was kept too: its retry now answers duplicate.
    let again = q
        .publish(Message::new(b"lonely".to_vec()).idempotency_key("k-lonely"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(q.stats().await.unwrap().count, 2);
}

/// A "replicated" publish waits for `WAIT` on a connection of its own: with no replica,
/// sixteen publishers (twice the eight exclusive connections) keep WAITs running back to
/// back, and not one of 100 Acquires meanwhile is held up past its 400 ms deadline (on the
/// shared connection they queued behind the WAITs and took their fail mode: 95 of 100).
/// Publishes that found every exclusive connection busy are refused unstored; the others
/// are stored once each although no replica confirmed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_holds_up_no_acquire() {
    use floodgate_client::PolicyRef;
    let redis = TestRedis::private();
    let server = TestServer::start(ServerOptions {
        redis_url: Some(redis.url().to_owned()),
        config: Some(
            "[queues.safe]\ndurability = \"replicated\"\n\n[policies.api]\nalgorithm = \"token_bucket\"\nlimit = 1000000\nperiod = \"1s\"\nfail_mode = \"closed\"\n"
                .into(),
        ),
        store_timeout: Some(Duration::from_millis(400)),
        ..Default::default()
    });
    let ns = unique_namespace("dlqw");
    let client = server.client().await;
    let q = client
        .dead_letters(&ns, "safe")
        .with_retry(RetryPolicy::never());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = (0..16)
        .map(|i| {
            let (q, stop) = (q.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut stored, mut busy) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let err = q
                        .publish(Message::new(vec![i]).reason("r"))
                        .await
                        .expect_err("no replica can confirm");
                    assert!(matches!(err, Error::Unavailable(_)), "{err}");
                    let text = err.to_string();
                    if text.contains("stored as") {
                        stored += 1;
                    } else {
                        assert!(text.contains("exclusive connections were busy"), "{text}");
                        busy += 1;
                    }
                }
                (stored, busy)
            })
        })
        .collect();
    // Wait until WAITs are running (Redis counts their connections as blocked).
    let mut watcher = redis.async_connection().await;
    let started = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut watcher)
            .await
            .unwrap();
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if blocked > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no WAIT ever blocked: {info}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut degraded = 0;
    for i in 0..100 {
        let d = client
            .acquire(&ns)
            .check(format!("k{}", i % 5), PolicyRef::Named("api".into()))
            .send()
            .await
            .expect("acquire");
        assert!(d.allowed || d.degraded, "{d:?}");
        degraded += usize::from(d.degraded);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut stored, mut busy) = (0, 0);
    for p in publishers {
        let (s, b) = p.await.expect("publisher");
        stored += s;
        busy += b;
    }
    assert!(
        stored >= 8,
        "the publishers did not keep WAIT busy: {stored}"
    );
    assert!(busy > 0, "16 publishers never found the 8 connections busy");
    assert_eq!(
        degraded, 0,
        "Acquires queued behind WAIT and took their fail mode"
    );
    // Every publish that says "stored" was stored, once; the busy ones were not.
    let stats = q.stats().await.unwrap();
    assert_eq!(stored, stats.count, "{stats:?}");
}

/// Publish with a key through both servers, list, and two consumers (one per server) with one
/// failing first try: every entry handled once, the nacked one redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_publish_list_and_consume() {
    use futures::StreamExt;
    const CONFIG: &str = "[queues.orders]\nvisibility_timeout = \"2s\"\n";
    let fleet = Fleet::on_redis(2, CONFIG).await;
    let urls = fleet.urls();
    let ns = unique_namespace("dlqc");
    let a = Client::connect(&urls[0])
        .await
        .unwrap()
        .dead_letters(&ns, "orders");
    let b = Client::connect(&urls[1])
        .await
        .unwrap()
        .dead_letters(&ns, "orders");

    let first = a
        .publish(Message::new(b"x".to_vec()).reason("r").idempotency_key("k"))
        .await
        .unwrap();
    let again = b
        .publish(Message::new(b"x".to_vec()).reason("r").idempotency_key("k"))
        .await
        .unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.id, again.id);
    for i in 0..59u32 {
        a.publish(
            Message::new(i.to_be_bytes().to_vec()).reason(if i % 2 == 0 { "even" } else { "odd" }),
        )
        .await
        .unwrap();
    }
    let all: Vec<_> = a.list(Filter::all()).collect().await;
    let ids: Vec<String> = all.into_iter().map(|r| r.unwrap().id).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (60, 60));

    // Two consumers, one per server; the entry with payload [0,0,0,3] fails once.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failed_once = Arc::new(Mutex::new(false));
    let run = |q: floodgate_client::DeadLetterQueue, name: &'static str| {
        let seen = seen.clone();
        let failed_once = failed_once.clone();
        async move {
            q.consumer(name)
                .batch_size(5)
                .idle_backoff(Duration::from_millis(20), Duration::from_millis(100))
                .run(
                    move |d| {
                        let seen = seen.clone();
                        let failed_once = failed_once.clone();
                        async move {
                            if d.payload == [0, 0, 0, 3]
                                && !std::mem::replace(&mut *failed_once.lock().unwrap(), true)
                            {
                                return Err("first try fails");
                            }
                            seen.lock().unwrap().push((d.id.clone(), d.delivery_count));
                            Ok(())
                        }
                    },
                    tokio::time::sleep(Duration::from_secs(3)),
                )
                .await
                .unwrap()
        }
    };
    let (ra, rb) = tokio::join!(run(a.clone(), "a"), run(b.clone(), "b"));
    let seen = seen.lock().unwrap().clone();
    let handled: HashSet<&String> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(
        (seen.len(), handled.len()),
        (60, 60),
        "every entry handled exactly once"
    );
    assert_eq!(ra.nacked + rb.nacked, 1);
    assert!(
        seen.iter().any(|(_, dc)| *dc == 2),
        "the nacked entry came back"
    );
    assert_eq!(a.stats().await.unwrap().count, 0);
}
