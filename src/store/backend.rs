//! The store interface: what the engine (src/engine) and the worker
//! (src/worker) need of a database, implemented by the SQLite store
//! ([`SqliteStore`], here) and the PostgreSQL store (`crate::pg::PgStore`,
//! cargo feature `postgres`). The contract every implementation must keep is
//! the shared test suite in `contract/`.
//!
//! ## Sync and async backends
//!
//! Every operation returns a future, so an async backend (PostgreSQL: a
//! connection pool, the database's clock, `SKIP LOCKED`, `NOTIFY`) awaits
//! its network round trips. A *blocking* backend ([`Store::BLOCKING`], SQLite;
//! later a wasm build) does its work on the calling thread: its futures
//! complete on their first poll. The engine runs those on a blocking thread
//! (never on its async threads, where a write waiting for another process's
//! lock would stall every timer), and, where a caller must not wait at all
//! (the JS thread's fast paths), through [`SyncStore`]: non-waiting `try_*`
//! calls that answer `None` when the lock is taken. [`poll_once`] turns a
//! blocking backend's future into its value without any runtime.
//!
//! Nothing here needs tokio: the browser build drives a blocking store from
//! JS timers.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use super::{
    ClaimedRun, FlushOp, FlushOutcome, HeartbeatOutcome, OpStatus, RunFilter, RunStatus,
    TriggerItem, TriggerOutcome,
};
use crate::error::{Error, Result};

/// What to claim in the transaction of a flush: the jobs and at most how
/// many runs (see [`Store::flush_then_claim`]).
pub type ClaimRequest = Option<(Arc<[String]>, usize)>;

/// A durably database: runs, steps, logs and the lease protocol.
///
/// Times: a backend with its own clock (PostgreSQL's `now()`) uses it for
/// leases and run times; the engine's policy reads [`Store::now`].
pub trait Store: Send + Sync + 'static {
    /// True when the futures of this store complete on their first poll but
    /// may block the thread meanwhile (SQLite): see the module docs.
    const BLOCKING: bool;

    /// A handle the worker keeps for cheap change checks and upkeep
    /// (SQLite: a connection of its own; `()` where there is none).
    type Side: Clone + Send + Sync + 'static;

    /// This instance's lease owner id.
    fn owner(&self) -> &str;

    /// The current time as this store sees it (an injected clock in tests).
    fn now(&self) -> SystemTime;

    /// Creates or upgrades the schema; returns the version.
    fn migrate(&self) -> impl Future<Output = Result<i64>> + Send;
    /// The schema version in the database (0 when not migrated).
    fn schema_version(&self) -> impl Future<Output = Result<i64>> + Send;
    /// Fails with `SCHEMA_TOO_NEW` if the schema is newer than this library.
    fn check_schema(&self) -> impl Future<Output = Result<()>> + Send;

    /// Creates one run.
    fn trigger(
        &self,
        item: &TriggerItem<'_>,
    ) -> impl Future<Output = Result<TriggerOutcome>> + Send;
    /// Creates all runs in one transaction (all or nothing), sharing one `created_at`.
    fn trigger_batch(
        &self,
        items: &[TriggerItem<'_>],
    ) -> impl Future<Output = Result<Vec<TriggerOutcome>>> + Send;

    /// True if some pending run of `jobs` may be claimable (a read, no lock),
    /// on the side handle when there is one.
    fn has_pending(
        &self,
        side: Option<&Self::Side>,
        jobs: &[String],
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Claims up to `limit` runs of `jobs` for this worker, oldest first.
    fn claim(
        &self,
        jobs: &[String],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ClaimedRun>>> + Send;

    /// Applies a batch of the executing worker's writes in one transaction
    /// (each op fenced by its lease), then claims, in the same commit, what
    /// `then` asks for given the executions the batch ended: a run's
    /// completion and its successor's claim share one commit.
    fn flush_then_claim<F>(
        &self,
        ops: &[FlushOp<'_>],
        then: F,
    ) -> impl Future<Output = Result<FlushOutcome<Vec<ClaimedRun>>>> + Send
    where
        F: FnOnce(&[(String, i64)]) -> ClaimRequest + Send;
    /// Fails a run this worker owns (job timeout), fenced like any op.
    fn fail_owned(
        &self,
        run: &str,
        generation: i64,
        error: &str,
    ) -> impl Future<Output = Result<OpStatus>> + Send;
    /// Renews the heartbeat of runs this worker executes; reports the lost ones.
    fn heartbeat(
        &self,
        runs: &[(String, i64)],
    ) -> impl Future<Output = Result<Vec<HeartbeatOutcome>>> + Send;
    /// True if a `running` run of `jobs` has a heartbeat older than
    /// `threshold` (a read, no lock).
    fn has_stale(
        &self,
        side: Option<&Self::Side>,
        jobs: &[String],
        threshold: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Returns `running` runs of `jobs` whose heartbeat is older than
    /// `threshold` to `pending`, except the runs in `keep` (the caller's own,
    /// alive); returns how many.
    fn recover_stale(
        &self,
        jobs: &[String],
        threshold: Duration,
        keep: &[(String, i64)],
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Cancels a pending or running run: `(previous status, run JSON)`.
    fn cancel(&self, id: &str) -> impl Future<Output = Result<(RunStatus, String)>> + Send;
    /// Failed or cancelled → pending, the same run; returns it (JSON).
    fn retry(&self, id: &str) -> impl Future<Output = Result<String>> + Send;
    /// Deletes a terminal run with its steps and logs; returns it (JSON).
    fn delete_run(&self, id: &str) -> impl Future<Output = Result<String>> + Send;
    /// Deletes up to `limit` terminal runs that finished before `older_than`.
    fn purge(
        &self,
        older_than: SystemTime,
        limit: i64,
    ) -> impl Future<Output = Result<usize>> + Send;
    /// `retainRuns`: deletes up to `limit` terminal runs that finished more
    /// than `age` ago on this store's clock. The default takes the cutoff
    /// from [`Store::now`]; a backend with a clock of its own (PostgreSQL's
    /// `now()`) measures the age there, as it does leases.
    fn purge_older_than(
        &self,
        age: Duration,
        limit: i64,
    ) -> impl Future<Output = Result<usize>> + Send {
        self.purge(
            crate::engine::policy::retention_cutoff(self.now(), age),
            limit,
        )
    }

    /// One run as JSON, or `None`.
    fn get_run(&self, id: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Runs matching `filter`, newest first (a JSON array).
    fn get_runs(&self, filter: &RunFilter) -> impl Future<Output = Result<String>> + Send;
    /// A run's steps (a JSON array).
    fn get_steps(&self, run_id: &str) -> impl Future<Output = Result<String>> + Send;
    /// A run's persisted logs (a JSON array).
    fn get_logs(&self, run_id: &str) -> impl Future<Output = Result<String>> + Send;
    /// Run counts per job and status (a JSON array).
    fn run_counts(&self) -> impl Future<Output = Result<String>> + Send;

    /// Opens the side handle (`None` where the backend has none).
    fn side(&self) -> Result<Option<Self::Side>>;
    /// A token that changes when another process wrote (SQLite's
    /// `data_version`); `None` when the backend cannot tell (then the poll
    /// and notifications wake the worker).
    fn change_token(&self, side: &Self::Side) -> impl Future<Output = Result<Option<i64>>> + Send;
    /// [`Store::change_token`] on the calling thread if that cannot wait for
    /// anything (no lock, no network); `None` when it would have to (or the
    /// backend cannot tell): the caller then makes the waiting call. Spares
    /// the worker a hop to a blocking thread every check interval.
    fn change_token_now(&self, _side: &Self::Side) -> Option<Result<Option<i64>>> {
        None
    }
    /// Periodic upkeep off the commit path (SQLite: the WAL checkpoint).
    fn upkeep(&self, side: &Self::Side) -> impl Future<Output = Result<()>> + Send;
    /// Whether [`Store::upkeep`] may have work to do (a cheap test, no I/O):
    /// the upkeep task skips its tick, and its hop to a blocking thread, when not.
    fn upkeep_due(&self) -> bool {
        true
    }
    /// Called after a waiting flush of `bytes` bytes of ops committed
    /// (SQLite checkpoints a big write at once).
    fn after_write(&self, _bytes: usize) {}
    /// Compares the database with the one opened; the first time it was
    /// found replaced, returns `DB_REPLACED` (later writes fail with it).
    fn check_file(&self) -> Option<Error> {
        None
    }
    /// True once [`Store::check_file`] found the database replaced.
    fn is_replaced(&self) -> bool {
        false
    }
    /// Starts receiving other processes' notices (PostgreSQL: `LISTEN`),
    /// handed to `on` as they arrive until the returned guard is dropped.
    /// `None` where the backend has none (SQLite: the change check and the
    /// poll see other processes' writes). Called on the engine's runtime.
    fn listen(&self, _on: Box<dyn Fn(Notice) + Send + Sync>) -> Option<Box<dyn Send + Sync>> {
        None
    }
    /// Publishes run events `(run id, event JSON)` to other processes'
    /// [`Notice::Event`]s; nothing where the backend has no [`Store::listen`].
    fn publish_events(&self, _events: &[(&str, &str)]) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
    /// Queues run events for [`Store::publish_queued`], after the ones
    /// queued before; a backend may also send them with its next write batch
    /// (PostgreSQL: in the flush's round trip). Nothing where the backend has
    /// no [`Store::listen`].
    fn queue_events(&self, _events: Vec<(String, String)>) {}
    /// Whether other processes' [`Notice::Event`]s are wanted (on by
    /// default); while off a backend may drop them unread. Nothing where
    /// the backend has no [`Store::listen`].
    fn set_remote_events(&self, _on: bool) {}
    /// Whether wake-ups from other processes ([`Notice::Wake`]) are wanted
    /// (on by default): the worker wants them only while its claim loop is
    /// on and a slot is free. While off a backend may stop receiving them,
    /// and other processes may stop sending them (PostgreSQL: a keyed run's
    /// end wakes only while some process wants wake-ups); turned on again,
    /// it must deliver a [`Notice::Wake`] once it receives them again and
    /// a claim made after it sees what was missed meanwhile. Nothing where
    /// the backend has no [`Store::listen`].
    fn set_wakes_wanted(&self, _on: bool) {}
    /// Registers this process for other processes' run events while they
    /// are wanted, so they are published (see PostgreSQL's `listeners`).
    fn register_listener(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
    /// Ends [`Store::register_listener`]'s registration unless wanted again.
    fn unregister_listener(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
    /// Whether queued events wait for [`Store::publish_queued`].
    fn events_queued(&self) -> bool {
        false
    }
    /// Publishes the queued events, in order, after any publish under way.
    fn publish_queued(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// What another process told this one (see [`Store::listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Runs may be claimable: claim.
    Wake,
    /// Notices may have been lost (the connection was (re)opened): poll once.
    Poll,
    /// This run was cancelled: abort it if it runs here.
    Cancel(String),
    /// A run event another process published.
    Event {
        /// The run.
        run_id: String,
        /// The event's JSON text, as published.
        json: String,
    },
    /// The notice connection failed (it is being re-opened).
    Error(String),
}

/// The non-waiting calls of a blocking store, for a caller that must never
/// wait for a lock (the JS thread): each answers `None` at once when the
/// write lock is taken (the caller then uses the waiting [`Store`] call off
/// its thread). Reads are [`Store`] calls polled once ([`poll_once`]).
pub trait SyncStore: Store {
    /// [`Store::trigger`] without waiting.
    fn try_trigger(&self, item: &TriggerItem<'_>) -> Result<Option<TriggerOutcome>>;
    /// [`Store::trigger`] without waiting, then, in the same transaction,
    /// the claim `then` asks for given the trigger's outcome (a run triggered
    /// where a slot is free starts with one commit, not two). A claim that
    /// fails is rolled back alone and returned beside the outcome.
    #[allow(clippy::type_complexity)]
    fn try_trigger_then_claim<F>(
        &self,
        item: &TriggerItem<'_>,
        then: F,
    ) -> Result<Option<(TriggerOutcome, Result<Vec<ClaimedRun>>)>>
    where
        F: FnOnce(&TriggerOutcome) -> ClaimRequest;
    /// [`Store::trigger_batch`] without waiting.
    fn try_trigger_batch(&self, items: &[TriggerItem<'_>]) -> Result<Option<Vec<TriggerOutcome>>>;
    /// [`Store::claim`] without waiting.
    fn try_claim(&self, jobs: &[String], limit: usize) -> Result<Option<Vec<ClaimedRun>>>;
    /// [`Store::flush_then_claim`] without waiting.
    fn try_flush_then_claim<F>(
        &self,
        ops: &[FlushOp<'_>],
        then: F,
    ) -> Result<Option<FlushOutcome<Vec<ClaimedRun>>>>
    where
        F: FnOnce(&[(String, i64)]) -> ClaimRequest;
}

/// The value of a future that completes on its first poll (a blocking
/// store's), with no runtime. A future that does not complete is an
/// internal error (an async store's future handed to the wrong helper).
pub fn poll_once<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => Err(Error::Internal(
            "a blocking store's future did not complete on its first poll".into(),
        )),
    }
}

/// The runs whose execution a batch ended: the `complete`, `fail` and
/// `release` ops that did not fail (a fenced-off one ends nothing this
/// worker holds, but the JS side still stops its execution).
pub fn ended_runs(ops: &[FlushOp<'_>], statuses: &str) -> Vec<(String, i64)> {
    ops.iter()
        .zip(statuses.chars())
        .filter_map(|(op, st)| {
            if op.ends_execution() && st != OpStatus::Failed.as_char() {
                let (run, generation) = op.lease();
                Some((run.to_string(), generation))
            } else {
                None
            }
        })
        .collect()
}
