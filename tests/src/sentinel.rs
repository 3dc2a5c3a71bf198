//! A local Redis Sentinel deployment: one master, one replica and three sentinels
//! (`redis-server <conf> --sentinel`) monitoring it as `mymaster` with quorum 2,
//! `down-after-milliseconds 1000` and `failover-timeout 3000`, so a failover fits in a test.
//! Every process is killed when the [`TestSentinel`] is dropped, also while a test panics.
use std::{collections::HashMap, net::SocketAddr, path::Path, time::Duration};

use crate::redis_proc::{self, RedisProcess, poll, query};

/// The name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";
/// How long a process may take to answer one harness query.
const QUERY: Duration = Duration::from_millis(500);

/// A master, a replica and three sentinels; every process is killed on drop.
#[derive(Debug)]
pub struct TestSentinel {
    /// The master and the replica as started (their roles change on failover).
    data: Vec<RedisProcess>,
    /// The three sentinels.
    sentinels: Vec<RedisProcess>,
    /// One subdirectory per process (removed after they are killed).
    _dir: tempfile::TempDir,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts a data node (optionally a replica of `master`) on a free port, retrying port races.
fn start_data(root: &Path, master: Option<u16>) -> RedisProcess {
    let mut last = String::new();
    for _ in 0..5 {
        let port = crate::free_port();
        let dir = root.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("cannot create a Redis directory");
        let mut args = RedisProcess::base_args(port, &dir);
        if let Some(m) = master {
            args.extend(["--replicaof", "127.0.0.1", &m.to_string()].map(Into::into));
        }
        match RedisProcess::start(port, &dir, args, Duration::from_secs(10)) {
            Ok(p) => return p,
            Err(e) => last = e,
        }
    }
    panic!("a Redis for the Sentinel test did not start after 5 tries: {last}");
}

/// Starts one sentinel watching the master on `master`, retrying port races.
fn start_sentinel(root: &Path, master: u16) -> RedisProcess {
    let mut last = String::new();
    for _ in 0..5 {
        let port = crate::free_port();
        let dir = root.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir).expect("cannot create a sentinel directory");
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display()
        );
        std::fs::write(&conf, text).expect("cannot write sentinel.conf");
        let args = vec![conf.into_os_string(), "--sentinel".into()];
        match RedisProcess::start(port, &dir, args, Duration::from_secs(10)) {
            Ok(p) => return p,
            Err(e) => last = e,
        }
    }
    panic!("a sentinel did not start after 5 tries: {last}");
}

/// `SENTINEL MASTER mymaster` from the sentinel on `port`.
fn master_state(port: u16) -> Result<HashMap<String, String>, String> {
    query(port, QUERY, &["SENTINEL", "MASTER", MASTER_NAME])
        .map_err(|e| format!("sentinel {port}: {e}"))
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME mymaster` from the sentinel on `port`.
fn master_of(port: u16) -> Result<SocketAddr, String> {
    let (host, p): (String, u16) = query(
        port,
        QUERY,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
    )
    .map_err(|e| format!("sentinel {port}: {e}"))?;
    format!("{host}:{p}")
        .parse()
        .map_err(|e| format!("sentinel {port} named {host}:{p}: {e}"))
}

impl TestSentinel {
    /// Starts the master, the replica (waiting for its link) and three sentinels, and waits
    /// until every sentinel knows the replica and the two other sentinels and confirms the
    /// quorum (`SENTINEL CKQUORUM`). Panics naming the package to install when
    /// `redis-server` is missing. Blocks (a few seconds): call it from `spawn_blocking` or
    /// a multi-thread runtime.
    pub fn start() -> Self {
        redis_proc::require("redis-server");
        let dir = tempfile::tempdir().expect("cannot create a temp dir for the sentinels");
        let master = start_data(dir.path(), None);
        let replica = start_data(dir.path(), Some(master.port()));
        poll(
            "replica linked to its master",
            Duration::from_secs(20),
            || {
                let repl: String = query(replica.port(), QUERY, &["INFO", "replication"])
                    .map_err(|e| e.to_string())?;
                repl.contains("master_link_status:up")
                    .then_some(())
                    .ok_or(repl)
            },
        );
        let sentinels = (0..3)
            .map(|_| start_sentinel(dir.path(), master.port()))
            .collect();
        let this = Self {
            data: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        this.wait_until_agreed(Duration::from_secs(30));
        this
    }

    /// Waits until every live sentinel names the same master, knows one replica and the
    /// two other sentinels and confirms the quorum (`SENTINEL CKQUORUM`), and every other
    /// running data node is a replica linked to that master (asked from the node itself:
    /// sentinels refresh a replica's state only every 10 s).
    pub fn wait_until_agreed(&self, within: Duration) {
        poll("sentinels agree", within, || {
            let mut master = None;
            for port in self.live_sentinels() {
                let state = master_state(port)?;
                let n = |k: &str| state.get(k).map(String::as_str).unwrap_or("?").to_owned();
                if n("num-other-sentinels") != "2" || n("num-slaves") != "1" {
                    return Err(format!("sentinel {port}: {state:?}"));
                }
                let ok: String = query(port, QUERY, &["SENTINEL", "CKQUORUM", MASTER_NAME])
                    .map_err(|e| format!("sentinel {port}: {e}"))?;
                if !ok.starts_with("OK") {
                    return Err(format!("sentinel {port}: {ok}"));
                }
                let m = master_of(port)?;
                if master.is_some_and(|x| x != m) {
                    return Err(format!("sentinels name {master:?} and {m}"));
                }
                master = Some(m);
            }
            let master = master.ok_or("no live sentinel")?;
            for p in self
                .data
                .iter()
                .filter(|p| p.is_running() && !p.is_paused())
            {
                if p.port() == master.port() {
                    continue;
                }
                let repl: String = query(p.port(), QUERY, &["INFO", "replication"])
                    .map_err(|e| format!("{}: {e}", p.port()))?;
                let linked = repl.contains("role:slave")
                    && repl.contains(&format!("master_port:{}", master.port()))
                    && repl.contains("master_link_status:up");
                if !linked {
                    return Err(format!(
                        "{} is not a linked replica of {master}: {repl}",
                        p.port()
                    ));
                }
            }
            Ok(())
        });
    }

    fn live_sentinels(&self) -> Vec<u16> {
        self.sentinels
            .iter()
            .filter(|p| p.is_running() && !p.is_paused())
            .map(RedisProcess::port)
            .collect()
    }

    /// `host:port` of the three sentinels.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|p| addr(p.port()).to_string())
            .collect()
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/mymaster`, the form
    /// `floodgate serve --redis` accepts.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://{}/{MASTER_NAME}",
            self.sentinel_addrs().join(",")
        )
    }

    /// The master's address as the first sentinel that answers names it.
    pub fn master_addr(&self) -> SocketAddr {
        let mut last = "no live sentinel".to_owned();
        for port in self.live_sentinels() {
            match master_of(port) {
                Ok(a) => return a,
                Err(e) => last = e,
            }
        }
        panic!("no sentinel named the master: {last}");
    }

    /// Addresses of the master and the replica as started (roles change on failover).
    pub fn data_addrs(&self) -> Vec<SocketAddr> {
        self.data.iter().map(|p| addr(p.port())).collect()
    }

    fn data_process(&mut self, at: SocketAddr) -> &mut RedisProcess {
        self.data
            .iter_mut()
            .find(|p| addr(p.port()) == at)
            .unwrap_or_else(|| panic!("{at} is not a Redis of this Sentinel deployment"))
    }

    /// Kills the current master (SIGKILL); returns its address for
    /// [`TestSentinel::wait_for_new_master`].
    pub fn kill_master(&mut self) -> SocketAddr {
        let old = self.master_addr();
        self.data_process(old).kill();
        old
    }

    /// Freezes the current master (SIGSTOP) until [`TestSentinel::resume`]; returns its
    /// address.
    pub fn pause_master(&mut self) -> SocketAddr {
        let old = self.master_addr();
        self.data_process(old).pause();
        old
    }

    /// Lets a paused data node run again; a replaced master is turned into a replica.
    pub fn resume(&mut self, at: SocketAddr) {
        self.data_process(at).resume();
    }

    /// Starts a killed data node again on its port (the sentinels turn a replaced master
    /// into a replica).
    pub fn restart(&mut self, at: SocketAddr) {
        self.data_process(at).restart();
    }

    /// Asks a sentinel for a failover (`SENTINEL FAILOVER mymaster`), which needs no
    /// agreement; returns the master's address before it.
    pub fn failover(&self) -> SocketAddr {
        let old = self.master_addr();
        let port = self.live_sentinels()[0];
        let _: String = query(port, QUERY, &["SENTINEL", "FAILOVER", MASTER_NAME])
            .unwrap_or_else(|e| panic!("SENTINEL FAILOVER on {port} failed: {e}"));
        old
    }

    /// Makes the data node at `old` a replica of the current master now (`REPLICAOF`).
    /// After `SENTINEL FAILOVER` the sentinels demote the old master themselves, but only
    /// after about 10–15 s (they refresh a replica's role every 10 s and wait before
    /// converting it): meanwhile it still says `role:master` and accepts writes that will be
    /// lost. Tests that need a healthy pair sooner call this, then
    /// [`TestSentinel::wait_until_agreed`].
    pub fn demote(&self, old: SocketAddr) {
        let master = self.master_addr();
        let _: String = query(
            old.port(),
            QUERY,
            &["REPLICAOF", "127.0.0.1", &master.port().to_string()],
        )
        .unwrap_or_else(|e| panic!("REPLICAOF on {old} failed: {e}"));
    }

    /// Waits up to 30 s until every live sentinel names a master other than `old` and that
    /// master says `role:master`; returns it.
    pub fn wait_for_new_master(&self, old: SocketAddr) -> SocketAddr {
        poll("a new master", Duration::from_secs(30), || {
            let mut named = None;
            for port in self.live_sentinels() {
                let m = master_of(port)?;
                if m == old || named.is_some_and(|n| n != m) {
                    return Err(format!(
                        "sentinel {port} names {m} (old {old}, others {named:?})"
                    ));
                }
                named = Some(m);
            }
            let m = named.ok_or("no live sentinel")?;
            let repl: String = query(m.port(), QUERY, &["INFO", "replication"])
                .map_err(|e| format!("{m}: {e}"))?;
            repl.contains("role:master")
                .then_some(m)
                .ok_or_else(|| format!("{m} is not a master yet: {repl}"))
        })
    }

    /// A redis-rs Sentinel client for the master, for assertions.
    pub fn client(&self) -> ::redis::sentinel::SentinelClient {
        let sentinels: Vec<String> = self
            .sentinel_addrs()
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect();
        ::redis::sentinel::SentinelClient::build(
            sentinels,
            MASTER_NAME,
            None,
            ::redis::sentinel::SentinelServerType::Master,
        )
        .expect("cannot build a redis-rs Sentinel client")
    }
}
