//! The PostgreSQL store (cargo feature `postgres`): the same runs, steps,
//! logs and lease protocol as the SQLite [`crate::store::SqliteStore`], for many
//! worker processes on many machines. No napi here; async (tokio-postgres on
//! a deadpool pool), so the engine calls it from its tokio runtime.
//!
//! # Hand-over note (issues 15/16)
//!
//! ## How each SQLite operation maps
//!
//! | SQLite `SqliteStore` | `PgStore` | what differs |
//! |---|---|---|
//! | `open` + `migrate`, `check_schema` | [`PgStore::new`] (no I/O: the first call connects) or [`PgStore::connect`] + [`PgStore::migrate`], [`PgStore::check_schema`] | migrations (`src/pg/migrations/NNNN_*.sql`) run under `pg_advisory_xact_lock`, in the configured `schema` (created if missing); a newer schema fails with `SCHEMA_TOO_NEW`, as on SQLite |
//! | `trigger`, `trigger_batch` (+ `try_*`) | [`PgStore::trigger`], [`PgStore::trigger_batch`] | no `try_*` (nothing blocks a JS thread: the engine awaits). Idempotency by `INSERT … ON CONFLICT DO NOTHING` (two machines, one key: one run); coalesce under a per-key advisory lock; a plain trigger is one statement, a plain batch one `INSERT … unnest`. `created_at` is the database's `now()`, one per batch. `NOTIFY` wake |
//! | `claim`, `claim_in`, `try_claim` | [`PgStore::claim`] | one statement (its own transaction, the claimed runs' completed steps in the same answer), `FOR UPDATE SKIP LOCKED`; one running run per concurrency key also enforced by the unique index `runs_one_running_per_key` (the race it closes: `claim.rs`); a claim that loses that race is retried |
//! | `flush` / `flush_then` (+ `claim_in`) | [`PgStore::flush`], [`PgStore::flush_then_claim`] | ops are the shared typed [`crate::store::FlushOp`] (one enum for every backend; times parsed when bound). Same fence text (`lease_generation = $2 AND status = 'running'`) and statuses (`0`/`c`/`l`); each op is one statement that also reports the run's status (four or more step ops of a batch share one, `STEPS_SQL`, with an answer per run); the batch's statements are piped (`pipe.rs`): one round trip for `BEGIN`, the ops and `COMMIT`, two when the batch's ended runs' successors are claimed in the same commit (the claim runs in a savepoint). An op storing more than [`MAX_OP_BYTES`] is refused alone (`b`, `OpStatus::TooBig`), the rest of the batch commits. A run's `updated_at`/`completed_at` come from the database clock; step and log times from the op |
//! | `fail_owned` (job timeout) | [`PgStore::fail_owned`] | — |
//! | `heartbeat` | [`PgStore::heartbeat`] | `heartbeat_at = now()` of the database |
//! | `has_stale`, `recover_stale(_except)` | [`PgStore::has_stale`], [`PgStore::recover_stale_except`] | take the stale *threshold* (a `Duration`, compared on the database clock) instead of a cutoff computed from the worker's clock; `NOTIFY` wake for the jobs whose runs went back to pending |
//! | `has_pending` (+ `PRAGMA data_version` polling) | [`PgStore::has_pending`] | other machines' triggers arrive by `LISTEN` on [`PgStore::wake_channel`]; polling stays the fallback |
//! | `cancel`, `retry`, `delete_run`, `purge` | [`PgStore::cancel`], [`PgStore::retry`], [`PgStore::delete_run`], [`PgStore::purge`] | the run's row is locked (`FOR UPDATE`) before its state is checked. `cancel` sends `NOTIFY` on [`PgStore::cancel_channel`] (payload: the run id); `retry` wakes. `purge` takes a `SystemTime` ([`PgPurgeOptions`]) and skips rows another purge holds. `retrigger` stays in JS (a trigger) |
//! | `get_run(s)`, `get_steps`, `get_logs`, `run_counts` | same names, same JSON text | times as ISO-8601 UTC with milliseconds, as on SQLite (stored with microseconds); the labels filter is `labels::jsonb @> $n` |
//! | `checkpoint`, `side_connection`, `try_write`, `now`/`Clock` | — | the server checkpoints; there is no worker clock to inject ([`PgStore::db_now`] reads the server's) |
//!
//! ## Values: `json`, not `jsonb`
//!
//! `input`, `output`, `progress`, `labels`, step `output` and log `data` are
//! `json`, which keeps the text exactly as written. `jsonb` reorders object
//! keys (by length, then bytes: a user's `{"name", "id"}` comes back as
//! `{"id", "name"}`), drops duplicate keys, rewrites spacing, and rejects
//! `\u0000`, which `JSON.stringify` writes for a string holding a NUL. The
//! JS decoder (`lib/values.js`) finds tags by property lookup, so tags would
//! survive `jsonb`, but users' own objects would not come back as written.
//! Queries that need `jsonb` operators cast. `pg::tests::values` proves the
//! exact round trip of tagged values and each `jsonb` loss.
//!
//! ## Time
//!
//! Columns are `timestamptz`. Every lease time (claim, heartbeat, stale
//! cutoff, hand-back) and a run's own times are the database's `now()`
//! (the transaction's start), never a worker's clock, so machines with
//! skewed clocks agree on which lease is stale.
//!
//! ## Notifications
//!
//! - `durably_wake_<schema>`, payload a job name, or empty for "any job":
//!   sent by a trigger, a batch (one per job), a retry, a hand-back
//!   (`release`), a stale recovery, and the end (complete, fail, cancel of
//!   a running run) of a run with a concurrency key (its successor may be
//!   claimable now). A complete or fail sends it only while some process
//!   is registered in `wakers` (a started worker with a free slot, see
//!   [`PgStore::set_wakes_wanted`]).
//! - `durably_cancel_<schema>`, payload the run id: a cancel. The machine
//!   executing that run aborts it at once (its heartbeat still finds the
//!   cancel within one interval if the notification is lost).
//! - `durably_events_<schema>`: run events for other machines'
//!   `waitForRun`/`subscribe`, published with [`PgStore::publish_events`];
//!   inline under 8000 bytes (the events of one publish packed into as few
//!   notifications as fit), else stored in `events` and sent by reference
//!   (`events.rs` has the format).
//!
//! A `NOTIFY` is delivered at commit, never for a rolled-back transaction.
//! Schema names are at most 48 characters, so the channel names fit in
//! PostgreSQL's 63.
//!
//! ## What the engine must call
//!
//! Since issue 15 the engine does this through the [`crate::store::Store`]
//! interface (`src/pg/store_impl.rs`): `Engine<PgStore>` runs the same
//! worker (claim loop, heartbeats, timeouts, recovery, retention) and passes
//! the engine tests (`engine::tests::postgres`). The listener runs as
//! an engine task through the backend-agnostic [`crate::store::Store::listen`]
//! hook (SQLite answers `None`): wake → `Worker::wake`, cancel →
//! `Worker::cancelled_elsewhere` (`Sink::lost(id, Cancelled)` for a run in
//! flight here), a (re)connect → one claim, an event → `Sink::event` (the JS
//! layer feeds it to `waitForRun`/`subscribe`). The JS layer publishes every
//! run event of this process through `Engine::publish_event` (one ordered
//! publisher task, batching what queued up). Tested across two processes in
//! `__test__/listen.test.mjs`.
//!
//! - Start: [`PgStore::connect`], then [`PgStore::migrate`] once.
//! - Claim loop: [`PgStore::claim`] on a local wake-up, a notification on
//!   [`PgStore::wake_channel`], or the poll; after a write batch that ended
//!   runs, [`PgStore::flush_then_claim`] (the closure gets the ended
//!   `(run, generation)`s and answers `(jobs, limit)` to claim in the same
//!   commit, like the worker's `reserve`).
//! - JS write batches: `store::Batch::parse` then [`PgStore::flush_then_claim`]
//!   (the engine does this for every backend: `Engine::flush`).
//! - Heartbeat task: [`PgStore::heartbeat`] with the runs in flight; the
//!   outcomes mean what SQLite's mean. Job timeout: [`PgStore::fail_owned`].
//! - Recovery task: [`PgStore::has_stale`], then
//!   [`PgStore::recover_stale_except`] with the runs in flight.
//! - One `LISTEN` connection per process: [`PgStore::listen`] opens it
//!   (outside the pool: deadpool connections cannot receive notifications)
//!   and yields [`PgNotice`]s: `Wake` → wake the claim loop; `Cancel` →
//!   abort the local run with that id; `Event` → emit to local listeners;
//!   `Listening` (also after every reconnect: notifications sent while it
//!   was down are lost) → poll once; `Disconnected` → report. It reconnects
//!   with backoff and checks the connection with `SELECT 1`.
//! - Run events the JS layer emits for a run: [`PgStore::publish_events`]
//!   (the listener leaves out this process's own).
//!
//! ## TLS
//!
//! Both the pool and the listen connection use the connector of
//! [`tls`] (rustls on ring), set up from the URL's `sslmode` (libpq's values;
//! default `prefer`) and `sslrootcert`; see that module for what each mode
//! checks.

mod claim;
pub(crate) mod events;
pub(crate) mod flush;
mod listen;
mod manage;
mod migrate;
mod pipe;
mod query;
pub(crate) mod store_impl;
pub mod tls;
mod trigger;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use events::{RemoteEvent, EVENT_RETENTION, MAX_INLINE_PAYLOAD};
pub use listen::{ListenOptions, PgListener, PgNotice};
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
    /// How long a call waits for a free connection (or a new one), and a
    /// statement for another connection's lock (`lock_timeout`), before
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
    /// How the pool connects; the listen connection ([`listen`]) uses it too.
    config: tokio_postgres::Config,
    /// [`PgOptions::timeout`]: the pool's wait and the `lock_timeout`.
    timeout: Duration,
    /// The TLS handshakes of both (see [`tls`]).
    tls: MakeRustlsConnect,
    schema: String,
    owner: String,
    ids: Mutex<ulid::Generator>,
    wake_channel: String,
    cancel_channel: String,
    events_channel: String,
    /// Ops storing more bytes than this are refused with `OpStatus::TooBig`.
    max_op_bytes: usize,
    /// Run events queued for publishing ([`PgStore::queue_events`]), in order.
    outbox: Mutex<std::collections::VecDeque<(String, String)>>,
    /// Held by whoever publishes events taken from `outbox` until they are
    /// sent and answered, so publishes never overtake each other.
    publishing: tokio::sync::Mutex<()>,
    /// Whether other processes' run events are wanted here
    /// ([`PgStore::set_remote_events`]); when not, the listen connection
    /// drops them unread.
    remote_events: std::sync::atomic::AtomicBool,
    /// Whether wake-ups are wanted here ([`PgStore::set_wakes_wanted`]);
    /// when not, the listen connection does not listen on the wake channel.
    wakes_wanted: std::sync::atomic::AtomicBool,
    /// Poked when `wakes_wanted` changes (the listen connection follows it).
    wakes_changed: tokio::sync::Notify,
    /// Serializes registrations for run events ([`PgStore::register_listener`]).
    registry: tokio::sync::Mutex<()>,
    /// Until when (at least) this process's registration lasts, once registered.
    registered_until: Mutex<Option<std::time::Instant>>,
    /// This machine's clock as [`crate::store::Store::now`] reports it,
    /// shifted by this many seconds (tests of a skewed worker clock).
    #[cfg(test)]
    skew_secs: i64,
}

/// PostgreSQL refuses a value, and a protocol message (all parameters of a
/// statement), over 1 GiB; the rest of the message needs some room.
pub const MAX_OP_BYTES: usize = (1 << 30) - 64 * 1024;

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
        let store = PgStore::new(opts)?;
        drop(store.client().await?);
        Ok(store)
    }

    /// The store without connecting: checks the options and the URL (a bad
    /// one fails here) but opens no connection, so nothing waits on the
    /// network; the first call that needs the server connects (and fails
    /// with "cannot connect to PostgreSQL: …" when it cannot). The binding
    /// opens stores this way: the JS thread never waits for a handshake.
    pub fn new(opts: PgOptions) -> Result<PgStore> {
        validate_schema(&opts.schema)?;
        if opts.pool_size == 0 {
            return Err(Error::Validation("pool_size must be at least 1".into()));
        }
        // tokio-postgres knows neither verify-ca/verify-full nor sslrootcert.
        let (url, tls_opts) = tls::split_url(&opts.url)?;
        let mut cfg = tokio_postgres::Config::from_str(&url).map_err(|e| {
            // The message names the part that is wrong; the URL may hold a password.
            Error::Validation(format!("invalid PostgreSQL url: {e}"))
        })?;
        let tls_opts = tls_opts.unwrap_or_else(|| tls::TlsOptions::from_config(&cfg));
        let tls = tls_opts.apply(&mut cfg)?;
        // Every connection resolves durably's tables in its schema, and
        // formats times in UTC (only the contract snapshot reads them as text).
        let extra = format!("-c search_path={} -c TimeZone=UTC", opts.schema);
        // A statement waits for another connection's lock at most the pool's
        // wait (busyTimeout), then fails with DB_BUSY, as a SQLite write
        // does; the URL's own `options` may set another lock_timeout.
        let first = format!("-c lock_timeout={}", opts.timeout.as_millis().max(1));
        let options = match cfg.get_options() {
            Some(o) if !o.is_empty() => format!("{first} {o} {extra}"),
            _ => format!("{first} {extra}"),
        };
        cfg.options(options);
        if cfg.get_application_name().is_none() {
            cfg.application_name("durably");
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(opts.timeout);
        }
        let mgr = Manager::from_config(
            cfg.clone(),
            tls.clone(),
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
                config: cfg,
                tls,
                timeout: opts.timeout,
                events_channel: format!("durably_events_{}", opts.schema),
                wake_channel: format!("durably_wake_{}", opts.schema),
                cancel_channel: format!("durably_cancel_{}", opts.schema),
                schema: opts.schema,
                owner: format!("{}:{}", std::process::id(), ulid::Ulid::new()),
                ids: Mutex::new(ulid::Generator::new()),
                max_op_bytes: MAX_OP_BYTES,
                outbox: Mutex::new(std::collections::VecDeque::new()),
                publishing: tokio::sync::Mutex::new(()),
                remote_events: std::sync::atomic::AtomicBool::new(true),
                wakes_wanted: std::sync::atomic::AtomicBool::new(true),
                wakes_changed: tokio::sync::Notify::new(),
                registry: tokio::sync::Mutex::new(()),
                registered_until: Mutex::new(None),
                #[cfg(test)]
                skew_secs: 0,
            }),
        };
        Ok(store)
    }

    /// How long a call waits for a pooled connection, and a statement for
    /// another connection's lock, before failing with `DB_BUSY`
    /// ([`PgOptions::timeout`]).
    pub fn busy_timeout(&self) -> Duration {
        self.inner.timeout
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

    /// The same store with another op size limit (tests use a tiny one).
    #[cfg(test)]
    pub(crate) fn with_max_op_bytes(self, n: usize) -> PgStore {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("store is shared"));
        PgStore {
            inner: Arc::new(Inner {
                max_op_bytes: n,
                ..inner
            }),
        }
    }

    /// The same store whose local clock ([`crate::store::Store::now`]) is
    /// `secs` seconds ahead (negative: behind) of this machine's.
    #[cfg(test)]
    pub(crate) fn with_clock_skew(self, secs: i64) -> PgStore {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("store is shared"));
        PgStore {
            inner: Arc::new(Inner {
                skew_secs: secs,
                ..inner
            }),
        }
    }

    /// This machine's clock, as the engine's policy sees it.
    pub(crate) fn local_now(&self) -> SystemTime {
        let now = SystemTime::now();
        #[cfg(test)]
        {
            let skew = Duration::from_secs(self.inner.skew_secs.unsigned_abs());
            if self.inner.skew_secs >= 0 {
                return now + skew;
            }
            return now - skew;
        }
        #[allow(unreachable_code)]
        now
    }

    /// The same store whose listen connection uses `config` (tests of a
    /// listener that cannot connect).
    #[cfg(test)]
    pub(crate) fn with_listen_config(self, config: tokio_postgres::Config) -> PgStore {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("store is shared"));
        PgStore {
            inner: Arc::new(Inner { config, ..inner }),
        }
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

    /// Runs `call`, and once more when it failed because its connection was
    /// lost ([`Error::ConnectionLost`]: a session the server ended, which
    /// this process had not read yet, or a connection that closed), the
    /// idle connections closed first so the second try opens a fresh one.
    /// Only for calls that write nothing, or only what they would write
    /// again the same way (a migration, a heartbeat): a lost call may have
    /// committed.
    pub(crate) async fn again_if_lost<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match call().await {
            Err(Error::ConnectionLost(_)) => {
                self.forget_idle_connections();
                call().await
            }
            other => other,
        }
    }

    /// Closes the idle pooled connections: after the server ended one
    /// session, the others may be ended too without this process having
    /// read it yet (the pool's check only sees a connection already closed).
    pub(crate) fn forget_idle_connections(&self) {
        self.inner.pool.retain(|_, _| false);
    }
}

/// True when the server ended the session instead of answering (a `FATAL`
/// or `PANIC`: `pg_terminate_backend`, a shutdown, a crash of another
/// backend, an idle timeout): the request it answers, and everything sent
/// after it, did not run. (A connection that just closed, with no such
/// answer, proves nothing: the server may have run the request.)
pub(crate) fn session_ended(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::Severity;
    e.as_db_error().is_some_and(|db| {
        matches!(
            db.parsed_severity(),
            Some(Severity::Fatal) | Some(Severity::Panic)
        )
    })
}

/// An optional time as stored in run records.
pub(crate) fn iso_opt(t: Option<SystemTime>) -> Option<String> {
    t.map(iso)
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => connection_error(e),
        // A new connection that did not complete in time: the server is
        // slow to accept or unreachable, not busy with a lock.
        PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => Error::Postgres(
            "cannot connect to PostgreSQL: no connection within the timeout (busyTimeout)".into(),
        ),
        PoolError::Timeout(t) => Error::Busy(format!(
            "no PostgreSQL connection became available in time ({t:?})"
        )),
        PoolError::Closed => Error::Closed,
        other => Error::Postgres(format!("connection pool: {other}")),
    }
}

/// A failure to connect: the server's own message when it sent one.
fn connection_error(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        // The server refused this user or database (authentication, pg_hba,
        // no such database): a failure to connect that trying again cannot
        // mend (a FATAL of another kind, e.g. the server starting up, keeps
        // its own meaning). Said so, with a hint where one helps.
        let code = db.code().code();
        if code.starts_with("28") || code == "3D000" {
            let hint = if db.message().contains("client certificate")
                || db.message().contains("certificate authentication failed")
            {
                " (the server wants a client certificate for this user, signed by a CA it \
                 trusts: sslcert=<PEM file>&sslkey=<PEM file> in the url)"
            } else {
                ""
            };
            return Error::Postgres(format!(
                "cannot connect to PostgreSQL: {} [{code}]{hint}",
                db.message()
            ));
        }
        return Error::from(e);
    }
    // tokio-postgres shows only its own layer ("error performing TLS
    // handshake"); the causes say why (e.g. the certificate's issuer).
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    let hint = if text.contains("certificate not valid for name") {
        " (sslmode=verify-full checks the url's host name against the certificate; \
         verify-ca checks only that it chains to a trusted root)"
    } else if text.contains("invalid peer certificate") {
        " (sslmode verify-ca/verify-full: the server's certificate must chain to a root of \
         sslrootcert=<PEM file>, or to the Mozilla roots when sslrootcert is not given)"
    } else if [
        "UnknownCA",
        "BadCertificate",
        "CertificateRequired",
        "CertificateExpired",
    ]
    .iter()
    .any(|a| text.contains(&format!("received fatal alert: {a}")))
    {
        " (the server refused the client certificate: it must be sslcert=<PEM file>, valid, \
         signed by a CA in the server's ssl_ca_file, with its sslkey)"
    } else if text.contains("server does not support TLS") {
        " (the url's sslmode requires TLS: require, verify-ca or verify-full)"
    } else {
        ""
    };
    Error::Postgres(format!("cannot connect to PostgreSQL: {text}{hint}"))
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            if e.is_closed() {
                return Error::ConnectionLost(e.to_string());
            }
            return Error::Postgres(e.to_string());
        };
        let msg = match db.detail() {
            Some(d) => format!("{} ({d}) [{}]", db.message(), db.code().code()),
            None => format!("{} [{}]", db.message(), db.code().code()),
        };
        let code = db.code();
        if session_ended(&e) {
            Error::ConnectionLost(msg)
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
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
