//! An independent client in another language: `tests/python/test_rate_limiter.py` (Python
//! grpcio, stubs compiled from `proto/` at run time) against a server on Redis and one on
//! memory. Missing Python packages fail the test with the command that installs them.
use std::{path::PathBuf, process::Command};

use floodgate_tests::{
    redis::TestRedis,
    server::{ServerOptions, TestServer},
};

const CONFIG: &str = "[policies.api]\nalgorithm = \"token_bucket\"\nlimit = 3\nperiod = \"1h\"\n";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/test_rate_limiter.py")
}

fn require_python_grpc() {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools, grpc_health, grpc_reflection",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python client test needs python3 with grpcio: run \
         `python3 -m pip install -r tests/python/requirements.txt` (scripts/test does it)"
    );
}

fn run_against(server: &TestServer) {
    let target = server.url().trim_start_matches("http://").to_owned();
    let out = Command::new("python3")
        .arg(script())
        .args(["--server", &target])
        .output()
        .expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "Python client failed against {target}:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.logs().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_against_redis() {
    require_python_grpc();
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(redis.url(), CONFIG);
    tokio::task::spawn_blocking(move || run_against(&server))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_against_memory() {
    require_python_grpc();
    let server = TestServer::start(ServerOptions {
        config: Some(CONFIG.to_owned()),
        ..Default::default()
    });
    tokio::task::spawn_blocking(move || run_against(&server))
        .await
        .unwrap();
}
