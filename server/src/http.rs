//! The HTTP side port: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (the store answers within its deadline; 503 with the reason when not).
use std::{future::Future, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::{service::state::AppState, store::Store};

struct Http<S> {
    state: Arc<AppState<S>>,
    metrics: Option<PrometheusHandle>,
}

async fn metrics<S: Store>(State(h): State<Arc<Http<S>>>) -> (StatusCode, String) {
    match &h.metrics {
        Some(m) => (StatusCode::OK, crate::metrics::render(m)),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not recorded in this process\n".into(),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<S: Store>(State(h): State<Arc<Http<S>>>) -> (StatusCode, String) {
    match h.state.timed("ping", h.state.store.ping()).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// Serves the HTTP side port on `listener` until `shutdown` resolves.
pub async fn run<S: Store>(
    state: Arc<AppState<S>>,
    metrics_handle: Option<PrometheusHandle>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .with_state(Arc::new(Http {
            state,
            metrics: metrics_handle,
        }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
