//! TLS end to end: the client crate and the CLI over TLS, mTLS refusing unknown client
//! certificates, certificate reload without restart, a bad file named at startup, and
//! floodgate on a Redis that speaks only TLS.
use std::{process::Command, time::Duration};

use floodgate_client::{Client, Policy, Tls};
use floodgate_tests::{
    server::{ServerOptions, TestServer, binary},
    tls_support::{Ca, Leaf, TlsRedis},
    unique_namespace,
};

fn tls_args(server: &Leaf, client_ca: Option<&Ca>) -> Vec<String> {
    let mut args = vec![
        "--tls-cert".to_owned(),
        server.cert.display().to_string(),
        "--tls-key".to_owned(),
        server.key.display().to_string(),
    ];
    if let Some(ca) = client_ca {
        args.push("--tls-client-ca".into());
        args.push(ca.pem.display().to_string());
    }
    args
}

fn start(args: Vec<String>, redis_url: Option<String>) -> (TestServer, String) {
    let server = TestServer::start(ServerOptions {
        extra_args: args,
        redis_url,
        ..Default::default()
    });
    let https = server.url().replace("http://", "https://");
    (server, https)
}

async fn acquire(client: &Client) -> Result<bool, floodgate_client::Error> {
    let d = client
        .acquire(&unique_namespace("tls"))
        .check("k", Policy::token_bucket(10, Duration::from_secs(1)))
        .send()
        .await?;
    assert!(!d.degraded, "decided without the store");
    Ok(d.allowed)
}

async fn connects(url: &str, tls: &Tls) -> bool {
    match Client::connect_tls(url, tls).await {
        Ok(c) => acquire(&c).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_cli_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let cert = ca.server(dir.path(), "server");
    let (server, https) = start(tls_args(&cert, None), None);

    let tls = Tls::default().ca_file(&ca.pem).unwrap();
    let client = Client::connect_tls(&https, &tls).await.unwrap();
    assert!(acquire(&client).await.unwrap());
    // Plain text to a TLS port fails; so does a client that does not trust the CA.
    let plain = match Client::connect(server.url()).await {
        Ok(c) => acquire(&c).await.is_ok(),
        Err(_) => false,
    };
    assert!(!plain, "plain text to the TLS port");
    let other = Ca::new(dir.path(), "other");
    assert!(!connects(&https, &Tls::default().ca_file(&other.pem).unwrap()).await);

    let cli = |extra: &[&str]| {
        let out = Command::new(binary())
            .args(["status", "--server", &https])
            .args(extra)
            .env_remove("FLOODGATE_SERVER")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ca_path = ca.pem.display().to_string();
    let (ok, out) = cli(&["--ca-file", &ca_path]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&[]);
    assert!(!ok && out.contains("--ca-file"), "{out}");
    let (ok, out) = cli(&["--ca-file", "/nonexistent/ca.pem"]);
    assert!(!ok && out.contains("/nonexistent/ca.pem"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_unknown_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let cert = ca.server(dir.path(), "server");
    let (_server, https) = start(tls_args(&cert, Some(&ca)), None);
    let trust = || Tls::default().ca_file(&ca.pem).unwrap();

    let known = ca.client(dir.path(), "known");
    let tls = trust().identity_pem(known.cert_pem.clone(), known.key_pem.clone());
    assert!(connects(&https, &tls).await, "a known client is served");

    assert!(!connects(&https, &trust()).await, "no client certificate");
    let stranger_ca = Ca::new(dir.path(), "stranger");
    let stranger = stranger_ca.client(dir.path(), "stranger");
    let tls = trust().identity_pem(stranger.cert_pem, stranger.key_pem);
    assert!(!connects(&https, &tls).await, "a client of another CA");

    // The CLI with a client certificate.
    let out = Command::new(binary())
        .args(["status", "--server", &https, "--ca-file"])
        .arg(&ca.pem)
        .arg("--client-cert")
        .arg(&known.cert)
        .arg("--client-key")
        .arg(&known.key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new(dir.path(), "old");
    let live = old_ca.server(dir.path(), "live");
    let (server, https) = start(tls_args(&live, None), None);
    let old = Tls::default().ca_file(&old_ca.pem).unwrap();
    let kept = Client::connect_tls(&https, &old).await.unwrap();
    assert!(acquire(&kept).await.is_ok());

    // Replace both files in place with a certificate of another CA.
    let new_ca = Ca::new(dir.path(), "new");
    let next = new_ca.server(dir.path(), "next");
    std::fs::write(&live.key, &next.key_pem).unwrap();
    std::fs::write(&live.cert, &next.cert_pem).unwrap();
    let new = Tls::default().ca_file(&new_ca.pem).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !connects(&https, &new).await {
        assert!(
            std::time::Instant::now() < deadline,
            "new connections did not get the new certificate within 10 s:\n{}",
            server.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !connects(&https, &old).await,
        "new connections see only the new certificate"
    );
    assert!(
        acquire(&kept).await.is_ok(),
        "an open connection keeps working"
    );
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("TLS certificate reloaded"))
    );
}

#[test]
fn a_bad_certificate_path_is_named_at_startup() {
    let out = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-cert",
            "/nonexistent/server.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .env_remove("FLOODGATE_CONFIG")
        .env_remove("FLOODGATE_REDIS_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/server.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floodgate_on_redis_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "redis");
    let redis_cert = ca.server(dir.path(), "redis");
    let client_cert = ca.client(dir.path(), "floodgate");
    let redis = TlsRedis::start(dir.path(), &redis_cert, &ca, true);
    for mode in ["multiplexed", "pool"] {
        let args = vec![
            "--redis-tls-ca".to_owned(),
            ca.pem.display().to_string(),
            "--redis-tls-cert".to_owned(),
            client_cert.cert.display().to_string(),
            "--redis-tls-key".to_owned(),
            client_cert.key.display().to_string(),
            "--redis-connection".to_owned(),
            mode.to_owned(),
        ];
        let (server, _) = start(args, Some(redis.url.clone()));
        let client = server.client().await;
        assert!(acquire(&client).await.unwrap(), "{mode}");
        assert!(
            server
                .logs()
                .iter()
                .any(|l| l.contains("serving from Redis")),
            "{mode}"
        );
    }
    // Without the CA, floodgate refuses to start and says why.
    let out = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--redis", &redis.url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop by itself; a server that kept running would hang the test.
    let started = std::time::Instant::now();
    let mut out = out;
    while out.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = out.kill();
            let o = out.wait_with_output().unwrap();
            panic!(
                "floodgate kept running without the Redis CA:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = out.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("Redis at {}", redis.url)), "{err}");
}

/// floodgate on a Redis Cluster that speaks only TLS (`rediss+cluster://`, the CA from
/// `[tls]`): `floodgate migrate` initialises it, and an Acquire whose two checks live in
/// different slots is decided from the store, all or nothing, exactly at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floodgate_on_a_redis_cluster_over_tls() {
    use floodgate_client::{Decision, PolicyRef};
    use floodgate_tests::tls_support::tls_cluster;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let cert = ca.node(dir.path(), "node");
    // Blocks a few seconds; the multi-thread runtime has another worker meanwhile.
    let nodes = tls_cluster(dir.path(), &cert, &ca, 3);
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let url = format!("rediss+cluster://{}", hosts.join(","));
    let config = format!(
        "[tls]\nredis_ca_file = \"{}\"\n\n[policies.two]\nalgorithm = \"fixed_window\"\nlimit = 2\nperiod = \"1h\"\nfail_mode = \"closed\"\n",
        ca.pem.display()
    );
    let config_file = dir.path().join("floodgate.toml");
    std::fs::write(&config_file, &config).unwrap();
    let out = Command::new(binary())
        .args(["migrate", "--redis", &url, "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("applied 0001 initial"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = TestServer::start(ServerOptions {
        redis_url: Some(url),
        config: Some(config),
        ..Default::default()
    });
    let client = server.client().await;
    let ns = unique_namespace("tlscluster");
    // Two keys in different slots (the hash tag is {ns:key}).
    let slot = |k: &str| floodgate_server::store::redis::hash_slot(&format!("{{{ns}:{k}}}"));
    let other = (0..100)
        .map(|i| format!("b{i}"))
        .find(|k| slot(k) != slot("a"))
        .unwrap();
    let mut allowed = 0;
    for _ in 0..3 {
        let d: Decision = client
            .acquire(&ns)
            .check("a", PolicyRef::Named("two".into()))
            .check(other.clone(), PolicyRef::Named("two".into()))
            .send()
            .await
            .expect("Acquire over TLS to the Cluster");
        assert!(!d.degraded, "decided without the store: {d:?}");
        allowed += usize::from(d.allowed);
    }
    assert_eq!(allowed, 2, "a limit of 2 on both keys");
    drop(nodes);
}
