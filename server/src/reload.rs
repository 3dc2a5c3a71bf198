//! Live reload: the configuration file is read again when it changes on disk (polled every
//! second) or on SIGHUP. A valid file replaces the policies and settings at once (an
//! `ArcSwap`, so no call waits or sees half a change); an invalid one is logged and the
//! old configuration stays. Listen addresses, the Redis URL and connection, and the key
//! prefix need a restart: a change to them is logged and ignored.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tracing::{error, info, warn};

use crate::{
    config::{Config, Overrides},
    service::state::AppState,
    store::Store,
};

/// What identifies a version of the file: modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads the file again and swaps the configuration in, keeping what needs a restart.
pub fn reload<S: Store>(state: &AppState<S>, path: &Path, overrides: &Overrides) -> bool {
    let mut next = match Config::load(Some(path), overrides.clone()) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "configuration NOT reloaded; the previous one stays in force");
            return false;
        }
    };
    let current = state.config.load();
    let fixed = [
        ("listen", current.listen != next.listen),
        ("http_listen", current.http_listen != next.http_listen),
        ("redis_url", current.redis_url != next.redis_url),
        (
            "redis_connection",
            current.redis_connection != next.redis_connection,
        ),
        (
            "redis_pool_size",
            current.redis_pool_size != next.redis_pool_size,
        ),
        ("key_prefix", current.key_prefix != next.key_prefix),
    ];
    for (key, changed) in fixed {
        if changed {
            warn!(
                key,
                "this setting changes only on restart; keeping the running value"
            );
        }
    }
    next.listen = current.listen;
    next.http_listen = current.http_listen;
    next.redis_url = current.redis_url.clone();
    next.redis_connection = current.redis_connection;
    next.redis_pool_size = current.redis_pool_size;
    next.key_prefix = current.key_prefix.clone();
    let policies = next.policies.len();
    state.config.store(Arc::new(next));
    info!(policies, file = %path.display(), "configuration reloaded");
    true
}

/// Watches `path` (polling) and SIGHUP until the process ends.
pub fn spawn<S: Store>(state: Arc<AppState<S>>, path: PathBuf, overrides: Overrides) {
    tokio::spawn(async move {
        let mut seen = stamp(&path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                () = hangup => {
                    info!("SIGHUP: reloading the configuration");
                    seen = stamp(&path);
                    reload(&state, &path, &overrides);
                }
                _ = tick.tick() => {
                    let now = stamp(&path);
                    if now.is_some() && now != seen {
                        seen = now;
                        reload(&state, &path, &overrides);
                    }
                }
            }
        }
    });
}
