//! `floodgate dlq stats|list|show|replay|redrive|archive|restore|purge` through the real
//! binary against a real server (memory store; redrive on Redis, where target streams
//! live): entries published with the client crate, read back in text and JSON, filtered,
//! shown with their payload, replayed through a command, archived, restored and purged; a
//! purge without a terminal and without --yes refuses and deletes nothing.
use std::{process::Stdio, time::Duration};

use floodgate_client::{
    Client,
    dead_letters::{Message, Page},
};
use floodgate_tests::{
    redis::TestRedis,
    server::{TestServer, binary},
    unique_namespace,
};
use serde_json::Value;

const CONFIG: &str = r#"
[queues.orders]
visibility_timeout = "30s"
redrive_targets = ["app:orders:retry"]

[queues.default]
"#;

/// What one run printed.
struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `floodgate dlq ARGS --server URL` with no terminal on stdin; a process that has not
/// exited within 30 s fails the test.
async fn dlq(url: &str, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.arg("dlq")
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
        .unwrap_or_else(|_| panic!("floodgate dlq {args:?} did not exit within 30 s"))
        .expect("cannot run the floodgate binary");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(url: &str, args: &[&str]) -> String {
    let r = dlq(url, args).await;
    assert!(
        r.ok,
        "floodgate dlq {args:?} failed ({:?}):\n{}\n{}",
        r.code, r.stdout, r.stderr
    );
    r.stdout
}

async fn json(url: &str, args: &[&str]) -> Value {
    let out = ok(url, args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

fn ids(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Publishes 6 entries: reasons timeout ×4 / declined ×2, tenant acme for even i.
async fn seed(client: &Client, ns: &str) -> Vec<String> {
    let q = client.dead_letters(ns, "orders");
    let mut out = Vec::new();
    for i in 0..6 {
        let p = q
            .publish(
                Message::new(format!("{{\"order\":{i}}}").into_bytes())
                    .reason(if i < 4 { "timeout" } else { "declined" })
                    .source("billing")
                    .attempts(3)
                    .meta("tenant", if i % 2 == 0 { "acme" } else { "globex" }),
            )
            .await
            .expect("publish");
        out.push(p.id);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_list_show_archive_restore_purge() {
    let server = TestServer::in_memory(CONFIG);
    let url = server.url();
    let ns = unique_namespace("cli");
    let client = server.client().await;
    let published = seed(&client, &ns).await;
    let binary_id = client
        .dead_letters(&ns, "orders")
        .publish(Message::new(vec![0u8, 0xff, 0xfe, 7]).reason("binary"))
        .await
        .unwrap()
        .id;

    // stats
    let s = json(url, &["stats", "-n", &ns, "orders", "--json"]).await;
    assert_eq!(s["count"], 7);
    assert_eq!(s["by_reason"]["timeout"], 4);
    assert_eq!(s["by_reason"]["declined"], 2);
    assert_eq!(s["by_reason"]["binary"], 1);
    assert_eq!(s["archived"], 0);
    let text = ok(url, &["stats", "-n", &ns, "orders"]).await;
    assert!(text.contains("entries     7"), "{text}");
    assert!(text.contains("timeout"), "{text}");

    // list: everything, filters, order, limit
    let all = json(url, &["list", "-n", &ns, "orders", "--json"]).await;
    let mut want = published.clone();
    want.push(binary_id.clone());
    assert_eq!(ids(&all), want);
    assert_eq!(all["count"], 7);
    assert_eq!(all["more"], false);
    assert_eq!(all["messages"][0]["reason"], "timeout");
    assert_eq!(all["messages"][0]["metadata"]["tenant"], "acme");
    assert_eq!(all["messages"][0]["payload_size"], 11);
    assert!(all["messages"][0].get("payload").is_none());
    let timeouts = json(
        url,
        &[
            "list",
            "-n",
            &ns,
            "orders",
            "--reason",
            "timeout",
            "--meta",
            "tenant=acme",
            "--json",
        ],
    )
    .await;
    assert_eq!(
        ids(&timeouts),
        vec![published[0].clone(), published[2].clone()]
    );
    let newest = json(
        url,
        &[
            "list",
            "-n",
            &ns,
            "orders",
            "--newest-first",
            "--limit",
            "2",
            "--json",
        ],
    )
    .await;
    assert_eq!(ids(&newest), vec![binary_id.clone(), published[5].clone()]);
    assert_eq!(newest["more"], true);
    let recent = json(
        url,
        &["list", "-n", &ns, "orders", "--since", "1h", "--json"],
    )
    .await;
    assert_eq!(recent["count"], 7);
    let future = json(
        url,
        &[
            "list",
            "-n",
            &ns,
            "orders",
            "--until",
            "2000-01-01T00:00:00Z",
            "--json",
        ],
    )
    .await;
    assert_eq!(future["count"], 0);
    let with_payloads = json(
        url,
        &[
            "list",
            "-n",
            &ns,
            "orders",
            "--reason",
            "declined",
            "--payloads",
            "--json",
        ],
    )
    .await;
    assert_eq!(with_payloads["messages"][0]["payload"], "{\"order\":4}");
    let table = ok(url, &["list", "-n", &ns, "orders"]).await;
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 8, "{table}");
    assert!(
        table.contains(&published[3]) && table.contains("tenant=globex"),
        "{table}"
    );
    let bad = dlq(url, &["list", "-n", &ns, "orders", "--meta", "novalue"]).await;
    assert!(
        !bad.ok && bad.stderr.contains("KEY=VALUE"),
        "{}",
        bad.stderr
    );

    // show: text payload, binary payload as base64, raw bytes to a file, JSON
    let shown = ok(url, &["show", "-n", &ns, "orders", &published[1]]).await;
    assert!(shown.contains("reason           timeout"), "{shown}");
    assert!(shown.contains("tenant = globex"), "{shown}");
    assert!(shown.contains("payload (11 bytes, UTF-8)"), "{shown}");
    assert!(shown.contains("{\"order\":1}"), "{shown}");
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("payload.bin");
    let shown = ok(
        url,
        &[
            "show",
            "-n",
            &ns,
            "orders",
            &binary_id,
            "--payload-out",
            out_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(shown.contains("not UTF-8: shown as base64"), "{shown}");
    assert!(shown.contains("AP/+Bw=="), "{shown}");
    assert_eq!(std::fs::read(&out_file).unwrap(), vec![0u8, 0xff, 0xfe, 7]);
    let j = json(url, &["show", "-n", &ns, "orders", &binary_id, "--json"]).await;
    assert_eq!(j["payload"], "AP/+Bw==");
    assert_eq!(j["payload_encoding"], "base64");
    let missing = dlq(url, &["show", "-n", &ns, "orders", "1-0"]).await;
    assert!(!missing.ok, "{}", missing.stdout);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    assert!(missing.stderr.contains("hint:"), "{}", missing.stderr);
    let unknown = dlq(url, &["stats", "-n", &ns, "bad name!"]).await;
    assert!(
        !unknown.ok && unknown.stderr.contains("hint: fix QUEUE"),
        "{}",
        unknown.stderr
    );

    // archive and restore
    let a = json(
        url,
        &[
            "archive",
            "-n",
            &ns,
            "orders",
            &published[0],
            &published[1],
            "--json",
        ],
    )
    .await;
    assert_eq!(a["archived"], 2);
    let archived = json(url, &["list", "-n", &ns, "orders", "--archived", "--json"]).await;
    assert_eq!(archived["count"], 2);
    assert_eq!(
        archived["messages"][0]["original_id"],
        published[0].as_str()
    );
    let archive_id = archived["messages"][1]["id"].as_str().unwrap().to_owned();
    let text = ok(url, &["restore", "-n", &ns, "orders", &archive_id]).await;
    assert!(text.contains("restored 1 of 1"), "{text}");
    let s = json(url, &["stats", "-n", &ns, "orders", "--json"]).await;
    assert_eq!(
        (s["count"].as_u64(), s["archived"].as_u64()),
        (Some(6), Some(1))
    );

    // purge: refused without a terminal and without --yes; nothing deleted
    let refused = dlq(url, &["purge", "-n", &ns, "orders"]).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    assert_eq!(
        json(url, &["stats", "-n", &ns, "orders", "--json"]).await["count"],
        6
    );
    // with a filter, then the archive, then everything
    let p = json(
        url,
        &[
            "purge", "-n", &ns, "orders", "--reason", "declined", "--yes", "--json",
        ],
    )
    .await;
    assert_eq!(p["purged"], 2);
    let text = ok(url, &["purge", "-n", &ns, "orders", "--archived", "--yes"]).await;
    assert!(text.contains("purged 1 archived entries"), "{text}");
    let text = ok(url, &["purge", "-n", &ns, "orders", "--yes"]).await;
    assert!(text.contains("purged 4 entries"), "{text}");
    let s = json(url, &["stats", "-n", &ns, "orders", "--json"]).await;
    assert_eq!(
        (s["count"].as_u64(), s["archived"].as_u64()),
        (Some(0), Some(0))
    );
    let empty = ok(url, &["list", "-n", &ns, "orders"]).await;
    assert!(empty.contains("(no entries)"), "{empty}");
}

/// `replay` runs the command per entry with the payload on stdin and the entry in the
/// environment; exit 0 acks, anything else nacks (claimable again, delivered twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_acks_on_success_and_nacks_on_failure() {
    let server = TestServer::in_memory(CONFIG);
    let url = server.url();
    let ns = unique_namespace("cli");
    let client = server.client().await;
    let published = seed(&client, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // Fails for tenant globex; records what it saw.
    let cmd = format!(
        "payload=$(cat); echo \"$FLOODGATE_DLQ_ID $FLOODGATE_DLQ_REASON \
         $FLOODGATE_DLQ_META_TENANT $FLOODGATE_DLQ_DELIVERY_COUNT $payload\" >> {log}; \
         [ \"$FLOODGATE_DLQ_META_TENANT\" = acme ]",
        log = log.display()
    );
    let r = dlq(
        url,
        &["replay", "-n", &ns, "orders", "--exec", &cmd, "--json"],
    )
    .await;
    assert_eq!(
        r.code,
        Some(3),
        "failures exit 3:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["replayed"], 6);
    assert_eq!(v["acked"], 3);
    assert_eq!(v["failed"], 3);
    assert_eq!(v["nacked"], 3);
    let lines = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(
        lines[0],
        format!("{} timeout acme 1 {{\"order\":0}}", published[0])
    );
    // The nacked ones are claimable at once, with a second delivery.
    let q = client.dead_letters(&ns, "orders");
    let Page { messages, .. } = q.list_page(&Default::default(), None).await.unwrap();
    let left: Vec<_> = messages.iter().map(|m| m.id.clone()).collect();
    assert_eq!(
        left,
        vec![
            published[1].clone(),
            published[3].clone(),
            published[5].clone()
        ]
    );
    let r = dlq(
        url,
        &[
            "replay",
            "-n",
            &ns,
            "orders",
            "--exec",
            "cat > /dev/null",
            "--count",
            "2",
        ],
    )
    .await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("replayed 2 entries"), "{}", r.stdout);
    assert!(r.stdout.contains("2 acked, 0 failed"), "{}", r.stdout);
    let rest = q.get(&published[5]).await.unwrap();
    assert_eq!(rest.delivery_count, 1, "claimed once, then nacked");
    let none = dlq(url, &["replay", "-n", &ns, "other", "--exec", "true"]).await;
    assert!(
        none.ok && none.stdout.contains("nothing to replay"),
        "{}",
        none.stdout
    );
}

/// `redrive` moves matching entries to an allowed stream in Redis (each carrying its
/// dead-letter id); an unlisted target is refused with a hint naming --target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_moves_matching_entries_to_the_target_stream() {
    let redis = TestRedis::start().await;
    let server = TestServer::on_redis(redis.url(), CONFIG);
    let url = server.url();
    let ns = unique_namespace("cli");
    let client = server.client().await;
    let published = seed(&client, &ns).await;
    let refused = dlq(
        url,
        &["redrive", "-n", &ns, "orders", "--target", "elsewhere"],
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("hint: fix --target"),
        "{}",
        refused.stderr
    );
    let v = json(
        url,
        &[
            "redrive",
            "-n",
            &ns,
            "orders",
            "--target",
            "app:orders:retry",
            "--reason",
            "timeout",
            "--limit",
            "3",
            "--json",
        ],
    )
    .await;
    assert_eq!(v["moved"], 3);
    let text = ok(
        url,
        &[
            "redrive",
            "-n",
            &ns,
            "orders",
            "--target",
            "app:orders:retry",
            "--reason",
            "timeout",
        ],
    )
    .await;
    assert!(text.contains("moved 1 entries"), "{text}");
    let mut c = redis.async_connection().await;
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("app:orders:retry")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    // Each copy names its dead-letter id; a shared test Redis may hold other runs' copies.
    let ours: Vec<String> = entries
        .iter()
        .map(|(_, fields)| {
            fields
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|text| published.iter().any(|id| text.contains(id.as_str())))
        .collect();
    assert_eq!(ours.len(), 4, "{ours:?}");
    for id in &published[..4] {
        assert!(
            ours.iter().any(|t| t.contains(id.as_str())),
            "{id} not in the target: {ours:?}"
        );
    }
    let s = json(url, &["stats", "-n", &ns, "orders", "--json"]).await;
    assert_eq!(s["count"], 2);
    assert_eq!(s["by_reason"]["declined"], 2);
}
