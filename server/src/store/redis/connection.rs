//! Where Redis is (one server, a Cluster, or a master found through Sentinel) and how the
//! store holds its connection to it: swapped whole on reconnect, absent until the first
//! connection succeeds, so the server can start while Redis is unreachable.
//!
//! URL forms (the password and user of the URL apply to the data nodes, not to sentinels):
//! - `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS): one Redis;
//! - `redis+cluster://[user:pass@]host:port,host:port,…` (`rediss+cluster://` for TLS):
//!   seed nodes of a Redis Cluster; the driver follows MOVED/ASK and failovers;
//! - `redis+sentinel://[user:pass@]host:port,host:port,…/master-name[/db]`
//!   (`rediss+sentinel://` for TLS to the data nodes): sentinels, asked for the master again
//!   on every reconnect, so a failover is followed as soon as the old master fails.
use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};

use super::{ConnectionMode, exclusive::Exclusive};
use crate::store::StoreError;

/// How long one node may take to answer inside the Cluster driver: a backstop against
/// half-open sockets. The server's `store_timeout` is the deadline callers see.
const NODE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new TCP connection to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections at most for calls that block their connection (see [`Exclusive`]); opened
/// on demand, so a server that never blocks opens none.
const EXCLUSIVE_POOL_SIZE: usize = 8;
/// How long one node may take to answer on an exclusive Cluster connection: longer than any
/// `WAIT`, since the caller's own deadline is what ends a call there.
const EXCLUSIVE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where Redis is, and the TLS files for it. Its `Debug` shows no password and no key.
#[derive(Clone)]
pub struct Target {
    /// The topology and addresses.
    pub place: Place,
    /// CA and client certificate for `rediss` URLs; `None`: system roots, no client cert.
    tls: Option<redis::TlsCertificates>,
}

/// Where Redis is. Its `Debug` shows no password.
#[derive(Clone)]
pub enum Place {
    /// One Redis server: its URL.
    Standalone(String),
    /// A Redis Cluster: URLs of its seed nodes.
    Cluster(Vec<String>),
    /// A master found through sentinels.
    Sentinel {
        /// `redis://host:port` of each sentinel.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// TLS to the data nodes (`rediss+sentinel://`).
        tls: bool,
        /// User, password and db for the data nodes.
        node: redis::RedisConnectionInfo,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("place", &self.place)
            .field("tls_files", &self.tls.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::redact;
        match self {
            Place::Standalone(url) => f.debug_tuple("Standalone").field(&redact(url)).finish(),
            Place::Cluster(seeds) => f
                .debug_tuple("Cluster")
                .field(&seeds.iter().map(|s| redact(s)).collect::<Vec<_>>())
                .finish(),
            Place::Sentinel {
                sentinels,
                master,
                tls,
                node,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("tls", tls)
                .field("db", &node.db())
                .field("user", &node.username())
                .field("password", &node.password().map(|_| "***"))
                .finish(),
        }
    }
}

/// `prefix` + each host of a comma-separated list; `None` when it names none.
fn node_urls(hosts: &str, prefix: &str) -> Option<Vec<String>> {
    let urls: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{prefix}{h}"))
        .collect();
    (!urls.is_empty()).then_some(urls)
}

/// The URL cannot be used; the message says which form is expected.
fn bad_url(shown: &str, rule: &str) -> StoreError {
    StoreError::Config(format!("redis URL {shown}: {rule}"))
}

impl Target {
    /// Reads a Redis URL in one of the module's forms.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            place: Place::parse(url)?,
            tls: None,
        })
    }

    /// Uses `tls` for the data nodes; refused unless the URL asks for TLS (`rediss…`).
    pub fn with_tls(mut self, tls: Option<redis::TlsCertificates>) -> Result<Self, StoreError> {
        if tls.is_some() && !self.place.uses_tls() {
            return Err(StoreError::Config(
                "Redis TLS files are set but the URL is not rediss:// (or rediss+cluster://, rediss+sentinel://)".into(),
            ));
        }
        self.tls = tls;
        Ok(self)
    }

    /// Whether keys of one script must share a hash slot (Cluster).
    pub fn is_cluster(&self) -> bool {
        matches!(self.place, Place::Cluster(_))
    }
}

impl Place {
    /// Reads a Redis URL in one of the module's forms.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let shown = super::redact(url);
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad_url(
                &shown,
                "must start with redis://, rediss://, redis+cluster:// or redis+sentinel://",
            ));
        };
        let (userinfo, hosts_and_path) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        match scheme {
            "redis" | "rediss" | "unix" | "redis+unix" => {
                redis::Client::open(url).map_err(|e| bad_url(&shown, &e.to_string()))?;
                Ok(Place::Standalone(url.to_owned()))
            }
            "redis+cluster" | "rediss+cluster" => {
                let data = if scheme == "redis+cluster" {
                    "redis"
                } else {
                    "rediss"
                };
                let hosts = hosts_and_path.trim_end_matches('/');
                if hosts.contains('/') {
                    return Err(bad_url(
                        &shown,
                        "a Cluster URL takes no database or path: redis+cluster://host:port,host:port",
                    ));
                }
                let seeds = node_urls(hosts, &format!("{data}://{auth}"))
                    .ok_or_else(|| bad_url(&shown, "name at least one seed node (host:port)"))?;
                for s in &seeds {
                    redis::Client::open(s.as_str()).map_err(|e| bad_url(&shown, &e.to_string()))?;
                }
                Ok(Place::Cluster(seeds))
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (hosts, path) = hosts_and_path.split_once('/').ok_or_else(|| {
                    bad_url(
                        &shown,
                        "a Sentinel URL names the master: redis+sentinel://host:port,host:port/master-name",
                    )
                })?;
                let mut parts = path.trim_end_matches('/').split('/');
                let master = parts.next().unwrap_or_default().to_owned();
                if master.is_empty() {
                    return Err(bad_url(&shown, "the master name after the hosts is empty"));
                }
                let db = match parts.next() {
                    None => 0,
                    Some(d) => d.parse::<i64>().map_err(|_| {
                        bad_url(
                            &shown,
                            "the database after the master name must be a number",
                        )
                    })?,
                };
                let sentinels = node_urls(hosts, "redis://")
                    .ok_or_else(|| bad_url(&shown, "name at least one sentinel (host:port)"))?;
                // Parse user and password as redis-rs would, through a stand-in URL.
                let probe = format!("redis://{auth}localhost/{db}");
                let info = redis::IntoConnectionInfo::into_connection_info(probe.as_str())
                    .map_err(|e| bad_url(&shown, &e.to_string()))?;
                Ok(Place::Sentinel {
                    sentinels,
                    master,
                    tls: scheme == "rediss+sentinel",
                    node: info.redis_settings().clone(),
                })
            }
            other => Err(bad_url(
                &shown,
                &format!(
                    "unknown scheme {other:?}; use redis://, rediss://, redis+cluster:// or redis+sentinel://"
                ),
            )),
        }
    }

    /// Whether the data nodes are reached over TLS.
    fn uses_tls(&self) -> bool {
        match self {
            Place::Standalone(url) => url.starts_with("rediss://"),
            Place::Cluster(seeds) => seeds.iter().all(|s| s.starts_with("rediss://")),
            Place::Sentinel { tls, .. } => *tls,
        }
    }
}

impl Target {
    /// A client for one data node: the server, a seed (`attempt` picks which), or the
    /// master the sentinels name now. Used for Pub/Sub and for standalone connections.
    pub async fn node_client(&self, attempt: usize) -> Result<Client, StoreError> {
        let open = |url: &str| -> Result<Client, StoreError> {
            Ok(match &self.tls {
                Some(certs) => Client::build_with_tls(url, certs.clone())?,
                None => Client::open(url)?,
            })
        };
        match &self.place {
            Place::Standalone(url) => open(url),
            Place::Cluster(seeds) => open(&seeds[attempt % seeds.len()]),
            Place::Sentinel {
                sentinels,
                master,
                tls,
                node,
            } => {
                let mut info =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(node.clone());
                if *tls {
                    info = info.set_tls_mode(redis::TlsMode::Secure);
                }
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(info),
                    SentinelServerType::Master,
                )?;
                let client = sentinel.async_get_client().await?;
                match &self.tls {
                    // The master's address comes from the sentinels; the files from us.
                    Some(certs) => Ok(Client::build_with_tls(
                        client.get_connection_info().clone(),
                        certs.clone(),
                    )?),
                    None => Ok(client),
                }
            }
        }
    }

    /// Opens the connection(s) of `mode`.
    pub async fn connect(
        &self,
        mode: ConnectionMode,
        pool_size: usize,
    ) -> Result<Conn, StoreError> {
        // No redis-rs response timeout on single connections (its default is 500 ms): the
        // server's `store_timeout` is the one deadline of every store call.
        match (&self.place, mode) {
            (Place::Cluster(seeds), _) => {
                let builder = |response_timeout| {
                    let b = ClusterClientBuilder::new(seeds.clone())
                        .connection_timeout(CONNECT_TIMEOUT)
                        .response_timeout(response_timeout);
                    match &self.tls {
                        Some(certs) => b.certs(certs.clone()),
                        None => b,
                    }
                };
                let client = builder(NODE_RESPONSE_TIMEOUT).build()?;
                let blocking = builder(EXCLUSIVE_RESPONSE_TIMEOUT).build()?;
                Ok(Conn::Cluster {
                    shared: client.get_async_connection().await?,
                    exclusive: Exclusive::new(
                        EXCLUSIVE_POOL_SIZE,
                        Box::new(move || {
                            let c = blocking.clone();
                            Box::pin(async move { Ok(c.get_async_connection().await?) })
                        }),
                    ),
                })
            }
            (_, ConnectionMode::Multiplexed) => {
                let client = self.node_client(0).await?;
                // ConnectionManager retries its first connection forever; one plain
                // connection first surfaces a refused password or certificate at once.
                let once = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(CONNECT_TIMEOUT));
                drop(
                    client
                        .get_multiplexed_async_connection_with_config(&once)
                        .await?,
                );
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT));
                let exclusive = exclusive(&client);
                Ok(Conn::Multiplexed {
                    shared: ConnectionManager::new_with_config(client, config).await?,
                    exclusive,
                })
            }
            (_, ConnectionMode::Pool) => {
                let client = self.node_client(0).await?;
                let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                let manager = deadpool_redis::Manager::new_with_config(
                    client.get_connection_info().clone(),
                    config,
                )?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .max_size(pool_size.max(1))
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                Ok(Conn::Pool {
                    pool,
                    exclusive: exclusive(&client),
                })
            }
        }
    }
}

/// Exclusive connections to `client`'s node, beside the ordinary ones.
fn exclusive(client: &Client) -> Arc<Exclusive<MultiplexedConnection>> {
    let client = client.clone();
    Exclusive::new(
        EXCLUSIVE_POOL_SIZE,
        Box::new(move || {
            let client = client.clone();
            Box::pin(async move {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                Ok(client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?)
            })
        }),
    )
}

/// The live connection(s). Every kind also has [`Exclusive`] connections for calls that
/// block their connection (`WAIT`), so those hold up no one else.
#[derive(Clone)]
pub enum Conn {
    /// One shared, auto-pipelined connection that reconnects by itself.
    Multiplexed {
        /// Every ordinary call.
        shared: ConnectionManager,
        /// Calls that block their connection.
        exclusive: Arc<Exclusive<MultiplexedConnection>>,
    },
    /// A pool of connections (deadpool-redis), each lent to one call at a time.
    Pool {
        /// Every ordinary call.
        pool: deadpool_redis::Pool,
        /// Calls that block their connection (apart, so they cannot use up the pool).
        exclusive: Arc<Exclusive<MultiplexedConnection>>,
    },
    /// The Cluster driver's connections (route by slot, follow MOVED/ASK).
    Cluster {
        /// Every ordinary call.
        shared: ClusterConnection,
        /// Calls that block their node's connection: each its own driver.
        exclusive: Arc<Exclusive<ClusterConnection>>,
    },
}

/// The connection slot of a store: empty until connected, replaced on reconnect.
#[derive(Clone, Default)]
pub struct Slot(Arc<ArcSwapOption<Conn>>);

impl Slot {
    /// The connection now, or `Unavailable` before the first connection.
    pub fn get(&self) -> Result<Arc<Conn>, StoreError> {
        self.0.load_full().ok_or_else(|| {
            StoreError::Unavailable(
                "not connected to Redis yet (connecting in the background)".into(),
            )
        })
    }

    /// Installs a new connection.
    pub fn set(&self, conn: Conn) {
        self.0.store(Some(Arc::new(conn)));
    }

    /// Drops the connection (calls are `Unavailable` until the next [`set`](Self::set)).
    pub fn clear(&self) {
        self.0.store(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_url_form() {
        assert!(matches!(
            Place::parse("redis://127.0.0.1:6379/2").unwrap(),
            Place::Standalone(u) if u == "redis://127.0.0.1:6379/2"
        ));
        assert!(matches!(
            Place::parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap(),
            Place::Cluster(seeds) if seeds == ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7001"]
        ));
        match Place::parse("redis+sentinel://:pw@h1:26379,h2:26379/mymaster/3").unwrap() {
            Place::Sentinel {
                sentinels,
                master,
                tls,
                node,
            } => {
                assert_eq!(sentinels, ["redis://h1:26379", "redis://h2:26379"]);
                assert_eq!(master, "mymaster");
                assert!(!tls);
                assert_eq!(node.db(), 3);
                assert_eq!(node.password(), Some("pw"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_shows_no_password() {
        for url in [
            "redis://:hunter2@h:1/0",
            "redis+cluster://u:hunter2@h:1,h:2",
            "redis+sentinel://:hunter2@h:26379/m/1",
        ] {
            let shown = format!("{:?}", Target::parse(url).unwrap());
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn refuses_unusable_urls_with_the_form_expected() {
        for (url, says) in [
            ("localhost:6379", "must start with"),
            ("http://h:1", "unknown scheme"),
            ("redis+cluster://", "at least one seed"),
            ("redis+cluster://h:1/0", "no database"),
            ("redis+sentinel://h:1", "names the master"),
            ("redis+sentinel://h:1/", "master name"),
            ("redis+sentinel://h:1/m/x", "must be a number"),
        ] {
            let e = Place::parse(url).unwrap_err();
            assert!(e.is_misconfiguration() && !e.is_transient(), "{url}: {e:?}");
            let e = e.to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = Place::parse("redis+cluster://u:secret@h:1/x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
