//! Versioned, forward-only migrations. Each step is a numbered `.sql` file;
//! `schema_versions` records what was applied. Safe when several processes
//! migrate one new file at once: the check and the apply share one
//! `BEGIN IMMEDIATE` transaction.

use rusqlite::{Connection, OptionalExtension};

use super::SqliteStore;
use crate::error::{Error, Result};

/// The migrations, in order; index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_claim_index.sql"),
    include_str!("migrations/0003_active_indexes.sql"),
    include_str!("migrations/0004_pending_keys.sql"),
    include_str!("migrations/0005_check_without_in.sql"),
];

#[cfg(test)]
pub(crate) const MIGRATIONS_FOR_TESTS: &[&str] = MIGRATIONS;

/// The newest schema version this library knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

impl SqliteStore {
    /// Creates or upgrades the schema; returns the version now in the file.
    /// Refuses a file whose schema is newer than [`SCHEMA_VERSION`].
    pub fn migrate(&self) -> Result<i64> {
        let now = self.now();
        super::retry_busy(self.opts.busy_timeout, || {
            self.write(|conn| migrate_in(conn, &now, MIGRATIONS))
        })
    }

    /// The schema version stored in the file (0 for an empty file).
    pub fn schema_version(&self) -> Result<i64> {
        self.read(current_version)
    }

    /// Fails with `SCHEMA_TOO_NEW` if another (newer) durably wrote this file.
    pub fn check_schema(&self) -> Result<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(())
    }
}

fn current_version(conn: &Connection) -> Result<i64> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(0);
    }
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_versions",
        [],
        |r| r.get(0),
    )?)
}

/// SQLite's schema cookie: it changes with every change of the schema, and a
/// connection that sees it change parses the schema again.
fn schema_cookie(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?)
}

pub(crate) fn migrate_in(conn: &Connection, now: &str, migrations: &[&str]) -> Result<i64> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_versions (
           version    INTEGER PRIMARY KEY,
           applied_at TEXT NOT NULL
         )",
    )?;
    let found = current_version(conn)?;
    let known = migrations.len() as i64;
    if found > known {
        return Err(Error::SchemaTooNew { found, known });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        let cookie = schema_cookie(conn)?;
        conn.execute_batch(sql)?;
        if sql.contains("PRAGMA writable_schema = ON") {
            // It rewrote sqlite_master in place, which leaves the schema
            // cookie as it was: without a new one, connections that parsed
            // the old schema (in this process or another) would keep it.
            conn.execute_batch(&format!("PRAGMA schema_version = {}", cookie + 1))?;
        }
        conn.execute(
            "INSERT INTO schema_versions (version, applied_at) VALUES (?1, ?2)",
            (version, now),
        )?;
    }
    Ok(known)
}
