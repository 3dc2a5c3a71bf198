//! A local 6-node Redis Cluster (3 primaries, 3 replicas) of `redis-server` processes, for
//! tests of the Cluster store: MOVED/ASK, CROSSSLOT, failover.
//!
//! Nodes use `cluster-node-timeout 1000` and `cluster-replica-validity-factor 0`, so a
//! killed or paused primary is replaced within a few seconds. Ports are picked below the
//! kernel's ephemeral range with the cluster bus port (port + 10000) free too. Every process
//! is killed when the [`TestCluster`] is dropped, also while a test panics.
use std::{
    collections::HashMap,
    ffi::OsString,
    hash::{BuildHasher, RandomState},
    net::TcpListener,
    path::Path,
    process::Command,
    time::Duration,
};

use crate::redis_proc::{self, RedisProcess, poll, query};

/// How long a node may take to answer one harness query.
const QUERY: Duration = Duration::from_millis(500);
/// Slots in a Redis Cluster.
const SLOTS: u32 = 16384;

/// One node of a [`TestCluster`], named by its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterNode(pub u16);

impl ClusterNode {
    /// Its client port.
    pub fn port(self) -> u16 {
        self.0
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(self) -> String {
        format!("127.0.0.1:{}", self.0)
    }

    /// `redis://127.0.0.1:<port>`, for a plain connection to this node alone.
    pub fn url(self) -> String {
        format!("redis://127.0.0.1:{}", self.0)
    }
}

/// One line of `CLUSTER NODES`, as seen by one node.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The node's cluster id.
    pub id: String,
    /// The node.
    pub node: ClusterNode,
    /// Flagged `master` (else a replica).
    pub primary: bool,
    /// The node we asked (flagged `myself`).
    pub myself: bool,
    /// Flagged `fail` or `fail?` by the node we asked.
    pub failing: bool,
    /// The id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u32, u32)>,
}

/// A running Redis Cluster; every process is killed on drop.
#[derive(Debug)]
pub struct TestCluster {
    /// The processes, in port order (dropped, so killed, before the directory is removed).
    nodes: Vec<RedisProcess>,
    /// Slot ranges of each primary just before [`TestCluster::kill`] or
    /// [`TestCluster::pause`] took it away.
    lost_slots: HashMap<ClusterNode, Vec<(u32, u32)>>,
    /// One subdirectory per node.
    _dir: tempfile::TempDir,
}

/// A random port in 10000..22768 whose port + 10000 (the cluster bus) is below the ephemeral
/// range too, with both free now; `taken` keeps picks of one cluster apart.
pub(crate) fn cluster_port(taken: &[u16]) -> u16 {
    let random = RandomState::new();
    for attempt in 0u64..1000 {
        let port = 10000 + (random.hash_one(attempt) % 12768) as u16;
        if taken.contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return port;
        }
    }
    panic!("no free port pair (p, p + 10000) in 10000..32768 after 1000 tries");
}

/// What makes a `redis-server` a test Cluster node: cluster mode, its own `nodes.conf` in
/// its directory, and a 1 s node timeout so failovers take seconds, not tens.
pub(crate) const CLUSTER_NODE_ARGS: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
];

fn node_args(port: u16, dir: &Path) -> Vec<OsString> {
    let mut args = RedisProcess::base_args(port, dir);
    for a in CLUSTER_NODE_ARGS
        .iter()
        .chain(&["--cluster-replica-validity-factor", "0"])
    {
        args.push(a.into());
    }
    args
}

/// Starts one cluster node on a fresh port pair, retrying lost port races.
fn start_node(root: &Path, taken: &[u16]) -> RedisProcess {
    let mut last = String::new();
    for _ in 0..5 {
        let port = cluster_port(taken);
        let dir = root.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("cannot create a cluster node directory");
        match RedisProcess::start(port, &dir, node_args(port, &dir), Duration::from_secs(10)) {
            Ok(p) => return p,
            Err(e) => last = e,
        }
    }
    panic!("a Redis Cluster node did not start after 5 tries: {last}");
}

/// Parses `CLUSTER NODES`.
pub fn parse_nodes(text: &str) -> Vec<NodeView> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // ip:port@cport[,hostname]
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeView {
                id: f[0].to_owned(),
                node: ClusterNode(port),
                myself: flags.contains(&"myself"),
                primary: flags.contains(&"master"),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                primary_id: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// Which primary serves which slot ranges, in one node's view.
type SlotOwners = std::collections::BTreeMap<ClusterNode, Vec<(u32, u32)>>;

/// The primaries serving slots in one node's view, with their ranges.
fn slot_owners(views: &[NodeView]) -> SlotOwners {
    views
        .iter()
        .filter(|v| v.primary && !v.slots.is_empty())
        .map(|v| (v.node, v.slots.clone()))
        .collect()
}

/// The primary that serves `slot` in one node's view.
fn serving(views: &[NodeView], slot: u32) -> Option<ClusterNode> {
    views
        .iter()
        .find(|v| v.primary && v.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
        .map(|v| v.node)
}

impl TestCluster {
    /// Starts 6 nodes, joins them with `redis-cli --cluster create … --cluster-replicas 1`
    /// and waits until every node says `cluster_state:ok`, all 16384 slots are served and
    /// every replica's link to its primary is up. Panics naming the package to install when
    /// `redis-server` or `redis-cli` is missing. Blocks (a few seconds): call it from
    /// `spawn_blocking` or a multi-thread runtime.
    pub fn start() -> Self {
        redis_proc::require("redis-server");
        redis_proc::require("redis-cli");
        let dir = tempfile::tempdir().expect("cannot create a temp dir for the cluster");
        let mut nodes: Vec<RedisProcess> = Vec::with_capacity(6);
        for _ in 0..6 {
            let taken: Vec<u16> = nodes.iter().map(RedisProcess::port).collect();
            nodes.push(start_node(dir.path(), &taken));
        }
        nodes.sort_by_key(RedisProcess::port);
        let cluster = Self {
            nodes,
            lost_slots: HashMap::new(),
            _dir: dir,
        };
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.seeds())
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); install redis-tools (`apt-get install redis-tools`)")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_healthy(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running, unpaused node says `cluster_state:ok` with every slot
    /// served, all of them agree which primary serves which slots and see each other as
    /// each sees itself (role, primary, not failing), and each is a primary serving slots
    /// or a replica linked to its primary (so a node that rejoins with a stale
    /// `nodes.conf` has been turned into a replica, synced, and is known as one).
    pub fn wait_until_healthy(&self, within: Duration) {
        poll("Redis Cluster healthy", within, || {
            let live = self.live();
            let mut seen: Vec<(ClusterNode, Vec<NodeView>)> = Vec::new();
            for &node in &live {
                let info: String = query(node.0, QUERY, &["CLUSTER", "INFO"])
                    .map_err(|e| format!("{node:?}: {e}"))?;
                let ok = info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_slots_ok:{SLOTS}"));
                if !ok {
                    return Err(format!("{node:?}: {info}"));
                }
                let nodes: String = query(node.0, QUERY, &["CLUSTER", "NODES"])
                    .map_err(|e| format!("{node:?}: {e}"))?;
                seen.push((node, parse_nodes(&nodes)));
            }
            let Some((first, first_views)) = seen.first() else {
                return Err("no live node".to_owned());
            };
            let owners = slot_owners(first_views);
            for (node, views) in &seen {
                if slot_owners(views) != owners {
                    return Err(format!("{first:?} and {node:?} disagree on slot owners"));
                }
                let me = views
                    .iter()
                    .find(|v| v.myself)
                    .ok_or_else(|| format!("{node:?} lists no myself"))?;
                // Every live node sees this one as it sees itself, and not failing.
                for (other, other_views) in &seen {
                    let agrees = other_views.iter().any(|v| {
                        v.node == *node
                            && !v.failing
                            && v.primary == me.primary
                            && v.primary_id == me.primary_id
                    });
                    if !agrees {
                        return Err(format!(
                            "{other:?} does not yet see {node:?} as it sees itself"
                        ));
                    }
                }
                if me.primary && me.slots.is_empty() {
                    return Err(format!("{node:?} is a primary without slots"));
                }
                if !me.primary {
                    let repl: String = query(node.0, QUERY, &["INFO", "replication"])
                        .map_err(|e| format!("{node:?}: {e}"))?;
                    if !repl.contains("master_link_status:up") {
                        return Err(format!("replica {node:?} not linked: {repl}"));
                    }
                }
            }
            Ok(())
        });
    }

    /// `host:port` of every node, started or not.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|p| ClusterNode(p.port()).addr())
            .collect()
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`: three seed nodes, the form
    /// `floodgate serve --redis` accepts.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", self.seeds()[..3].join(","))
    }

    /// Every node, in port order.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.nodes.iter().map(|p| ClusterNode(p.port())).collect()
    }

    /// Nodes whose process runs and is not paused.
    pub fn live(&self) -> Vec<ClusterNode> {
        self.nodes
            .iter()
            .filter(|p| p.is_running() && !p.is_paused())
            .map(|p| ClusterNode(p.port()))
            .collect()
    }

    fn is_live(&self, node: ClusterNode) -> bool {
        self.live().contains(&node)
    }

    fn process(&mut self, node: ClusterNode) -> &mut RedisProcess {
        self.nodes
            .iter_mut()
            .find(|p| p.port() == node.0)
            .unwrap_or_else(|| panic!("{node:?} is not a node of this cluster"))
    }

    /// `CLUSTER NODES` as the first live node sees it.
    pub fn topology(&self) -> Result<Vec<NodeView>, String> {
        let mut last = "no live node".to_owned();
        for node in self.live() {
            match query::<String>(node.0, QUERY, &["CLUSTER", "NODES"]) {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last = format!("{node:?}: {e}"),
            }
        }
        Err(last)
    }

    /// The primaries that serve slots now, in port order.
    pub fn primaries(&self) -> Vec<ClusterNode> {
        let mut p: Vec<_> = self
            .topology()
            .expect("cannot read the cluster topology")
            .into_iter()
            .filter(|v| v.primary && !v.failing && !v.slots.is_empty())
            .map(|v| v.node)
            .collect();
        p.sort();
        p
    }

    /// The replicas of `primary` now.
    pub fn replicas_of(&self, primary: ClusterNode) -> Vec<ClusterNode> {
        let views = self.topology().expect("cannot read the cluster topology");
        let Some(id) = views
            .iter()
            .find(|v| v.node == primary)
            .map(|v| v.id.clone())
        else {
            return Vec::new();
        };
        views
            .into_iter()
            .filter(|v| v.primary_id.as_deref() == Some(id.as_str()))
            .map(|v| v.node)
            .collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u32 {
        let node = self.live()[0];
        query(node.0, QUERY, &["CLUSTER", "KEYSLOT", key]).expect("CLUSTER KEYSLOT failed")
    }

    /// The primary serving `key`'s slot now.
    pub fn primary_for_key(&self, key: &str) -> ClusterNode {
        let slot = self.slot_of(key);
        let views = self.topology().expect("cannot read the cluster topology");
        serving(&views, slot)
            .unwrap_or_else(|| panic!("no primary serves slot {slot} of {key:?}: {views:?}"))
    }

    /// Remembers the slots `node` serves, so [`TestCluster::wait_for_failover`] knows what
    /// must move.
    fn remember_slots(&mut self, node: ClusterNode) {
        if let Ok(views) = self.topology()
            && let Some(v) = views
                .into_iter()
                .find(|v| v.node == node && !v.slots.is_empty())
        {
            self.lost_slots.insert(node, v.slots);
        }
    }

    /// Kills `node` (SIGKILL); it stays down until [`TestCluster::restart`].
    pub fn kill(&mut self, node: ClusterNode) {
        self.remember_slots(node);
        self.process(node).kill();
    }

    /// Freezes `node` (SIGSTOP) until [`TestCluster::resume`]; the others soon see it fail.
    pub fn pause(&mut self, node: ClusterNode) {
        self.remember_slots(node);
        self.process(node).pause();
    }

    /// Lets a paused node run again; a primary that was replaced meanwhile rejoins as a
    /// replica.
    pub fn resume(&mut self, node: ClusterNode) {
        self.process(node).resume();
    }

    /// Starts a killed node again on its port with its `nodes.conf`, so it rejoins the
    /// cluster (as a replica when it was replaced), and waits until the cluster is healthy.
    pub fn restart(&mut self, node: ClusterNode) {
        self.process(node).restart();
        self.wait_until_healthy(Duration::from_secs(30));
    }

    /// Kills every node (the whole Cluster is down) until [`TestCluster::restart_all`].
    pub fn kill_all(&mut self) {
        for node in self.nodes() {
            self.process(node).kill();
        }
    }

    /// Starts every node again with its `nodes.conf` and waits until the cluster is healthy.
    pub fn restart_all(&mut self) {
        for node in self.nodes() {
            self.process(node).restart();
        }
        self.wait_until_healthy(Duration::from_secs(30));
    }

    /// Waits up to 30 s until every slot `old_primary` served (before
    /// [`TestCluster::kill`] or [`TestCluster::pause`]) is served by another live primary
    /// in the view of every live node, and every live node says `cluster_state:ok`.
    /// Returns the promoted node.
    pub fn wait_for_failover(&self, old_primary: ClusterNode) -> ClusterNode {
        let slots = self
            .lost_slots
            .get(&old_primary)
            .unwrap_or_else(|| {
                panic!("{old_primary:?} was not a primary killed or paused by this cluster")
            })
            .clone();
        poll("Redis Cluster failover", Duration::from_secs(30), || {
            let mut promoted = None;
            for node in self.live() {
                let info: String = query(node.0, QUERY, &["CLUSTER", "INFO"])
                    .map_err(|e| format!("{node:?}: {e}"))?;
                if !info.contains("cluster_state:ok") {
                    return Err(format!("{node:?} says {info}"));
                }
                let views = parse_nodes(
                    &query::<String>(node.0, QUERY, &["CLUSTER", "NODES"])
                        .map_err(|e| e.to_string())?,
                );
                let owners: Vec<ClusterNode> = slots
                    .iter()
                    .map(|&(first, _)| serving(&views, first))
                    .collect::<Option<_>>()
                    .unwrap_or_default();
                let owner = owners
                    .first()
                    .copied()
                    .filter(|o| owners.iter().all(|x| x == o));
                match owner {
                    Some(o) if o != old_primary && self.is_live(o) => {
                        if promoted.is_some_and(|p| p != o) {
                            return Err(format!("nodes disagree: {promoted:?} and {o:?}"));
                        }
                        promoted = Some(o);
                    }
                    other => return Err(format!("{node:?} sees {other:?} serving {:?}", slots[0])),
                }
            }
            promoted.ok_or_else(|| "no live node".to_owned())
        })
    }

    /// A redis-rs cluster client seeded with every node, for assertions.
    ///
    /// Seen with redis-rs 1.8 (see `tests/tests/harness_faults.rs`): across a killed
    /// primary's failover a command blocks inside the client (retries) until the replica
    /// takes over, then succeeds; with a *paused* primary, a connection made before keeps
    /// sending that slot to the frozen node and times out on every call (the slot map is
    /// refreshed on errors and MOVED, not on timeouts), while a new connection works.
    pub fn client(&self) -> ::redis::cluster::ClusterClient {
        ::redis::cluster::ClusterClient::new(self.nodes().iter().map(|n| n.url()))
            .expect("cannot build a redis-rs cluster client")
    }
}
