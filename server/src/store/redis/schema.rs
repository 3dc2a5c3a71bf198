//! The schema of floodgate's Redis key layout: which version a store holds, the ordered
//! migrations between versions (`migrations/`, embedded at build time), what would run
//! (the plan) and running it.
//!
//! The version lives in the hash `<prefix>:schema` (fields `version`, `applied_at`, `by`
//! and one `applied:<N>` history entry per migration; no TTL). A store without that key
//! is *empty*: `floodgate serve` initialises it by applying every migration. Each
//! migration is one Lua script that runs only on a store at version N-1 and writes N in
//! the same script, so applying is atomic per step and idempotent: a second run, or a
//! concurrent one from another server, does nothing.
//!
//! Everything here works on one connection (any [`redis::aio::ConnectionLike`]): one Redis,
//! the master a Sentinel names, or a Cluster driver, where the record and every migration
//! script live in the schema key's slot. See `migrations/README.md` for what a migration
//! that rewrites data across a Cluster would need.
use std::time::{Duration, UNIX_EPOCH};

use redis::{Script, aio::ConnectionLike};

use crate::keys::Keys;

/// One step of the key layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The schema version it produces (1, 2, …, without gaps).
    pub version: u32,
    /// Short name, as in its file name (`0001_initial.lua` is `initial`).
    pub name: &'static str,
    /// The whole script: `migrations/prelude.lua` followed by the migration's file.
    pub source: &'static str,
}

/// Every migration, in order. Add new ones at the end (see `migrations/README.md`).
pub static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    source: concat!(
        include_str!("../../../../migrations/prelude.lua"),
        include_str!("../../../../migrations/0001_initial.lua"),
    ),
}];

/// The schema this floodgate reads and writes: the last migration's version.
pub const CURRENT_SCHEMA: u32 = 1;

/// What went wrong with a store's schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The store was migrated by a newer floodgate.
    #[error(
        "Redis holds floodgate schema {store} but this floodgate understands up to {supported}; upgrade floodgate"
    )]
    TooNew {
        /// The store's version.
        store: u32,
        /// The newest this binary knows.
        supported: u32,
    },
    /// The store needs migrations this server will not run by itself.
    #[error(
        "Redis holds floodgate schema {store}, this floodgate needs {supported}: run `{command}` or start with --auto-migrate"
    )]
    TooOld {
        /// The store's version.
        store: u32,
        /// The version this binary needs.
        supported: u32,
        /// The command that migrates this store (URL without password).
        command: String,
    },
    /// The schema key exists but floodgate did not write it that way.
    #[error("the schema key {key} is not floodgate's: {reason}")]
    Unreadable {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A migration script failed; nothing of that step was written (scripts are atomic).
    #[error("migration {version:04} ({name}) failed: {source}")]
    Failed {
        /// The migration.
        version: u32,
        /// Its name.
        name: &'static str,
        /// Redis's error (the script's own message when it refused).
        source: redis::RedisError,
    },
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The connection pool failed to hand out a connection.
    #[error("redis pool: {0}")]
    Pool(String),
    /// The store is not connected (yet).
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// The record of the schema a store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    /// The version.
    pub version: u32,
    /// When the last migration ran (Unix seconds), if recorded.
    pub applied_at: Option<u64>,
    /// The floodgate version that ran it, if recorded.
    pub by: Option<String>,
}

impl StoredSchema {
    /// `applied 2026-08-01T10:00:00Z by floodgate 0.1.0`, as far as known.
    pub fn provenance(&self) -> String {
        let mut out = String::new();
        // The last second RFC 3339 can show (9999-12-31T23:59:59Z); a bogus value beyond
        // it is shown raw instead of overflowing `SystemTime`.
        const LAST_RFC3339_SECOND: u64 = 253_402_300_799;
        match self.applied_at {
            Some(at) if at <= LAST_RFC3339_SECOND => out.push_str(&format!(
                "applied {}",
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at))
            )),
            Some(at) => out.push_str(&format!("applied at Unix second {at}")),
            None => {}
        }
        if let Some(by) = &self.by {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("by floodgate {by}"));
        }
        out
    }
}

/// What applying would do to one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The store's version; `None` for an empty store (no schema key).
    pub from: Option<u32>,
    /// The version after the plan.
    pub to: u32,
    /// The migrations to run, in order.
    pub steps: Vec<Migration>,
}

impl Plan {
    /// Nothing to run.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The migrations a store at `stored` needs to reach the last of `migrations`.
/// A store newer than the last migration is refused.
pub fn plan(migrations: &[Migration], stored: Option<u32>) -> Result<Plan, SchemaError> {
    let supported = migrations.last().map_or(0, |m| m.version);
    let from = stored.unwrap_or(0);
    if from > supported {
        return Err(SchemaError::TooNew {
            store: from,
            supported,
        });
    }
    Ok(Plan {
        from: stored,
        to: supported,
        steps: migrations
            .iter()
            .filter(|m| m.version > from)
            .copied()
            .collect(),
    })
}

/// What `floodgate serve` does at start, given the store's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAction {
    /// The store holds the current schema.
    Proceed,
    /// Empty store: apply every migration.
    Initialise,
    /// Older store and `--auto-migrate`: apply what is missing.
    Migrate,
}

/// Decides what `serve` does on a store at `stored`; `command` is the `floodgate migrate`
/// command line named when the store is older and `auto_migrate` is off.
pub fn start_action(
    migrations: &[Migration],
    stored: Option<u32>,
    auto_migrate: bool,
    command: &str,
) -> Result<StartAction, SchemaError> {
    let plan = plan(migrations, stored)?;
    match (plan.from, plan.is_empty()) {
        (_, true) => Ok(StartAction::Proceed),
        (None, false) => Ok(StartAction::Initialise),
        (Some(_), false) if auto_migrate => Ok(StartAction::Migrate),
        (Some(store), false) => Err(SchemaError::TooOld {
            store,
            supported: plan.to,
            command: command.to_owned(),
        }),
    }
}

/// What [`Schema::apply`] did (or, in a dry run, would do) on one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The schema before.
    pub before: Option<StoredSchema>,
    /// The plan made from it.
    pub plan: Plan,
    /// The migrations this call applied (empty in a dry run; a step another process applied
    /// first is not counted).
    pub applied: Vec<Migration>,
    /// The schema after (equal to `before` in a dry run).
    pub after: Option<StoredSchema>,
}

/// The schema key of one store and the migrations that lead to its current layout.
#[derive(Debug, Clone)]
pub struct Schema {
    key: String,
    migrations: &'static [Migration],
}

impl Schema {
    /// floodgate's migrations, with the schema key under `keys`' prefix.
    pub fn new(keys: &Keys) -> Self {
        Self::with_migrations(keys, MIGRATIONS)
    }

    /// Another list of migrations (tests): versions must be 1, 2, … in order.
    pub fn with_migrations(keys: &Keys, migrations: &'static [Migration]) -> Self {
        Self {
            key: keys.schema(),
            migrations,
        }
    }

    /// The schema key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version these migrations lead to.
    pub fn supported(&self) -> u32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    /// The migrations, in order.
    pub fn migrations(&self) -> &'static [Migration] {
        self.migrations
    }

    /// Reads the store's schema record; `None` when the store is empty (no schema key).
    pub async fn read<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> Result<Option<StoredSchema>, SchemaError> {
        let kind: String = redis::cmd("TYPE")
            .arg(&self.key)
            .query_async(&mut *conn)
            .await?;
        match kind.as_str() {
            "none" => return Ok(None),
            "hash" => {}
            other => {
                return Err(self.unreadable(format!("it is a {other}, not a hash")));
            }
        }
        let (version, applied_at, by): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&self.key)
                .arg("version")
                .arg("applied_at")
                .arg("by")
                .query_async(&mut *conn)
                .await?;
        let version = match version {
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| self.unreadable(format!("its version {v:?} is not a whole number")))?,
            None => return Err(self.unreadable("it has no version field".into())),
        };
        Ok(Some(StoredSchema {
            version,
            applied_at: applied_at.and_then(|a| a.parse().ok()),
            by,
        }))
    }

    fn unreadable(&self, reason: String) -> SchemaError {
        SchemaError::Unreadable {
            key: self.key.clone(),
            reason,
        }
    }

    /// What applying would run on this store.
    pub async fn plan<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> Result<(Option<StoredSchema>, Plan), SchemaError> {
        let before = self.read(conn).await?;
        let plan = plan(self.migrations, before.as_ref().map(|s| s.version))?;
        Ok((before, plan))
    }

    /// Runs one migration's script: true when it applied, false when the store already
    /// held its version; an error (the script's own message) when the store is below
    /// `version - 1`.
    pub async fn run_step<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        migration: &Migration,
    ) -> Result<bool, SchemaError> {
        let script = Script::new(migration.source);
        let mut inv = script.prepare_invoke();
        inv.key(&self.key)
            .arg(migration.version)
            .arg(env!("CARGO_PKG_VERSION"))
            .arg(migration.name);
        let applied: i64 =
            inv.invoke_async(&mut *conn)
                .await
                .map_err(|source| SchemaError::Failed {
                    version: migration.version,
                    name: migration.name,
                    source,
                })?;
        Ok(applied == 1)
    }

    /// Applies what the store is missing, in order (or only plans it when `dry_run`).
    /// Idempotent: on a current store it does nothing.
    pub async fn apply<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        dry_run: bool,
    ) -> Result<Report, SchemaError> {
        let (before, plan) = self.plan(conn).await?;
        if dry_run || plan.is_empty() {
            return Ok(Report {
                after: before.clone(),
                before,
                plan,
                applied: Vec::new(),
            });
        }
        let mut applied = Vec::new();
        for m in &plan.steps {
            if self.run_step(conn, m).await? {
                applied.push(*m);
            }
        }
        let after = self.read(conn).await?;
        Ok(Report {
            before,
            plan,
            applied,
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn m(version: u32, name: &'static str) -> Migration {
        Migration {
            version,
            name,
            source: "",
        }
    }

    static THREE: [Migration; 3] = [m(1, "initial"), m(2, "two"), m(3, "three")];

    fn versions(p: &Plan) -> Vec<u32> {
        p.steps.iter().map(|m| m.version).collect()
    }

    #[test]
    fn the_list_is_ordered_without_gaps_and_ends_at_current() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{m:?}");
            assert!(
                m.source.contains("schema_begin()") && m.source.contains("schema_commit()"),
                "migration {} must check and record its version",
                m.version
            );
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(CURRENT_SCHEMA));
    }

    #[test]
    fn empty_store_gets_every_migration() {
        let p = plan(&THREE, None).unwrap();
        assert_eq!((p.from, p.to, versions(&p)), (None, 3, vec![1, 2, 3]));
    }

    #[test]
    fn older_store_gets_only_the_missing_ones() {
        assert_eq!(versions(&plan(&THREE, Some(0)).unwrap()), vec![1, 2, 3]);
        assert_eq!(versions(&plan(&THREE, Some(1)).unwrap()), vec![2, 3]);
        assert_eq!(versions(&plan(&THREE, Some(2)).unwrap()), vec![3]);
    }

    #[test]
    fn current_store_needs_nothing() {
        let p = plan(&THREE, Some(3)).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.to, 3);
    }

    #[test]
    fn newer_store_is_refused_naming_both_versions() {
        let e = plan(&THREE, Some(4)).unwrap_err();
        assert!(matches!(
            e,
            SchemaError::TooNew {
                store: 4,
                supported: 3
            }
        ));
        assert_eq!(
            e.to_string(),
            "Redis holds floodgate schema 4 but this floodgate understands up to 3; upgrade floodgate"
        );
    }

    #[test]
    fn start_actions() {
        let cmd = "floodgate migrate --redis redis://h:1";
        let act = |stored, auto| start_action(&THREE, stored, auto, cmd);
        assert_eq!(act(None, false).unwrap(), StartAction::Initialise);
        assert_eq!(act(None, true).unwrap(), StartAction::Initialise);
        assert_eq!(act(Some(3), false).unwrap(), StartAction::Proceed);
        assert_eq!(act(Some(1), true).unwrap(), StartAction::Migrate);
        let old = act(Some(1), false).unwrap_err();
        assert_eq!(
            old.to_string(),
            "Redis holds floodgate schema 1, this floodgate needs 3: run \
             `floodgate migrate --redis redis://h:1` or start with --auto-migrate"
        );
        assert!(matches!(
            act(Some(9), true),
            Err(SchemaError::TooNew {
                store: 9,
                supported: 3
            })
        ));
    }

    #[test]
    fn provenance_reads_for_people() {
        let s = StoredSchema {
            version: 1,
            applied_at: Some(1_700_000_000),
            by: Some("0.1.0".into()),
        };
        assert_eq!(
            s.provenance(),
            "applied 2023-11-14T22:13:20Z by floodgate 0.1.0"
        );
        let bare = StoredSchema {
            version: 1,
            applied_at: None,
            by: None,
        };
        assert_eq!(bare.provenance(), "");
        let bogus = StoredSchema {
            applied_at: Some(u64::MAX),
            ..bare
        };
        assert_eq!(
            bogus.provenance(),
            format!("applied at Unix second {}", u64::MAX)
        );
    }
}
