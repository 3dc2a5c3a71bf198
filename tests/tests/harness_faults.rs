//! Self-tests of the fault harness (issue #6 item 5), so a failing fault test blames the
//! server and not its tools:
//! - the fault proxy passes, delays (measured), blackholes (no answer, connection kept),
//!   resets (the client sees ECONNRESET, also on new connections) and passes again, and its
//!   connection count returns to zero when clients leave, and dropping it ends its listener
//!   and connections;
//! - a private Redis pauses, resumes, is killed and restarts on the same port with the same
//!   arguments, and dropping a paused one leaves no process behind;
//! - a 6-node Redis Cluster starts, a key lands on the primary of its slot (and its
//!   replica), killing that primary promotes the replica within a bound (printed), a read
//!   issued on an existing redis-rs cluster connection during the failover completes (its
//!   latency is printed), a paused primary is replaced (a fresh redis-rs connection reaches
//!   the replacement) and rejoins as a replica when resumed, and a killed one rejoins when
//!   restarted;
//! - Sentinel: three sentinels agree on the master; SENTINEL FAILOVER and then killing the
//!   new master each give a new master (times printed), and a redis-rs Sentinel client
//!   follows both.
use std::{
    io::ErrorKind,
    time::{Duration, Instant},
};

use floodgate_tests::{
    fault_proxy::FaultProxy, redis::TestRedis, redis_cluster::TestCluster, sentinel::TestSentinel,
};
use redis::AsyncCommands;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends an inline `PING` on `stream` and reads the reply, within `within`.
async fn raw_ping(stream: &mut TcpStream, within: Duration) -> Result<String, String> {
    let io = async {
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match tokio::time::timeout(within, io).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(format!("{:?}: {e}", e.kind())),
        Err(_) => Err("timeout".to_owned()),
    }
}

/// Waits up to 5 s for `f` to hold.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_passes_delays_blackholes_resets_and_passes_again() {
    let redis = TestRedis::private();
    let proxy = FaultProxy::start(redis.addr()).await;
    assert_eq!(
        proxy.url(),
        format!("redis://127.0.0.1:{}", proxy.addr().port())
    );

    // Pass: a redis-rs client works through the proxy.
    let client = redis::Client::open(proxy.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.set("harness:k", "v").await.unwrap();
    let v: String = conn.get("harness:k").await.unwrap();
    assert_eq!(v, "v");
    let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        raw_ping(&mut held, Duration::from_secs(5)).await.unwrap(),
        "+PONG\r\n"
    );
    eventually("two live connections", || proxy.connections() == 2).await;
    let t = Instant::now();
    raw_ping(&mut held, Duration::from_secs(5)).await.unwrap();
    let passing = t.elapsed();

    // Delay: each direction adds the delay, on an existing connection and a new one.
    let delay = Duration::from_millis(200);
    proxy.delay(delay);
    let t = Instant::now();
    assert_eq!(
        raw_ping(&mut held, Duration::from_secs(10)).await.unwrap(),
        "+PONG\r\n"
    );
    let delayed = t.elapsed();
    assert!(
        delayed >= 2 * delay,
        "round trip {delayed:?} under twice the delay {delay:?}"
    );
    assert!(
        delayed < 2 * delay + Duration::from_secs(3),
        "round trip {delayed:?} far over 2 × {delay:?}"
    );
    let t = Instant::now();
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert!(
        t.elapsed() >= 2 * delay,
        "redis-rs round trip {:?} not delayed",
        t.elapsed()
    );
    println!("proxy round trip: passing {passing:?}, delayed by {delay:?} each way {delayed:?}");

    // Pass again: fast.
    proxy.pass();
    let t = Instant::now();
    raw_ping(&mut held, Duration::from_secs(5)).await.unwrap();
    assert!(
        t.elapsed() < delay,
        "still delayed after pass: {:?}",
        t.elapsed()
    );

    // Blackhole: no answer, but the connection stays open, old and new alike.
    proxy.blackhole();
    assert_eq!(
        raw_ping(&mut held, Duration::from_millis(500)).await,
        Err("timeout".into())
    );
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        raw_ping(&mut fresh, Duration::from_millis(500)).await,
        Err("timeout".into())
    );
    // redis-rs 1.x's own default response timeout (500 ms) may fire first.
    let timed = tokio::time::timeout(
        Duration::from_millis(800),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    assert!(
        !matches!(timed, Ok(Ok(_))),
        "redis-rs got an answer through a blackhole: {timed:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.connections(), 3, "a blackhole closed a connection");
    let mut probe = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(200), held.read(&mut probe)).await;
    assert!(
        still_open.is_err(),
        "the blackholed connection ended: {still_open:?}"
    );

    // Reset: every open connection gets RST, and so does a new one.
    proxy.reset();
    for (name, s) in [("held", &mut held), ("fresh", &mut fresh)] {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        let kind = r.expect("no reset within 5 s").unwrap_err().kind();
        assert_eq!(kind, ErrorKind::ConnectionReset, "{name}");
    }
    // The RST may even beat the connect call's own completion.
    let r = match TcpStream::connect(proxy.addr()).await {
        Ok(mut after) => raw_ping(&mut after, Duration::from_secs(5))
            .await
            .unwrap_err(),
        Err(e) => format!("{:?}: {e}", e.kind()),
    };
    assert!(
        r.starts_with("ConnectionReset") || r.starts_with("BrokenPipe"),
        "{r}"
    );
    let failed = tokio::time::timeout(
        Duration::from_secs(5),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await
    .expect("redis-rs hung on a reset connection");
    assert!(
        failed.is_err(),
        "redis-rs got an answer through a reset: {failed:?}"
    );
    eventually("no live connections after reset", || {
        proxy.connections() == 0
    })
    .await;

    // Pass again: new connections work, and leave no connection behind when dropped.
    proxy.pass();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let v: String = conn.get("harness:k").await.unwrap();
    assert_eq!(v, "v");
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        raw_ping(&mut again, Duration::from_secs(5)).await.unwrap(),
        "+PONG\r\n"
    );
    eventually("two live connections again", || proxy.connections() == 2).await;
    drop((conn, again, held, fresh));
    eventually("connections closed by their clients", || {
        proxy.connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_blackholes_and_resets_when_redis_is_gone() {
    let mut redis = TestRedis::private();
    let proxy = FaultProxy::start(redis.addr()).await;
    redis.kill();
    // Passing to a dead upstream closes the client.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let r = raw_ping(&mut s, Duration::from_secs(5)).await;
    assert!(matches!(&r, Ok(x) if x.is_empty()) || r.is_err(), "{r:?}");
    // A blackhole holds the client even without an upstream.
    proxy.blackhole();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        raw_ping(&mut s, Duration::from_millis(500)).await,
        Err("timeout".into())
    );
    assert_eq!(proxy.connections(), 1);
    proxy.reset();
    let mut buf = [0u8; 4];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
    eventually("no live connections", || proxy.connections() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_redis_pauses_resumes_is_killed_and_restarts() {
    let mut redis = TestRedis::private_with_args(&["--appendonly", "yes"]);
    let port = redis.port();
    let client = redis::Client::open(redis.url()).unwrap();
    let quick = |c: &redis::Client| {
        let mut conn = c.get_connection_with_timeout(Duration::from_millis(300))?;
        conn.set_read_timeout(Some(Duration::from_millis(300)))?;
        redis::cmd("PING").query::<String>(&mut conn)
    };
    let mut conn = redis.connection();
    let _: () = redis::Commands::set(&mut conn, "kept", "yes").unwrap();

    // Pause: connections are accepted by the kernel but nothing answers.
    redis.pause();
    let r = quick(&client);
    assert!(r.is_err(), "a paused Redis answered: {r:?}");
    redis.resume();
    assert_eq!(quick(&client).unwrap(), "PONG");

    // Kill: nothing listens.
    let pid = redis.pid().unwrap();
    redis.kill();
    assert_eq!(redis.pid(), None);
    assert!(
        !process_exists(pid),
        "killed redis-server {pid} still exists"
    );
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::ConnectionRefused);

    // Restart: same port, same arguments (the AOF brings the key back).
    redis.restart();
    assert_eq!(redis.port(), port);
    let mut conn = redis.connection();
    let kept: String = redis::Commands::get(&mut conn, "kept").unwrap();
    assert_eq!(kept, "yes");
    let aof: String = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query::<Vec<String>>(&mut conn)
        .unwrap()
        .remove(1);
    assert_eq!(aof, "yes");

    // Dropping a paused Redis resumes and kills it.
    let pid = redis.pid().unwrap();
    redis.pause();
    drop(redis);
    assert!(
        !process_exists(pid),
        "a dropped paused redis-server {pid} is left behind"
    );
}

/// Whether a process with this id exists (and is not a zombie we failed to reap).
fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Runs blocking harness code (process starts, polls) without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Reads `key` every 50 ms (each read capped at 5 s) until one succeeds after the first
/// failure or slow read; returns the value (`None` when no read succeeded within 40 s) and a
/// log of the reads: start offset, latency and outcome.
async fn read_until_ok(
    mut conn: redis::cluster_async::ClusterConnection,
    key: String,
) -> (Option<String>, String) {
    let start = Instant::now();
    let mut log = Vec::new();
    let mut failed = false;
    loop {
        let at = start.elapsed();
        if at > Duration::from_secs(40) {
            log.push(format!("at {at:.1?}: gave up"));
            return (None, log.join("; "));
        }
        let r = tokio::time::timeout(Duration::from_secs(5), conn.get::<_, String>(&key)).await;
        let took = start.elapsed() - at;
        match r {
            Ok(Ok(v))
                if failed || took > Duration::from_millis(500) || at > Duration::from_secs(30) =>
            {
                log.push(format!("at {at:.1?}: ok after {took:.1?}"));
                return (Some(v), log.join("; "));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failed = true;
                log.push(format!("at {at:.1?}: error after {took:.1?}: {e}"));
            }
            Err(_) => {
                failed = true;
                log.push(format!("at {at:.1?}: no answer within 5 s"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_starts_routes_keys_and_fails_over() {
    let t = Instant::now();
    let mut cluster = blocking(TestCluster::start);
    println!("cluster: 6 nodes up and healthy in {:?}", t.elapsed());
    assert_eq!(cluster.seeds().len(), 6);
    assert_eq!(cluster.primaries().len(), 3);
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://127.0.0.1:"), "{url}");
    assert_eq!(url.matches(',').count(), 2, "{url}");

    // A key written through redis-rs lands on the primary of its slot, and its replica.
    let mut conn = cluster.client().get_async_connection().await.unwrap();
    let key = "harness:{cluster}:k";
    let _: () = conn.set(key, "v").await.unwrap();
    let primary = cluster.primary_for_key(key);
    let mut direct = redis::Client::open(primary.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let v: String = redis::Commands::get(&mut direct, key).unwrap();
    assert_eq!(v, "v");
    let other = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != primary)
        .unwrap();
    let mut elsewhere = redis::Client::open(other.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let moved = redis::Commands::get::<_, String>(&mut elsewhere, key).unwrap_err();
    assert_eq!(moved.code(), Some("MOVED"), "{moved}");
    let slot = u16::try_from(cluster.slot_of(key)).unwrap();
    let to = primary.addr();
    assert_eq!(moved.redirect_node(), Some((to.as_str(), slot)), "{moved}");
    let replicas = cluster.replicas_of(primary);
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    let mut replica = redis::Client::open(replicas[0].url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("READONLY").query(&mut replica).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis::Commands::get::<_, Option<String>>(&mut replica, key)
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the key never reached the replica"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Killing the primary promotes its replica; meanwhile the redis-rs connection made
    // before keeps reading the key, to see how it rides through the failover.
    let t = Instant::now();
    let probe = tokio::spawn(read_until_ok(conn.clone(), key.to_owned()));
    cluster.kill(primary);
    let promoted = blocking(|| cluster.wait_for_failover(primary));
    let failover = t.elapsed();
    println!(
        "cluster: kill of {primary:?} to {promoted:?} serving and cluster_state:ok everywhere: {failover:?}"
    );
    assert_eq!(promoted, replicas[0]);
    assert!(
        failover < Duration::from_secs(20),
        "failover took {failover:?}"
    );
    assert_eq!(cluster.primary_for_key(key), promoted);
    let (v, log) = probe.await.unwrap();
    assert_eq!(v.as_deref(), Some("v"), "{log}");
    println!("cluster: redis-rs reads across the kill: {log}");

    // A paused primary is replaced too, and rejoins as a replica when resumed.
    let victim = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != promoted)
        .unwrap();
    let victim_key = (0..)
        .map(|i| format!("harness:{{paused{i}}}"))
        .find(|k| cluster.primary_for_key(k) == victim)
        .unwrap();
    let _: () = conn.set(&victim_key, "p").await.unwrap();
    let t = Instant::now();
    cluster.pause(victim);
    let replacement = blocking(|| cluster.wait_for_failover(victim));
    println!(
        "cluster: pause of {victim:?} to {replacement:?} serving: {:?}",
        t.elapsed()
    );
    // A connection made before the pause may keep sending this slot to the frozen node
    // (redis-rs 1.8 refreshes slots on errors and MOVED, not on timeouts); a fresh one
    // reaches the replacement, after its connection timeout on the frozen node.
    let t = Instant::now();
    let mut fresh = tokio::time::timeout(
        Duration::from_secs(10),
        cluster.client().get_async_connection(),
    )
    .await
    .expect("a fresh cluster connection hung while a node is paused")
    .unwrap();
    let v: String = fresh.get(&victim_key).await.unwrap();
    assert_eq!(v, "p");
    println!(
        "cluster: a fresh redis-rs connection read the key during the pause after {:?}",
        t.elapsed()
    );
    cluster.resume(victim);
    blocking(|| cluster.wait_until_healthy(Duration::from_secs(30)));
    assert!(
        cluster.replicas_of(replacement).contains(&victim),
        "{victim:?} did not rejoin as a replica"
    );

    // A killed node restarts on its port and rejoins as a replica of its replacement.
    blocking(|| cluster.restart(primary));
    assert!(
        cluster.replicas_of(promoted).contains(&primary),
        "{primary:?} did not rejoin as a replica of {promoted:?}: {:#?}",
        cluster.topology()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_fails_over_on_request_and_on_a_dead_master() {
    let t = Instant::now();
    let mut sentinel = blocking(TestSentinel::start);
    println!(
        "sentinel: master, replica and 3 sentinels agreed in {:?}",
        t.elapsed()
    );
    let url = sentinel.url();
    assert!(url.starts_with("redis+sentinel://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/mymaster"), "{url}");
    assert_eq!(url.matches(',').count(), 2, "{url}");
    let [first, second] = sentinel.data_addrs()[..] else {
        panic!("two data nodes expected")
    };
    assert_eq!(sentinel.master_addr(), first);

    // Written through a redis-rs Sentinel client, on the master and its replica.
    let mut client = sentinel.client();
    let mut conn = client.get_async_connection().await.unwrap();
    let _: () = conn.set("harness:sentinel", "v").await.unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the write");

    // SENTINEL FAILOVER promotes the replica; the old master becomes its replica.
    let t = Instant::now();
    let old = blocking(|| sentinel.failover());
    assert_eq!(old, first);
    let new = blocking(|| sentinel.wait_for_new_master(old));
    println!(
        "sentinel: SENTINEL FAILOVER to {new} named by every sentinel: {:?}",
        t.elapsed()
    );
    assert_eq!(new, second);
    let mut conn = client.get_async_connection().await.unwrap();
    let v: String = conn.get("harness:sentinel").await.unwrap();
    assert_eq!(v, "v");

    // Killing that master promotes the old one back.
    // (The sentinels would demote the old master only 10–15 s later; do it now.)
    sentinel.demote(old);
    let t = Instant::now();
    blocking(|| sentinel.wait_until_agreed(Duration::from_secs(30)));
    println!(
        "sentinel: old master demoted and agreed again in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let killed = blocking(|| sentinel.kill_master());
    assert_eq!(killed, second);
    let back = blocking(|| sentinel.wait_for_new_master(killed));
    let took = t.elapsed();
    println!("sentinel: kill of {killed} to {back} named by every sentinel: {took:?}");
    assert_eq!(back, first);
    assert!(took < Duration::from_secs(25), "failover took {took:?}");
    let mut conn = client.get_async_connection().await.unwrap();
    let v: String = conn.get("harness:sentinel").await.unwrap();
    assert_eq!(v, "v");
    let _: () = conn.set("harness:sentinel", "w").await.unwrap();
}

#[test]
#[should_panic(expected = "is not on PATH; these tests start their own Redis processes: install")]
fn a_missing_binary_fails_naming_what_to_install() {
    floodgate_tests::redis_proc::require("redis-server-that-is-not-installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_closes_its_listener_and_connections() {
    let redis = TestRedis::private();
    let proxy = FaultProxy::start(redis.addr()).await;
    let addr = proxy.addr();
    let mut passing = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_ping(&mut passing, Duration::from_secs(5))
            .await
            .unwrap(),
        "+PONG\r\n"
    );
    proxy.blackhole();
    let mut held = TcpStream::connect(addr).await.unwrap();
    eventually("two live connections", || proxy.connections() == 2).await;
    drop(proxy);
    for s in [&mut passing, &mut held] {
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a connection outlived its proxy");
        // Closed either way: a FIN reads as Ok(0); a RST (the kernel sends one when the
        // proxy's side still held unread bytes at close) as ConnectionReset.
        let closed = match &r {
            Ok(n) => *n == 0,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        };
        assert!(closed, "{r:?}");
    }
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the proxy still accepts after drop");
}
