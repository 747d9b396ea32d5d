//! Versioned, forward-only migrations of the PostgreSQL schema, numbered
//! `.sql` files like SQLite's. Several processes may migrate one new
//! database at once: each takes a transaction-scoped advisory lock on the
//! schema's name first, so one applies and the others find it done.

use tokio_postgres::GenericClient;

use super::PgStore;
use crate::error::{Error, Result};

/// The migrations, in order; index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_events.sql"),
    include_str!("migrations/0003_claim_indexes.sql"),
    include_str!("migrations/0004_listeners.sql"),
    include_str!("migrations/0005_wakers.sql"),
];

#[cfg(test)]
pub(crate) const MIGRATIONS_FOR_TESTS: &[&str] = MIGRATIONS;

/// The newest PostgreSQL schema version this library knows.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// First key of the migration advisory lock (the second is the schema's hash).
const LOCK_SPACE: &str = "durably.migrate";

impl PgStore {
    /// Creates or upgrades the schema; returns the version now in it.
    /// Refuses (`SCHEMA_TOO_NEW`) a schema newer than [`PG_SCHEMA_VERSION`].
    pub async fn migrate(&self) -> Result<i64> {
        self.migrate_with(MIGRATIONS).await
    }

    pub(crate) async fn migrate_with(&self, migrations: &[&str]) -> Result<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
            &[&LOCK_SPACE, &self.schema()],
        )
        .await?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&self.schema()],
            )
            .await?
            .is_some();
        if !exists {
            // The name is validated (lower-case letters, digits, '_'), so it
            // needs no quoting; it cannot be a bound parameter here.
            tx.batch_execute(&format!("CREATE SCHEMA {}", self.schema()))
                .await?;
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (
               version    bigint PRIMARY KEY,
               applied_at timestamptz NOT NULL
             )",
        )
        .await?;
        let found = current_version(&*tx).await?;
        let known = migrations.len() as i64;
        if found > known {
            return Err(Error::SchemaTooNew { found, known });
        }
        for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_versions (version, applied_at) VALUES ($1, now())",
                &[&(i as i64 + 1)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(known)
    }

    /// The schema version stored in the schema (0 when it has no tables yet).
    pub async fn schema_version(&self) -> Result<i64> {
        let c = self.client().await?;
        current_version(&**c).await
    }

    /// Fails with `SCHEMA_TOO_NEW` if a newer durably wrote this schema.
    pub async fn check_schema(&self) -> Result<()> {
        let found = self.schema_version().await?;
        if found > PG_SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found,
                known: PG_SCHEMA_VERSION,
            });
        }
        Ok(())
    }
}

async fn current_version(c: &impl GenericClient) -> Result<i64> {
    // search_path is the store's schema: an unqualified name resolves there.
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_versions') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(c.query_one(
        "SELECT COALESCE(MAX(version), 0)::bigint FROM schema_versions",
        &[],
    )
    .await?
    .get(0))
}
