//! End to end: the operator's views, `Admin.ServerStatus` and `Admin.TopKeys`, on two
//! servers sharing one Redis and on one memory-store server.
use std::time::{Duration, Instant};

use floodgate_client::Client;
use floodgate_client::proto::v1::{
    self as pb, admin_client::AdminClient, circuit_breakers_client::CircuitBreakersClient,
};
use floodgate_tests::{e2e_support::Fleet, on_both_stores, unique_namespace};
use tonic::transport::Channel;

const CONFIG: &str = r#"
inline_policies = true

[policies.api]
algorithm = "token_bucket"
limit = 2
period = "1h"

[breakers.pay]
minimum_calls = 5

[queues.orders]
alert_threshold = 2
"#;

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// Denials spread over the fleet show up in TopKeys on any server, most denied first.
async fn top_keys_across_the_fleet(urls: &[String]) {
    let ns = unique_namespace("top");
    let mut clients = Vec::new();
    for u in urls {
        clients.push(Client::connect(u).await.expect("connect"));
    }
    // user:hot is denied 8 times, user:warm 3 times, user:calm never; spread over servers.
    let plan = [("user:hot", 10), ("user:warm", 5), ("user:calm", 2)];
    let mut i = 0;
    for (key, tries) in plan {
        for _ in 0..tries {
            let c = &clients[i % clients.len()];
            i += 1;
            let d = c
                .acquire(&ns)
                .check(key, "api")
                .send()
                .await
                .expect("Acquire");
            assert!(!d.degraded);
        }
    }
    let mut admin = AdminClient::new(channel(&urls[0]).await);
    // Other servers flush every 5 s.
    let deadline = Instant::now() + Duration::from_secs(12);
    let keys = loop {
        let keys = admin
            .top_keys(pb::TopKeysRequest {
                namespace: ns.clone(),
                minutes: 0,
                limit: 0,
            })
            .await
            .expect("TopKeys")
            .into_inner()
            .keys;
        let got: Vec<(String, u64)> = keys.iter().map(|k| (k.key.clone(), k.denied)).collect();
        if got == [("user:hot".to_owned(), 8), ("user:warm".to_owned(), 3)] {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "TopKeys never converged: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(keys.iter().all(|k| k.policy == "api"));
    let err = admin
        .top_keys(pb::TopKeysRequest {
            namespace: ns.clone(),
            minutes: 16,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("minutes:"), "{}", err.message());
}

/// ServerStatus names the version, the store, the schema, the policies and the breakers
/// (with their state in a namespace).
async fn server_status(urls: &[String]) {
    let ns = unique_namespace("st");
    let ch = channel(&urls[urls.len() - 1]).await;
    CircuitBreakersClient::new(ch.clone())
        .set_state(pb::SetBreakerStateRequest {
            namespace: ns.clone(),
            breaker: "pay".into(),
            state: pb::BreakerState::ForcedOpen as i32,
        })
        .await
        .expect("SetState");
    let mut dlq =
        floodgate_client::proto::v1::dead_letters_client::DeadLettersClient::new(ch.clone());
    for _ in 0..2 {
        dlq.publish(pb::PublishRequest {
            namespace: ns.clone(),
            queue: "orders".into(),
            reason: "r".into(),
            ..Default::default()
        })
        .await
        .expect("Publish");
    }
    let mut admin = AdminClient::new(channel(&urls[0]).await);
    let s = admin
        .server_status(pb::ServerStatusRequest {
            namespace: ns.clone(),
        })
        .await
        .expect("ServerStatus")
        .into_inner();
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert!(s.store_ready);
    if s.store.starts_with("redis") {
        assert_eq!((s.schema_version, s.supported_schema_version), (1, 1));
    } else {
        assert_eq!(s.store, "memory");
    }
    let names: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["api"]);
    assert_eq!(s.policies[0].policy.as_ref().map(|p| p.limit), Some(2));
    let breakers: Vec<(&str, i32)> = s
        .breakers
        .iter()
        .map(|b| (b.breaker.as_str(), b.state))
        .collect();
    assert_eq!(breakers, [("pay", pb::BreakerState::ForcedOpen as i32)]);
    let queues: Vec<(&str, u64, bool)> = s
        .queues
        .iter()
        .map(|q| (q.queue.as_str(), q.count, q.over_threshold))
        .collect();
    assert_eq!(queues, [("orders", 2, true)]);
    let s = admin
        .server_status(pb::ServerStatusRequest::default())
        .await
        .expect("ServerStatus")
        .into_inner();
    assert_eq!(s.breakers.len(), 1);
}

on_both_stores!(2, CONFIG =>
    top_keys_across_the_fleet, server_status);

/// `floodgate status` and `floodgate top` through the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_top_commands() {
    let fleet = Fleet::in_memory(CONFIG).await;
    let url = fleet.urls()[0].clone();
    let ns = unique_namespace("cli");
    let client = Client::connect(&url).await.expect("connect");
    for _ in 0..4 {
        client
            .acquire(&ns)
            .check("user:7", "api")
            .send()
            .await
            .expect("Acquire");
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new(floodgate_tests::server::binary())
            .args(args)
            .args(["--server", &url])
            .output()
            .expect("run floodgate");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["status", "--namespace", &ns, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["store"], "memory");
    assert_eq!(v["policies"][0]["name"], "api");
    assert_eq!(v["breakers"][0]["state"], "CLOSED");
    let (ok, out, err) = run(&["top", "--namespace", &ns, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["keys"][0]["key"], "user:7");
    assert_eq!(v["keys"][0]["denied"], 2);
    let (ok, out, _) = run(&["top", "--namespace", &ns]);
    assert!(ok && out.contains("user:7"), "{out}");
    let (ok, _, err) = run(&["top", "--namespace", "bad ns"]);
    assert!(!ok);
    assert!(
        err.contains("namespace:") && err.contains("--namespace"),
        "{err}"
    );
    // `floodgate status | head -0`: a reader that closed the pipe ends the command quietly
    // (SIGPIPE, as Unix tools do), not with a panic about a failed print.
    let mut child = std::process::Command::new(floodgate_tests::server::binary())
        .args(["status", "--server", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run floodgate");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}
