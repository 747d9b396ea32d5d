//! Run management: cancel, retry, delete, purge. Each is one transaction that
//! checks the state and changes it, so it holds across processes.

use rusqlite::{Connection, OptionalExtension};

use super::claim::note_pending_run;
use super::query::get_run_in;
use super::{RunStatus, SqliteStore};
use crate::error::{Error, Result};

/// `purgeRuns` arguments.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Terminal runs that finished before this ISO time.
    pub older_than: String,
    /// At most this many runs.
    pub limit: i64,
}

fn status_of(c: &Connection, id: &str) -> Result<RunStatus> {
    c.prepare_cached("SELECT status FROM runs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(id.to_string()))
}

fn delete_children(c: &Connection, id: &str) -> Result<()> {
    c.prepare_cached("DELETE FROM steps WHERE run_id = ?1")?
        .execute([id])?;
    c.prepare_cached("DELETE FROM logs WHERE run_id = ?1")?
        .execute([id])?;
    Ok(())
}

impl SqliteStore {
    /// Cancels a pending or running run. Returns `(previous status, run JSON)`.
    pub fn cancel(&self, id: &str) -> Result<(RunStatus, String)> {
        let now = self.now();
        self.write(|c| {
            let prev = status_of(c, id)?;
            if prev.is_terminal() {
                return Err(Error::Conflict(format!(
                    "run {id} is {prev}; only pending or running runs can be cancelled"
                )));
            }
            c.prepare_cached(
                "UPDATE runs SET status = 'cancelled', completed_at = ?2, updated_at = ?2 \
                 WHERE id = ?1",
            )?
            .execute((id, &now))?;
            let json = get_run_in(c, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
            Ok((prev, json))
        })
    }

    /// Puts a failed or cancelled run back to pending as the same run. Completed
    /// steps stay (they will be replayed); failed and cancelled step rows go.
    pub fn retry(&self, id: &str) -> Result<String> {
        let now = self.now();
        self.write(|c| {
            let prev = status_of(c, id)?;
            if !matches!(prev, RunStatus::Failed | RunStatus::Cancelled) {
                return Err(Error::Conflict(format!(
                    "run {id} is {prev}; only failed or cancelled runs can be retried"
                )));
            }
            c.prepare_cached("DELETE FROM steps WHERE run_id = ?1 AND status != 'completed'")?
                .execute([id])?;
            c.prepare_cached(
                "UPDATE runs SET status = 'pending', error = NULL, error_stack = NULL, \
                 output = NULL, completed_at = NULL, lease_owner = NULL, updated_at = ?2 \
                 WHERE id = ?1",
            )?
            .execute((id, &now))?;
            note_pending_run(c, id)?;
            get_run_in(c, id)?.ok_or_else(|| Error::NotFound(id.to_string()))
        })
    }

    /// Deletes a terminal run with its steps and logs; returns the deleted run.
    pub fn delete_run(&self, id: &str) -> Result<String> {
        self.write(|c| {
            let json = get_run_in(c, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
            let status = status_of(c, id)?;
            if !status.is_terminal() {
                return Err(Error::Conflict(format!(
                    "run {id} is {status}; only completed, failed or cancelled runs can be deleted"
                )));
            }
            delete_children(c, id)?;
            c.prepare_cached("DELETE FROM runs WHERE id = ?1")?
                .execute([id])?;
            Ok(json)
        })
    }

    /// Deletes up to `limit` terminal runs that finished before `older_than`;
    /// returns how many.
    pub fn purge(&self, opts: &PurgeOptions) -> Result<usize> {
        self.write(|c| {
            let ids: Vec<String> = {
                let mut st = c.prepare_cached(
                    "SELECT id FROM runs WHERE status IN ('completed', 'failed', 'cancelled') \
                     AND COALESCE(completed_at, updated_at) < ?1 ORDER BY created_at LIMIT ?2",
                )?;
                let rows = st.query_map((&opts.older_than, opts.limit), |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for id in &ids {
                delete_children(c, id)?;
                c.prepare_cached("DELETE FROM runs WHERE id = ?1")?
                    .execute([id])?;
            }
            Ok(ids.len())
        })
    }
}
