//! Limits on clients (the `[limits]` table): message sizes, streams and connections, Watch
//! subscriptions, deadlines and timeouts, so one misbehaving client cannot starve the rest.
//! The transport applies most of them (`server.rs`, `listener.rs`); [`WatchSlots`] counts
//! the breaker Watch streams.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde::Deserialize;

/// The `[limits]` table as written; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsTable {
    /// Largest gRPC message decoded or encoded, in bytes.
    pub max_message_bytes: Option<usize>,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS announced on every connection.
    pub max_concurrent_streams: Option<u32>,
    /// Open connections (TCP, before TLS) at most; further ones wait in the backlog.
    pub max_connections: Option<usize>,
    /// Breaker Watch streams one connection may hold.
    pub max_watches_per_connection: Option<usize>,
    /// Breaker Watch streams the whole server may hold.
    pub max_watches: Option<usize>,
    /// Largest deadline of a call; a longer `grpc-timeout` (or none) is capped to it.
    #[serde(default, with = "humantime_serde")]
    pub max_deadline: Option<Duration>,
    /// Time for a new connection's TLS handshake and HTTP/2 preface.
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// HTTP/2 PING interval on idle connections.
    #[serde(default, with = "humantime_serde")]
    pub keepalive_interval: Option<Duration>,
    /// A connection whose PING is not answered within this is closed.
    #[serde(default, with = "humantime_serde")]
    pub keepalive_timeout: Option<Duration>,
}

/// The effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Default 5 MiB (a dead letter's payload is up to 4 MiB - 64 KiB plus its fields).
    pub max_message_bytes: usize,
    /// Default 256.
    pub max_concurrent_streams: u32,
    /// Default 10,000.
    pub max_connections: usize,
    /// Default 64.
    pub max_watches_per_connection: usize,
    /// Default 10,000.
    pub max_watches: usize,
    /// Default 60 s.
    pub max_deadline: Duration,
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// Default 30 s.
    pub keepalive_interval: Duration,
    /// Default 20 s.
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 5 * 1024 * 1024,
            max_concurrent_streams: 256,
            max_connections: 10_000,
            max_watches_per_connection: 64,
            max_watches: 10_000,
            max_deadline: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl LimitsTable {
    /// Applies the defaults and checks every value; errors name the key and the rule.
    pub fn build(&self) -> Result<Limits, String> {
        let d = Limits::default();
        let positive = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(format!("limits.{key}: must be at least 1")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let duration = |key: &str, v: Option<Duration>, default: Duration| match v {
            Some(v) if v.is_zero() => Err(format!(
                "limits.{key}: must be greater than 0, e.g. \"10s\""
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let max_message_bytes = positive(
            "max_message_bytes",
            self.max_message_bytes,
            d.max_message_bytes,
        )?;
        if max_message_bytes < 1024 {
            return Err("limits.max_message_bytes: must be at least 1024".into());
        }
        let max_concurrent_streams = match self.max_concurrent_streams {
            Some(0) => return Err("limits.max_concurrent_streams: must be at least 1".into()),
            Some(v) => v,
            None => d.max_concurrent_streams,
        };
        Ok(Limits {
            max_message_bytes,
            max_concurrent_streams,
            max_connections: positive("max_connections", self.max_connections, d.max_connections)?,
            max_watches_per_connection: positive(
                "max_watches_per_connection",
                self.max_watches_per_connection,
                d.max_watches_per_connection,
            )?,
            max_watches: positive("max_watches", self.max_watches, d.max_watches)?,
            max_deadline: duration("max_deadline", self.max_deadline, d.max_deadline)?,
            header_read_timeout: duration(
                "header_read_timeout",
                self.header_read_timeout,
                d.header_read_timeout,
            )?,
            keepalive_interval: duration(
                "keepalive_interval",
                self.keepalive_interval,
                d.keepalive_interval,
            )?,
            keepalive_timeout: duration(
                "keepalive_timeout",
                self.keepalive_timeout,
                d.keepalive_timeout,
            )?,
        })
    }
}

/// Counts breaker Watch streams per connection and in total.
#[derive(Debug, Default)]
pub struct WatchSlots {
    /// Streams open on the whole server.
    total: AtomicUsize,
    /// Streams open per connection (by the peer's address, unique per live connection).
    per_connection: parking_lot::Mutex<HashMap<Option<SocketAddr>, usize>>,
}

/// One Watch stream's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct WatchSlot {
    slots: Arc<WatchSlots>,
    peer: Option<SocketAddr>,
}

impl WatchSlots {
    /// Takes a slot for a Watch on connection `peer`, or says which limit is reached.
    pub fn take(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
        limits: &Limits,
    ) -> Result<WatchSlot, tonic::Status> {
        let mut per = self.per_connection.lock();
        let mine = per.get(&peer).copied().unwrap_or(0);
        if mine >= limits.max_watches_per_connection {
            return Err(tonic::Status::resource_exhausted(format!(
                "this connection already holds {mine} Watch streams (limits.max_watches_per_connection); \
                 watch several breakers in one stream, or end one first"
            )));
        }
        let total = self.total.load(Ordering::Relaxed);
        if total >= limits.max_watches {
            return Err(tonic::Status::resource_exhausted(format!(
                "the server already holds {total} Watch streams (limits.max_watches); retry later"
            )));
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        *per.entry(peer).or_default() += 1;
        metrics::gauge!("floodgate_watch_streams").increment(1.0);
        Ok(WatchSlot {
            slots: self.clone(),
            peer,
        })
    }

    /// Watch streams open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut per = self.slots.per_connection.lock();
        if let Some(n) = per.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.peer);
            }
        }
        self.slots.total.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("floodgate_watch_streams").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_rules() {
        assert_eq!(LimitsTable::default().build().unwrap(), Limits::default());
        let bad: LimitsTable = toml::from_str("max_watches = 0").unwrap();
        assert_eq!(
            bad.build().unwrap_err(),
            "limits.max_watches: must be at least 1"
        );
        let bad: LimitsTable = toml::from_str("max_deadline = \"0s\"").unwrap();
        assert!(bad.build().unwrap_err().starts_with("limits.max_deadline:"));
    }

    #[test]
    fn watch_slots_per_connection_and_total() {
        let limits = Limits {
            max_watches_per_connection: 2,
            max_watches: 3,
            ..Limits::default()
        };
        let slots = Arc::new(WatchSlots::default());
        let a = Some("127.0.0.1:1".parse().unwrap());
        let b = Some("127.0.0.1:2".parse().unwrap());
        let a1 = slots.take(a, &limits).unwrap();
        let _a2 = slots.take(a, &limits).unwrap();
        let e = slots.take(a, &limits).unwrap_err();
        assert!(e.message().contains("max_watches_per_connection"));
        let _b1 = slots.take(b, &limits).unwrap();
        let e = slots.take(b, &limits).unwrap_err();
        assert!(e.message().contains("limits.max_watches)"));
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _b2 = slots.take(b, &limits).unwrap();
    }
}
