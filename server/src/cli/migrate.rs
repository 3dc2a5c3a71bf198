//! `floodgate migrate`: bring a Redis's floodgate schema up to this binary's, applying the
//! migrations of `migrations/` it lacks (or listing them with `--dry-run`). Idempotent: on
//! a current store it says so and writes nothing.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;

use crate::{
    config::{Config, Overrides},
    keys::Keys,
    store::{
        Store,
        redis::{
            ConnectionMode, RedisStore, redact,
            schema::{Report, Schema},
        },
    },
};

/// Arguments of `floodgate migrate`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The schema version lives in the hash <key_prefix>:schema. A store without it is empty
and gets every migration. A store newer than this floodgate is refused. Running migrate
again is a no-op; servers of several versions may run it at once (each step applies only
on the version before it, atomically).

Every URL form of `serve` works (redis://, rediss://, redis+cluster://, redis+sentinel://);
the Redis TLS files come from the [tls] table of --config.

Examples:
  floodgate migrate --redis redis://127.0.0.1:6379 --dry-run
  floodgate migrate --redis redis://127.0.0.1:6379 --config floodgate.toml
  floodgate migrate --redis redis+cluster://10.0.0.1:7000,10.0.0.2:7000")]
pub struct MigrateArgs {
    /// Redis URL, any form `serve` takes [default: redis_url of --config].
    #[arg(long = "redis", env = "FLOODGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// The servers' configuration file, for its key_prefix (and redis_url).
    #[arg(long, env = "FLOODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print what would be applied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How long connecting, or any one migration step, may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// Connects as the servers do: any URL form (`redis://`, `rediss://`, `redis+cluster://`,
/// `redis+sentinel://`), with the Redis TLS files of `--config`'s `[tls]` table.
async fn connect(url: &str, tls: &crate::tls::TlsTable) -> anyhow::Result<RedisStore> {
    let shown = redact(url);
    let (_, redis_tls) = tls.split()?;
    let certs = crate::tls::redis_certificates_for(url, &redis_tls)?;
    let store = RedisStore::new_tls(url, ConnectionMode::Multiplexed, 1, certs)
        .with_context(|| format!("cannot use --redis {shown}"))?;
    tokio::time::timeout(DEADLINE, store.reconnect())
        .await
        .map_err(|_| anyhow::anyhow!("Redis at {shown} did not answer within {DEADLINE:?}"))?
        .with_context(|| format!("cannot connect to Redis at {shown}; is it running?"))?;
    Ok(store)
}

fn describe(version: Option<u32>) -> String {
    match version {
        None => "no schema (an empty store)".into(),
        Some(v) => format!("floodgate schema {v}"),
    }
}

/// What happened on one node, for people.
fn print_report(shown: &str, report: &Report, dry_run: bool, supported: u32) {
    let before = report.before.as_ref().map(|s| s.version);
    if report.plan.is_empty() {
        let provenance = report
            .before
            .as_ref()
            .map(|s| s.provenance())
            .filter(|p| !p.is_empty())
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        println!(
            "{shown}: holds floodgate schema {supported}{provenance}, the latest this floodgate \
             knows; nothing to do"
        );
        return;
    }
    println!("{shown}: {}", describe(before));
    if dry_run {
        println!("  would apply:");
        for m in &report.plan.steps {
            println!("    {:04} {}", m.version, m.name);
        }
        println!(
            "  dry run: nothing was written; without --dry-run the store would hold schema {}",
            report.plan.to
        );
        return;
    }
    for m in &report.plan.steps {
        if report.applied.contains(m) {
            println!("  applied {:04} {}", m.version, m.name);
        } else {
            println!(
                "  skipped {:04} {} (another process applied it first)",
                m.version, m.name
            );
        }
    }
    println!(
        "{shown}: now holds {}",
        describe(report.after.as_ref().map(|s| s.version))
    );
}

/// Runs `floodgate migrate`.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(
        args.config.as_deref(),
        Overrides {
            redis_url: args.redis_url,
            ..Default::default()
        },
    )?;
    let Some(url) = config.redis_url else {
        anyhow::bail!(
            "no Redis to migrate: give --redis URL (or FLOODGATE_REDIS_URL, or redis_url in --config)"
        );
    };
    let schema = Schema::new(&Keys::new(config.key_prefix));
    let shown = redact(&url);
    let store = connect(&url, &config.tls).await?;
    let report = tokio::time::timeout(DEADLINE * 3, store.apply_schema(&schema, args.dry_run))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "Redis at {shown} did not finish within {:?}; run migrate again (it continues \
                 where it stopped)",
                DEADLINE * 3
            )
        })?
        .with_context(|| shown.clone())?;
    print_report(&shown, &report, args.dry_run, schema.supported());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_versions() {
        assert_eq!(describe(None), "no schema (an empty store)");
        assert_eq!(describe(Some(3)), "floodgate schema 3");
    }
}
