//! The executing worker's writes on PostgreSQL: step results, completion,
//! failure, progress, logs and hand-back, a batch per transaction (group
//! commit, as on SQLite).
//!
//! Each op is one statement fenced like SQLite's: it changes the run only
//! `WHERE id = $1 AND lease_generation = $2 AND status = 'running'`, and
//! the same statement reports the run's status, so a refused op is told
//! apart (cancelled, or lost to another lease) without a second round trip.
//! A step's row (and a log's) is written by the same statement, only when
//! the fenced update (or check) matched.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use serde_json::value::RawValue;

use super::PgStore;
use crate::error::{Error, Result};
use crate::store::{
    ended_runs, ClaimRequest, ClaimedRun, FlushOp, FlushOutcome, OpError, OpStatus,
};

/// JSON text of an optional raw value.
fn text<'a>(v: &Option<&'a RawValue>) -> Option<&'a str> {
    v.map(RawValue::get)
}

pub(crate) fn time(field: &str, s: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339(s)
        .map_err(|e| Error::Internal(format!("flush op {field}: bad time {s:?}: {e}")))
}

impl PgStore {
    /// Applies a batch of ops in one transaction. Returns one status
    /// character per op (see [`OpStatus::as_char`]).
    pub async fn flush(&self, ops: &[FlushOp<'_>]) -> Result<String> {
        Ok(self.flush_then_claim(ops, |_| None).await?.statuses)
    }

    /// Applies a batch of ops, then, in the same transaction, claims what
    /// `then` asks for given the executions the batch ended (`(jobs,
    /// limit)`, or `None`): a run's completion and its successor's claim
    /// share one commit.
    pub async fn flush_then_claim(
        &self,
        ops: &[FlushOp<'_>],
        then: impl FnOnce(&[(String, i64)]) -> ClaimRequest,
    ) -> Result<FlushOutcome<Vec<ClaimedRun>>> {
        let mut c = self.client().await?;
        let mut tx = c.transaction().await?;
        // As on SQLite (src/store/flush.rs): an op that fails is rolled back
        // alone and reports its error, the batch's other ops still commit.
        // A failed statement aborts a PostgreSQL transaction, so the batch
        // first runs without savepoints (two more round trips per op, for
        // ops that almost never fail); only when an op fails is the
        // transaction rolled back and the batch applied again with a
        // savepoint per op.
        let (statuses, errors) = match self.apply_all(&tx, ops, false).await {
            Ok(out) => out,
            Err(e) if e.fails_whole_batch() => return Err(e),
            Err(_) => {
                tx.rollback().await?;
                tx = c.transaction().await?;
                self.apply_all(&tx, ops, true).await?
            }
        };
        let ended = ended_runs(ops, &statuses);
        let claimed = match then(&ended) {
            Some((jobs, limit)) if !jobs.is_empty() && limit > 0 => {
                self.claim_in(&mut tx, &jobs, limit).await?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;
        Ok(FlushOutcome {
            statuses,
            errors,
            ended,
            then: claimed,
        })
    }

    /// One pass over the batch: a status character per op, and the errors
    /// of the failed ops. With `isolated`, each op runs in its own savepoint
    /// and a failed op is reported; without, the first failed op fails the
    /// pass (and has aborted the transaction).
    async fn apply_all(
        &self,
        tx: &Transaction<'_>,
        ops: &[FlushOp<'_>],
        isolated: bool,
    ) -> Result<(String, Vec<OpError>)> {
        let mut statuses = String::with_capacity(ops.len());
        let mut errors = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            // Over the server's limit, the statement would fail and abort the
            // whole batch: refuse this op alone, as SQLite's store does.
            let status = if op.value_bytes() > self.inner.max_op_bytes {
                OpStatus::TooBig
            } else if !isolated {
                self.apply_one(tx, op).await?
            } else {
                tx.batch_execute("SAVEPOINT flush_op").await?;
                match self.apply_one(tx, op).await {
                    Ok(status) => {
                        tx.batch_execute("RELEASE flush_op").await?;
                        status
                    }
                    Err(e) if e.fails_whole_batch() => return Err(e),
                    Err(error) => {
                        tx.batch_execute("ROLLBACK TO flush_op; RELEASE flush_op")
                            .await?;
                        errors.push(OpError { index, error });
                        OpStatus::Failed
                    }
                }
            };
            statuses.push(status.as_char());
        }
        Ok((statuses, errors))
    }

    /// Fails a run this worker owns (job timeout), fenced like any op.
    pub async fn fail_owned(&self, run: &str, generation: i64, error: &str) -> Result<OpStatus> {
        // The run's time comes from the database clock: `at` is not read.
        let op = FlushOp::Fail {
            run: run.to_string(),
            generation,
            error: error.to_string(),
            stack: None,
            progress: None,
            at: String::new(),
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let status = self.apply_one(&tx, &op).await?;
        tx.commit().await?;
        Ok(status)
    }

    async fn apply_one(&self, tx: &Transaction<'_>, op: &FlushOp<'_>) -> Result<OpStatus> {
        // Each statement answers (rows changed, the run's status before it).
        let row = match op {
            FlushOp::Step {
                run,
                generation,
                name,
                index,
                status,
                output,
                error,
                stack,
                started_at,
                completed_at,
                progress,
            } => {
                let st = tx
                    .prepare_cached(
                        "WITH upd AS ( \
                           UPDATE runs SET current_step_index = CASE WHEN $3 \
                             THEN GREATEST(current_step_index, $4) ELSE current_step_index END, \
                           progress = COALESCE($5::text::json, progress), updated_at = now() \
                           WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
                           RETURNING id), \
                         ins AS ( \
                           INSERT INTO steps (run_id, name, \"index\", status, output, error, \
                             error_stack, started_at, completed_at) \
                           SELECT id, $6::text, $7::bigint, $8::text, $9::text::json, $10::text, \
                             $11::text, $12::timestamptz, $13::timestamptz FROM upd \
                           ON CONFLICT (run_id, name) DO UPDATE SET \"index\" = excluded.\"index\", \
                             status = excluded.status, output = excluded.output, \
                             error = excluded.error, error_stack = excluded.error_stack, \
                             started_at = excluded.started_at, \
                             completed_at = excluded.completed_at) \
                         SELECT (SELECT count(*) FROM upd), (SELECT status FROM runs WHERE id = $1)",
                    )
                    .await?;
                let done = status == "completed";
                let started_at = time("startedAt", started_at)?;
                let completed_at = completed_at
                    .as_deref()
                    .map(|t| time("completedAt", t))
                    .transpose()?;
                tx.query_one(
                    &st,
                    &[
                        run,
                        generation,
                        &done,
                        &(index + 1),
                        &text(progress),
                        name,
                        index,
                        status,
                        &text(output),
                        error,
                        stack,
                        &started_at,
                        &completed_at,
                    ],
                )
                .await?
            }
            FlushOp::Complete {
                run,
                generation,
                output,
                progress,
                at: _,
            } => {
                let st = tx
                    .prepare_cached(
                        "WITH upd AS ( \
                           UPDATE runs SET status = 'completed', output = $3::text::json, \
                           progress = COALESCE($4::text::json, progress), completed_at = now(), \
                           updated_at = now() \
                           WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
                           RETURNING concurrency_key) \
                         SELECT (SELECT count(*) FROM upd), \
                           (SELECT status FROM runs WHERE id = $1), \
                           (SELECT pg_notify($5, '')::text FROM upd \
                              WHERE concurrency_key IS NOT NULL)",
                    )
                    .await?;
                tx.query_one(
                    &st,
                    &[
                        run,
                        generation,
                        &text(output),
                        &text(progress),
                        &self.wake_channel(),
                    ],
                )
                .await?
            }
            FlushOp::Fail {
                run,
                generation,
                error,
                stack,
                progress,
                at: _,
            } => {
                let st = tx
                    .prepare_cached(
                        "WITH upd AS ( \
                           UPDATE runs SET status = 'failed', error = $3, error_stack = $4, \
                           progress = COALESCE($5::text::json, progress), completed_at = now(), \
                           updated_at = now() \
                           WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
                           RETURNING concurrency_key) \
                         SELECT (SELECT count(*) FROM upd), \
                           (SELECT status FROM runs WHERE id = $1), \
                           (SELECT pg_notify($6, '')::text FROM upd \
                              WHERE concurrency_key IS NOT NULL)",
                    )
                    .await?;
                tx.query_one(
                    &st,
                    &[
                        run,
                        generation,
                        error,
                        stack,
                        &text(progress),
                        &self.wake_channel(),
                    ],
                )
                .await?
            }
            FlushOp::Progress {
                run,
                generation,
                progress,
            } => {
                let st = tx
                    .prepare_cached(
                        "WITH upd AS ( \
                           UPDATE runs SET progress = $3::text::json, updated_at = now() \
                           WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
                           RETURNING 1) \
                         SELECT (SELECT count(*) FROM upd), (SELECT status FROM runs WHERE id = $1)",
                    )
                    .await?;
                // `null` progress is stored as the JSON text `null`, as on SQLite.
                let progress = text(progress).unwrap_or("null");
                tx.query_one(&st, &[run, generation, &progress]).await?
            }
            FlushOp::Release { run, generation } => {
                let st = tx
                    .prepare_cached(
                        "WITH upd AS ( \
                           UPDATE runs SET status = 'pending', lease_owner = NULL, \
                           updated_at = now() \
                           WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
                           RETURNING job_name) \
                         SELECT (SELECT count(*) FROM upd), \
                           (SELECT status FROM runs WHERE id = $1), \
                           (SELECT pg_notify($3, job_name)::text FROM upd)",
                    )
                    .await?;
                tx.query_one(&st, &[run, generation, &self.wake_channel()])
                    .await?
            }
            FlushOp::Log {
                run,
                generation,
                step,
                level,
                message,
                data,
                at,
            } => {
                let st = tx
                    .prepare_cached(
                        "WITH ins AS ( \
                           INSERT INTO logs (run_id, step_name, level, message, data, timestamp) \
                           SELECT $1::text, $3::text, $4::text, $5::text, $6::text::json, \
                             $7::timestamptz WHERE EXISTS ( \
                             SELECT 1 FROM runs \
                             WHERE id = $1 AND lease_generation = $2 AND status = 'running') \
                           RETURNING 1) \
                         SELECT (SELECT count(*) FROM ins), (SELECT status FROM runs WHERE id = $1)",
                    )
                    .await?;
                let at = time("at", at)?;
                tx.query_one(
                    &st,
                    &[run, generation, step, level, message, &text(data), &at],
                )
                .await?
            }
        };
        let changed: i64 = row.try_get(0)?;
        if changed > 0 {
            return Ok(OpStatus::Ok);
        }
        Ok(match row.try_get::<_, Option<&str>>(1)? {
            Some("cancelled") => OpStatus::Cancelled,
            _ => OpStatus::Lost,
        })
    }
}
