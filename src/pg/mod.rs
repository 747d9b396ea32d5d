//! The PostgreSQL store (cargo feature `postgres`): the same runs, steps,
//! logs and lease protocol as the SQLite [`crate::store::Store`], for many
//! worker processes on many machines. No napi here; async (tokio-postgres on
//! a deadpool pool), so the engine calls it from its tokio runtime.
//!
//! # Hand-over note (issues 15/16): how each SQLite operation maps
//!
//! | SQLite `Store`                         | `PgStore`                                | what differs |
//! |----------------------------------------|------------------------------------------|--------------|
//! | `open` + `migrate`                     | [`PgStore::connect`] + [`PgStore::migrate`] | migrations under `pg_advisory_xact_lock`, in the configured `schema` (created if missing); a newer schema fails with `SCHEMA_TOO_NEW` like SQLite |
//! | `trigger`, `trigger_batch` (+ `try_*`) | [`PgStore::trigger`], [`PgStore::trigger_batch`] | no `try_*`: nothing blocks the JS thread, the engine awaits. Idempotency by `INSERT … ON CONFLICT DO NOTHING` (two machines triggering one key get the same run); coalesce under a per-key advisory lock. `created_at` is the database's `now()` (one per batch). Sends `NOTIFY` on the wake channel |
//! | `claim`, `claim_in`, `try_claim`       | [`PgStore::claim`]                       | one statement, `FOR UPDATE SKIP LOCKED`; concurrency keys also guarded by the unique index `runs_one_running_per_key` (see `claim.rs` for the race it closes) |
//! | `flush` / `flush_then` (+ claim)       | [`PgStore::flush`], [`PgStore::flush_then_claim`] | ops are typed ([`FlushOp`]; [`FlushOp::parse_batch`] reads today's JSON array format). A run's `updated_at`/`completed_at` come from the database clock; step and log times from the op (the worker saw them) |
//! | `fail_owned` (job timeout)             | [`PgStore::fail_owned`]                  | — |
//! | `heartbeat`                            | [`PgStore::heartbeat`]                   | `heartbeat_at = now()` of the database |
//! | `has_stale`, `recover_stale_except`    | [`PgStore::has_stale`], [`PgStore::recover_stale_except`] | take the stale *threshold* (a `Duration`), compared with the database clock, instead of a cutoff time from the worker's clock. `NOTIFY` wake when runs went back to pending |
//! | `has_pending` (+ `data_version` poll)  | [`PgStore::has_pending`]                 | other machines' triggers arrive by `LISTEN` on [`PgStore::wake_channel`]; polling stays the fallback |
//! | `cancel`, `retry`, `delete_run`, `purge` | same names                             | `cancel` sends `NOTIFY` on [`PgStore::cancel_channel`] (payload: the run id) so the executing machine aborts at once; `retry` wakes |
//! | `get_run(s)`, `get_steps`, `get_logs`, `run_counts` | same names, same JSON          | times as ISO-8601 UTC with milliseconds, like SQLite (stored with microseconds) |
//! | `checkpoint`, `side_connection`, `try_write` | —                                  | not needed: the server does its own |
//!
//! Values (`input`, `output`, `progress`, `labels`, step `output`, log
//! `data`) are stored as `json`, not `jsonb`: `json` keeps the text exactly as
//! written, while `jsonb` reorders object keys (by length, then bytes: a
//! user's `{"name", "id"}` would come back as `{"id", "name"}`), drops
//! duplicate keys, rewrites numbers and spacing, and rejects `\u0000` in
//! strings, which `JSON.stringify` produces for a string holding a NUL. The
//! JS decoder (`lib/values.js`) finds tags by property lookup, so it would
//! survive reordering, but the user's own objects would not round-trip as
//! written. Queries that need `jsonb` operators cast (`labels::jsonb @> …`).
//! `pg::tests` proves both the exact round trip and the `jsonb` losses.
//!
//! Times are `timestamptz`. Every lease time (claim, heartbeat, stale
//! cutoff, hand-back) is the database's `now()`, never a worker's clock, so
//! machines with skewed clocks agree on which lease is stale.
//!
//! ## Notifications
//!
//! - `durably_wake_<schema>` (payload: a job name, or empty for "any job"):
//!   sent in the same transaction as a trigger, a batch (one per job), a
//!   retry, a hand-back (`release`), a stale recovery, and the end
//!   (complete, fail, cancel) of a run that has a concurrency key (its
//!   successor may be claimable now). A worker `LISTEN`s and claims.
//! - `durably_cancel_<schema>` (payload: the run id): a cancel. The machine
//!   executing that run aborts it at once (the heartbeat still finds it
//!   within one interval if the notification is lost).
//!
//! `NOTIFY` is delivered at commit, never for a rolled-back transaction.
//! Schema names are limited to 48 characters so these names fit in
//! PostgreSQL's 63.
//!
//! ## What the engine must call
//!
//! `connect` then `migrate` once at start; the claim loop calls `claim` (or
//! `flush_then_claim` when a batch ended runs) on a wake-up, a `NOTIFY` on
//! the wake channel, or its poll; the heartbeat task calls `heartbeat` with
//! the runs in flight and treats the returned outcomes like SQLite's; the
//! recovery task calls `has_stale` then `recover_stale_except` with its
//! runs in flight; the JS write batches go to `flush`/`flush_then_claim`;
//! a `LISTEN` connection (one per process, outside the pool) turns
//! `cancel_channel` payloads into aborts of local runs. What is not here
//! yet: that listener (it needs the engine's task set), and forwarding the
//! events of runs executed on other machines to `waitForRun`/`subscribe`.

mod claim;
mod flush;
mod manage;
mod migrate;
mod query;
mod trigger;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use flush::FlushOp;
pub use manage::PgPurgeOptions;
pub use migrate::PG_SCHEMA_VERSION;

use crate::error::{Error, Result};
use crate::store::{iso, lock};

/// How to connect a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host[:port]/database[?options]`.
    pub url: String,
    /// The PostgreSQL schema holding durably's tables (created by
    /// [`PgStore::migrate`] if missing). Lower-case letters, digits and `_`,
    /// starting with a letter or `_`, at most 48 characters, not `pg_…`.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a call waits for a free connection (or a new one) before
    /// failing with `DB_BUSY`.
    pub timeout: Duration,
}

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "durably";

impl PgOptions {
    /// Options for `url` with the defaults (schema `durably`, 8 connections, 10 s).
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The durably database on a PostgreSQL server. Cheap to clone (one pool).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: String,
    owner: String,
    ids: Mutex<ulid::Generator>,
    wake_channel: String,
    cancel_channel: String,
}

/// Checks a schema name (see [`PgOptions::schema`]).
pub fn validate_schema(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let ok_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if !ok_chars || !ok_start || name.len() > 48 || name.starts_with("pg_") {
        return Err(Error::Validation(format!(
            "invalid PostgreSQL schema name {name:?}: use 1 to 48 lower-case letters, digits \
             or '_', starting with a letter or '_', not starting with 'pg_'"
        )));
    }
    Ok(())
}

impl PgStore {
    /// Connects (one connection is opened at once, so a wrong URL or a
    /// server that is down fails here). Does not create the schema: call
    /// [`PgStore::migrate`].
    pub async fn connect(opts: PgOptions) -> Result<PgStore> {
        validate_schema(&opts.schema)?;
        if opts.pool_size == 0 {
            return Err(Error::Validation("pool_size must be at least 1".into()));
        }
        let mut cfg = tokio_postgres::Config::from_str(&opts.url).map_err(|e| {
            // The message names the part that is wrong; the URL may hold a password.
            Error::Validation(format!("invalid PostgreSQL url: {e}"))
        })?;
        // Every connection resolves durably's tables in its schema, and
        // formats times in UTC (only the contract snapshot reads them as text).
        let extra = format!("-c search_path={} -c TimeZone=UTC", opts.schema);
        let options = match cfg.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {extra}"),
            _ => extra,
        };
        cfg.options(options);
        if cfg.get_application_name().is_none() {
            cfg.application_name("durably");
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(opts.timeout);
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the connection pool: {e}")))?;
        let store = PgStore {
            inner: Arc::new(Inner {
                pool,
                wake_channel: format!("durably_wake_{}", opts.schema),
                cancel_channel: format!("durably_cancel_{}", opts.schema),
                schema: opts.schema,
                owner: format!("{}:{}", std::process::id(), ulid::Ulid::new()),
                ids: Mutex::new(ulid::Generator::new()),
            }),
        };
        drop(store.client().await?);
        Ok(store)
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// This instance's lease owner id (`pid:ulid`).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The channel of wake-ups (`durably_wake_<schema>`); see the module docs.
    pub fn wake_channel(&self) -> &str {
        &self.inner.wake_channel
    }

    /// The channel of cancels (`durably_cancel_<schema>`); see the module docs.
    pub fn cancel_channel(&self) -> &str {
        &self.inner.cancel_channel
    }

    /// The database's clock (`now()` outside a transaction).
    pub async fn db_now(&self) -> Result<SystemTime> {
        let c = self.client().await?;
        Ok(c.query_one("SELECT now()", &[]).await?.get(0))
    }

    pub(crate) fn new_id(&self) -> String {
        let mut g = lock(&self.inner.ids);
        match g.generate() {
            Ok(id) => id.to_string(),
            // Only when 2^80 ids were made in one millisecond.
            Err(_) => ulid::Ulid::new().to_string(),
        }
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object> {
        self.inner.pool.get().await.map_err(pool_error)
    }
}

/// An optional time as stored in run records.
pub(crate) fn iso_opt(t: Option<SystemTime>) -> Option<String> {
    t.map(iso)
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => connection_error(e),
        PoolError::Timeout(t) => Error::Busy(format!(
            "no PostgreSQL connection became available in time ({t:?})"
        )),
        PoolError::Closed => Error::Closed,
        other => Error::Postgres(format!("connection pool: {other}")),
    }
}

/// A failure to connect: the server's own message when it sent one.
fn connection_error(e: tokio_postgres::Error) -> Error {
    if e.as_db_error().is_some() {
        return Error::from(e);
    }
    Error::Postgres(format!("cannot connect to PostgreSQL: {e}"))
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            return Error::Postgres(e.to_string());
        };
        let msg = match db.detail() {
            Some(d) => format!("{} ({d}) [{}]", db.message(), db.code().code()),
            None => format!("{} [{}]", db.message(), db.code().code()),
        };
        let code = db.code();
        if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            Error::Busy(msg)
        } else if *code == SqlState::DISK_FULL {
            Error::DiskFull(msg)
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            Error::ReadOnly(msg)
        } else {
            Error::Postgres(msg)
        }
    }
}

/// True if `e` is the unique violation of the one-running-run-per-key index
/// or a deadlock between two claims: a claim that lost a race, to retry.
pub(crate) fn is_claim_race(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.as_db_error().is_some_and(|db| {
        (*db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some(claim::RUNNING_KEY_INDEX))
            || *db.code() == SqlState::T_R_DEADLOCK_DETECTED
    })
}

#[cfg(test)]
pub(crate) mod tests;
