//! Independent clients in another language, each against a server on Redis and one on
//! memory: `tests/python/test_rate_limiter.py`, `tests/python/test_breakers.py` and
//! `tests/python/test_dead_letters.py` (Python grpcio, stubs compiled from `proto/` at run
//! time), `tests/python/test_auth.py` (tokens, roles, grants, token rates, audit),
//! `tests/python/test_tls.py` (mutual TLS: who is served and who is refused), and
//! `tests/python/test_rls.py`
//! (Envoy's `ShouldRateLimit` through PyPI's `xds-protos`, generated from envoyproxy's
//! data-plane-api, against the rate limit files of `tests/fixtures/rls/`). Missing Python packages fail
//! the test with the command that installs them; it never skips.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use floodgate_tests::{
    redis::TestRedis,
    server::{ServerOptions, TestServer},
};

/// The script expects a configured policy `api`: a token bucket of 3 per hour.
const CONFIG: &str = "inline_policies = true\n\n[policies.api]\nalgorithm = \"token_bucket\"\nlimit = 3\nperiod = \"1h\"\n";

/// The rate limiter script, relative to the workspace root (the directory scripts run from).
const SCRIPT: &str = "tests/python/test_rate_limiter.py";

/// The breaker script expects breaker `py` (opens after 4 calls at 50 % failures, half-open
/// after 1 s with 2 trial permits) and no `[breakers.default]` template, so other names are
/// NOT_FOUND.
const BREAKER_CONFIG: &str = r#"
[breakers.py]
window = "count"
window_size = 10
minimum_calls = 4
failure_rate_threshold = 50.0
wait_in_open = "1s"
half_open_calls = 2
half_open_max_wait = "2s"
"#;

/// The breaker script, relative to the workspace root.
const BREAKER_SCRIPT: &str = "tests/python/test_breakers.py";

/// The dead-letter script expects queue `orders` with the default limits (1 MiB payloads)
/// and no `[queues.default]` template, so other names are NOT_FOUND.
const DLQ_CONFIG: &str = "[queues.orders]\nretention = \"1d\"\n";

/// The dead-letter script, relative to the workspace root.
const DLQ_SCRIPT: &str = "tests/python/test_dead_letters.py";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Fails (never skips) when python3 or its gRPC packages are missing.
fn require_python_grpc() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools, grpc_health, grpc_reflection, envoy.service.ratelimit.v3.rls_pb2",
        ])
        .output();
    let problem = match &out {
        Err(e) => format!("cannot run python3: {e}"),
        Ok(o) if !o.status.success() => String::from_utf8_lossy(&o.stderr).into_owned(),
        Ok(_) => return,
    };
    panic!(
        "the Python client test needs python3 with grpcio, grpcio-tools and xds-protos: run \
         `pip install grpcio grpcio-tools grpcio-health-checking grpcio-reflection xds-protos` \
         (or `python3 -m pip install -r tests/python/requirements.txt`; scripts/test does it)\n\
         {problem}"
    );
}

/// The Envoy RLS script, relative to the workspace root.
const RLS_SCRIPT: &str = "tests/python/test_rls.py";

fn run_against(server: &TestServer, store: &str, script: &str) {
    run_with(server, store, script, &[]);
}

/// [`run_against`] with more arguments for the script.
fn run_with(server: &TestServer, store: &str, script: &str, extra: &[String]) {
    let target = server.url().trim_start_matches("http://").to_owned();
    let out = Command::new("python3")
        .arg(script)
        .args(["--server", &target])
        .args(extra)
        .current_dir(workspace_root())
        .output()
        .expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let summary_ok = last
        .strip_suffix(" passed, 0 failed")
        .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0));
    assert!(
        out.status.success() && summary_ok,
        "`python3 {script} --server {target}` failed against the {store} store ({}):\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
        out.status,
        server.logs().join("\n")
    );
    println!("{script} on {store}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_against_redis() {
    require_python_grpc();
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(redis.url(), CONFIG);
    tokio::task::spawn_blocking(move || run_against(&server, "Redis", SCRIPT))
        .await
        .unwrap();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_against_memory() {
    require_python_grpc();
    let server = TestServer::in_memory(CONFIG);
    tokio::task::spawn_blocking(move || run_against(&server, "memory", SCRIPT))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_breakers_against_redis() {
    require_python_grpc();
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(redis.url(), BREAKER_CONFIG);
    tokio::task::spawn_blocking(move || run_against(&server, "Redis", BREAKER_SCRIPT))
        .await
        .unwrap();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_breakers_against_memory() {
    require_python_grpc();
    let server = TestServer::in_memory(BREAKER_CONFIG);
    tokio::task::spawn_blocking(move || run_against(&server, "memory", BREAKER_SCRIPT))
        .await
        .unwrap();
}

/// A server reading `tests/fixtures/rls/` with the default RLS settings.
fn rls_server(redis_url: Option<&str>) -> TestServer {
    let fixtures = workspace_root().join("tests/fixtures/rls");
    TestServer::start(ServerOptions {
        redis_url: redis_url.map(str::to_owned),
        extra_args: vec!["--rls-config".into(), fixtures.display().to_string()],
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_envoy_rls_client_against_redis() {
    require_python_grpc();
    let redis = TestRedis::start().await;
    let server = rls_server(Some(redis.url()));
    tokio::task::spawn_blocking(move || run_against(&server, "Redis", RLS_SCRIPT))
        .await
        .unwrap();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_envoy_rls_client_against_memory() {
    require_python_grpc();
    let server = rls_server(None);
    tokio::task::spawn_blocking(move || run_against(&server, "memory", RLS_SCRIPT))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_dead_letters_against_redis() {
    require_python_grpc();
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(redis.url(), DLQ_CONFIG);
    tokio::task::spawn_blocking(move || run_against(&server, "Redis", DLQ_SCRIPT))
        .await
        .unwrap();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_dead_letters_against_memory() {
    require_python_grpc();
    let server = TestServer::in_memory(DLQ_CONFIG);
    tokio::task::spawn_blocking(move || run_against(&server, "memory", DLQ_SCRIPT))
        .await
        .unwrap();
}

/// The tokens `tests/python/test_auth.py` uses: (name, token, namespaces, role, extra).
const AUTH_TOKENS: &[floodgate_tests::e2e_support::TestToken<'static>] = &[
    ("py-app", "fgt_py_app", r#"["team-a"]"#, "app", ""),
    (
        "py-operator",
        "fgt_py_operator",
        r#"["team-a"]"#,
        "operator",
        "",
    ),
    ("py-prefix", "fgt_py_prefix", r#"["team-b.*"]"#, "app", ""),
    (
        "py-expired",
        "fgt_py_expired",
        r#"["team-a"]"#,
        "app",
        "expires = \"2020-01-01T00:00:00Z\"",
    ),
    (
        "py-flood",
        "fgt_py_flood",
        r#"["team-a"]"#,
        "app",
        "rate = \"3/h\"",
    ),
    (
        "py-calm",
        "fgt_py_calm",
        r#"["team-a"]"#,
        "app",
        "rate = \"1000/s\"",
    ),
];

/// The auth script's configuration: policy `api`, breaker `pay` and [`AUTH_TOKENS`].
fn auth_config() -> String {
    let mut c = String::from(
        "[policies.api]\nalgorithm = \"token_bucket\"\nlimit = 1000\nperiod = \"1s\"\n\n[breakers.pay]\n",
    );
    c.push_str(&floodgate_tests::e2e_support::token_tables(AUTH_TOKENS));
    c
}

/// The auth script, relative to the workspace root.
const AUTH_SCRIPT: &str = "tests/python/test_auth.py";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_auth_against_redis() {
    require_python_grpc();
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(redis.url(), &auth_config());
    tokio::task::spawn_blocking(move || run_against(&server, "Redis", AUTH_SCRIPT))
        .await
        .unwrap();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_auth_against_memory() {
    require_python_grpc();
    let server = TestServer::in_memory(&auth_config());
    tokio::task::spawn_blocking(move || run_against(&server, "memory", AUTH_SCRIPT))
        .await
        .unwrap();
}

/// The TLS script, relative to the workspace root.
const TLS_SCRIPT: &str = "tests/python/test_tls.py";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_mutual_tls_against_memory() {
    use floodgate_tests::tls_support::Ca;
    require_python_grpc();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let cert = ca.server(dir.path(), "server");
    let client = ca.client(dir.path(), "py-client");
    let other = Ca::new(dir.path(), "other");
    let stranger = other.client(dir.path(), "py-stranger");
    let path = |p: &Path| p.display().to_string();
    let server = TestServer::start(ServerOptions {
        config: Some(CONFIG.into()),
        extra_args: vec![
            "--tls-cert".into(),
            path(&cert.cert),
            "--tls-key".into(),
            path(&cert.key),
            "--tls-client-ca".into(),
            path(&ca.pem),
        ],
        ..Default::default()
    });
    let args: Vec<String> = [
        ("--ca", &ca.pem),
        ("--client-cert", &client.cert),
        ("--client-key", &client.key),
        ("--other-ca", &other.pem),
        ("--other-cert", &stranger.cert),
        ("--other-key", &stranger.key),
    ]
    .into_iter()
    .flat_map(|(flag, p)| [flag.to_owned(), path(p)])
    .collect();
    tokio::task::spawn_blocking(move || run_with(&server, "memory", TLS_SCRIPT, &args))
        .await
        .unwrap();
    drop(dir);
}
