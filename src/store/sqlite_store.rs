//! The SQLite store behind the [`Store`] interface: a blocking backend
//! (every future completes on its first poll) with the non-waiting fast
//! paths of [`SyncStore`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::backend::{ClaimRequest, Store, SyncStore};
use super::{
    iso, lock, ClaimedRun, FlushOp, FlushOutcome, HeartbeatOutcome, OpStatus, PurgeOptions,
    RunFilter, RunStatus, SqliteStore, TriggerItem, TriggerOutcome, BIG_WRITE_BYTES,
};
use crate::error::{Error, Result};

impl SqliteStore {
    /// The heartbeat cutoff of `threshold` on this store's clock.
    fn stale_cutoff(&self, threshold: Duration) -> String {
        iso(self.now_time().checked_sub(threshold).unwrap_or(UNIX_EPOCH))
    }

    /// What a flush's `then` asks for, claimed inside its transaction.
    fn claim_requested(&self, c: &Connection, request: ClaimRequest) -> Result<Vec<ClaimedRun>> {
        match request {
            Some((jobs, limit)) if !jobs.is_empty() && limit > 0 => self.claim_in(c, &jobs, limit),
            _ => Ok(Vec::new()),
        }
    }
}

impl Store for SqliteStore {
    const BLOCKING: bool = true;
    type Side = Arc<Mutex<Connection>>;

    fn owner(&self) -> &str {
        SqliteStore::owner(self)
    }

    fn now(&self) -> SystemTime {
        self.now_time()
    }

    async fn migrate(&self) -> Result<i64> {
        SqliteStore::migrate(self)
    }

    async fn schema_version(&self) -> Result<i64> {
        SqliteStore::schema_version(self)
    }

    async fn check_schema(&self) -> Result<()> {
        SqliteStore::check_schema(self)
    }

    async fn trigger(&self, item: &TriggerItem<'_>) -> Result<TriggerOutcome> {
        SqliteStore::trigger(self, item)
    }

    async fn trigger_batch(&self, items: &[TriggerItem<'_>]) -> Result<Vec<TriggerOutcome>> {
        SqliteStore::trigger_batch(self, items)
    }

    async fn has_pending(&self, side: Option<&Self::Side>, jobs: &[String]) -> Result<bool> {
        match side {
            Some(s) => SqliteStore::has_pending(self, Some(&lock(s)), jobs),
            None => SqliteStore::has_pending(self, None, jobs),
        }
    }

    async fn claim(&self, jobs: &[String], limit: usize) -> Result<Vec<ClaimedRun>> {
        SqliteStore::claim(self, jobs, limit)
    }

    async fn flush_then_claim<F>(
        &self,
        ops: &[FlushOp<'_>],
        then: F,
    ) -> Result<FlushOutcome<Vec<ClaimedRun>>>
    where
        F: FnOnce(&[(String, i64)]) -> ClaimRequest + Send,
    {
        self.flush_then(ops, true, |c, ended| self.claim_requested(c, then(ended)))?
            .ok_or_else(|| Error::Internal("flush: no outcome".into()))
    }

    async fn fail_owned(&self, run: &str, generation: i64, error: &str) -> Result<OpStatus> {
        SqliteStore::fail_owned(self, run, generation, error)
    }

    async fn heartbeat(&self, runs: &[(String, i64)]) -> Result<Vec<HeartbeatOutcome>> {
        SqliteStore::heartbeat(self, runs)
    }

    async fn has_stale(
        &self,
        side: Option<&Self::Side>,
        jobs: &[String],
        threshold: Duration,
    ) -> Result<bool> {
        let cutoff = self.stale_cutoff(threshold);
        match side {
            Some(s) => SqliteStore::has_stale(self, Some(&lock(s)), jobs, &cutoff),
            None => SqliteStore::has_stale(self, None, jobs, &cutoff),
        }
    }

    async fn recover_stale(
        &self,
        jobs: &[String],
        threshold: Duration,
        keep: &[(String, i64)],
    ) -> Result<usize> {
        self.recover_stale_except(jobs, &self.stale_cutoff(threshold), keep)
    }

    async fn cancel(&self, id: &str) -> Result<(RunStatus, String)> {
        SqliteStore::cancel(self, id)
    }

    async fn retry(&self, id: &str) -> Result<String> {
        SqliteStore::retry(self, id)
    }

    async fn delete_run(&self, id: &str) -> Result<String> {
        SqliteStore::delete_run(self, id)
    }

    async fn purge(&self, older_than: SystemTime, limit: i64) -> Result<usize> {
        SqliteStore::purge(
            self,
            &PurgeOptions {
                older_than: iso(older_than),
                limit,
            },
        )
    }

    async fn get_run(&self, id: &str) -> Result<Option<String>> {
        SqliteStore::get_run(self, id)
    }

    async fn get_runs(&self, filter: &RunFilter) -> Result<String> {
        SqliteStore::get_runs(self, filter)
    }

    async fn get_steps(&self, run_id: &str) -> Result<String> {
        SqliteStore::get_steps(self, run_id)
    }

    async fn get_logs(&self, run_id: &str) -> Result<String> {
        SqliteStore::get_logs(self, run_id)
    }

    async fn run_counts(&self) -> Result<String> {
        SqliteStore::run_counts(self)
    }

    fn side(&self) -> Result<Option<Self::Side>> {
        Ok(self.side_connection()?.map(|c| Arc::new(Mutex::new(c))))
    }

    async fn change_token(&self, side: &Self::Side) -> Result<Option<i64>> {
        Ok(Some(data_version(&lock(side))?))
    }

    fn change_token_now(&self, side: &Self::Side) -> Option<Result<Option<i64>>> {
        // Never waits: the side connection is the claim loop's own (free
        // between its calls), and a read that would wait for a lock
        // (recovery of the log by another process) is left to the blocking call.
        let conn = side.try_lock().ok()?;
        match super::busy::with_timeout(Duration::ZERO, || data_version(&conn)) {
            Err(e) if e.is_busy() => None,
            other => Some(other.map(Some)),
        }
    }

    async fn upkeep(&self, side: &Self::Side) -> Result<()> {
        self.checkpoint(&lock(side)).map(|_| ())
    }

    fn upkeep_due(&self) -> bool {
        self.checkpoint_due()
    }

    fn after_write(&self, bytes: usize) {
        if bytes >= BIG_WRITE_BYTES {
            self.checkpoint_big_write();
        }
    }

    fn check_file(&self) -> Option<Error> {
        SqliteStore::check_file(self)
    }

    fn is_replaced(&self) -> bool {
        SqliteStore::is_replaced(self)
    }
}

/// `PRAGMA data_version`: changes when another connection committed.
fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))?)
}

impl SyncStore for SqliteStore {
    fn try_trigger(&self, item: &TriggerItem<'_>) -> Result<Option<TriggerOutcome>> {
        SqliteStore::try_trigger(self, item)
    }

    fn try_trigger_then_claim<F>(
        &self,
        item: &TriggerItem<'_>,
        then: F,
    ) -> Result<Option<(TriggerOutcome, Result<Vec<ClaimedRun>>)>>
    where
        F: FnOnce(&TriggerOutcome) -> ClaimRequest,
    {
        self.try_trigger_claim(item, then)
    }

    fn try_trigger_batch(&self, items: &[TriggerItem<'_>]) -> Result<Option<Vec<TriggerOutcome>>> {
        SqliteStore::try_trigger_batch(self, items)
    }

    fn try_claim(&self, jobs: &[String], limit: usize) -> Result<Option<Vec<ClaimedRun>>> {
        if jobs.is_empty() || limit == 0 {
            return Ok(Some(Vec::new()));
        }
        self.try_write(|c| self.claim_in(c, jobs, limit))
    }

    fn try_flush_then_claim<F>(
        &self,
        ops: &[FlushOp<'_>],
        then: F,
    ) -> Result<Option<FlushOutcome<Vec<ClaimedRun>>>>
    where
        F: FnOnce(&[(String, i64)]) -> ClaimRequest,
    {
        self.flush_then(ops, false, |c, ended| self.claim_requested(c, then(ended)))
    }
}
