//! Run management on PostgreSQL: cancel, retry, delete, purge. Each locks
//! the run's row (`FOR UPDATE`) before checking its state, so a check and
//! its change hold together across machines.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Transaction;

use super::query::{run_json, storable_id, RUN_COLUMNS};
use super::PgStore;
use crate::error::{Error, Result};

/// `purgeRuns` arguments on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgPurgeOptions {
    /// Terminal runs that finished before this time.
    pub older_than: SystemTime,
    /// At most this many runs.
    pub limit: i64,
}

/// The run's status, its row locked until the transaction ends.
async fn lock_status(tx: &Transaction<'_>, id: &str) -> Result<String> {
    if !storable_id(id) {
        return Err(Error::NotFound(id.to_string()));
    }
    let st = tx
        .prepare_cached("SELECT status FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    tx.query_opt(&st, &[&id])
        .await?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?
        .ok_or_else(|| Error::NotFound(id.to_string()))
}

impl PgStore {
    /// Cancels a pending or running run; returns `(previous status, run
    /// JSON)`. Notifies the cancel channel (payload: the run id), and wakes
    /// workers when the run held a concurrency key.
    pub async fn cancel(&self, id: &str) -> Result<(String, String)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let prev = lock_status(&tx, id).await?;
        if prev != "pending" && prev != "running" {
            return Err(Error::Conflict(format!(
                "run {id} is {prev}; only pending or running runs can be cancelled"
            )));
        }
        let st = tx
            .prepare_cached(&format!(
                "UPDATE runs SET status = 'cancelled', completed_at = now(), updated_at = now() \
                 WHERE id = $1 RETURNING {RUN_COLUMNS}"
            ))
            .await?;
        let row = tx.query_one(&st, &[&id]).await?;
        let json = run_json(&row)?;
        let keyed = row.try_get::<_, Option<&str>>(5)?.is_some();
        tx.execute("SELECT pg_notify($1, $2)", &[&self.cancel_channel(), &id])
            .await?;
        if keyed && prev == "running" {
            tx.execute("SELECT pg_notify($1, '')", &[&self.wake_channel()])
                .await?;
        }
        tx.commit().await?;
        Ok((prev, json))
    }

    /// Puts a failed or cancelled run back to pending as the same run.
    /// Completed steps stay (they will be replayed); failed and cancelled
    /// step rows go. Wakes workers.
    pub async fn retry(&self, id: &str) -> Result<String> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let prev = lock_status(&tx, id).await?;
        if prev != "failed" && prev != "cancelled" {
            return Err(Error::Conflict(format!(
                "run {id} is {prev}; only failed or cancelled runs can be retried"
            )));
        }
        tx.execute(
            "DELETE FROM steps WHERE run_id = $1 AND status <> 'completed'",
            &[&id],
        )
        .await?;
        let st = tx
            .prepare_cached(&format!(
                "UPDATE runs SET status = 'pending', error = NULL, error_stack = NULL, \
                 output = NULL, completed_at = NULL, lease_owner = NULL, updated_at = now() \
                 WHERE id = $1 RETURNING {RUN_COLUMNS}"
            ))
            .await?;
        let row = tx.query_one(&st, &[&id]).await?;
        let json = run_json(&row)?;
        let job: &str = row.try_get(1)?;
        tx.execute("SELECT pg_notify($1, $2)", &[&self.wake_channel(), &job])
            .await?;
        tx.commit().await?;
        Ok(json)
    }

    /// Deletes a terminal run with its steps and logs; returns the deleted run.
    pub async fn delete_run(&self, id: &str) -> Result<String> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let status = lock_status(&tx, id).await?;
        if status == "pending" || status == "running" {
            return Err(Error::Conflict(format!(
                "run {id} is {status}; only completed, failed or cancelled runs can be deleted"
            )));
        }
        // The run first: its record still counts its completed steps.
        let st = tx
            .prepare_cached(&format!(
                "DELETE FROM runs WHERE id = $1 RETURNING {RUN_COLUMNS}"
            ))
            .await?;
        let json = run_json(&tx.query_one(&st, &[&id]).await?)?;
        tx.execute("DELETE FROM steps WHERE run_id = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM logs WHERE run_id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(json)
    }

    /// Deletes up to `limit` terminal runs that finished before
    /// `older_than`; returns how many. Rows another transaction has locked
    /// are skipped (a concurrent purge takes them).
    pub async fn purge(&self, opts: &PgPurgeOptions) -> Result<usize> {
        self.purge_before(Cutoff::At(opts.older_than), opts.limit)
            .await
    }

    /// `retainRuns`: like [`PgStore::purge`] for the runs that finished more
    /// than `age` ago on the database's clock (`now() - age`), so machines
    /// with skewed clocks agree on what is old enough, as they do on leases.
    pub async fn purge_older_than(&self, age: Duration, limit: i64) -> Result<usize> {
        self.purge_before(Cutoff::Age(age), limit).await
    }

    async fn purge_before(&self, cutoff: Cutoff, limit: i64) -> Result<usize> {
        if limit < 0 {
            return Err(Error::Validation("purge limit must not be negative".into()));
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let select = |before: &str| {
            format!(
                "SELECT id FROM runs WHERE status IN ('completed', 'failed', 'cancelled') \
                 AND COALESCE(completed_at, updated_at) < {before} ORDER BY created_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED"
            )
        };
        let rows = match cutoff {
            Cutoff::At(t) => {
                let st = tx.prepare_cached(&select("$1")).await?;
                tx.query(&st, &[&t, &limit]).await?
            }
            Cutoff::Age(age) => {
                let st = tx
                    .prepare_cached(&select("now() - $1::int8 * interval '1 microsecond'"))
                    .await?;
                tx.query(&st, &[&age_micros(age), &limit]).await?
            }
        };
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        if !ids.is_empty() {
            tx.execute("DELETE FROM steps WHERE run_id = ANY($1)", &[&ids])
                .await?;
            tx.execute("DELETE FROM logs WHERE run_id = ANY($1)", &[&ids])
                .await?;
            tx.execute("DELETE FROM runs WHERE id = ANY($1)", &[&ids])
                .await?;
        }
        tx.commit().await?;
        Ok(ids.len())
    }
}

/// Which runs a purge may delete: those finished before a time, or more
/// than an age ago on the database's clock.
enum Cutoff {
    At(SystemTime),
    Age(Duration),
}

/// An age in microseconds for `interval` arithmetic, at most 1000 years
/// (older than any run, and far inside PostgreSQL's range), like the
/// epoch floor of a cutoff computed from a local clock.
fn age_micros(age: Duration) -> i64 {
    const MAX: i64 = 1000 * 366 * 86_400 * 1_000_000;
    i64::try_from(age.as_micros()).unwrap_or(MAX).min(MAX)
}
