//! Hostile clients for `floodgate bench --attack-*` and the hostile-client tests: Watch
//! streams that are never read (one connection each), slow-loris connections that send part
//! of the HTTP/2 preface and stall (reconnecting whenever the server closes them), and
//! senders of oversize messages. They run on their own two-thread runtime, so the client
//! being measured does not wait behind them in its own process.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use floodgate_client::{
    Client,
    proto::v1::{self as pb, circuit_breakers_client::CircuitBreakersClient},
};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream};

use super::common::ServerArgs;

/// How many of each hostile client to run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AttackArgs {
    /// Open this many connections, each with a breaker Watch stream it never reads.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub attack_watches: u64,
    /// Keep this many slow-loris connections (part of the HTTP/2 preface, then silence).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub attack_slow_loris: u64,
    /// Run this many loops sending 6 MiB Acquire requests (above the default limit).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub attack_oversize: u64,
}

impl AttackArgs {
    /// Whether any attack is asked for.
    pub fn any(&self) -> bool {
        self.attack_watches + self.attack_slow_loris + self.attack_oversize > 0
    }
}

/// What the attack saw.
#[derive(Debug, Default)]
pub struct AttackCounters {
    /// Watch streams open.
    pub watches: AtomicU64,
    /// Slow-loris connections the server closed.
    pub loris_closed: AtomicU64,
    /// Oversize requests refused.
    pub oversize_refused: AtomicU64,
    /// Oversize requests the server accepted (none expected).
    pub oversize_accepted: AtomicU64,
}

/// A running attack; dropping it stops every hostile client.
#[derive(Debug)]
pub struct Attack {
    /// Counters, for reports and tests.
    pub counters: Arc<AttackCounters>,
    /// The unread streams (and their connections).
    streams: Vec<(Client, tonic::Streaming<pb::BreakerEvent>)>,
    /// The runtime every hostile task and connection runs on.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.streams.clear();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `host:port` of a server URL.
fn authority(url: &str) -> anyhow::Result<String> {
    let uri: tonic::transport::Uri = url.parse()?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("{url} has no host"))?;
    let port = uri
        .port_u16()
        .unwrap_or(if url.starts_with("https") { 443 } else { 80 });
    Ok(format!("{host}:{port}"))
}

impl Attack {
    /// Starts the hostile clients against `server`; the Watch streams follow breaker
    /// `attack` of `namespace` (the server needs a `[breakers.default]` table).
    pub async fn start(
        server: &ServerArgs,
        namespace: &str,
        spec: &AttackArgs,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let counters = Arc::new(AttackCounters::default());
        let (server, namespace, spec, c) = (
            server.clone(),
            namespace.to_owned(),
            spec.clone(),
            counters.clone(),
        );
        let streams = runtime
            .spawn(async move { Self::launch(&server, &namespace, &spec, c).await })
            .await??;
        Ok(Self {
            counters,
            streams,
            runtime: Some(runtime),
        })
    }

    /// Opens the streams and spawns the hostile loops (on the current runtime).
    async fn launch(
        server: &ServerArgs,
        namespace: &str,
        spec: &AttackArgs,
        counters: Arc<AttackCounters>,
    ) -> anyhow::Result<Vec<(Client, tonic::Streaming<pb::BreakerEvent>)>> {
        let mut streams = Vec::new();
        for chunk in 0..spec.attack_watches.div_ceil(100) {
            let n = (spec.attack_watches - chunk * 100).min(100);
            let opened = futures::future::try_join_all((0..n).map(|_| async {
                let client = server.connect().await?;
                let stream = CircuitBreakersClient::new(client.channel().clone())
                    .watch(pb::WatchBreakersRequest {
                        namespace: namespace.to_owned(),
                        breakers: vec!["attack".into()],
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("Watch for the attack failed: {s}\nhint: the server needs a [breakers.default] table"))?
                    .into_inner();
                anyhow::Ok((client, stream))
            }))
            .await?;
            streams.extend(opened);
        }
        counters
            .watches
            .store(streams.len() as u64, Ordering::Relaxed);
        let addr = authority(&server.url())?;
        for _ in 0..spec.attack_slow_loris {
            let (addr, counters) = (addr.clone(), counters.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(mut tcp) = TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let _ = tcp.write_all(b"PRI * HTTP").await;
                    let mut buf = [0u8; 1024];
                    // Read whatever comes until the server closes the connection.
                    while let Ok(n) = tcp.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    counters.loris_closed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for _ in 0..spec.attack_oversize {
            let client = server.connect().await?;
            let (namespace, counters) = (namespace.to_owned(), counters.clone());
            tokio::spawn(async move {
                let mut rl = client.rate_limiter();
                let key = "x".repeat(6 * 1024 * 1024);
                loop {
                    let r = rl
                        .acquire(pb::AcquireRequest {
                            namespace: namespace.clone(),
                            checks: vec![pb::LimitCheck {
                                key: key.clone(),
                                cost: 1,
                                policy: None,
                            }],
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(_) => counters.oversize_accepted.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counters.oversize_refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        Ok(streams)
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let c = &self.counters;
        format!(
            "attack: {} unread Watch streams, {} slow-loris connections closed by the server, \
             {} oversize requests refused ({} accepted)",
            c.watches.load(Ordering::Relaxed),
            c.loris_closed.load(Ordering::Relaxed),
            c.oversize_refused.load(Ordering::Relaxed),
            c.oversize_accepted.load(Ordering::Relaxed),
        )
    }
}
