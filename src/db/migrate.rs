//! Embedded, numbered migrations from `sql/migrations`. `opsrunner migrate`
//! applies the missing ones, each in its own transaction, under an advisory
//! lock so that two concurrent migrations cannot interleave. The daemon and
//! the shim never run DDL: they only check the version.

use tokio_postgres::Client;

use super::queries;
use crate::error::{Error, Result};

/// One embedded migration.
pub struct Migration {
    /// Its number; strictly increasing.
    pub version: i32,
    /// Its file name without `.sql`.
    pub name: &'static str,
    /// Its text.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_jobs",
        sql: include_str!("../../sql/migrations/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "0002_cancel_audit_dryrun",
        sql: include_str!("../../sql/migrations/0002_cancel_audit_dryrun.sql"),
    },
    Migration {
        version: 3,
        name: "0003_retention",
        sql: include_str!("../../sql/migrations/0003_retention.sql"),
    },
    Migration {
        version: 4,
        name: "0004_api",
        sql: include_str!("../../sql/migrations/0004_api.sql"),
    },
    Migration {
        version: 5,
        name: "0005_hot_path",
        sql: include_str!("../../sql/migrations/0005_hot_path.sql"),
    },
    Migration {
        version: 6,
        name: "0006_cheaper_inserts",
        sql: include_str!("../../sql/migrations/0006_cheaper_inserts.sql"),
    },
    Migration {
        version: 7,
        name: "0007_retention_roles",
        sql: include_str!("../../sql/migrations/0007_retention_roles.sql"),
    },
    Migration {
        version: 8,
        name: "0008_app_tenants",
        sql: include_str!("../../sql/migrations/0008_app_tenants.sql"),
    },
    Migration {
        version: 9,
        name: "0009_api_functions_tokens",
        sql: include_str!("../../sql/migrations/0009_api_functions_tokens.sql"),
    },
    Migration {
        version: 10,
        name: "0010_lean_transitions",
        sql: include_str!("../../sql/migrations/0010_lean_transitions.sql"),
    },
    Migration {
        version: 11,
        name: "0011_leaders",
        sql: include_str!("../../sql/migrations/0011_leaders.sql"),
    },
    Migration {
        version: 12,
        name: "0012_schedules",
        sql: include_str!("../../sql/migrations/0012_schedules.sql"),
    },
    Migration {
        version: 13,
        name: "0013_ui_sessions",
        sql: include_str!("../../sql/migrations/0013_ui_sessions.sql"),
    },
    Migration {
        version: 14,
        name: "0014_bulk_and_scopes",
        sql: include_str!("../../sql/migrations/0014_bulk_and_scopes.sql"),
    },
    Migration {
        version: 15,
        name: "0015_type_limits",
        sql: include_str!("../../sql/migrations/0015_type_limits.sql"),
    },
    Migration {
        version: 16,
        name: "0016_rate_and_tenant_limits",
        sql: include_str!("../../sql/migrations/0016_rate_and_tenant_limits.sql"),
    },
    Migration {
        version: 17,
        name: "0017_listing_indexes_without_running",
        sql: include_str!("../../sql/migrations/0017_listing_indexes_without_running.sql"),
    },
];

/// The schema version this binary needs.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Arbitrary constant: the advisory lock key that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6f70_7372_6d69_6772; // "opsrmigr"

/// Applies every missing migration; returns the versions applied (empty when
/// the database was already current).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    migrate_to(client, latest_version()).await
}

/// Applies the missing migrations up to and including `target`: what
/// upgrade tests use to build a database as an older release left it.
pub async fn migrate_to(client: &mut Client, target: i32) -> Result<Vec<i32>> {
    queries::migrate_lock(client, MIGRATION_LOCK).await?;
    let result = apply_missing(client, target).await;
    // Released even when a migration failed, so a retry does not wait forever.
    let unlock = queries::migrate_unlock(client, MIGRATION_LOCK).await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_missing(client: &mut Client, target: i32) -> Result<Vec<i32>> {
    queries::migrate_ensure_table(client).await?;
    let current = queries::migrate_current_version(client).await?.unwrap_or(0);
    let mut applied = Vec::new();
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql).await?;
        queries::migrate_record(&tx, m.version, m.name).await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push(m.version);
    }
    Ok(applied)
}

/// Refuses to run against a database that is not at this binary's version.
pub async fn check_schema(client: &Client) -> Result<()> {
    let need = latest_version();
    match queries::migrate_current_version(client).await? {
        None | Some(0) => Err(Error::Schema(
            "the database is not migrated: run `opsrunner migrate` first".into(),
        )),
        Some(v) if v < need => Err(Error::Schema(format!(
            "the database schema is at version {v} but this opsrunner needs {need}: run `opsrunner migrate`"
        ))),
        Some(v) if v > need => Err(Error::Schema(format!(
            "the database schema is at version {v}, newer than this opsrunner ({need}): upgrade opsrunner"
        ))),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing_and_named_after_their_file() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            last = m.version;
        }
    }
}
