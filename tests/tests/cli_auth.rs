//! The security commands through the real binary: `floodgate serve` refuses a
//! non-loopback address without tokens unless `--insecure`; `floodgate token new` prints a
//! token and a `[[tokens]]` table that work when pasted into a config; `--token` and
//! `FLOODGATE_TOKEN` reach the server; `floodgate audit` prints the trail.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use floodgate_tests::server::{TestServer, binary};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn floodgate(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in ["FLOODGATE_SERVER", "FLOODGATE_TOKEN", "FLOODGATE_NAMESPACE"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("floodgate {args:?} did not exit within 30 s"))
        .expect("run floodgate");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts `floodgate serve ARGS` and waits for a line containing `marker` or for the exit;
/// returns (exited, everything logged).
fn serve_until(args: &[&str], marker: &str) -> (bool, String) {
    let mut child = Command::new(binary())
        .arg("serve")
        .args(["--http-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("FLOODGATE_INSECURE")
        .env_remove("FLOODGATE_CONFIG")
        .env_remove("FLOODGATE_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start floodgate serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logs = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            logs.push_str(&line);
            logs.push('\n');
            if line.contains(marker) {
                let _ = child.kill();
                let _ = child.wait();
                return (false, logs);
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                logs.push_str(&line);
                logs.push('\n');
            }
            return (true, logs);
        }
        assert!(
            Instant::now() < deadline,
            "serve neither listened nor exited:\n{logs}"
        );
    }
}

#[test]
fn serve_refuses_a_public_address_without_tokens_unless_insecure() {
    let (exited, logs) = serve_until(&["--listen", "0.0.0.0:0"], "gRPC listening on");
    assert!(exited, "must refuse:\n{logs}");
    assert!(
        logs.contains("refusing to serve on 0.0.0.0:0 without authentication")
            && logs.contains("--insecure")
            && logs.contains("floodgate token new"),
        "{logs}"
    );
    let (exited, logs) = serve_until(
        &["--listen", "0.0.0.0:0", "--insecure"],
        "gRPC listening on",
    );
    assert!(!exited, "--insecure must start:\n{logs}");
    assert!(logs.contains("authentication OFF"), "{logs}");
    // Loopback without tokens is the default and says so.
    let (exited, logs) = serve_until(&["--listen", "127.0.0.1:0"], "gRPC listening on");
    assert!(!exited, "{logs}");
    assert!(logs.contains("authentication off"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_new_pasted_into_a_config_works_and_audit_prints_the_trail() {
    let made = floodgate(
        &[
            "token",
            "new",
            "--name",
            "ops-a",
            "--namespaces",
            "team-a,team-b.*",
            "--role",
            "operator",
            "--expires",
            "30d",
            "--rate",
            "1000/s",
        ],
        &[],
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    let token = made
        .stdout
        .lines()
        .find(|l| l.starts_with("fgt_"))
        .expect("token line")
        .to_owned();
    assert_eq!(token.len(), 4 + 64, "256 bits in hex");
    let table = &made.stdout[made.stdout.find("[[tokens]]").expect("table")..];
    assert!(
        !table.contains(&token),
        "the config must not hold the token"
    );
    let server = TestServer::in_memory(&format!("[breakers.pay]\n\n{table}"));
    let url = server.url();

    // Without a token: refused, with the fix in the message.
    let r = floodgate(
        &[
            "acquire", "--server", url, "-n", "team-a", "k", "--limit", "10/s",
        ],
        &[],
    )
    .await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("requires a valid token") && r.stderr.contains("--token"),
        "{}",
        r.stderr
    );
    // --token and FLOODGATE_TOKEN both work.
    let r = floodgate(
        &[
            "acquire", "--server", url, "-n", "team-a", "k", "--limit", "10/s", "--token", &token,
        ],
        &[],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let r = floodgate(
        &[
            "breaker",
            "force-open",
            "pay",
            "--server",
            url,
            "-n",
            "team-b.x",
        ],
        &[("FLOODGATE_TOKEN", &token)],
    )
    .await;
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    // Outside the grant: refused naming the namespace.
    let r = floodgate(
        &[
            "breaker",
            "force-open",
            "pay",
            "--server",
            url,
            "-n",
            "team-c",
        ],
        &[("FLOODGATE_TOKEN", &token)],
    )
    .await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("\"team-c\"") && r.stderr.contains("ops-a"),
        "{}",
        r.stderr
    );

    let audit = floodgate(&["audit", "--server", url], &[("FLOODGATE_TOKEN", &token)]).await;
    assert!(audit.ok, "{}", audit.stderr);
    let lines: Vec<&str> = audit.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("ops-a")
            && l.contains("SetState")
            && l.contains("team-b.x")
            && l.contains(" Ok")),
        "{}",
        audit.stdout
    );
    // Refused attempts at team-c are another team's entries: not shown to this token.
    assert!(!audit.stdout.contains("team-c"), "{}", audit.stdout);
    let json = floodgate(
        &["audit", "--server", url, "--json"],
        &[("FLOODGATE_TOKEN", &token)],
    )
    .await;
    let first: serde_json::Value =
        serde_json::from_str(json.stdout.lines().next().expect("a line")).expect("json");
    assert_eq!(first["caller"], "ops-a");
    assert_eq!(first["outcome"], "Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_new_names_the_flag_that_is_wrong() {
    for (args, flag) in [
        (
            &["--name", "x", "--namespaces", "a", "--role", "root"][..],
            "--role",
        ),
        (
            &["--name", "x", "--namespaces", "a:b", "--role", "app"][..],
            "--namespaces",
        ),
        (
            &[
                "--name",
                "x",
                "--namespaces",
                "a",
                "--role",
                "app",
                "--rate",
                "fast",
            ][..],
            "--rate",
        ),
        (
            &[
                "--name",
                "x",
                "--namespaces",
                "a",
                "--role",
                "app",
                "--expires",
                "soon",
            ][..],
            "--expires",
        ),
    ] {
        let mut all = vec!["token", "new"];
        all.extend_from_slice(args);
        let r = floodgate(&all, &[]).await;
        assert!(!r.ok, "{args:?}");
        assert!(r.stderr.contains(flag), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}
