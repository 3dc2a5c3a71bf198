//! `scripts/cluster-up`: the compose topology from local processes (Redis, three servers,
//! nginx with grpc_pass on one port). A client on the published port sees one shared limit,
//! and nginx spreads the calls over all three replicas. `scripts/cluster-down` always runs.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use floodgate_client::{Client, Policy};
use floodgate_tests::{free_port, server::binary, unique_namespace};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The cluster's settings, and cluster-down when dropped (also when the test fails).
struct Cluster {
    env: Vec<(String, String)>,
    published: u16,
    http: [u16; 3],
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Three consecutive free ports for the replicas (and three for their HTTP).
        let base = loop {
            let p = free_port();
            if p < 60_000
                && (1..13).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
            {
                break p;
            }
        };
        let published = free_port();
        let env = vec![
            (
                "FLOODGATE_CLUSTER_DIR".to_owned(),
                dir.path().display().to_string(),
            ),
            ("FLOODGATE_CLUSTER_PORT".to_owned(), published.to_string()),
            ("FLOODGATE_CLUSTER_BASE_PORT".to_owned(), base.to_string()),
            (
                "FLOODGATE_CLUSTER_REDIS_PORT".to_owned(),
                free_port().to_string(),
            ),
            ("FLOODGATE_BIN".to_owned(), binary().display().to_string()),
        ];
        let cluster = Cluster {
            env,
            published,
            http: [base + 10, base + 11, base + 12],
            _dir: dir,
        };
        let out = cluster.script("cluster-up");
        assert!(
            out.status.success(),
            "scripts/cluster-up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn script(&self, name: &str) -> std::process::Output {
        Command::new(root().join("scripts").join(name))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script("cluster-down");
    }
}

/// Acquires served by one replica, from its /metrics.
async fn acquires_served(http_port: u16) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|l| l.starts_with("floodgate_requests_total{") && l.contains("rpc=\"Acquire\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The demo token whose hash deploy/floodgate.toml configures.
const DEMO_TOKEN: &str = "fgt_d34c3ed4c017c19dd4d5e1b9ca0d199654f0981ca15bd63a62210c0db14959f9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_one_limit_behind_the_published_port() {
    let cluster = tokio::task::spawn_blocking(Cluster::up)
        .await
        .expect("cluster-up");
    let anonymous = Client::connect(format!("http://127.0.0.1:{}", cluster.published))
        .await
        .expect("connect through nginx");
    // deploy/floodgate.toml configures tokens: nothing is served without one.
    let refused = anonymous
        .acquire("cluster")
        .check(
            "user:0",
            Policy::token_bucket(10, Duration::from_secs(3600)),
        )
        .send()
        .await
        .expect_err("no token");
    assert!(
        matches!(refused, floodgate_client::Error::Unauthenticated(_)),
        "{refused:?}"
    );
    // The published demo token of deploy/floodgate.toml (README "Security").
    let client = anonymous.with_token(DEMO_TOKEN).expect("token");
    let ns = unique_namespace("cluster");
    let policy = Policy::token_bucket(10, Duration::from_secs(3600));
    let mut allowed = 0;
    for _ in 0..30 {
        let d = client
            .acquire(&ns)
            .check("user:1", policy.clone())
            .send()
            .await
            .expect("Acquire through nginx");
        assert!(!d.degraded);
        allowed += usize::from(d.allowed);
    }
    assert_eq!(allowed, 10, "one shared limit across the three replicas");
    for port in cluster.http {
        let served = acquires_served(port).await;
        assert!(
            served > 0.0,
            "replica with HTTP port {port} served no call: nginx did not spread them"
        );
    }
    // The configured policies of deploy/floodgate.toml are there.
    let d = client
        .acquire(&ns)
        .check("user:2", "api")
        .send()
        .await
        .expect("named policy from deploy/floodgate.toml");
    assert!(d.allowed);
    drop(cluster);
}
