//! Creating runs: single triggers and batches, with idempotency keys and
//! coalescing decided by the database, so they hold across machines.
//!
//! - Idempotency: `INSERT … ON CONFLICT (job_name, idempotency_key) DO
//!   NOTHING`, then the existing run is read. Two machines triggering one key
//!   at once: the second insert waits for the first transaction, finds the
//!   conflict, and both return the same run.
//! - Coalescing: a transaction-scoped advisory lock on the concurrency key
//!   serializes coalescing triggers of one key, so the second sees the
//!   first's pending run (READ COMMITTED: the next statement after the lock
//!   sees every commit before it).
//! - `created_at` is the transaction's `now()`: the runs of a batch share
//!   it, and their ids (one monotonic generator) keep their order.

use std::time::SystemTime;

use deadpool_postgres::Transaction;

use super::query::{run_json, RUN_COLUMNS};
use super::PgStore;
use crate::error::{Error, Result};
use crate::store::{iso, TriggerItem, TriggerOutcome};

/// Inserts one run and wakes the listeners (at commit), in one statement;
/// with an idempotency key already taken, inserts nothing and returns no row.
const INSERT_SQL: &str = "WITH ins AS ( \
       INSERT INTO runs (id, job_name, input, status, idempotency_key, \
         concurrency_key, labels, created_at, updated_at) \
       VALUES ($1, $2, $3::text::json, 'pending', $4, $5, $6::text::json, now(), now()) \
       ON CONFLICT (job_name, idempotency_key) WHERE idempotency_key IS NOT NULL \
       DO NOTHING RETURNING created_at) \
     SELECT created_at, pg_notify($7, $2)::text FROM ins";

/// The parameters of [`INSERT_SQL`].
fn insert_params<'a>(
    id: &'a String,
    it: &'a TriggerItem<'_>,
    channel: &'a String,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 7] {
    [
        id,
        &it.job_name,
        &it.input,
        &it.idempotency_key,
        &it.concurrency_key,
        &it.labels,
        channel,
    ]
}

/// First key of the coalescing advisory lock (the second is the key's hash).
const COALESCE_LOCK_SPACE: &str = "durably.coalesce";

impl PgStore {
    /// Creates one run.
    pub async fn trigger(&self, item: &TriggerItem<'_>) -> Result<TriggerOutcome> {
        let mut c = self.client().await?;
        if item.idempotency_key.is_none() && !(item.coalesce && item.concurrency_key.is_some()) {
            // Nothing to check first: one statement, its own transaction.
            let (id, st) = (self.new_id(), c.prepare_cached(INSERT_SQL).await?);
            let row = c
                .query_one(&st, &insert_params(&id, item, &self.inner.wake_channel))
                .await?;
            return Ok(TriggerOutcome::Created {
                id,
                created_at: iso(row.try_get::<_, SystemTime>(0)?),
            });
        }
        let tx = c.transaction().await?;
        let out = self.trigger_in(&tx, item).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Creates all runs in one transaction: all or nothing. The runs of a
    /// batch share one `created_at`. A batch without idempotency keys or
    /// coalescing is one `INSERT` of all rows.
    pub async fn trigger_batch(&self, items: &[TriggerItem<'_>]) -> Result<Vec<TriggerOutcome>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let plain = items.iter().all(|it| {
            it.idempotency_key.is_none() && !(it.coalesce && it.concurrency_key.is_some())
        });
        let out = if plain {
            self.insert_all(&tx, items).await?
        } else {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(self.trigger_in(&tx, it).await?);
            }
            out
        };
        tx.commit().await?;
        Ok(out)
    }

    async fn trigger_in(
        &self,
        tx: &Transaction<'_>,
        it: &TriggerItem<'_>,
    ) -> Result<TriggerOutcome> {
        if let (true, Some(key)) = (it.coalesce, it.concurrency_key) {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2 || '/' || $3))",
                &[&COALESCE_LOCK_SPACE, &self.schema(), &key],
            )
            .await?;
        }
        if let Some(key) = it.idempotency_key {
            if let Some(json) = self.by_idempotency_key(tx, it.job_name, key).await? {
                return Ok(TriggerOutcome::Idempotent(json));
            }
        }
        if let (true, Some(key)) = (it.coalesce, it.concurrency_key) {
            let st = tx
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'pending' \
                     AND concurrency_key = $2 AND job_name = $1 ORDER BY created_at, id LIMIT 1"
                ))
                .await?;
            if let Some(row) = tx.query_opt(&st, &[&it.job_name, &key]).await? {
                return Ok(TriggerOutcome::Coalesced(run_json(&row)?));
            }
        }
        let id = self.new_id();
        // One statement inserts and wakes the listeners (at commit).
        let st = tx.prepare_cached(INSERT_SQL).await?;
        let row = tx
            .query_opt(&st, &insert_params(&id, it, &self.inner.wake_channel))
            .await?;
        match row {
            Some(row) => Ok(TriggerOutcome::Created {
                id,
                created_at: iso(row.try_get::<_, SystemTime>(0)?),
            }),
            // Another transaction inserted the key since our read: it has
            // committed now (the insert waited for it), so read its run.
            None => {
                let key = it.idempotency_key.ok_or_else(|| {
                    Error::Internal("insert without an idempotency key inserted nothing".into())
                })?;
                let json = self
                    .by_idempotency_key(tx, it.job_name, key)
                    .await?
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "idempotency key {key:?} conflicted but no run has it"
                        ))
                    })?;
                Ok(TriggerOutcome::Idempotent(json))
            }
        }
    }

    async fn by_idempotency_key(
        &self,
        tx: &Transaction<'_>,
        job: &str,
        key: &str,
    ) -> Result<Option<String>> {
        let st = tx
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE job_name = $1 AND idempotency_key = $2"
            ))
            .await?;
        tx.query_opt(&st, &[&job, &key])
            .await?
            .as_ref()
            .map(run_json)
            .transpose()
    }

    /// Inserts runs without keys to check, all in one statement.
    async fn insert_all(
        &self,
        tx: &Transaction<'_>,
        items: &[TriggerItem<'_>],
    ) -> Result<Vec<TriggerOutcome>> {
        let ids: Vec<String> = items.iter().map(|_| self.new_id()).collect();
        let jobs: Vec<&str> = items.iter().map(|it| it.job_name).collect();
        let inputs: Vec<&str> = items.iter().map(|it| it.input).collect();
        let keys: Vec<Option<&str>> = items.iter().map(|it| it.concurrency_key).collect();
        let labels: Vec<&str> = items.iter().map(|it| it.labels).collect();
        let st = tx
            .prepare_cached(
                "WITH ins AS ( \
                   INSERT INTO runs (id, job_name, input, status, concurrency_key, labels, \
                     created_at, updated_at) \
                   SELECT id, job, input::json, 'pending', ckey, labels::json, now(), now() \
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                     AS t(id, job, input, ckey, labels) \
                   RETURNING job_name) \
                 SELECT now(), (SELECT count(*) FROM ins)",
            )
            .await?;
        let row = tx
            .query_one(&st, &[&ids, &jobs, &inputs, &keys, &labels])
            .await?;
        let at = iso(row.try_get::<_, SystemTime>(0)?);
        let n: i64 = row.try_get(1)?;
        if n != items.len() as i64 {
            return Err(Error::Internal(format!(
                "batch inserted {n} of {} runs",
                items.len()
            )));
        }
        let mut distinct: Vec<&str> = jobs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        tx.execute(
            "SELECT pg_notify($1, job) FROM unnest($2::text[]) AS j(job)",
            &[&self.wake_channel(), &distinct],
        )
        .await?;
        Ok(ids
            .into_iter()
            .map(|id| TriggerOutcome::Created {
                id,
                created_at: at.clone(),
            })
            .collect())
    }
}
