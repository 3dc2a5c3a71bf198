//! End to end: live reload. Changing a policy's limit on disk makes the next calls obey it;
//! a broken file is refused with an error in the log and the old policies stay; calls made
//! while reloads happen all succeed.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use floodgate_client::Client;
use floodgate_tests::{server::TestServer, unique_namespace};

fn config(limit: u64) -> String {
    format!("[policies.api]\nalgorithm = \"fixed_window\"\nlimit = {limit}\nperiod = \"1h\"\n")
}

/// Waits until Status of a fresh key under `api` reports `limit`.
async fn wait_for_limit(client: &Client, ns: &str, limit: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = client.status(ns, "probe", "api", 1).await.unwrap();
        if s.limit == limit {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "policy api still has limit {} after 10 s",
            s.limit
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_without_dropping_calls() {
    let server = TestServer::in_memory(&config(2));
    let path = server.config_path().unwrap().to_owned();
    let client = server.client().await;
    let ns = unique_namespace("reload");
    let admitted = |key: &'static str| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let mut n = 0;
            for _ in 0..8 {
                if client
                    .acquire(&ns)
                    .check(key, "api")
                    .send()
                    .await
                    .unwrap()
                    .allowed
                {
                    n += 1;
                }
            }
            n
        }
    };
    assert_eq!(admitted("a").await, 2);

    // Calls keep flowing through every reload below; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let background = {
        let (client, ns, stop, calls) = (client.clone(), ns.clone(), stop.clone(), calls.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client
                    .acquire(&ns)
                    .check("busy", "api")
                    .send()
                    .await
                    .expect("a call failed during reload");
                calls.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    std::fs::write(&path, config(5)).unwrap();
    wait_for_limit(&client, &ns, 5).await;
    assert_eq!(admitted("b").await, 5, "new keys follow the new limit");

    std::fs::write(
        &path,
        "[policies.api]\nalgorithm = \"fixed_window\"\nlimit = \"many\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().iter().any(|l| l.contains("NOT reloaded")) {
        assert!(
            Instant::now() < deadline,
            "no reload error logged:\n{}",
            server.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client.status(&ns, "probe2", "api", 1).await.unwrap().limit,
        5,
        "the old config stays"
    );

    std::fs::write(&path, config(3)).unwrap();
    wait_for_limit(&client, &ns, 3).await;

    // SIGHUP reloads too (here with an unchanged file: the reload still runs and logs).
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .logs()
        .iter()
        .any(|l| l.contains("SIGHUP: reloading"))
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            server.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        client.status(&ns, "probe3", "api", 1).await.unwrap().limit,
        3
    );

    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    assert!(calls.load(Ordering::Relaxed) > 0);
}

/// Breakers and queues reload with the policies: a table added on disk is usable by the
/// next calls, and one removed is NOT_FOUND again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_and_queues_reload() {
    use floodgate_client::proto::v1::{
        self as pb, dead_letters_client::DeadLettersClient, rate_limiter_client::RateLimiterClient,
    };
    let server = TestServer::in_memory(&config(2));
    let path = server.config_path().unwrap().to_owned();
    let channel = tonic::transport::Channel::from_shared(server.url().to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let acquire = || {
        let mut c = RateLimiterClient::new(channel.clone());
        async move {
            c.acquire(pb::AcquireRequest {
                namespace: "ns".into(),
                breakers: vec!["pay".into()],
                ..Default::default()
            })
            .await
        }
    };
    let publish = || {
        let mut c = DeadLettersClient::new(channel.clone());
        async move {
            c.publish(pb::PublishRequest {
                namespace: "ns".into(),
                queue: "orders".into(),
                ..Default::default()
            })
            .await
        }
    };
    assert_eq!(acquire().await.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(publish().await.unwrap_err().code(), tonic::Code::NotFound);
    std::fs::write(
        &path,
        format!("{}\n[breakers.pay]\n\n[queues.orders]\n", config(2)),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acquire().await.is_err() || publish().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "breaker and queue never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&path, config(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acquire().await.is_ok() {
        assert!(Instant::now() < deadline, "breaker never went away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
