//! `floodgate serve`: load the configuration, open the store, serve until SIGTERM/Ctrl-C.
//!
//! On Redis the store's schema is checked at start (DESIGN "Operating it"): an empty store
//! is initialised, a newer one refused, an older one refused with the `floodgate migrate`
//! command to run (or migrated with `--auto-migrate`). While serving, a background task
//! re-initialises a Redis that lost its data (a restart without persistence).
use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use crate::{
    config::{Config, Overrides},
    http, server,
    service::state::AppState,
    store::{
        Store,
        memory::MemoryStore,
        redis::{
            ConnectionMode, RedisStore,
            schema::{Migration, Schema, StartAction, start_action},
        },
    },
};

/// Arguments of `floodgate serve`. Flags override environment variables, which override
/// the configuration file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// gRPC listen address [default: 127.0.0.1:50051; port 0 picks a free port].
    #[arg(long, env = "FLOODGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP side port for /metrics, /healthz and /readyz [default: 127.0.0.1:8080].
    #[arg(long, env = "FLOODGATE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Redis URL (redis://host:port/db). Without it the in-memory store serves this
    /// instance alone.
    #[arg(long = "redis", env = "FLOODGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Configuration file (TOML).
    #[arg(long, env = "FLOODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// envoyproxy/ratelimit YAML file, or a folder of them, for Envoy's ShouldRateLimit
    /// (overrides `rls_config` of the configuration file).
    #[arg(long, env = "FLOODGATE_RLS_CONFIG")]
    pub rls_config: Option<PathBuf>,
    /// Deadline of every store call, e.g. "50ms" [default: 50ms].
    #[arg(long, env = "FLOODGATE_STORE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub store_timeout: Option<Duration>,
    /// How to talk to Redis: one multiplexed connection, or a pool of exclusive ones.
    #[arg(long, env = "FLOODGATE_REDIS_CONNECTION", value_parser = parse_mode)]
    pub redis_connection: Option<ConnectionMode>,
    /// Threads serving calls [default: one per core].
    #[arg(long, env = "FLOODGATE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// On a Redis whose floodgate schema is older than this server's, apply the missing
    /// migrations at start (as `floodgate migrate` would) instead of refusing to start.
    #[arg(long, env = "FLOODGATE_AUTO_MIGRATE")]
    pub auto_migrate: bool,
    /// Serve without tokens on a non-loopback address: anyone who can reach the port may
    /// do everything (purge queues, force breakers open). Without it such a server refuses
    /// to start; configure `[[tokens]]` instead (`floodgate token new`).
    #[arg(long, env = "FLOODGATE_INSECURE")]
    pub insecure: bool,
    /// TLS of the gRPC server and of Redis.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Log format.
    #[arg(long, env = "FLOODGATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn parse_mode(s: &str) -> Result<ConnectionMode, String> {
    match s {
        "multiplexed" => Ok(ConnectionMode::Multiplexed),
        "pool" => Ok(ConnectionMode::Pool),
        _ => Err("use \"multiplexed\" or \"pool\"".into()),
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOODGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    info!("shutdown requested; draining in-flight calls");
}

/// Deadline of each schema check or migration (at start and in the background).
const SCHEMA_DEADLINE: Duration = Duration::from_secs(10);
/// How often a server on Redis checks that the schema record is still there.
const SCHEMA_WATCH_EVERY: Duration = Duration::from_secs(2);

fn names(applied: &[Migration]) -> String {
    let names: Vec<String> = applied
        .iter()
        .map(|m| format!("{:04} {}", m.version, m.name))
        .collect();
    if names.is_empty() {
        "none; another server was first".into()
    } else {
        names.join(", ")
    }
}

/// Brings the store's schema to this server's, or refuses to start (DESIGN "Operating it").
/// `command` is the `floodgate migrate` command line for this store.
async fn ensure_schema(
    store: &RedisStore,
    schema: &Schema,
    auto_migrate: bool,
    command: &str,
    shown: &str,
) -> anyhow::Result<()> {
    let late = || {
        anyhow::anyhow!(
            "Redis at {shown} did not answer within {SCHEMA_DEADLINE:?} while floodgate checked its schema"
        )
    };
    let stored = tokio::time::timeout(SCHEMA_DEADLINE, store.schema(schema))
        .await
        .map_err(|_| late())?
        .with_context(|| format!("cannot read the floodgate schema in Redis at {shown}"))?;
    let version = stored.as_ref().map(|s| s.version);
    let action = start_action(schema.migrations(), version, auto_migrate, command)?;
    if action == StartAction::Proceed {
        let provenance = stored.map(|s| s.provenance()).unwrap_or_default();
        info!(
            schema = schema.supported(),
            key = schema.key(),
            "Redis holds floodgate schema {} ({provenance})",
            schema.supported()
        );
        return Ok(());
    }
    let report = tokio::time::timeout(SCHEMA_DEADLINE, store.migrate(schema))
        .await
        .map_err(|_| late())?
        .with_context(|| format!("cannot migrate the floodgate schema in Redis at {shown}"))?;
    let applied = names(&report.applied);
    match (action, version) {
        (StartAction::Migrate, Some(from)) => info!(
            schema = schema.supported(),
            "migrated Redis from floodgate schema {from} to {} (--auto-migrate); applied: {applied}",
            schema.supported()
        ),
        _ => info!(
            schema = schema.supported(),
            "empty store: initialised floodgate schema {}; applied: {applied}",
            schema.supported()
        ),
    }
    Ok(())
}

/// Every [`SCHEMA_WATCH_EVERY`], checks that Redis still holds the schema record. A Redis
/// that restarted empty (no persistence) or was flushed has none: the task initialises it
/// again, as at start. A record that changed version under the running server (another
/// floodgate migrated it) is logged as an error once per version; an older one is migrated
/// when `auto_migrate`. Nothing of this touches the Acquire path; when Redis is down the
/// check fails quietly (`/readyz` reports that) and runs again on the next tick.
fn spawn_schema_watch(store: RedisStore, schema: Schema, auto_migrate: bool) {
    tokio::spawn(async move {
        let supported = schema.supported();
        let mut tick = tokio::time::interval(SCHEMA_WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; start just checked
        let mut reported = None;
        loop {
            tick.tick().await;
            let stored = match tokio::time::timeout(SCHEMA_DEADLINE, store.schema(&schema)).await {
                Ok(Ok(stored)) => stored.map(|s| s.version),
                Ok(Err(e)) => {
                    debug!(error = %e, "schema check failed; trying again");
                    continue;
                }
                Err(_) => {
                    debug!("schema check timed out; trying again");
                    continue;
                }
            };
            let migrate = match stored {
                None => true,
                Some(v) if v == supported => {
                    reported = None;
                    false
                }
                Some(v) if v < supported && auto_migrate => true,
                Some(v) => {
                    if reported != Some(v) {
                        error!(
                            store_schema = v,
                            schema = supported,
                            "Redis now holds floodgate schema {v} but this server uses {supported}; {}",
                            if v > supported {
                                "upgrade this server"
                            } else {
                                "run `floodgate migrate` (or restart with --auto-migrate)"
                            }
                        );
                        reported = Some(v);
                    }
                    false
                }
            };
            if !migrate {
                continue;
            }
            match tokio::time::timeout(SCHEMA_DEADLINE, store.migrate(&schema)).await {
                Ok(Ok(r)) if r.applied.is_empty() => {
                    debug!("another server restored the schema record first")
                }
                Ok(Ok(r)) if stored.is_none() => warn!(
                    schema = supported,
                    "Redis lost its data (restart without persistence?); re-initialised floodgate schema {supported}; applied: {}",
                    names(&r.applied)
                ),
                Ok(Ok(r)) => info!(
                    schema = supported,
                    "migrated Redis to floodgate schema {supported} (--auto-migrate); applied: {}",
                    names(&r.applied)
                ),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot restore the floodgate schema record; trying again")
                }
                Err(_) => warn!("restoring the floodgate schema record timed out; trying again"),
            }
        }
    });
}

/// How long `serve` waits for its first Redis connection before starting without one.
const FIRST_CONNECT: Duration = Duration::from_secs(3);

/// The start-up checks of a connected Redis: its eviction policy (warned about) and the
/// schema (initialised, migrated or refused).
async fn check_store(
    store: &RedisStore,
    schema: &Schema,
    auto_migrate: bool,
    command: &str,
    shown: &str,
) -> anyhow::Result<()> {
    match store.maxmemory_policy().await {
        Some(p) if p.starts_with("volatile-") => warn!(
            maxmemory_policy = %p,
            "Redis may EVICT floodgate's limit and lease keys under memory pressure (they all have a TTL, so volatile-* picks them; limits would reset and over-admit); set maxmemory-policy to noeviction"
        ),
        Some(p) if crate::store::redis::eviction_can_drop_keys(&p) => warn!(
            maxmemory_policy = %p,
            "Redis may EVICT any of floodgate's keys under memory pressure (limits would reset and over-admit, leases vanish); set maxmemory-policy to noeviction"
        ),
        Some(p) => {
            info!(maxmemory_policy = %p, "Redis eviction policy keeps floodgate's keys")
        }
        None => info!(
            "could not read Redis's maxmemory-policy (CONFIG GET refused); check that it is noeviction or volatile-*"
        ),
    }
    ensure_schema(store, schema, auto_migrate, command, shown).await
}

async fn serve_with<S: Store>(
    store: S,
    config: Config,
    watch: Option<(Option<PathBuf>, Overrides)>,
    connected: bool,
    tls: Option<crate::tls::ServerTls>,
) -> anyhow::Result<()> {
    // Read before binding: a bad file fails the start with its name.
    let tls = tls.map(crate::tls::Reloading::start).transpose()?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another server running there?)",
            config.listen
        )
    })?;
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for HTTP (metrics, health); pick another with --http-listen",
                config.http_listen
            )
        })?;
    let addr = listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    info!(store = %store.describe(), policies = config.policies.len(), tls = tls.is_some(), "gRPC listening on {addr}");
    if let Some(p) = &config.rls.path {
        info!(
            rls_config = %p.display(),
            domains = config.rls.config.domains.len(),
            files = config.rls.config.files.len(),
            "Envoy RateLimitService: rate limit configuration loaded"
        );
    }
    info!("HTTP listening on {http_addr} (/metrics, /healthz, /readyz)");
    let metrics = crate::metrics::install();
    if let Some(handle) = &metrics {
        crate::metrics::spawn_upkeep(handle.clone());
    }
    crate::metrics::spawn_breaker_state_gauge(store.breaker_events());
    let state = AppState::new(store, config);
    state.spawn_store_probe();
    if !connected {
        crate::store::guard::start_open(&state.guard);
    }
    crate::top::spawn_flusher(state.clone());
    crate::queue_watch::spawn(state.clone());
    if let Some((path, overrides)) = watch {
        crate::reload::spawn(state.clone(), path, overrides);
    }
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http = tokio::spawn(http::run(
        state.clone(),
        metrics,
        http_listener,
        wait(stopped.clone()),
    ));
    server::run(state, listener, tls, wait(stopped)).await?;
    http.await??;
    Ok(())
}

/// Runs `floodgate serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logs(&args.log_format);
    let overrides = Overrides {
        listen: args.listen,
        redis_url: args.redis_url,
        http_listen: args.http_listen,
        store_timeout: args.store_timeout,
        redis_connection: args.redis_connection,
        rls_config: args.rls_config,
    };
    let config = Config::load(args.config.as_deref(), overrides.clone())?;
    crate::auth::check_exposure(config.listen, &config.tokens, args.insecure)?;
    let (server_tls, redis_tls) = args.tls.over(Some(&config.tls)).split()?;
    // Reloaded when the TOML file or the rate limit files change (or on SIGHUP).
    let watch = (args.config.is_some() || config.rls.path.is_some())
        .then(|| (args.config.clone(), overrides));
    match config.redis_url.clone() {
        Some(url) => {
            let shown = crate::store::redis::redact(&url);
            let certs = crate::tls::redis_certificates_for(&url, &redis_tls)?;
            let store =
                RedisStore::new_tls(&url, config.redis_connection, config.redis_pool_size, certs)
                    .with_context(|| format!("cannot use --redis {shown}"))?;
            let first = tokio::time::timeout(FIRST_CONNECT, store.reconnect()).await;
            let schema = Schema::new(&crate::keys::Keys::new(config.key_prefix.clone()));
            let mut command = format!("floodgate migrate --redis {shown}");
            if let Some(path) = &args.config {
                command.push_str(&format!(" --config {}", path.display()));
            }
            if let Ok(Err(e)) = &first
                && e.is_misconfiguration()
            {
                anyhow::bail!(
                    "cannot connect to Redis at {shown}: {e} (a password, TLS or URL problem; fix the settings)"
                );
            }
            let connected = matches!(first, Ok(Ok(())));
            if connected {
                info!(store = %store.describe(), mode = ?config.redis_connection, "serving from Redis: limits are shared by every server on it");
                check_store(&store, &schema, args.auto_migrate, &command, &shown).await?;
            } else {
                let why = match first {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {FIRST_CONNECT:?}"),
                };
                warn!(
                    error = %why,
                    "cannot reach Redis at {shown}: starting anyway, NOT ready (/readyz 503) and answering from fail modes until it answers; connecting in the background"
                );
                let (store, schema, auto) = (store.clone(), schema.clone(), args.auto_migrate);
                tokio::spawn(async move {
                    while store.ping().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    info!(store = %store.describe(), "connected to Redis");
                    if let Err(e) = check_store(&store, &schema, auto, &command, &shown).await {
                        tracing::error!("{e:#}");
                        std::process::exit(1);
                    }
                });
            }
            spawn_schema_watch(store.clone(), schema, args.auto_migrate);
            store.start_event_relay(
                crate::keys::Keys::new(config.key_prefix.clone()).breaker_channel(),
            );
            serve_with(store, config, watch, connected, server_tls.clone()).await?;
        }
        None => {
            let store = MemoryStore::default();
            store.spawn_sweeper(Duration::from_secs(10));
            warn!(
                "serving from memory: limits are NOT shared with other servers and vanish on restart; pass --redis URL for a fleet"
            );
            serve_with(store, config, watch, true, server_tls.clone()).await?;
        }
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}
