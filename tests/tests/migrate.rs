//! The Redis schema and its migrations (issue #7 item 4), against real Redis:
//! - `floodgate migrate` through the real binary: an empty store, again (a no-op), a dry run,
//!   the configured key prefix, and refusal of a newer schema;
//! - `floodgate serve`: initialises an empty store, refuses a newer schema naming both
//!   versions, names `floodgate migrate` for an older one or migrates with
//!   `--auto-migrate`, and re-initialises a Redis that lost its data while it ran;
//! - the runner itself with an injected list of two migrations: only the missing steps run,
//!   a step refuses a store below its predecessor, concurrent runs apply once.
//!
//! Tests that write schema versions by hand use a private `redis-server` each, so a
//! `fg:schema` of version 99 never meets another test's server.
use std::{
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use floodgate_server::{
    keys::Keys,
    store::redis::schema::{CURRENT_SCHEMA, MIGRATIONS, Migration, Schema, SchemaError},
};
use floodgate_tests::{
    redis::TestRedis,
    server::{ServerOptions, TestServer, binary},
    unique_namespace,
};
use redis::Commands;

/// Runs the floodgate binary with `args`; (exit status, stdout, stderr). A process that
/// has not exited within 30 s is killed and fails the test.
async fn floodgate(args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in [
        "FLOODGATE_REDIS_URL",
        "FLOODGATE_CONFIG",
        "FLOODGATE_AUTO_MIGRATE",
        "FLOODGATE_LISTEN",
        "FLOODGATE_HTTP_LISTEN",
        "FLOODGATE_STORE_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("floodgate {args:?} did not exit within 30 s"))
        .expect("cannot run the floodgate binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `floodgate serve` on `url` with ephemeral ports and `extra` flags, expected to refuse
/// to start: its exit status and stderr.
async fn serve_expecting_refusal(url: &str, extra: &[&str]) -> (ExitStatus, String) {
    let mut args = vec![
        "serve",
        "--redis",
        url,
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let (status, _, stderr) = floodgate(&args).await;
    (status, stderr)
}

/// The schema hash as (field, value) pairs.
fn schema_hash(redis: &TestRedis, key: &str) -> std::collections::HashMap<String, String> {
    redis.connection().hgetall(key).expect("HGETALL")
}

fn version(redis: &TestRedis, key: &str) -> Option<String> {
    redis.connection().hget(key, "version").expect("HGET")
}

fn set_version(redis: &TestRedis, v: u32) {
    let _: () = redis
        .connection()
        .hset("fg:schema", "version", v)
        .expect("HSET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_an_empty_store_then_again_is_a_no_op() {
    let redis = TestRedis::private();
    let (status, out, err) = floodgate(&["migrate", "--redis", redis.url()]).await;
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("no schema (an empty store)"), "{out}");
    assert!(out.contains("applied 0001 initial"), "{out}");
    assert!(out.contains("now holds floodgate schema 1"), "{out}");
    let first = schema_hash(&redis, "fg:schema");
    assert_eq!(first.get("version").map(String::as_str), Some("1"));
    assert_eq!(
        first.get("by").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        first
            .get("applied:1")
            .is_some_and(|h| h.contains("initial")),
        "{first:?}"
    );
    let ttl: i64 = redis.connection().ttl("fg:schema").unwrap();
    assert_eq!(ttl, -1, "the schema record must never expire");

    let (status, out, err) = floodgate(&["migrate", "--redis", redis.url()]).await;
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("nothing to do"), "{out}");
    assert!(!out.contains("applied 0001"), "{out}");
    assert_eq!(
        schema_hash(&redis, "fg:schema"),
        first,
        "a second run must write nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing() {
    let redis = TestRedis::private();
    let (status, out, err) = floodgate(&["migrate", "--redis", redis.url(), "--dry-run"]).await;
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("would apply"), "{out}");
    assert!(out.contains("0001 initial"), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    let keys: i64 = redis::cmd("DBSIZE").query(&mut redis.connection()).unwrap();
    assert_eq!(keys, 0, "a dry run wrote to Redis");

    let (status, ..) = floodgate(&["migrate", "--redis", redis.url()]).await;
    assert!(status.success());
    let (status, out, _) = floodgate(&["migrate", "--redis", redis.url(), "--dry-run"]).await;
    assert!(status.success());
    assert!(out.contains("nothing to do"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_uses_the_configured_key_prefix_and_url() {
    let redis = TestRedis::start().await;
    let prefix = unique_namespace("mig");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        format!(
            "key_prefix = \"{prefix}\"\nredis_url = \"{}\"\n",
            redis.url()
        )
        .as_bytes(),
    )
    .unwrap();
    let path = file.path().to_str().unwrap();
    let (status, out, err) = floodgate(&["migrate", "--config", path]).await;
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("applied 0001 initial"), "{out}");
    assert_eq!(
        version(&redis, &format!("{prefix}:schema")).as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_newer_schema() {
    let redis = TestRedis::private();
    set_version(&redis, CURRENT_SCHEMA + 1);
    let (status, out, err) = floodgate(&["migrate", "--redis", redis.url()]).await;
    assert!(!status.success(), "{out}\n{err}");
    let newer = format!(
        "Redis holds floodgate schema {} but this floodgate understands up to {CURRENT_SCHEMA}",
        CURRENT_SCHEMA + 1
    );
    assert!(err.contains(&newer), "{err}");
    assert_eq!(
        version(&redis, "fg:schema"),
        Some((CURRENT_SCHEMA + 1).to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_schema_key_it_did_not_write() {
    let redis = TestRedis::private();
    let _: () = redis.connection().set("fg:schema", "1").unwrap();
    let (status, out, err) = floodgate(&["migrate", "--redis", redis.url()]).await;
    assert!(!status.success(), "{out}\n{err}");
    assert!(
        err.contains("the schema key fg:schema is not floodgate's: it is a string"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_newer_schema_naming_both_versions() {
    let redis = TestRedis::private();
    let newer = CURRENT_SCHEMA + 2;
    set_version(&redis, newer);
    // --auto-migrate never downgrades.
    for extra in [&[][..], &["--auto-migrate"][..]] {
        let (status, err) = serve_expecting_refusal(redis.url(), extra).await;
        assert!(!status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "error: Redis holds floodgate schema {newer} but this floodgate understands up to {CURRENT_SCHEMA}; upgrade floodgate"
            )),
            "{err}"
        );
        assert!(!err.contains("gRPC listening"), "{err}");
    }
    assert_eq!(version(&redis, "fg:schema"), Some(newer.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_an_older_schema_names_migrate_or_migrates_with_auto_migrate() {
    let redis = TestRedis::private();
    // Version 0: a store marked before any migration ran, older than every floodgate.
    set_version(&redis, 0);
    let (status, err) = serve_expecting_refusal(redis.url(), &[]).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "Redis holds floodgate schema 0, this floodgate needs {CURRENT_SCHEMA}: run \
             `floodgate migrate --redis {}` or start with --auto-migrate",
            redis.url()
        )),
        "{err}"
    );
    assert_eq!(version(&redis, "fg:schema").as_deref(), Some("0"));

    let server = TestServer::start(ServerOptions {
        redis_url: Some(redis.url().to_owned()),
        extra_args: vec!["--auto-migrate".into()],
        ..Default::default()
    });
    assert_eq!(
        version(&redis, "fg:schema"),
        Some(CURRENT_SCHEMA.to_string())
    );
    let logs = server.logs().join("\n");
    assert!(
        logs.contains(&format!(
            "migrated Redis from floodgate schema 0 to {CURRENT_SCHEMA} (--auto-migrate)"
        )),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_initialises_an_empty_store() {
    let redis = TestRedis::private();
    let server = TestServer::on_redis(redis.url(), "");
    assert_eq!(
        version(&redis, "fg:schema"),
        Some(CURRENT_SCHEMA.to_string())
    );
    let logs = server.logs().join("\n");
    assert!(
        logs.contains(&format!(
            "empty store: initialised floodgate schema {CURRENT_SCHEMA}"
        )),
        "{logs}"
    );
    drop(server);
    // A second server on the now current store just proceeds.
    let again = TestServer::on_redis(redis.url(), "");
    let logs = again.logs().join("\n");
    assert!(
        logs.contains(&format!("Redis holds floodgate schema {CURRENT_SCHEMA}")),
        "{logs}"
    );
    assert!(!logs.contains("initialised"), "{logs}");
}

/// Waits up to 10 s for the schema record to be back at the current version.
async fn schema_comes_back(redis: &TestRedis, server: &TestServer, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while version(redis, "fg:schema") != Some(CURRENT_SCHEMA.to_string()) {
        assert!(
            Instant::now() < deadline,
            "no schema record 10 s after {after}:\n{}",
            server.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reinitialises_a_redis_that_lost_its_data() {
    let mut redis = TestRedis::private();
    let server = TestServer::on_redis(redis.url(), "");
    assert!(version(&redis, "fg:schema").is_some());

    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .unwrap();
    schema_comes_back(&redis, &server, "FLUSHALL").await;
    let lost =
        "Redis lost its data (restart without persistence?); re-initialised floodgate schema";
    assert!(
        server.logs().iter().any(|l| l.contains(lost)),
        "{}",
        server.logs().join("\n")
    );

    // The real thing: the Redis process restarts empty under the running server.
    redis.restart_empty();
    schema_comes_back(&redis, &server, "a restart of Redis").await;
    let warnings = server.logs().iter().filter(|l| l.contains(lost)).count();
    assert_eq!(warnings, 2, "{}", server.logs().join("\n"));
    // And the server still decides on the new Redis.
    let client = server.client().await;
    let d = client
        .acquire("migrate-test")
        .check(
            "k",
            floodgate_client::Policy::fixed_window(5, Duration::from_secs(60)),
        )
        .send()
        .await
        .unwrap();
    assert!(d.allowed && !d.degraded, "{d:?}");
}

/// A second migration for the runner tests: no data change, it only records version 2.
static TWO: [Migration; 2] = [
    MIGRATIONS[0],
    Migration {
        version: 2,
        name: "test-two",
        source: concat!(
            include_str!("../../migrations/prelude.lua"),
            "local skip = schema_begin()\nif skip then return skip end\nreturn schema_commit()\n"
        ),
    },
];

fn applied_versions(applied: &[Migration]) -> Vec<u32> {
    applied.iter().map(|m| m.version).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_applies_only_the_missing_steps() {
    let redis = TestRedis::start().await;
    let mut conn = redis.async_connection().await;

    // Empty store: both steps, in order.
    let keys = Keys::new(unique_namespace("run"));
    let two = Schema::with_migrations(&keys, &TWO);
    let r = two.apply(&mut conn, false).await.unwrap();
    assert_eq!(r.before, None);
    assert_eq!(applied_versions(&r.applied), vec![1, 2]);
    assert_eq!(r.after.map(|s| s.version), Some(2));
    let r = two.apply(&mut conn, false).await.unwrap();
    assert!(r.plan.is_empty() && r.applied.is_empty(), "{r:?}");
    assert!(!two.run_step(&mut conn, &TWO[1]).await.unwrap(), "re-run");
    // This floodgate (schema 1) refuses the store the longer list left behind.
    match Schema::new(&keys).apply(&mut conn, false).await {
        Err(SchemaError::TooNew {
            store: 2,
            supported: 1,
        }) => {}
        other => panic!("expected TooNew {{ store: 2, supported: 1 }}, got {other:?}"),
    }

    // A store at 1 (what floodgate writes today) gets step 2 only; a dry run first.
    let keys = Keys::new(unique_namespace("run"));
    Schema::new(&keys).apply(&mut conn, false).await.unwrap();
    let two = Schema::with_migrations(&keys, &TWO);
    let dry = two.apply(&mut conn, true).await.unwrap();
    assert_eq!(applied_versions(&dry.plan.steps), vec![2]);
    assert!(dry.applied.is_empty());
    assert_eq!(dry.after.map(|s| s.version), Some(1), "dry run wrote");
    let r = two.apply(&mut conn, false).await.unwrap();
    assert_eq!(applied_versions(&r.applied), vec![2]);
    let history: std::collections::HashMap<String, String> =
        redis.connection().hgetall(two.key()).unwrap();
    assert!(history["applied:1"].contains("initial"), "{history:?}");
    assert!(history["applied:2"].contains("test-two"), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_refuses_a_store_below_its_predecessor() {
    let redis = TestRedis::start().await;
    let mut conn = redis.async_connection().await;
    let keys = Keys::new(unique_namespace("gap"));
    let two = Schema::with_migrations(&keys, &TWO);
    match two.run_step(&mut conn, &TWO[1]).await {
        Err(e @ SchemaError::Failed { version: 2, .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("migration 2 needs schema 1, the store holds 0"),
                "{text}"
            );
        }
        other => panic!("expected the script to refuse, got {other:?}"),
    }
    let exists: bool = redis.connection().exists(two.key()).unwrap();
    assert!(!exists, "a refused step wrote the schema key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_initialisations_apply_once() {
    let redis = TestRedis::start().await;
    let keys = Keys::new(unique_namespace("race"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let schema = Schema::with_migrations(&keys, &TWO);
        let mut conn = redis.async_connection().await;
        tasks.push(tokio::spawn(async move {
            schema.apply(&mut conn, false).await.unwrap().applied
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        applied.extend(applied_versions(&t.await.unwrap()));
    }
    applied.sort_unstable();
    assert_eq!(applied, vec![1, 2], "each step must apply exactly once");
}
