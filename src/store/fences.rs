//! What the writer connection's step fences read, kept from one flush to the
//! next while nothing else wrote to the database.
//!
//! A step's write is fenced by a read of its run's row: the lease generation,
//! `status = 'running'`, and `updated_at` (see `ROW_REFRESH` in flush.rs).
//! Those columns change only when a transaction rewrites the row, so between
//! two flushes the answer can only change if something committed in between:
//!
//! - another connection (another process, another instance in this process):
//!   the pager's data version (`SQLITE_FCNTL_DATA_VERSION`), read after
//!   `BEGIN IMMEDIATE` has taken the write lock, then differs from the one
//!   read right after this connection's last commit, and everything is
//!   forgotten;
//! - this connection outside a flush (a claim, a heartbeat, a trigger, a
//!   cancel, recovery, …): [`SqliteStore::write`](super::SqliteStore::write)
//!   forgets everything before it runs, as it does not say what it changed;
//! - a flush's own ops: a step's refresh of the row keeps the entry exact,
//!   and progress, a completion, a failure or a release drop the run's entry.
//!   The runs a flush claims in the same transaction were `pending`, so none
//!   of them has an entry.
//!
//! Any error between `BEGIN` and the recorded commit (a failed op, a failed
//! `COMMIT`, a rollback for the second, per-op pass) leaves no version
//! recorded, so the next transaction starts with nothing. A kept answer
//! skips the fence's read, a primary-key lookup of the run's row through a
//! prepared statement: at `maxConcurrentRuns` 8, ~10 % of a step.

use std::collections::HashMap;
use std::ffi::{c_uint, c_void};

use rusqlite::{ffi, Connection};

/// Entries past which everything is forgotten (runs whose executions ended
/// without an op that drops them, e.g. a step refused as cancelled).
const MAX_RUNS: usize = 4096;

#[derive(Default)]
pub(crate) struct Fences {
    /// The data version right after the last commit that left `runs` exact;
    /// `None` while a transaction is open or after one that did not commit.
    version: Option<u32>,
    /// Run id → (lease generation, `updated_at`) of a run seen `running`.
    runs: HashMap<String, (i64, String)>,
    /// Fence reads skipped (for tests).
    #[cfg(test)]
    pub(crate) kept: u64,
}

impl Fences {
    /// At the start of a write transaction (the write lock held): keeps what
    /// is known only if nothing committed since the last recorded commit.
    pub(crate) fn begin(&mut self, c: &Connection) {
        let now = data_version(c);
        if now.is_none() || now != self.version.take() {
            self.runs.clear();
        }
    }

    /// After the transaction committed (the write lock still held).
    pub(crate) fn committed(&mut self, c: &Connection) {
        self.version = data_version(c);
    }

    /// Forgets everything: the transaction may rewrite any run's row.
    pub(crate) fn forget(&mut self) {
        self.runs.clear();
    }

    /// The `updated_at` of `run` known to pass the fence of `generation`.
    pub(crate) fn get(&mut self, run: &str, generation: i64) -> Option<&str> {
        match self.runs.get(run) {
            Some((g, updated_at)) if *g == generation => {
                #[cfg(test)]
                {
                    self.kept += 1;
                }
                Some(updated_at.as_str())
            }
            _ => None,
        }
    }

    /// `run` passes the fence of `generation`, its row last written at `updated_at`.
    pub(crate) fn put(&mut self, run: &str, generation: i64, updated_at: &str) {
        if let Some((g, at)) = self.runs.get_mut(run) {
            *g = generation;
            at.clear();
            at.push_str(updated_at);
            return;
        }
        if self.runs.len() >= MAX_RUNS {
            self.runs.clear();
        }
        self.runs
            .insert(run.to_owned(), (generation, updated_at.to_owned()));
    }

    /// `run`'s row was rewritten (or may have been) by an op of this transaction.
    pub(crate) fn drop_run(&mut self, run: &str) {
        self.runs.remove(run);
    }
}

/// The main database's data version: it moves with every commit, this
/// connection's or another's (seen when a transaction starts).
fn data_version(c: &Connection) -> Option<u32> {
    let mut v: c_uint = 0;
    // SAFETY: the handle is valid while `c` is borrowed, "main" is a
    // NUL-terminated name, and SQLITE_FCNTL_DATA_VERSION writes one
    // unsigned int through the pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            c.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_DATA_VERSION,
            (&mut v as *mut c_uint).cast::<c_void>(),
        )
    };
    (rc == ffi::SQLITE_OK).then_some(v)
}
