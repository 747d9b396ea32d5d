//! Everything SQL: opening the file, pragmas, migrations and one module per
//! operation. Nothing here knows about Node.
//!
//! One writer connection per process, behind a mutex, performs every write in
//! a `BEGIN IMMEDIATE` transaction (writes that start with a read must take
//! the write lock first, or two processes can deadlock upgrading read locks).
//! Queries use a second connection so they never wait for the writer.

mod backend;
mod busy;
mod claim;
mod fences;
mod flush;
#[cfg_attr(target_arch = "wasm32", path = "identity_wasm.rs")]
mod identity;
pub mod json;
mod manage;
mod migrate;
mod query;
#[cfg(not(target_arch = "wasm32"))]
mod side_lock;
mod sqlite_store;
mod status;
mod trigger;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod wal_vfs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

pub use backend::{ended_runs, poll_once, ClaimRequest, Notice, Store, SyncStore};
pub use claim::{ClaimedRun, HeartbeatOutcome};
pub use flush::{parse_batch, Batch, FlushOp, FlushOutcome, OpError, OpStatus};
pub use manage::PurgeOptions;
pub use migrate::SCHEMA_VERSION;
pub use query::RunFilter;
pub use status::RunStatus;
pub use trigger::{TriggerItem, TriggerOutcome, TriggerRequest};

use crate::error::{Error, Result};

/// Durability of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// WAL with `synchronous=NORMAL`: survives process crashes.
    Normal,
    /// WAL with `synchronous=FULL`: also survives power loss.
    Full,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// File path, or `:memory:`.
    pub path: String,
    /// Commit durability.
    pub synchronous: Synchronous,
    /// How long a write waits for another connection's lock before failing with `DB_BUSY`.
    pub busy_timeout: Duration,
}

impl StoreOptions {
    /// Options for `path` with the library defaults.
    pub fn new(path: impl Into<String>) -> Self {
        StoreOptions {
            path: path.into(),
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_millis(5000),
        }
    }
}

/// The source of "now"; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// ISO-8601 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
pub fn iso(t: SystemTime) -> String {
    // humantime panics outside 1970..=9999; a PostgreSQL timestamp written
    // by hand can be anywhere in that range, so those are formatted here.
    const YEAR_10000: u64 = 253_402_300_800;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => humantime::format_rfc3339_millis(t).to_string(),
        Ok(d) => iso_from_millis(i128::from(d.as_secs()) * 1000 + i128::from(d.subsec_millis())),
        Err(e) => {
            let d = e.duration();
            // Round toward the past, as for times after the epoch.
            iso_from_millis(-(d.as_nanos() as i128 + 999_999) / 1_000_000)
        }
    }
}

/// RFC 3339 (proleptic Gregorian, UTC) for any instant, given in
/// milliseconds since the epoch; years outside 0..=9999 get a sign and
/// more digits, as in ISO 8601's expanded form.
fn iso_from_millis(ms: i128) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+07}")
    };
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// The database of one durably instance.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    /// `None` for `:memory:`, where a second connection would see another
    /// database, and on wasm32 (OPFS: one connection per file).
    reader: Option<Mutex<Connection>>,
    opts: StoreOptions,
    clock: Clock,
    ids: Mutex<ulid::Generator>,
    owner: String,
    /// Commits by this store, and their count at the last checkpoint pass.
    commits: AtomicU64,
    checkpointed_at: AtomicU64,
    /// The file's identity, to notice it being replaced (`None` for `:memory:`).
    file: Option<identity::FileWatch>,
    /// The queue of this file's waiting writers (`side_lock.rs`; `None` for
    /// `:memory:`, URIs and wasm32).
    #[cfg(not(target_arch = "wasm32"))]
    side: Option<side_lock::SideLock>,
}

/// Commits since the last pass below which the checkpointer skips a pass. A
/// checkpoint that catches up makes the next write restart the log, which
/// syncs the new log header: after an idle moment that fsync would land on
/// the next trigger (on the JS thread), so small logs are left alone.
const CHECKPOINT_MIN_COMMITS: u64 = 200;

/// WAL frames (pages) past which the checkpointer holds this process's
/// writers back while it finishes, so the log resets instead of growing
/// while writes never pause.
const WAL_RESET_FRAMES: i64 = 4096;

/// The size a reset log file is cut back to. Under a steady stream of
/// writes the log reaches ~40–55 MB before the checkpointer resets it; cut
/// to 16 MB, the first commit after each reset truncated ~30 MB (~10 ms on
/// the writer's path) and the log then grew into new blocks again (a frame
/// appended to a growing file costs ~4 µs of kernel time here, overwriting
/// one ~2.3 µs). Left at its size, the next round overwrites it.
pub(crate) const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// A passive pass that took longer than this left behind it what writers
/// added meanwhile: another passive pass runs before the `RESTART` (which
/// holds the writers while it copies and syncs), up to
/// [`MAX_PASSIVE_PASSES`] passes in all.
const RESTART_AFTER_PASS_OF: Duration = Duration::from_millis(1);
const MAX_PASSIVE_PASSES: u32 = 4;

impl SqliteStore {
    /// Opens (creating if absent) the database file and sets its pragmas.
    /// Does not create the schema: call [`SqliteStore::migrate`].
    pub fn open(opts: StoreOptions) -> Result<SqliteStore> {
        Self::open_with_clock(opts, system_clock())
    }

    /// Like [`SqliteStore::open`] with an explicit clock.
    pub fn open_with_clock(opts: StoreOptions, clock: Clock) -> Result<SqliteStore> {
        let memory = opts.path == ":memory:";
        let (writer, reader) = busy::with_timeout(opts.busy_timeout, || -> Result<_> {
            let writer = open_connection(&opts, true)?;
            // OPFS's access handle pool (wasm32) allows one connection per file.
            let reader = if memory || cfg!(target_arch = "wasm32") {
                None
            } else {
                Some(Mutex::new(open_connection(&opts, false)?))
            };
            Ok((writer, reader))
        })?;
        let opts_path = opts.path.clone();
        #[cfg(not(target_arch = "wasm32"))]
        let side = if memory || opts.path.starts_with("file:") || no_side_lock() {
            None
        } else {
            side_lock::SideLock::open(&opts.path)
        };
        Ok(SqliteStore {
            #[cfg(not(target_arch = "wasm32"))]
            side,
            writer: Mutex::new(Writer {
                conn: writer,
                fences: fences::Fences::default(),
            }),
            reader,
            owner: format!("{}:{}", process_id(), ulid::Ulid::new()),
            opts,
            clock,
            ids: Mutex::new(ulid::Generator::new()),
            commits: AtomicU64::new(0),
            checkpointed_at: AtomicU64::new(0),
            file: identity::FileWatch::new(&opts_path),
        })
    }

    /// Options this store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Transactions this store's writer committed so far.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// This instance's lease owner id (`pid:ulid`).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The current time as stored.
    pub fn now(&self) -> String {
        iso((self.clock)())
    }

    /// The current time.
    pub fn now_time(&self) -> SystemTime {
        (self.clock)()
    }

    pub(crate) fn new_id(&self) -> String {
        next_id(&mut lock(&self.ids))
    }

    /// `n` new ids, in order, under one lock of the generator (a batch).
    pub(crate) fn new_ids(&self, n: usize) -> Vec<String> {
        let mut g = lock(&self.ids);
        (0..n).map(|_| next_id(&mut g)).collect()
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer connection,
    /// waiting for the lock (up to the busy timeout). While it waits, it holds
    /// the side lock when it can get it (see `side_lock.rs`).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.write_fenced(|c, fences| {
            fences.forget();
            f(c)
        })
    }

    /// [`SqliteStore::write`] for a flush, which keeps the writer's
    /// [`Fences`](fences::Fences) exact itself instead of forgetting them.
    pub(crate) fn write_fenced<T>(
        &self,
        f: impl FnOnce(&Connection, &mut fences::Fences) -> Result<T>,
    ) -> Result<T> {
        self.refuse_if_replaced()?;
        let mut writer = lock(&self.writer);
        let Writer { conn, fences } = &mut *writer;
        let out = busy::with_timeout(self.opts.busy_timeout, || -> Result<T> {
            let tx = {
                #[cfg(not(target_arch = "wasm32"))]
                let _queued = self
                    .side
                    .as_ref()
                    .and_then(|s| s.acquire(self.opts.busy_timeout));
                Tx::begin(conn)?
            };
            tx.commit_fenced(fences, f)
        })?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Like [`SqliteStore::write`] but never waits: returns `Ok(None)` at once when
    /// the writer is in use in this process or another process holds the
    /// write lock. Lets the JS thread commit inline without ever blocking.
    pub(crate) fn try_write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<Option<T>> {
        self.try_write_fenced(|c, fences| {
            fences.forget();
            f(c)
        })
    }

    /// [`SqliteStore::try_write`] for a flush (see [`SqliteStore::write_fenced`]).
    pub(crate) fn try_write_fenced<T>(
        &self,
        f: impl FnOnce(&Connection, &mut fences::Fences) -> Result<T>,
    ) -> Result<Option<T>> {
        self.refuse_if_replaced()?;
        let mut writer = match self.writer.try_lock() {
            Ok(w) => w,
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let Writer { conn, fences } = &mut *writer;
        let begun = busy::with_timeout(Duration::ZERO, || Tx::begin(conn));
        let out = match begun {
            Ok(tx) => busy::with_timeout(self.opts.busy_timeout, || tx.commit_fenced(fences, f)),
            Err(e) => Err(e),
        };
        match out {
            Ok(out) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                Ok(Some(out))
            }
            Err(e) if e.is_busy() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn refuse_if_replaced(&self) -> Result<()> {
        match self.file.as_ref().and_then(|f| f.refused()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Compares the database file and its `-wal` with the ones opened (device
    /// and inode). The first time they differ, returns `DB_REPLACED`; from then
    /// on every write fails with it (see `identity.rs`).
    pub fn check_file(&self) -> Option<Error> {
        self.file.as_ref().and_then(|f| f.check())
    }

    /// True once [`SqliteStore::check_file`] found the file replaced.
    pub fn is_replaced(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.refused().is_some())
    }

    /// Runs a read on the reader connection (the writer for `:memory:`).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        busy::with_timeout(self.opts.busy_timeout, || match &self.reader {
            Some(r) => f(&lock(r)),
            None => f(&lock(&self.writer).conn),
        })
    }

    /// Opens one more connection to the same file (for the worker's change
    /// checks and the checkpointer). `None` for `:memory:`.
    pub fn side_connection(&self) -> Result<Option<Connection>> {
        if self.reader.is_none() {
            return Ok(None);
        }
        busy::with_timeout(self.opts.busy_timeout, || {
            open_connection(&self.opts, false)
        })
        .map(Some)
    }

    /// Whether enough commits were made here since the last checkpoint pass
    /// for [`SqliteStore::checkpoint`] to make one (a counter, no I/O).
    pub fn checkpoint_due(&self) -> bool {
        let commits = self.commits.load(Ordering::Relaxed);
        commits.saturating_sub(self.checkpointed_at.load(Ordering::Relaxed))
            >= CHECKPOINT_MIN_COMMITS
    }

    /// Runs a passive WAL checkpoint on `conn`, a connection of its own (the
    /// checkpointer's). It never blocks writers, so while any process keeps
    /// writing the pass is never quite complete and the log never resets by
    /// itself: with several processes writing all the time it grew without
    /// bound (400 MB in a few seconds with 8 workers, and every page read
    /// then searches more of the log's index). So once the log is long, a
    /// `RESTART` checkpoint follows: it takes the write lock (all processes'
    /// writers wait, for the few milliseconds it needs to copy what the
    /// passive pass left), waits briefly for readers to leave the log, and
    /// the next write starts the log from the beginning (cut back to
    /// `journal_size_limit`). This process's writer mutex is held meanwhile
    /// so its own writes queue instead of spinning on the lock. A passive
    /// pass over a long log takes a while (~17 ms for ~6,500 frames here),
    /// and what writers add meanwhile is left for the next pass: up to
    /// [`MAX_PASSIVE_PASSES`] passive passes run first while each takes long,
    /// so the `RESTART` copies little (it held the writers 4–10 ms after one
    /// pass, ~1.5 ms after four). Says what it did: the passive passes made
    /// (0: not due) and whether a `RESTART` followed and copied the whole log.
    pub fn checkpoint(&self, conn: &Connection) -> Result<(u32, bool)> {
        if !self.checkpoint_due() {
            return Ok((0, false));
        }
        let commits = self.commits.load(Ordering::Relaxed);
        self.checkpointed_at.store(commits, Ordering::Relaxed);
        let mut passes = 1;
        let mut started = Instant::now();
        let mut pass = checkpoint_pass(conn, "PASSIVE")?;
        while let Some((log, _done)) = pass {
            if log <= WAL_RESET_FRAMES {
                break;
            }
            // Writers went on during a long pass (~2,000 frames in ~17 ms):
            // another passive pass copies those without holding anyone.
            if started.elapsed() > RESTART_AFTER_PASS_OF && passes < MAX_PASSIVE_PASSES {
                passes += 1;
                started = Instant::now();
                pass = checkpoint_pass(conn, "PASSIVE")?;
                continue;
            }
            let _writers_wait = lock(&self.writer);
            let wait = self.opts.busy_timeout.min(RESTART_WAIT);
            let restart = busy::with_timeout(wait, || checkpoint_pass(conn, "RESTART"))?;
            return Ok((passes, matches!(restart, Some((log, done)) if log == done)));
        }
        Ok((passes, false))
    }
}

/// A write of at least this many bytes of values is a big write: it is
/// committed off the JS thread and checkpointed at once (see
/// [`SqliteStore::checkpoint_big_write`]).
pub const BIG_WRITE_BYTES: usize = 4 * 1024 * 1024;

impl SqliteStore {
    /// Checkpoints right after a big write, on the writer connection, before
    /// the write is reported done. Left to the background checkpointer, the
    /// copy of a 100 MB value into the database file ran while the next small
    /// steps were committing and slowed them down (and the log stayed 100 MB
    /// long until then): a large value must cost its own write and nothing
    /// after it. Best effort: if readers keep the log busy, the background
    /// checkpointer finishes the job.
    pub fn checkpoint_big_write(&self) {
        if self.reader.is_none() || self.is_replaced() {
            return;
        }
        let writer = lock(&self.writer);
        let wait = self.opts.busy_timeout.min(RESTART_WAIT);
        let _ = busy::with_timeout(wait, || checkpoint_pass(&writer.conn, "RESTART"));
        self.checkpointed_at
            .store(self.commits.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// How long a `RESTART` checkpoint waits for the write lock and for readers.
const RESTART_WAIT: Duration = Duration::from_millis(250);

/// `PRAGMA wal_checkpoint(mode)`: `(frames in the log, frames checkpointed)`,
/// or `None` when another connection is checkpointing or the locks it needs stayed taken.
fn checkpoint_pass(conn: &Connection, mode: &str) -> Result<Option<(i64, i64)>> {
    match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((0, log, done)) => Ok(Some((log, done))),
        Ok(_) => Ok(None),
        Err(e) => match Error::from(e) {
            Error::Busy(_) => Ok(None),
            e => Err(e),
        },
    }
}

fn next_id(g: &mut ulid::Generator) -> String {
    match g.generate() {
        Ok(id) => id.to_string(),
        // Only when 2^80 ids were made in one millisecond.
        Err(_) => ulid::Ulid::new().to_string(),
    }
}

/// The writer connection, and what its flushes' fences read (see fences.rs).
struct Writer {
    conn: Connection,
    fences: fences::Fences,
}

/// A `BEGIN IMMEDIATE` transaction run with cached statements: rusqlite's
/// `Transaction` parses `BEGIN IMMEDIATE` and `COMMIT` again on every use,
/// two SQL compilations per commit on the step write path. Rolled back when
/// dropped without [`Tx::commit`] (or when the commit failed and left it open).
struct Tx<'c> {
    conn: &'c Connection,
}

impl<'c> Tx<'c> {
    fn begin(conn: &'c Connection) -> Result<Tx<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Tx { conn })
    }

    fn commit(self) -> Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    /// Runs `f` in the transaction and commits it, keeping the writer's
    /// `fences` exact: what they know is checked when `f` starts and recorded
    /// only once the commit is done (an error rolls back and records nothing).
    fn commit_fenced<T>(
        self,
        fences: &mut fences::Fences,
        f: impl FnOnce(&Connection, &mut fences::Fences) -> Result<T>,
    ) -> Result<T> {
        let conn = self.conn;
        fences.begin(conn);
        let out = f(conn, fences)?;
        self.commit()?;
        fences.committed(conn);
        Ok(out)
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            // What rusqlite's Transaction does when dropped: nothing to report to.
            let _ = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut s| s.execute([]));
        }
    }
}

/// Locks a mutex, recovering from poisoning: a panic in another thread must
/// not make the database unusable (SQLite's own state stays consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_connection(opts: &StoreOptions, writer: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    #[cfg(not(target_arch = "wasm32"))]
    let opened = match wal_vfs::name() {
        Some(vfs) => Connection::open_with_flags_and_vfs(&opts.path, flags, vfs),
        None => Connection::open_with_flags(&opts.path, flags),
    };
    #[cfg(target_arch = "wasm32")]
    let opened = Connection::open_with_flags(&opts.path, flags);
    let mut conn = opened.map_err(|e| {
        let e = Error::from(e);
        match e {
            Error::CannotOpen(m) => Error::CannotOpen(format!(
                "{} (does the directory exist and is it writable?): {m}",
                opts.path
            )),
            Error::Sqlite(e) => Error::CannotOpen(format!(
                "{} (does the directory exist and is it writable?): {e}",
                opts.path
            )),
            e => e,
        }
    })?;
    busy::install(&mut conn)?;
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(Error::ReadOnly(opts.path.clone()));
    }
    let memory = opts.path == ":memory:";
    // Setting WAL needs a brief exclusive lock; on a brand-new file several
    // processes may race for it, so retry within the busy timeout. OPFS (the
    // browser build) has no shared memory for WAL: a rollback journal there.
    let journal = if cfg!(target_arch = "wasm32") {
        "delete"
    } else {
        "wal"
    };
    let mode = retry_busy(opts.busy_timeout, || {
        conn.pragma_update_and_check(None, "journal_mode", journal, |r| r.get::<_, String>(0))
            .map_err(Error::from)
    })?;
    let expected = if memory { "memory" } else { journal };
    if !mode.eq_ignore_ascii_case(expected) {
        return Err(Error::Internal(format!(
            "journal_mode is {mode}, expected {expected}"
        )));
    }
    let sync = match opts.synchronous {
        Synchronous::Normal => 1,
        Synchronous::Full => 2,
    };
    conn.pragma_update(None, "synchronous", sync)?;
    let got: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if got != sync {
        return Err(Error::Internal(format!(
            "synchronous is {got}, expected {sync}"
        )));
    }
    conn.pragma_update(None, "temp_store", "memory")?;
    if writer && !memory {
        // Checkpoints run on the worker's checkpointer, off the commit path
        // (see SqliteStore::checkpoint). A reset log is cut back to
        // JOURNAL_SIZE_LIMIT by the first commit after the reset.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    }
    // The query planner stability guarantee: plans never depend on bound
    // values. Without it SQLite (3.46+) reads a bound `LIMIT ?` while
    // planning and expires the statement whenever it is bound again, so the
    // cached claim query was parsed and planned anew on every claim (~16 %
    // of the CPU of a one-step run, measured with perf).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    if let Some(limit) = test_length_limit() {
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, limit)?;
    }
    Ok(conn)
}

/// For tests only: `DURABLY_TEST_NO_SIDE_LOCK=1` opens stores without the
/// side lock, as an older durably (or another program) writes the file.
#[cfg(not(target_arch = "wasm32"))]
fn no_side_lock() -> bool {
    std::env::var("DURABLY_TEST_NO_SIDE_LOCK").is_ok_and(|v| v == "1")
}

/// For tests only: `DURABLY_TEST_SQLITE_MAX_LENGTH` lowers SQLite's length
/// limit (`SQLITE_LIMIT_LENGTH`, about 1 GB) on every connection, so the
/// path of a value SQLite refuses is tested without allocating a gigabyte.
fn test_length_limit() -> Option<i32> {
    std::env::var("DURABLY_TEST_SQLITE_MAX_LENGTH")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v > 0)
}

/// This process's id for lease owners (wasm32 has no processes: 0).
fn process_id() -> u32 {
    #[cfg(not(target_arch = "wasm32"))]
    return std::process::id();
    #[cfg(target_arch = "wasm32")]
    0
}

/// Retries `f` while it fails with `DB_BUSY`, for at most `limit`.
/// On wasm32 (one thread, no clock in std) `f` runs once.
#[cfg(target_arch = "wasm32")]
pub(crate) fn retry_busy<T>(_limit: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    f()
}

/// Retries `f` while it fails with `DB_BUSY`, for at most `limit`.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn retry_busy<T>(limit: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if e.is_busy() && start.elapsed() < limit => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
pub(crate) mod tests;
