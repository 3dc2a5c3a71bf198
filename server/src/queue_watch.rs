//! Keeps the dead-letter queue gauges (`floodgate_dlq_*`) current: every
//! [`REFRESH_EVERY`] it reads the stats of every queue with state (the store's queue
//! index, at most [`MAX_WATCHED`]), off the request path. Also lists queues for
//! `Admin.ServerStatus`.
use std::{sync::Arc, time::Duration};

use tracing::warn;

use crate::{
    service::state::AppState,
    store::{PlannedQueue, Store},
};

/// How often the gauges are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// Most queues read per refresh.
pub const MAX_WATCHED: usize = 1_000;

/// The queues with state, as (namespace, queue), resolved against the configuration
/// (queues no longer configured are skipped).
pub async fn queues<S: Store>(
    state: &AppState<S>,
    namespace: Option<&str>,
    max: usize,
) -> Result<Vec<PlannedQueue>, crate::error::Error> {
    let members = state
        .with_deadline(
            "queue_index",
            state.store.queue_index(&state.keys.queue_index()),
        )
        .await?;
    let config = state.config.load();
    Ok(members
        .iter()
        .filter_map(|m| m.split_once('\t'))
        .filter(|(ns, _)| namespace.is_none_or(|want| want == *ns))
        .filter_map(|(ns, q)| {
            Some(PlannedQueue {
                namespace: ns.to_owned(),
                name: q.to_owned(),
                keys: state.keys.queue(ns, q),
                redrive_key: state.keys.queue_redrive(ns, q),
                settings: config.queue(q)?.clone(),
            })
        })
        .take(max)
        .collect())
}

/// Refreshes the gauges every [`REFRESH_EVERY`] until the process ends.
pub fn spawn<S: Store>(state: Arc<AppState<S>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let listed = match queues(&state, None, MAX_WATCHED).await {
                Ok(q) => q,
                Err(e) => {
                    warn!(error = %e, "could not read the queue index");
                    continue;
                }
            };
            for q in listed {
                match state
                    .with_deadline("dlq_stats", state.store.dlq_stats(&q, None))
                    .await
                {
                    Ok(s) => {
                        crate::metrics::dlq_gauges(
                            &q.namespace,
                            &q.name,
                            s.count,
                            s.oldest_age as f64 / 1e6,
                            s.count >= q.settings.alert_threshold,
                            s.archived,
                        );
                        crate::metrics::dlq_trimmed(
                            &q.namespace,
                            &q.name,
                            s.counters.trimmed_by_age,
                            s.counters.trimmed_by_length,
                        );
                    }
                    Err(e) => {
                        warn!(queue = %q.name, error = %e, "could not read queue stats for metrics")
                    }
                }
            }
        }
    });
}
