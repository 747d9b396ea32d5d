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
use crate::store::{ClaimedRun, FlushOutcome, OpStatus};

/// One write of the executing worker, under lease `generation`. JSON values
/// are JSON text (already encoded by the JS layer), stored as written.
#[derive(Debug, Clone, PartialEq)]
pub enum FlushOp {
    /// A step finished (insert, or overwrite of the row of the same name).
    Step {
        run: String,
        generation: i64,
        name: String,
        index: i64,
        /// `completed`, `failed` or `cancelled`.
        status: String,
        output: Option<String>,
        error: Option<String>,
        stack: Option<String>,
        started_at: SystemTime,
        completed_at: Option<SystemTime>,
        /// The run's progress, when it changed.
        progress: Option<String>,
    },
    /// The run completed.
    Complete {
        run: String,
        generation: i64,
        output: Option<String>,
        progress: Option<String>,
    },
    /// The run failed.
    Fail {
        run: String,
        generation: i64,
        error: String,
        stack: Option<String>,
        progress: Option<String>,
    },
    /// Progress alone.
    Progress {
        run: String,
        generation: i64,
        progress: String,
    },
    /// A log line.
    Log {
        run: String,
        generation: i64,
        step: Option<String>,
        /// `info`, `warn` or `error`.
        level: String,
        message: String,
        data: Option<String>,
        at: SystemTime,
    },
    /// Give the run back (`pending`) so any worker resumes it.
    Release { run: String, generation: i64 },
}

impl FlushOp {
    /// The run and lease generation the op names.
    pub fn lease(&self) -> (&str, i64) {
        match self {
            FlushOp::Step {
                run, generation, ..
            }
            | FlushOp::Complete {
                run, generation, ..
            }
            | FlushOp::Fail {
                run, generation, ..
            }
            | FlushOp::Progress {
                run, generation, ..
            }
            | FlushOp::Log {
                run, generation, ..
            }
            | FlushOp::Release { run, generation } => (run, *generation),
        }
    }

    /// Bytes of the values the op stores (JSON texts, error, stack, message).
    pub fn value_bytes(&self) -> usize {
        let len = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        match self {
            FlushOp::Step {
                output,
                error,
                stack,
                progress,
                ..
            } => len(output) + len(error) + len(stack) + len(progress),
            FlushOp::Complete {
                output, progress, ..
            } => len(output) + len(progress),
            FlushOp::Fail {
                error,
                stack,
                progress,
                ..
            } => error.len() + len(stack) + len(progress),
            FlushOp::Progress { progress, .. } => progress.len(),
            FlushOp::Log { message, data, .. } => message.len() + len(data),
            FlushOp::Release { .. } => 0,
        }
    }

    /// True for the ops that end the execution (complete, fail, hand-back).
    pub fn ends_execution(&self) -> bool {
        matches!(
            self,
            FlushOp::Complete { .. } | FlushOp::Fail { .. } | FlushOp::Release { .. }
        )
    }

    /// Reads a flush batch as the JS layer sends it (`lib/protocol.js`): the
    /// shared typed op, [`crate::store::FlushOp`], converted (times parsed).
    /// The run's times in `complete` and `fail` ops are not used: on
    /// PostgreSQL they come from the database clock.
    pub fn parse_batch(ops: &str) -> Result<Vec<FlushOp>> {
        crate::store::parse_batch(ops)?
            .into_iter()
            .map(|op| FlushOp::from_shared(&op?))
            .collect()
    }

    /// The PostgreSQL form of a parsed op.
    pub fn from_shared(op: &crate::store::FlushOp<'_>) -> Result<FlushOp> {
        use crate::store::FlushOp as S;
        let raw = |v: &Option<&RawValue>| v.map(|r| r.get().to_string());
        Ok(match op {
            S::Step {
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
            } => FlushOp::Step {
                run: run.clone(),
                generation: *generation,
                name: name.clone(),
                index: *index,
                status: status.clone(),
                output: raw(output),
                error: error.clone(),
                stack: stack.clone(),
                started_at: time("startedAt", started_at)?,
                completed_at: completed_at
                    .as_deref()
                    .map(|t| time("completedAt", t))
                    .transpose()?,
                progress: raw(progress),
            },
            S::Complete {
                run,
                generation,
                output,
                progress,
                ..
            } => FlushOp::Complete {
                run: run.clone(),
                generation: *generation,
                output: raw(output),
                progress: raw(progress),
            },
            S::Fail {
                run,
                generation,
                error,
                stack,
                progress,
                ..
            } => FlushOp::Fail {
                run: run.clone(),
                generation: *generation,
                error: error.clone(),
                stack: stack.clone(),
                progress: raw(progress),
            },
            S::Progress {
                run,
                generation,
                progress,
            } => FlushOp::Progress {
                run: run.clone(),
                generation: *generation,
                progress: raw(progress).unwrap_or_else(|| "null".into()),
            },
            S::Log {
                run,
                generation,
                step,
                level,
                message,
                data,
                at,
            } => FlushOp::Log {
                run: run.clone(),
                generation: *generation,
                step: step.clone(),
                level: level.clone(),
                message: message.clone(),
                data: raw(data),
                at: time("at", at)?,
            },
            S::Release { run, generation } => FlushOp::Release {
                run: run.clone(),
                generation: *generation,
            },
        })
    }
}

fn time(field: &str, s: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339(s)
        .map_err(|e| Error::Internal(format!("flush op {field}: bad time {s:?}: {e}")))
}

impl PgStore {
    /// Applies a batch of ops in one transaction. Returns one status
    /// character per op (see [`OpStatus::as_char`]).
    pub async fn flush(&self, ops: &[FlushOp]) -> Result<String> {
        Ok(self.flush_then_claim(ops, |_| None).await?.statuses)
    }

    /// Applies a batch of ops, then, in the same transaction, claims what
    /// `then` asks for given the executions the batch ended (`(jobs,
    /// limit)`, or `None`): a run's completion and its successor's claim
    /// share one commit.
    pub async fn flush_then_claim(
        &self,
        ops: &[FlushOp],
        then: impl FnOnce(&[(String, i64)]) -> Option<(Vec<String>, usize)>,
    ) -> Result<FlushOutcome<Vec<ClaimedRun>>> {
        let ended: Vec<(String, i64)> = ops
            .iter()
            .filter(|op| op.ends_execution())
            .map(|op| {
                let (run, generation) = op.lease();
                (run.to_string(), generation)
            })
            .collect();
        let mut c = self.client().await?;
        let mut tx = c.transaction().await?;
        let mut statuses = String::with_capacity(ops.len());
        for op in ops {
            // Over the server's limit, the statement would fail and abort the
            // whole batch: refuse this op alone, as SQLite's store does.
            let status = if op.value_bytes() > self.inner.max_op_bytes {
                OpStatus::TooBig
            } else {
                self.apply_one(&tx, op).await?
            };
            statuses.push(status.as_char());
        }
        let claimed = match then(&ended) {
            Some((jobs, limit)) if !jobs.is_empty() && limit > 0 => {
                self.claim_in(&mut tx, &jobs, limit).await?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;
        Ok(FlushOutcome {
            statuses,
            errors: Vec::new(),
            ended,
            then: claimed,
        })
    }

    /// Fails a run this worker owns (job timeout), fenced like any op.
    pub async fn fail_owned(&self, run: &str, generation: i64, error: &str) -> Result<OpStatus> {
        let op = FlushOp::Fail {
            run: run.to_string(),
            generation,
            error: error.to_string(),
            stack: None,
            progress: None,
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let status = self.apply_one(&tx, &op).await?;
        tx.commit().await?;
        Ok(status)
    }

    async fn apply_one(&self, tx: &Transaction<'_>, op: &FlushOp) -> Result<OpStatus> {
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
                tx.query_one(
                    &st,
                    &[
                        run,
                        generation,
                        &done,
                        &(index + 1),
                        progress,
                        name,
                        index,
                        status,
                        output,
                        error,
                        stack,
                        started_at,
                        completed_at,
                    ],
                )
                .await?
            }
            FlushOp::Complete {
                run,
                generation,
                output,
                progress,
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
                    &[run, generation, output, progress, &self.wake_channel()],
                )
                .await?
            }
            FlushOp::Fail {
                run,
                generation,
                error,
                stack,
                progress,
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
                        progress,
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
                tx.query_one(&st, &[run, generation, progress]).await?
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
                tx.query_one(&st, &[run, generation, step, level, message, data, at])
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
