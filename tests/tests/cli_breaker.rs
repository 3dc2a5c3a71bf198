//! `floodgate breaker list|get|history|force-open|disable|metrics-only|reset` through the
//! real binary against a real (memory-store) server: every verb in text and JSON, the
//! overrides seen by Acquire, the audit trail newest first, and the errors people meet (an
//! unconfigured breaker names the config table to add; bad flags name the flag; an
//! unreachable server says how to point --server at one).
use std::{process::Stdio, time::Duration};

use floodgate_client::proto::v1::{self as pb, rate_limiter_client::RateLimiterClient};
use floodgate_tests::{
    server::{TestServer, binary},
    unique_namespace,
};
use serde_json::Value;

/// One tuned breaker and no `default` template, so any other name is NOT_FOUND.
const CONFIG: &str = r#"
[breakers.pay]
window = "count"
window_size = 10
minimum_calls = 4
failure_rate_threshold = 50.0
wait_in_open = "30s"
half_open_calls = 3
"#;

/// What one run printed.
struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `floodgate breaker ARGS --server URL`; a process that has not exited within 30 s
/// fails the test.
async fn breaker(url: &str, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.arg("breaker")
        .args(args)
        .args(["--server", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in ["FLOODGATE_SERVER", "FLOODGATE_NAMESPACE"] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("floodgate breaker {args:?} did not exit within 30 s"))
        .expect("cannot run the floodgate binary");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command that must succeed; its stdout.
async fn ok(url: &str, args: &[&str]) -> String {
    let r = breaker(url, args).await;
    assert!(
        r.ok,
        "floodgate breaker {args:?} failed ({:?}):\n{}\n{}",
        r.code, r.stdout, r.stderr
    );
    r.stdout
}

async fn json(url: &str, args: &[&str]) -> Value {
    let out = ok(url, args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// Whether an Acquire through breaker `pay` is admitted, and the state it was decided in.
async fn admitted(url: &str, ns: &str) -> (bool, i32) {
    let mut c = RateLimiterClient::connect(url.to_owned())
        .await
        .expect("connect");
    let r = c
        .acquire(pb::AcquireRequest {
            namespace: ns.into(),
            breakers: vec!["pay".into()],
            ..Default::default()
        })
        .await
        .expect("Acquire")
        .into_inner();
    (r.allowed, r.breakers[0].state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_commands_against_a_server() {
    let server = TestServer::in_memory(CONFIG);
    let url = server.url().to_owned();
    let ns = unique_namespace("cli");
    let n = ns.as_str();

    // Nobody reported yet: listed from the configuration, CLOSED, without state.
    let listed = json(&url, &["list", "--namespace", n, "--json"]).await;
    let all = listed.as_array().expect("list --json prints an array");
    assert_eq!(all.len(), 1, "{listed}");
    assert_eq!(all[0]["breaker"], "pay");
    assert_eq!(all[0]["state"], "CLOSED");
    assert_eq!(all[0]["exists"], false);
    assert_eq!(all[0]["half_open_calls"], 3);
    let text = ok(&url, &["get", "--namespace", n, "pay"]).await;
    assert!(
        text.contains("CLOSED") && text.contains("never reported to"),
        "{text}"
    );
    let text = ok(&url, &["history", "--namespace", n, "pay"]).await;
    assert!(text.contains("no transitions"), "{text}");

    // force-open: printed, seen by get --json, and Acquire is refused.
    let text = ok(&url, &["force-open", "--namespace", n, "pay"]).await;
    assert!(
        text.contains("pay") && text.contains("FORCED_OPEN"),
        "{text}"
    );
    let info = json(&url, &["get", "-n", n, "pay", "--json"]).await;
    assert_eq!(info["state"], "FORCED_OPEN", "{info}");
    assert_eq!(info["breaker"], "pay");
    assert_eq!(info["namespace"], n);
    assert_eq!(info["exists"], true);
    assert_eq!(info["generation"], 2);
    assert_eq!(
        admitted(&url, n).await,
        (false, pb::BreakerState::ForcedOpen as i32)
    );

    // disable and metrics-only admit; --json prints the resulting info.
    let info = json(&url, &["disable", "-n", n, "pay", "--json"]).await;
    assert_eq!(info["state"], "DISABLED", "{info}");
    assert!(admitted(&url, n).await.0);
    let text = ok(&url, &["metrics-only", "-n", n, "pay"]).await;
    assert!(text.contains("METRICS_ONLY"), "{text}");

    // The table lists the breaker with its state and generation.
    let text = ok(&url, &["list", "-n", n]).await;
    let header = text.lines().next().unwrap_or_default();
    for column in [
        "BREAKER",
        "STATE",
        "FAILURE RATE",
        "SLOW RATE",
        "CALLS",
        "RETRY AFTER",
        "GENERATION",
    ] {
        assert!(header.contains(column), "{column} missing: {text}");
    }
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("pay ") && row.contains("METRICS_ONLY"),
        "{text}"
    );

    // reset: CLOSED with an empty window, printed; admitted again.
    let text = ok(&url, &["reset", "-n", n, "pay"]).await;
    assert!(
        text.contains("now CLOSED") && text.contains("calls 0"),
        "{text}"
    );
    let (allowed, state) = admitted(&url, n).await;
    assert!(allowed);
    assert_eq!(state, pb::BreakerState::Closed as i32);

    // history: every override, newest first, as text and JSON.
    let text = ok(&url, &["history", "-n", n, "pay"]).await;
    assert!(text.contains("set_state"), "{text}");
    assert!(text.contains("FORCED_OPEN → DISABLED"), "{text}");
    let newest = text
        .lines()
        .position(|l| l.contains("METRICS_ONLY → CLOSED"))
        .expect("the reset is listed");
    let oldest = text
        .lines()
        .position(|l| l.contains("CLOSED → FORCED_OPEN"))
        .expect("the force-open is listed");
    assert!(newest < oldest, "newest first:\n{text}");
    let events = json(&url, &["history", "-n", n, "pay", "--json"]).await;
    let events = events.as_array().expect("history --json prints an array");
    let to: Vec<&str> = events.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(to, ["CLOSED", "METRICS_ONLY", "DISABLED", "FORCED_OPEN"]);
    assert!(events.iter().all(|e| e["reason"] == "set_state"));
    let at = events[0]["at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('T'), "RFC 3339 UTC: {at}");
    let two = json(&url, &["history", "-n", n, "pay", "--limit", "2", "--json"]).await;
    assert_eq!(two.as_array().map(Vec::len), Some(2), "{two}");

    // An unconfigured breaker: exit 1, naming the tables to add.
    for args in [
        &["get", "-n", n, "nope"][..],
        &["force-open", "-n", n, "nope"][..],
        &["history", "-n", n, "nope"][..],
    ] {
        let r = breaker(&url, args).await;
        assert_eq!(r.code, Some(1), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("\"nope\"")
                && r.stderr.contains("[breakers.nope]")
                && r.stderr.contains("[breakers.default]"),
            "{args:?}: {}",
            r.stderr
        );
    }

    // Bad input names the flag; bad flags exit 2; an unreachable server says what to do.
    let r = breaker(&url, &["get", "-n", "bad ns", "pay"]).await;
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("namespace:") && r.stderr.contains("--namespace"),
        "{}",
        r.stderr
    );
    let r = breaker(&url, &["history", "-n", n, "pay", "--limit", "0"]).await;
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let dead = format!("http://127.0.0.1:{}", floodgate_tests::free_port());
    let r = breaker(&dead, &["list", "-n", n]).await;
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("cannot connect") && r.stderr.contains("--server"),
        "{}",
        r.stderr
    );
}
