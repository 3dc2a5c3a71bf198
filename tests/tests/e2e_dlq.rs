//! End to end: dead-letter queues over real servers and a real Redis (and the memory store
//! where the behaviour does not need Redis): idempotent publishing at volume, payloads byte
//! for byte, paging in both orders, trimming, claims across servers that survive a killed
//! server, and a redrive interrupted between copy and delete.
use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use floodgate_client::proto::v1::{self as pb, dead_letters_client::DeadLettersClient};
use floodgate_server::{
    config::Config,
    keys::Keys,
    store::{PlannedQueue, ScanRange, Store, redis::RedisStore},
};
use floodgate_tests::{
    e2e_support::Fleet,
    on_both_stores,
    redis::TestRedis,
    server::{ServerOptions, TestServer},
    unique_namespace,
};
use futures::StreamExt;
use tonic::transport::Channel;

const CONFIG: &str = r#"
[queues.orders]
retention = "7d"
max_len = 100000
visibility_timeout = "2s"
max_deliveries = 3
redrive_targets = ["app:orders:retry"]

[queues.small]
max_len = 5

[queues.tenant]
redrive_targets = ["{namespace}:retry"]

[queues.default]
"#;

async fn dlq(url: &str) -> DeadLettersClient<Channel> {
    let ch = Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    DeadLettersClient::new(ch)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20)
}

fn publish(ns: &str, queue: &str, reason: &str, key: &str, payload: Vec<u8>) -> pb::PublishRequest {
    pb::PublishRequest {
        namespace: ns.into(),
        queue: queue.into(),
        payload,
        reason: reason.into(),
        idempotency_key: key.into(),
        attempts: 3,
        metadata: [("tenant".to_owned(), "acme".to_owned())].into(),
        ..Default::default()
    }
}

async fn stats(c: &mut DeadLettersClient<Channel>, ns: &str, queue: &str) -> pb::StatsResponse {
    c.stats(pb::StatsRequest {
        namespace: ns.into(),
        queue: queue.into(),
    })
    .await
    .expect("Stats")
    .into_inner()
}

/// 10,000 publishes, 10 % of them repeating an earlier idempotency key, spread over the
/// fleet: exactly the distinct ones are stored, and the stats by reason are exact.
async fn exact_idempotent_publishes(urls: &[String]) {
    let ns = unique_namespace("dlq");
    let mut clients = Vec::new();
    for u in urls {
        clients.push(dlq(u).await);
    }
    let total = 10_000;
    // 200 in flight at a time over the fleet's connections.
    let results: Vec<pb::PublishResponse> = futures::stream::iter(0..total)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            // every 10th publish repeats the key of the one before it
            let key = if i % 10 == 9 { i - 1 } else { i };
            let reason = ["timeout", "bad_request", "conflict"][key % 3];
            let req = publish(
                &ns,
                "orders",
                reason,
                &format!("k{key}"),
                vec![key as u8; 16],
            );
            async move { c.publish(req).await.expect("Publish").into_inner() }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let duplicates = results.iter().filter(|r| r.duplicate).count();
    let ids: HashSet<&String> = results.iter().map(|r| &r.id).collect();
    assert_eq!(duplicates, 1_000);
    assert_eq!(ids.len(), 9_000);
    let s = stats(&mut clients[0], &ns, "orders").await;
    assert_eq!(s.count, 9_000);
    let expected: BTreeMap<String, u64> = {
        let mut m = BTreeMap::new();
        for key in (0..total).filter(|i| i % 10 != 9) {
            *m.entry(["timeout", "bad_request", "conflict"][key % 3].to_owned())
                .or_default() += 1;
        }
        m
    };
    let got: BTreeMap<String, u64> = s.by_reason.into_iter().collect();
    assert_eq!(got, expected);
    assert_eq!((s.published_total, s.duplicates_total), (9_000, 1_000));
    assert_eq!(s.published_last_hour, 9_000);
}

/// A 1 MiB random binary payload comes back byte for byte; one byte more is refused.
async fn payloads_byte_for_byte(urls: &[String]) {
    let ns = unique_namespace("dlq");
    let mut c = dlq(&urls[0]).await;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let payload: Vec<u8> = (0..1_048_576)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let id = c
        .publish(publish(&ns, "orders", "r", "", payload.clone()))
        .await
        .expect("Publish")
        .into_inner()
        .id;
    let got = c
        .get(pb::GetDeadLetterRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            id: id.clone(),
        })
        .await
        .expect("Get")
        .into_inner();
    assert!(got.payload == payload, "payload differs");
    assert_eq!(got.payload_size, 1_048_576);
    assert_eq!(got.metadata["tenant"], "acme");
    assert_eq!(got.attempts, 3);
    let err = c
        .publish(publish(&ns, "orders", "r", "", vec![0; 1_048_577]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("payload:"), "{}", err.message());
    // Listing leaves payloads out unless asked.
    let page = c
        .list(pb::ListDeadLettersRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            ..Default::default()
        })
        .await
        .expect("List")
        .into_inner();
    assert_eq!(page.messages.len(), 1);
    assert!(page.messages[0].payload.is_empty());
    assert_eq!(page.messages[0].payload_size, 1_048_576);
}

/// Paging walks every entry exactly once, oldest first and newest first, with a filter.
async fn paging_both_orders(urls: &[String]) {
    let ns = unique_namespace("dlq");
    let mut c = dlq(&urls[0]).await;
    let mut published = Vec::new();
    for i in 0..250 {
        let reason = if i % 5 == 0 { "rare" } else { "common" };
        let r = c
            .publish(publish(&ns, "orders", reason, "", vec![1]))
            .await
            .expect("Publish")
            .into_inner();
        published.push((r.id, reason));
    }
    for newest_first in [false, true] {
        for (reason, page_size) in [("", 7), ("rare", 4)] {
            let mut seen = Vec::new();
            let mut cursor = String::new();
            loop {
                let page = c
                    .list(pb::ListDeadLettersRequest {
                        namespace: ns.clone(),
                        queue: "orders".into(),
                        filter: Some(pb::DeadLetterFilter {
                            reason: reason.into(),
                            ..Default::default()
                        }),
                        page_size,
                        cursor: cursor.clone(),
                        newest_first,
                        ..Default::default()
                    })
                    .await
                    .expect("List")
                    .into_inner();
                seen.extend(page.messages.into_iter().map(|m| m.id));
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
            let mut expected: Vec<String> = published
                .iter()
                .filter(|(_, r)| reason.is_empty() || *r == reason)
                .map(|(id, _)| id.clone())
                .collect();
            if newest_first {
                expected.reverse();
            }
            assert_eq!(
                seen, expected,
                "newest_first={newest_first} reason={reason:?}"
            );
        }
    }
}

/// max_len trims the oldest and counts it; archive and restore move entries and back.
async fn trimming_archive_restore(urls: &[String]) {
    let ns = unique_namespace("dlq");
    let mut c = dlq(&urls[0]).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(
            c.publish(publish(&ns, "small", "r", "", vec![2]))
                .await
                .expect("Publish")
                .into_inner()
                .id,
        );
    }
    let s = stats(&mut c, &ns, "small").await;
    assert_eq!((s.count, s.trimmed_by_length), (5, 3));
    let err = c
        .get(pb::GetDeadLetterRequest {
            namespace: ns.clone(),
            queue: "small".into(),
            id: ids[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let archived = c
        .archive(pb::ArchiveRequest {
            namespace: ns.clone(),
            queue: "small".into(),
            ids: vec![ids[7].clone(), ids[0].clone()],
        })
        .await
        .expect("Archive")
        .into_inner()
        .archived;
    assert_eq!(archived, 1);
    let s = stats(&mut c, &ns, "small").await;
    assert_eq!((s.count, s.archived), (4, 1));
    let page = c
        .list(pb::ListDeadLettersRequest {
            namespace: ns.clone(),
            queue: "small".into(),
            archived: true,
            ..Default::default()
        })
        .await
        .expect("List")
        .into_inner();
    assert_eq!(page.messages[0].original_id, ids[7]);
    let restored = c
        .restore(pb::RestoreRequest {
            namespace: ns.clone(),
            queue: "small".into(),
            ids: vec![page.messages[0].id.clone()],
        })
        .await
        .expect("Restore")
        .into_inner()
        .ids;
    assert!(restored[0] > ids[7]);
    let s = stats(&mut c, &ns, "small").await;
    assert_eq!((s.count, s.archived), (5, 0));
    let purged = c
        .purge(pb::PurgeRequest {
            namespace: ns.clone(),
            queue: "small".into(),
            ..Default::default()
        })
        .await
        .expect("Purge")
        .into_inner()
        .purged;
    assert_eq!(purged, 5);
    assert_eq!(stats(&mut c, &ns, "small").await.count, 0);
}

on_both_stores!(2, CONFIG =>
        exact_idempotent_publishes,
    payloads_byte_for_byte,
    paging_both_orders,
    trimming_archive_restore
);

/// Two servers, consumers claiming concurrently through both: every entry is handled once;
/// then the server that handed out claims is killed (-9) and its unacked entries come back
/// after their visibility timeout, with delivery_count 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_claims_across_servers_survive_a_killed_server() {
    let fleet = Fleet::on_redis(2, CONFIG).await;
    let urls = fleet.urls();
    let ns = unique_namespace("dlq");
    let mut c0 = dlq(&urls[0]).await;
    for i in 0..200 {
        c0.publish(publish(&ns, "orders", "r", &format!("p{i}"), vec![3]))
            .await
            .expect("Publish");
    }
    // Four consumers, two per server, claim and ack until the queue is drained.
    let consumers: Vec<_> = (0..4)
        .map(|w| {
            let url = urls[w % 2].clone();
            let ns = ns.clone();
            tokio::spawn(async move {
                let mut c = dlq(&url).await;
                let mut handled = Vec::new();
                loop {
                    let got = c
                        .claim(pb::ClaimRequest {
                            namespace: ns.clone(),
                            queue: "orders".into(),
                            consumer: format!("w{w}"),
                            count: 7,
                            visibility_timeout: Some(prost_types_duration(60)),
                        })
                        .await
                        .expect("Claim")
                        .into_inner()
                        .messages;
                    if got.is_empty() {
                        return handled;
                    }
                    let ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
                    let acked = c
                        .ack(pb::AckRequest {
                            namespace: ns.clone(),
                            queue: "orders".into(),
                            ids: ids.clone(),
                        })
                        .await
                        .expect("Ack")
                        .into_inner()
                        .acked;
                    assert_eq!(acked as usize, ids.len(), "an entry was acked twice");
                    handled.extend(ids);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in futures::future::join_all(consumers).await {
        all.extend(t.expect("consumer"));
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200));

    // Claims handed out by a server that then dies are not lost.
    let mut servers = fleet.servers;
    for i in 0..5 {
        c0.publish(publish(&ns, "orders", "r", &format!("q{i}"), vec![4]))
            .await
            .expect("Publish");
    }
    let claimed = c0
        .claim(pb::ClaimRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            consumer: "doomed".into(),
            count: 5,
            visibility_timeout: None, // the queue's 2 s
        })
        .await
        .expect("Claim")
        .into_inner()
        .messages;
    assert_eq!(claimed.len(), 5);
    let doomed = servers.remove(0);
    doomed.signal(libc::SIGKILL);
    let mut c1 = dlq(&urls[1]).await;
    let claim_again = |c: &mut DeadLettersClient<Channel>| {
        let mut c = c.clone();
        let ns = ns.clone();
        async move {
            c.claim(pb::ClaimRequest {
                namespace: ns,
                queue: "orders".into(),
                consumer: "survivor".into(),
                count: 10,
                visibility_timeout: None,
            })
            .await
            .expect("Claim")
            .into_inner()
            .messages
        }
    };
    assert!(claim_again(&mut c1).await.is_empty(), "still invisible");
    let deadline = Instant::now() + Duration::from_secs(10);
    let back = loop {
        let got = claim_again(&mut c1).await;
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(back.len(), 5);
    assert!(back.iter().all(|m| m.delivery_count == 2));
    drop(doomed);
}

/// An entry as XRANGE returns it: id and field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

fn prost_types_duration(secs: i64) -> floodgate_client::proto::prost_types::Duration {
    floodgate_client::proto::prost_types::Duration {
        seconds: secs,
        nanos: 0,
    }
}

/// A redrive interrupted after copying and before removing (the fault injected by running
/// only the first two steps against the store), then repeated through the API: the target
/// stream holds each entry exactly once and the queue is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_interrupted_then_repeated_copies_each_entry_once() {
    let redis = TestRedis::start().await;
    let server = TestServer::start(ServerOptions {
        redis_url: Some(redis.url().to_owned()),
        config: Some(CONFIG.to_owned()),
        ..Default::default()
    });
    let ns = unique_namespace("dlq");
    let mut c = dlq(server.url()).await;
    for i in 0..30 {
        c.publish(publish(
            &ns,
            "orders",
            if i < 20 { "a" } else { "b" },
            "",
            vec![i],
        ))
        .await
        .expect("Publish");
    }
    // The fault: mark and copy the first 12, then "crash".
    let config =
        Config::from_file(Config::parse_file("t", CONFIG).unwrap(), Default::default()).unwrap();
    let keys = Keys::new("fg");
    let q = PlannedQueue {
        namespace: ns.clone(),
        name: "orders".into(),
        keys: keys.queue(&ns, "orders"),
        redrive_key: keys.queue_redrive(&ns, "orders"),
        settings: config.queue("orders").unwrap().clone(),
    };
    let store = RedisStore::connect(redis.url(), Default::default(), 1)
        .await
        .unwrap();
    let first = store
        .dlq_scan(&q, false, &ScanRange::default(), 12, true)
        .await
        .unwrap();
    let ids: Vec<String> = first.iter().map(|l| l.id.clone()).collect();
    store
        .dlq_redrive_mark(&q, &ids, "app:orders:retry")
        .await
        .unwrap();
    store
        .dlq_redrive_copy(&q, "app:orders:retry", &first)
        .await
        .unwrap();
    // Repeated through the API: only reason "a" this time, then the rest.
    let moved = c
        .redrive(pb::RedriveRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            target_stream: "app:orders:retry".into(),
            filter: Some(pb::DeadLetterFilter {
                reason: "a".into(),
                ..Default::default()
            }),
            limit: 0,
        })
        .await
        .expect("Redrive")
        .into_inner()
        .moved;
    assert_eq!(moved, 20);
    let err = c
        .redrive(pb::RedriveRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            target_stream: "fg:elsewhere".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let moved = c
        .redrive(pb::RedriveRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            target_stream: "app:orders:retry".into(),
            ..Default::default()
        })
        .await
        .expect("Redrive")
        .into_inner()
        .moved;
    assert_eq!(moved, 10);
    let mut con = redis.async_connection().await;
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg("app:orders:retry")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let dlq_ids: Vec<String> = entries
        .iter()
        .map(|(_, f)| {
            let v = &f.iter().find(|(k, _)| k == "dlq_id").expect("dlq_id").1;
            String::from_utf8(v.clone()).unwrap()
        })
        .collect();
    let distinct: HashSet<&String> = dlq_ids.iter().collect();
    assert_eq!((dlq_ids.len(), distinct.len()), (30, 30));
    assert!(
        entries
            .iter()
            .all(|(_, f)| f.iter().any(|(k, v)| k == "attempts" && v == b"3"))
    );
    assert_eq!(stats(&mut c, &ns, "orders").await.count, 0);
}

/// `durability = "replicated"`: Publish answers once a replica has the entry; without a
/// replica it is UNAVAILABLE (the entry is kept), and the retry with the same idempotency
/// key, once a replica is back, answers `duplicate` with the first id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_durability_waits_for_a_replica() {
    let primary = TestRedis::private();
    let replica = TestRedis::private();
    let port = primary.url().rsplit(':').next().unwrap().to_owned();
    let rc = replica.async_connection().await;
    let replicate = |on: bool| {
        let mut c = rc.clone();
        let port = port.clone();
        async move {
            let mut cmd = redis::cmd("REPLICAOF");
            if on {
                cmd.arg("127.0.0.1").arg(&port);
            } else {
                cmd.arg("NO").arg("ONE");
            }
            let _: String = cmd.query_async(&mut c).await.unwrap();
        }
    };
    let mut pc = primary.async_connection().await;
    // Full syncs start at once (Redis waits 5 s by default to batch replicas).
    let _: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg("0")
        .query_async(&mut pc)
        .await
        .unwrap();
    replicate(true).await;
    // Wait until the primary sees its replica online.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut pc)
            .await
            .unwrap();
        if info.contains("connected_slaves:1") && info.contains("state=online") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica never came online: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = TestServer::start(ServerOptions {
        redis_url: Some(primary.url().to_owned()),
        config: Some("[queues.safe]\ndurability = \"replicated\"\n".into()),
        store_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    let ns = unique_namespace("dlq");
    let mut c = dlq(server.url()).await;
    let first = c
        .publish(publish(&ns, "safe", "r", "once", vec![9]))
        .await
        .expect("Publish with a replica")
        .into_inner();
    assert!(!first.duplicate);
    // The replica leaves: the next publish is stored but not confirmed.
    replicate(false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut pc)
            .await
            .unwrap();
        if info.contains("connected_slaves:0") {
            break;
        }
        assert!(Instant::now() < deadline, "replica never left: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = c
        .publish(publish(&ns, "safe", "r", "twice", vec![8]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(
        err.message()
            .contains("retry with the same idempotency_key"),
        "{}",
        err.message()
    );
    replicate(true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let retried = loop {
        match c.publish(publish(&ns, "safe", "r", "twice", vec![8])).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable);
                assert!(Instant::now() < deadline, "the replica never confirmed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(retried.duplicate, "the first attempt was kept");
    assert_eq!(stats(&mut c, &ns, "safe").await.count, 2);
    drop(rc);
}

/// `{namespace}` in a redrive target stands for the queue's namespace: each team redrives
/// into its own stream, never another's, and never into a floodgate key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_targets_per_namespace() {
    let fleet = Fleet::on_redis(1, CONFIG).await;
    let mut c = dlq(&fleet.urls()[0]).await;
    let ns = unique_namespace("dlqns");
    c.publish(publish(&ns, "tenant", "r", "", b"x".to_vec()))
        .await
        .expect("publish");
    let redrive = |target: String, ns: String| pb::RedriveRequest {
        namespace: ns,
        queue: "tenant".into(),
        target_stream: target,
        ..Default::default()
    };
    for (target, in_ns) in [
        ("other-team:retry".to_owned(), ns.clone()),
        ("{namespace}:retry".to_owned(), ns.clone()),
        // a namespace spelling the key prefix still names no floodgate key
        ("fg:retry".to_owned(), "fg".to_owned()),
    ] {
        let err = c.redrive(redrive(target.clone(), in_ns)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{target}");
        assert!(
            err.message().starts_with("target_stream:"),
            "{}",
            err.message()
        );
    }
    let moved = c
        .redrive(redrive(format!("{ns}:retry"), ns.clone()))
        .await
        .expect("Redrive into the namespace's own target")
        .into_inner()
        .moved;
    assert_eq!(moved, 1);
    let mut con = fleet.redis().async_connection().await;
    let len: u64 = redis::cmd("XLEN")
        .arg(format!("{ns}:retry"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(len, 1);
}
