//! Live reload: the configuration file and the Envoy rate limit files (`rls_config`) are
//! read again when one changes on disk (polled every second) or on SIGHUP. A valid file replaces the policies and settings at once (an
//! `ArcSwap`, so no call waits or sees half a change); an invalid one is logged and the
//! old configuration stays. Listen addresses, the Redis URL and connection, and the key
//! prefix need a restart: a change to them is logged and ignored. Tokens reload like
//! policies, but a file without any `[[tokens]]` is refused while authentication is on
//! (turning it off needs a restart). Every reload leaves an audit entry (`ConfigReload`).
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

/// What identifies a version of one file: modification time and length.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// What identifies a version of the configuration: the TOML file's stamp and those of the
/// rate limit files (a folder's `*.yaml` / `*.yml` files, by name, so an added or removed
/// file counts too).
type Stamp = (
    Option<(SystemTime, u64)>,
    Vec<(PathBuf, Option<(SystemTime, u64)>)>,
);

fn stamp(path: Option<&Path>, rls: Option<&Path>) -> Stamp {
    let toml = path.and_then(file_stamp);
    let mut files = Vec::new();
    if let Some(r) = rls {
        if r.is_dir() {
            if let Ok(dir) = std::fs::read_dir(r) {
                for e in dir.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                        let s = file_stamp(&p);
                        files.push((p, s));
                    }
                }
            }
            files.sort();
        } else {
            files.push((r.to_owned(), file_stamp(r)));
        }
    }
    (toml, files)
}

/// Reads the file again and swaps the configuration in, keeping what needs a restart.
pub fn reload<S: Store>(state: &AppState<S>, path: Option<&Path>, overrides: &Overrides) -> bool {
    let mut next = match Config::load(path, overrides.clone()) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "configuration NOT reloaded; the previous one stays in force");
            return false;
        }
    };
    let current = state.config.load();
    // Turning authentication off is a restart decision (`floodgate serve` checks the
    // address and --insecure), never a side effect of an edit.
    if current.tokens.enabled() && !next.tokens.enabled() {
        error!(
            "configuration NOT reloaded: it has no [[tokens]] and would turn authentication off; restart the server to do that"
        );
        return false;
    }
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
    let rls_domains = next.rls.config.domains.len();
    state.config.store(Arc::new(next));
    let file = path.map(|p| p.display().to_string()).unwrap_or_default();
    info!(policies, rls_domains, file, "configuration reloaded");
    true
}

/// Writes the audit entry of one reload (by the server itself: caller `server`).
async fn audit_reload<S: Store>(state: &AppState<S>, ok: bool) {
    let (code, detail) = if ok {
        (tonic::Code::Ok, "")
    } else {
        (
            tonic::Code::InvalidArgument,
            "invalid configuration; the previous one stays",
        )
    };
    let entry = crate::audit::Entry::new("server", None, "ConfigReload", "", code, detail);
    crate::audit::record(state, entry).await;
}

/// The stamp of the configuration `state` runs with.
fn current_stamp<S: Store>(state: &AppState<S>, path: Option<&Path>) -> Stamp {
    let rls = state.config.load().rls.path.clone();
    stamp(path, rls.as_deref())
}

/// Watches the configuration file at `path` and the rate limit files (polling) and SIGHUP
/// until the process ends.
pub fn spawn<S: Store>(state: Arc<AppState<S>>, path: Option<PathBuf>, overrides: Overrides) {
    tokio::spawn(async move {
        let path = path.as_deref();
        let mut seen = current_stamp(&state, path);
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
                    let ok = reload(&state, path, &overrides);
                    audit_reload(&state, ok).await;
                    seen = current_stamp(&state, path);
                }
                _ = tick.tick() => {
                    let now = current_stamp(&state, path);
                    let readable = path.is_none() || now.0.is_some();
                    if readable && now != seen {
                        let ok = reload(&state, path, &overrides);
                        audit_reload(&state, ok).await;
                        // The reloaded file may name other rate limit files.
                        seen = current_stamp(&state, path);
                    }
                }
            }
        }
    });
}
