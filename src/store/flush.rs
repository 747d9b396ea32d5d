//! The executing worker's writes: step results, completion, failure,
//! progress and logs. The JS layer sends every write that is due as one
//! batch (a JSON array of ops) and all of them share one transaction: group
//! commit across the runs in flight.
//!
//! Each op names the run's `lease_generation`; an op whose run is no longer
//! `running` under that generation writes nothing and reports why.
//!
//! Op formats (JSON arrays; values in `<>` are JSON text spliced in as is):
//! - `["s", run, gen, name, index, status, <output>, error, stack, startedAt, completedAt, <progress>]`
//! - `["c", run, gen, <output>, <progress>, completedAt]`
//! - `["f", run, gen, error, stack, <progress>, completedAt]`
//! - `["p", run, gen, <progress>]`
//! - `["l", run, gen, stepName, level, message, <data>, timestamp]`
//! - `["r", run, gen]`: give the run back (`pending`) so any worker resumes it now

use rusqlite::Connection;
use serde_json::value::RawValue;

use super::claim::lease_status;
use super::{RunStatus, Store};
use crate::error::{Error, Result};

/// What happened to one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStatus {
    /// Written.
    Ok,
    /// Not written: the run was cancelled.
    Cancelled,
    /// Not written: the run belongs to another lease (reclaimed, reset, deleted).
    Lost,
    /// Not written: a value in it is longer than SQLite's length limit
    /// (retrying cannot help; the JS layer fails the run).
    TooBig,
}

impl OpStatus {
    /// One character per op in the flush result: `0` ok, `c` cancelled,
    /// `l` lost, `b` a value too big for SQLite.
    pub fn as_char(self) -> char {
        match self {
            OpStatus::Ok => '0',
            OpStatus::Cancelled => 'c',
            OpStatus::Lost => 'l',
            OpStatus::TooBig => 'b',
        }
    }
}

enum Op<'a> {
    Step {
        run: String,
        generation: i64,
        name: String,
        index: i64,
        status: String,
        output: Option<&'a str>,
        error: Option<String>,
        stack: Option<String>,
        started_at: String,
        completed_at: Option<String>,
        progress: Option<&'a str>,
    },
    Complete {
        run: String,
        generation: i64,
        output: Option<&'a str>,
        progress: Option<&'a str>,
        at: String,
    },
    Fail {
        run: String,
        generation: i64,
        error: String,
        stack: Option<String>,
        progress: Option<&'a str>,
        at: String,
    },
    Progress {
        run: String,
        generation: i64,
        progress: &'a str,
    },
    Release {
        run: String,
        generation: i64,
    },
    Log {
        run: String,
        generation: i64,
        step: Option<String>,
        level: String,
        message: String,
        data: Option<&'a str>,
        at: String,
    },
}

fn field<'a>(op: &[&'a RawValue], i: usize) -> Result<&'a RawValue> {
    op.get(i)
        .copied()
        .ok_or_else(|| Error::Internal(format!("flush op is missing field {i}")))
}

fn string(op: &[&RawValue], i: usize) -> Result<String> {
    Ok(serde_json::from_str(field(op, i)?.get())?)
}

fn opt_string(op: &[&RawValue], i: usize) -> Result<Option<String>> {
    Ok(serde_json::from_str(field(op, i)?.get())?)
}

fn int(op: &[&RawValue], i: usize) -> Result<i64> {
    Ok(serde_json::from_str(field(op, i)?.get())?)
}

fn raw<'a>(op: &[&'a RawValue], i: usize) -> Result<Option<&'a str>> {
    let v = field(op, i)?.get();
    Ok(if v == "null" { None } else { Some(v) })
}

fn parse(ops: &str) -> Result<Vec<Op<'_>>> {
    let list: Vec<Vec<&RawValue>> = serde_json::from_str(ops)?;
    list.iter()
        .map(|op| {
            let kind = string(op, 0)?;
            let run = string(op, 1)?;
            let generation = int(op, 2)?;
            Ok(match kind.as_str() {
                "s" => Op::Step {
                    run,
                    generation,
                    name: string(op, 3)?,
                    index: int(op, 4)?,
                    status: string(op, 5)?,
                    output: raw(op, 6)?,
                    error: opt_string(op, 7)?,
                    stack: opt_string(op, 8)?,
                    started_at: string(op, 9)?,
                    completed_at: opt_string(op, 10)?,
                    progress: raw(op, 11)?,
                },
                "c" => Op::Complete {
                    run,
                    generation,
                    output: raw(op, 3)?,
                    progress: raw(op, 4)?,
                    at: string(op, 5)?,
                },
                "f" => Op::Fail {
                    run,
                    generation,
                    error: string(op, 3)?,
                    stack: opt_string(op, 4)?,
                    progress: raw(op, 5)?,
                    at: string(op, 6)?,
                },
                "p" => Op::Progress {
                    run,
                    generation,
                    progress: raw(op, 3)?.unwrap_or("null"),
                },
                "l" => Op::Log {
                    run,
                    generation,
                    step: opt_string(op, 3)?,
                    level: string(op, 4)?,
                    message: string(op, 5)?,
                    data: raw(op, 6)?,
                    at: string(op, 7)?,
                },
                "r" => Op::Release { run, generation },
                other => return Err(Error::Internal(format!("unknown flush op '{other}'"))),
            })
        })
        .collect()
}

/// The result of a flush: one status character per op, the runs whose
/// execution the batch ended (completion, failure, hand-back), and whatever
/// the `then` step of [`Store::flush_then`] returned.
#[derive(Debug)]
pub struct FlushOutcome<T> {
    /// One [`OpStatus::as_char`] per op.
    pub statuses: String,
    /// `(run, generation)` of every `c`, `f` or `r` op: those executions are over.
    pub ended: Vec<(String, i64)>,
    /// The value of the `then` step.
    pub then: T,
}

impl Store {
    /// Applies a batch of ops in one transaction, waiting for the lock.
    /// Returns one status character per op (see [`OpStatus::as_char`]).
    pub fn flush(&self, ops: &str) -> Result<String> {
        Ok(self
            .flush_then(ops, true, |_, _| Ok(()))?
            .map(|o| o.statuses)
            .unwrap_or_default())
    }

    /// Like [`Store::flush`] but never waits: `None` when the lock is taken.
    pub fn try_flush(&self, ops: &str) -> Result<Option<String>> {
        Ok(self
            .flush_then(ops, false, |_, _| Ok(()))?
            .map(|o| o.statuses))
    }

    /// Applies a batch of ops and then runs `then` in the same transaction
    /// (the worker claims the next runs there: a run's completion and its
    /// successor's claim share one commit). `then` gets the ended runs.
    /// With `wait == false`, returns `None` at once when the lock is taken.
    pub fn flush_then<T>(
        &self,
        ops: &str,
        wait: bool,
        then: impl FnOnce(&Connection, &[(String, i64)]) -> Result<T>,
    ) -> Result<Option<FlushOutcome<T>>> {
        let ops = parse(ops)?;
        let now = self.now();
        let ended: Vec<(String, i64)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Complete {
                    run, generation, ..
                }
                | Op::Fail {
                    run, generation, ..
                }
                | Op::Release { run, generation } => Some((run.clone(), *generation)),
                _ => None,
            })
            .collect();
        let body = |c: &Connection| -> Result<(String, T)> {
            let statuses = apply(c, &ops, &now)?;
            let then = then(c, &ended)?;
            Ok((statuses, then))
        };
        let out = if wait {
            Some(self.write(body)?)
        } else {
            self.try_write(body)?
        };
        Ok(out.map(|(statuses, then)| FlushOutcome {
            statuses,
            ended,
            then,
        }))
    }

    /// Fails a run this worker owns (job timeout), fenced like any op.
    pub fn fail_owned(&self, run: &str, generation: i64, error: &str) -> Result<OpStatus> {
        let now = self.now();
        let op = Op::Fail {
            run: run.to_string(),
            generation,
            error: error.to_string(),
            stack: None,
            progress: None,
            at: now.clone(),
        };
        self.write(|c| apply_one(c, &op, &now))
    }
}

fn apply(c: &Connection, ops: &[Op], now: &str) -> Result<String> {
    let mut out = String::with_capacity(ops.len());
    let limit = length_limit(c);
    for op in ops {
        let status = if op.longest_value() > limit {
            OpStatus::TooBig
        } else {
            apply_one(c, op, now)?
        };
        out.push(status.as_char());
    }
    Ok(out)
}

/// Headroom under SQLite's length limit for the other columns of a row:
/// a value this close to the limit would make the row itself too long.
const ROW_HEADROOM: usize = 64 * 1024;

/// The longest value SQLite accepts in a row on `c`.
fn length_limit(c: &Connection) -> usize {
    let limit = c
        .limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH)
        .unwrap_or(i32::MAX);
    (limit.max(0) as usize).saturating_sub(ROW_HEADROOM)
}

impl Op<'_> {
    /// Length of the op's longest stored value. An op over SQLite's length
    /// limit is refused before any of its statements runs, so the batch (and
    /// the other runs' ops in it) still commits, and the op reports
    /// [`OpStatus::TooBig`] instead of an error the writer would retry.
    fn longest_value(&self) -> usize {
        let len = |v: &Option<&str>| v.map_or(0, |s| s.len());
        let slen = |v: &Option<String>| v.as_ref().map_or(0, |s| s.len());
        match self {
            Op::Step {
                output,
                error,
                stack,
                progress,
                ..
            } => len(output) + slen(error) + slen(stack) + len(progress),
            Op::Complete {
                output, progress, ..
            } => len(output) + len(progress),
            Op::Fail {
                error,
                stack,
                progress,
                ..
            } => error.len() + slen(stack) + len(progress),
            Op::Progress { progress, .. } => progress.len(),
            Op::Log { message, data, .. } => message.len() + len(data),
            Op::Release { .. } => 0,
        }
    }
}

fn apply_one(c: &Connection, op: &Op, now: &str) -> Result<OpStatus> {
    let (run, changed) = match op {
        Op::Step {
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
            let done = status == "completed";
            let changed = c
                .prepare_cached(
                    "UPDATE runs SET current_step_index = CASE WHEN ?3 \
                       THEN MAX(current_step_index, ?4) ELSE current_step_index END, \
                     progress = COALESCE(?5, progress), updated_at = ?6 \
                     WHERE id = ?1 AND lease_generation = ?2 AND status = 'running'",
                )?
                .execute((run, generation, done, index + 1, progress, now))?;
            if changed > 0 {
                c.prepare_cached(
                    "INSERT INTO steps (run_id, name, \"index\", status, output, error, \
                       error_stack, started_at, completed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (run_id, name) DO UPDATE SET \"index\" = excluded.\"index\", \
                       status = excluded.status, output = excluded.output, \
                       error = excluded.error, error_stack = excluded.error_stack, \
                       started_at = excluded.started_at, completed_at = excluded.completed_at",
                )?
                .execute((
                    run,
                    name,
                    index,
                    status,
                    output,
                    error,
                    stack,
                    started_at,
                    completed_at,
                ))?;
            }
            (run, changed)
        }
        Op::Complete {
            run,
            generation,
            output,
            progress,
            at,
        } => {
            let changed = c
                .prepare_cached(
                    "UPDATE runs SET status = 'completed', output = ?3, \
                     progress = COALESCE(?4, progress), completed_at = ?5, updated_at = ?5 \
                     WHERE id = ?1 AND lease_generation = ?2 AND status = 'running'",
                )?
                .execute((run, generation, output, progress, at))?;
            (run, changed)
        }
        Op::Fail {
            run,
            generation,
            error,
            stack,
            progress,
            at,
        } => {
            let changed = c
                .prepare_cached(
                    "UPDATE runs SET status = 'failed', error = ?3, error_stack = ?4, \
                     progress = COALESCE(?5, progress), completed_at = ?6, updated_at = ?6 \
                     WHERE id = ?1 AND lease_generation = ?2 AND status = 'running'",
                )?
                .execute((run, generation, error, stack, progress, at))?;
            (run, changed)
        }
        Op::Progress {
            run,
            generation,
            progress,
        } => {
            let changed = c
                .prepare_cached(
                    "UPDATE runs SET progress = ?3, updated_at = ?4 \
                     WHERE id = ?1 AND lease_generation = ?2 AND status = 'running'",
                )?
                .execute((run, generation, progress, now))?;
            (run, changed)
        }
        Op::Release { run, generation } => {
            let changed = c
                .prepare_cached(
                    "UPDATE runs SET status = 'pending', lease_owner = NULL, updated_at = ?3 \
                     WHERE id = ?1 AND lease_generation = ?2 AND status = 'running'",
                )?
                .execute((run, generation, now))?;
            (run, changed)
        }
        Op::Log {
            run,
            generation,
            step,
            level,
            message,
            data,
            at,
        } => {
            let changed = c
                .prepare_cached(
                    "INSERT INTO logs (run_id, step_name, level, message, data, timestamp) \
                     SELECT ?1, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM runs \
                       WHERE id = ?1 AND lease_generation = ?2 AND status = 'running')",
                )?
                .execute((run, generation, step, level, message, data, at))?;
            (run, changed)
        }
    };
    if changed > 0 {
        return Ok(OpStatus::Ok);
    }
    Ok(match lease_status(c, run)? {
        Some(RunStatus::Cancelled) => OpStatus::Cancelled,
        _ => OpStatus::Lost,
    })
}
