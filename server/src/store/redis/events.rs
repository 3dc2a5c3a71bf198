//! Breaker transitions across the fleet: every script that makes one PUBLISHes it as JSON
//! on the events channel (`lua/breaker.lua`, `br_transition`), and each server relays the
//! channel to its own `Watch` streams. The history stream of each breaker is read here too.
use std::time::{Duration, Instant};

use floodgate_core::breaker::State;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::store::{BreakerEvent, StoreError};

/// How long the per-namespace index of breaker names outlives its last report.
pub(super) const INDEX_TTL_SECS: u64 = 7 * 24 * 3600;

/// The JSON a transition is published as (numbers as strings: Lua's cjson would round
/// microsecond timestamps).
#[derive(Debug, Deserialize)]
struct Published {
    ns: String,
    breaker: String,
    from: String,
    to: String,
    at: String,
    reason: String,
    generation: String,
    retry_after: String,
}

fn state(s: &str) -> Result<State, StoreError> {
    State::from_name(s).ok_or_else(|| StoreError::Protocol(format!("unknown state {s:?}")))
}

fn number(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Protocol(format!("not a number: {s:?}")))
}

/// Parses one published message.
fn parse(payload: &str) -> Result<BreakerEvent, StoreError> {
    let p: Published = serde_json::from_str(payload)
        .map_err(|e| StoreError::Protocol(format!("breaker event: {e}")))?;
    Ok(BreakerEvent {
        namespace: p.ns,
        breaker: p.breaker,
        from: state(&p.from)?,
        to: state(&p.to)?,
        at: number(&p.at)?,
        reason: p.reason,
        generation: number(&p.generation)?,
        retry_after: number(&p.retry_after)?,
    })
}

/// One entry of a breaker's history stream.
pub(super) fn from_fields(
    namespace: &str,
    breaker: &str,
    fields: &[(String, String)],
) -> Result<BreakerEvent, StoreError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| StoreError::Protocol(format!("history entry without {name}")))
    };
    Ok(BreakerEvent {
        namespace: namespace.to_owned(),
        breaker: breaker.to_owned(),
        from: state(get("from")?)?,
        to: state(get("to")?)?,
        at: number(get("at")?)?,
        reason: get("reason")?.to_owned(),
        generation: number(get("generation")?)?,
        retry_after: number(get("retry_after")?)?,
    })
}

/// First wait of the relay after its subscription failed or ended.
const RELAY_BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between the relay's attempts.
const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A subscription that lasted this long resets the backoff to its first wait (one that
/// Redis keeps cutting at once does not: each new one makes every Watch re-read).
const RELAY_STABLE: Duration = Duration::from_secs(5);

/// Subscribes to `channel` and forwards every event to `tx`, reconnecting with backoff
/// (100 ms doubling to 5 s, back to 100 ms after a subscription that lasted 5 s) whenever
/// the connection drops. Every subscription bumps `gaps`: events published while none was
/// up (before the first, or between two) are lost, and watchers re-read their states.
pub(super) fn spawn_relay(
    target: std::sync::Arc<super::connection::Target>,
    channel: String,
    tx: broadcast::Sender<BreakerEvent>,
    gaps: std::sync::Arc<watch::Sender<u64>>,
) {
    tokio::spawn(async move {
        let mut backoff = RELAY_BACKOFF_FIRST;
        // On a Cluster any node relays every PUBLISH; on failure the next seed is tried.
        // Through Sentinel the master is asked for afresh on every attempt.
        let mut attempt = 0;
        loop {
            let mut subscribed_at = None;
            let on_subscribed = || {
                subscribed_at = Some(Instant::now());
                gaps.send_modify(|n| *n += 1);
            };
            let result = match target.node_client(attempt).await {
                Ok(client) => relay(&client, &channel, &tx, on_subscribed).await,
                Err(e) => Err(e),
            };
            attempt += 1;
            match result {
                Ok(()) => warn!(%channel, "breaker event subscription ended; resubscribing"),
                Err(e) => {
                    warn!(%channel, error = %e, "breaker event subscription failed; retrying")
                }
            }
            if subscribed_at.is_some_and(|t: Instant| t.elapsed() >= RELAY_STABLE) {
                backoff = RELAY_BACKOFF_FIRST;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RELAY_BACKOFF_MAX);
        }
    });
}

async fn relay(
    client: &redis::Client,
    channel: &str,
    tx: &broadcast::Sender<BreakerEvent>,
    on_subscribed: impl FnOnce(),
) -> Result<(), StoreError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    info!(%channel, "relaying breaker events");
    on_subscribed();
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload: String = match msg.get_payload() {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "unreadable breaker event");
                continue;
            }
        };
        match parse(&payload) {
            // Nobody watching is fine.
            Ok(event) => {
                let _ = tx.send(event);
            }
            Err(e) => warn!(error = %e, "unreadable breaker event"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_breaker_lua_publishes() {
        let e = parse(
            r#"{"ns":"shop","breaker":"pay","from":"closed","to":"open","at":"1763870000123456","reason":"failure_rate","generation":"2","retry_after":"30000000"}"#,
        )
        .unwrap();
        assert_eq!((e.from, e.to), (State::Closed, State::Open));
        assert_eq!(e.at, 1_763_870_000_123_456);
        assert!(parse("{}").is_err());
    }
}
