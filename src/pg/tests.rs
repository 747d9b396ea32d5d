//! Tests of the PostgreSQL store against a real server
//! (`DURABLY_TEST_PG_URL`, see `scripts/test-pg.sh`). Each test uses a
//! schema of its own, dropped afterwards. Without the URL they skip with a
//! printed reason, except under `CI=true`, where they fail.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use super::{PgOptions, PgStore};
use crate::error::Error;

mod claims;
mod listen;
mod retention;
mod semantics;
mod sessions;
mod values;

/// Result of the tests: any error type fits.
pub(crate) type TResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The test server's URL, or why there is none.
fn test_url() -> std::result::Result<String, String> {
    match std::env::var("DURABLY_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Ok(u),
        _ => Err("DURABLY_TEST_PG_URL is not set (start a server with \
                  `eval \"$(scripts/test-pg.sh start)\"`)"
            .into()),
    }
}

/// `Some(reason)` when the PostgreSQL tests should skip: no URL and not CI.
/// Under `CI=true` a missing URL is not a reason to skip: the test goes on
/// and fails on it.
pub(crate) fn skip_reason() -> Option<String> {
    match test_url() {
        Ok(_) => None,
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => None,
        Err(why) => Some(format!("PostgreSQL tests: {why}")),
    }
}

/// Skips the calling test (returns `Ok`) when [`skip_reason`] says so.
macro_rules! skip_without_server {
    () => {
        if let Some(why) = $crate::pg::tests::skip_reason() {
            eprintln!("skipped: {why}");
            return Ok(());
        }
    };
}
pub(crate) use skip_without_server;

/// A fresh schema on the test server, dropped (with everything in it) when
/// this is dropped; and the runtime its stores run on.
pub(crate) struct TestSchema {
    url: String,
    name: String,
    rt: Arc<Runtime>,
}

impl TestSchema {
    /// A new, unique, not yet created schema (`durably_t_<tag>_<ulid>`),
    /// on a current-thread runtime.
    pub fn new(tag: &str) -> TResult<TestSchema> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Self::on(tag, rt)
    }

    /// Like [`TestSchema::new`] on a multi-thread runtime (for tests whose
    /// tasks must really run at once).
    pub fn new_multi(tag: &str) -> TResult<TestSchema> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()?;
        Self::on(tag, rt)
    }

    fn on(tag: &str, rt: Runtime) -> TResult<TestSchema> {
        let url = test_url()?;
        let name = format!(
            "durably_t_{tag}_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        Ok(TestSchema {
            url,
            name,
            rt: Arc::new(rt),
        })
    }

    /// The runtime the stores of this schema run on.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.rt.clone()
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Options for a store on this schema with `pool` connections.
    pub fn options(&self, pool: usize) -> PgOptions {
        let mut o = PgOptions::new(self.url.clone());
        o.schema = self.name.clone();
        o.pool_size = pool;
        o.timeout = Duration::from_secs(30);
        o
    }

    /// A connected, migrated store (a new pool and lease owner each call).
    pub async fn store(&self, pool: usize) -> crate::error::Result<PgStore> {
        let s = PgStore::connect(self.options(pool)).await?;
        s.migrate().await?;
        Ok(s)
    }

    /// A plain connection to the server (no schema set), its driver spawned.
    pub async fn raw(&self) -> TResult<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let drop_it = async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(&sql).await
        };
        if let Err(e) = self.rt.block_on(drop_it) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// A trigger of `job` with `{}` input and nothing else set.
pub(crate) fn item(job: &str) -> crate::store::TriggerItem<'_> {
    crate::store::TriggerItem::new(job, "{}")
}

/// The error's stable code.
pub(crate) fn code_of<T: std::fmt::Debug>(r: crate::error::Result<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => e.code().to_string(),
    }
}

// ---- options and connection failures (no server needed) ---------------------

#[test]
fn schema_names_are_validated() {
    for ok in ["durably", "_x", "app_2", &"a".repeat(48)] {
        assert!(super::validate_schema(ok).is_ok(), "{ok:?} should be valid");
    }
    for bad in [
        "",
        "Durably",
        "2abc",
        "a-b",
        "a b",
        "x;drop table runs",
        "pg_durably",
        "é",
        &"a".repeat(49),
    ] {
        match super::validate_schema(bad) {
            Err(Error::Validation(msg)) => assert!(msg.contains("schema name"), "{msg}"),
            other => panic!("{bad:?}: expected a validation error, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_url_or_a_server_that_is_down_fails_clearly() -> TResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bad = rt.block_on(PgStore::connect(PgOptions::new(
        "postgres://a@b:notaport/x",
    )));
    assert_eq!(code_of(bad.map(|_| ())), "VALIDATION_ERROR");
    let mut schema = PgOptions::new("postgres://postgres@127.0.0.1:5/x");
    schema.schema = "Bad".into();
    assert_eq!(
        code_of(rt.block_on(PgStore::connect(schema)).map(|_| ())),
        "VALIDATION_ERROR"
    );
    // Port 1 on the loopback: nothing listens there.
    let mut down = PgOptions::new("postgres://postgres@127.0.0.1:1/postgres");
    down.timeout = Duration::from_secs(5);
    match rt.block_on(PgStore::connect(down)) {
        Err(e) => {
            assert_eq!(e.code(), "DB_ERROR");
            assert!(e.to_string().contains("cannot connect"), "{e}");
        }
        Ok(_) => panic!("connected to a closed port"),
    }
    Ok(())
}

// ---- migrations ----------------------------------------------------------------

#[test]
fn migrations_from_four_connections_at_once_apply_once() -> TResult {
    skip_without_server!();
    let db = TestSchema::new_multi("migrate")?;
    let rt = db.runtime();
    rt.block_on(async {
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(PgStore::connect(db.options(1)).await?);
        }
        let tasks: Vec<_> = stores
            .iter()
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move { s.migrate().await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await??, super::PG_SCHEMA_VERSION);
        }
        let raw = db.raw().await?;
        let versions: i64 = raw
            .query_one(
                &format!("SELECT count(*) FROM {}.schema_versions", db.name()),
                &[],
            )
            .await?
            .get(0);
        assert_eq!(versions, super::PG_SCHEMA_VERSION);
        let tables: Vec<String> = raw
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = $1 ORDER BY 1",
                &[&db.name()],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            tables,
            [
                "events",
                "listeners",
                "logs",
                "runs",
                "schema_versions",
                "steps",
                "wakers"
            ]
        );
        // Migrating again is a no-op.
        assert_eq!(stores[0].migrate().await?, super::PG_SCHEMA_VERSION);
        assert_eq!(stores[0].schema_version().await?, super::PG_SCHEMA_VERSION);
        TResult::Ok(())
    })
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("newer")?;
    db.runtime().block_on(async {
        let s = db.store(1).await?;
        assert_eq!(s.schema_version().await?, super::PG_SCHEMA_VERSION);
        let raw = db.raw().await?;
        let newer = super::PG_SCHEMA_VERSION + 1;
        raw.execute(
            &format!(
                "INSERT INTO {}.schema_versions (version, applied_at) VALUES ($1, now())",
                db.name()
            ),
            &[&newer],
        )
        .await?;
        assert_eq!(code_of(s.migrate().await), "SCHEMA_TOO_NEW");
        assert_eq!(code_of(s.check_schema().await), "SCHEMA_TOO_NEW");
        let other = PgStore::connect(db.options(1)).await?;
        assert_eq!(code_of(other.migrate().await), "SCHEMA_TOO_NEW");
        assert_eq!(s.schema_version().await?, newer, "the version is unchanged");
        // An empty schema reads as version 0 and checks fine.
        let empty = TestSchema::new("empty")?;
        let fresh = PgStore::connect(empty.options(1)).await?;
        assert_eq!(fresh.schema_version().await?, 0);
        fresh.check_schema().await?;
        drop(fresh);
        // (dropped on this runtime's thread: its own runtime drops the schema)
        std::thread::spawn(move || drop(empty))
            .join()
            .map_err(|_| "drop panicked")?;
        TResult::Ok(())
    })
}

#[test]
fn each_migration_applies_on_top_of_the_previous_versions() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("steps")?;
    db.runtime().block_on(async {
        let s = PgStore::connect(db.options(1)).await?;
        // Every prefix of the migration list, in order, then all of them.
        let all = super::migrate::MIGRATIONS_FOR_TESTS;
        for n in 0..=all.len() {
            assert_eq!(s.migrate_with(&all[..n]).await?, n as i64);
            assert_eq!(s.schema_version().await?, n as i64);
        }
        TResult::Ok(())
    })
}
