//! The executing worker's writes: step results, completion, failure,
//! progress, logs and hand-back. The JS layer sends every write that is due
//! as one batch (a JSON array of ops, encoded by `lib/protocol.js`) and all
//! of them share one transaction: group commit across the runs in flight.
//!
//! Each op names the run's `lease_generation`; an op whose run is no longer
//! `running` under that generation writes nothing and reports why. Every
//! fenced statement uses the one fence, [`lease_fence!`].
//!
//! Each op runs in its own savepoint: an op that fails (malformed, or a
//! statement SQLite refuses) is rolled back alone and reports its error, and
//! the batch's other ops still commit. Only a failure of the database as a
//! whole (busy, full, read-only, corrupt, replaced) fails the batch.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::claim::{lease_status, note_pending_run};
use super::fences::Fences;
use super::{RunStatus, SqliteStore};
use crate::error::{Error, Result};

/// The lease fence of every write an executing worker makes: the run (`?1`)
/// is still `running` under the caller's lease generation (`?2`). Written
/// once; each fenced statement splices it in with `concat!`.
/// (`scripts/mutate-fences.js` weakens it here and at each use in turn.)
macro_rules! lease_fence {
    () => {
        "id = ?1 AND lease_generation = ?2 AND status = 'running'"
    };
}
pub(crate) use lease_fence;

/// SQL for a run's `current_step_index` brought up to date: at least
/// `$given` (a bound value or NULL) and the position after the run's last
/// completed step, read from its steps (the run's entries of
/// `steps_run_name`); `$run` is the run's id in the statement (`?1`, or
/// `runs.id` in a read). Whenever a run's row is rewritten, and in every
/// read, the column gets this, since a step's write may have left it
/// behind (see [`ROW_REFRESH`]).
macro_rules! step_index_sql {
    ($given:literal, $run:literal) => {
        concat!(
            "MAX(current_step_index, COALESCE(",
            $given,
            ", (SELECT s.\"index\" + 1 FROM steps AS s WHERE s.run_id = ",
            $run,
            " AND s.status = 'completed' ORDER BY s.\"index\" DESC LIMIT 1), 0))"
        )
    };
}
pub(crate) use step_index_sql;

/// How stale a running run's `updated_at` may get before a step's write
/// rewrites the run's row. A step's write fences on the run's row with a
/// read and inserts the step row; rewriting the run's row as well (its
/// `current_step_index` and `updated_at`) made every step's commit write
/// one page more and copy the whole row, its input included: ~30 % of a
/// one-step commit (plain rusqlite loop, 29.5–32.3k → 41.6–45.1k commits/s
/// here), and a run with a 64 KB input ran its steps 2.7× slower than one
/// with an empty input. So the row is rewritten only with progress, when
/// its `updated_at` is older than this, and when the run ends (exactly, see
/// `step_index_sql`). Nothing reads the column as "steps are stored" (a
/// resumed run's claim reads the steps of any run claimed before); a
/// rewrite at the run's first completed step cost a one-step run ~8 % of
/// its time.
/// Reads compute `currentStepIndex` from the steps (`query::RUN_COLUMNS`),
/// so only the columns, read directly, lag, by less than this.
pub const ROW_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The time of a batch: `at` (stored as written), and the `updated_at` below
/// which a step's write refreshes its run's row.
pub(crate) struct Now {
    pub at: String,
    pub refresh_before: String,
}

impl Now {
    pub(crate) fn of(t: std::time::SystemTime) -> Now {
        Now {
            at: super::iso(t),
            refresh_before: super::iso(t.checked_sub(ROW_REFRESH).unwrap_or(t)),
        }
    }
}

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
    /// Not written: the op is malformed or SQLite refused it; its error is in
    /// [`FlushOutcome::errors`]. The batch's other ops are unaffected.
    Failed,
}

impl OpStatus {
    /// One character per op in the flush result: `0` ok, `c` cancelled,
    /// `l` lost, `b` a value too big for SQLite, `e` failed (see the errors).
    pub fn as_char(self) -> char {
        match self {
            OpStatus::Ok => '0',
            OpStatus::Cancelled => 'c',
            OpStatus::Lost => 'l',
            OpStatus::TooBig => 'b',
            OpStatus::Failed => 'e',
        }
    }
}

/// One write of the executing worker, under lease `generation`, as JSON: an
/// object with one key naming the kind, e.g. `{"complete": {"run": "…",
/// "gen": 1, "output": {…}, "progress": null, "at": "…"}}`. Values typed
/// `&RawValue` are JSON text (encoded by the JS layer) stored as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum FlushOp<'a> {
    /// A step finished: its row is inserted (or overwrites the row of the same name).
    Step {
        run: String,
        #[serde(rename = "gen")]
        generation: i64,
        name: String,
        index: i64,
        /// `completed`, `failed` or `cancelled`.
        status: String,
        #[serde(borrow)]
        output: Option<&'a RawValue>,
        error: Option<String>,
        stack: Option<String>,
        started_at: String,
        completed_at: Option<String>,
        /// The run's progress, when it changed.
        #[serde(borrow)]
        progress: Option<&'a RawValue>,
    },
    /// The run completed.
    Complete {
        run: String,
        #[serde(rename = "gen")]
        generation: i64,
        #[serde(borrow)]
        output: Option<&'a RawValue>,
        #[serde(borrow)]
        progress: Option<&'a RawValue>,
        at: String,
        /// The position after the run's last completed step, as the worker
        /// knows it (from its claim and its own steps); absent: read from
        /// the steps (see `step_index_sql`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_index: Option<i64>,
    },
    /// The run failed.
    Fail {
        run: String,
        #[serde(rename = "gen")]
        generation: i64,
        error: String,
        stack: Option<String>,
        #[serde(borrow)]
        progress: Option<&'a RawValue>,
        at: String,
        /// As in `Complete`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_index: Option<i64>,
    },
    /// Progress alone (`null` is stored as the JSON text `null`).
    Progress {
        run: String,
        #[serde(rename = "gen")]
        generation: i64,
        #[serde(borrow)]
        progress: Option<&'a RawValue>,
    },
    /// A log line.
    Log {
        run: String,
        #[serde(rename = "gen")]
        generation: i64,
        step: Option<String>,
        level: String,
        message: String,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
        at: String,
    },
    /// Give the run back (`pending`) so any worker resumes it now.
    Release {
        run: String,
        #[serde(rename = "gen")]
        generation: i64,
    },
}

impl FlushOp<'_> {
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

    /// Whether the op ends the run's execution (completion, failure, hand-back).
    pub fn ends_execution(&self) -> bool {
        matches!(
            self,
            FlushOp::Complete { .. } | FlushOp::Fail { .. } | FlushOp::Release { .. }
        )
    }
}

/// A batch as parsed: each op, or why it could not be read. One malformed op
/// does not make the others unreadable.
pub fn parse_batch(ops: &str) -> Result<Vec<Result<FlushOp<'_>>>> {
    let list: Vec<&RawValue> = serde_json::from_str(ops)
        .map_err(|e| Error::Internal(format!("a flush batch must be a JSON array of ops: {e}")))?;
    Ok(list
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            serde_json::from_str(raw.get())
                .map_err(|e| Error::Internal(format!("flush op {i} is malformed: {e}")))
        })
        .collect())
}

/// A batch as the JS layer sends it, split into the ops that parsed (for
/// any [`super::Store`]) and the malformed ones, which fail alone: after the
/// store applied the good ops, [`Batch::merge`] puts each malformed op back
/// in its place with [`OpStatus::Failed`] and its error.
#[derive(Debug)]
pub struct Batch<'a> {
    /// The ops that parsed, in batch order.
    pub ops: Vec<FlushOp<'a>>,
    /// `(position in the batch, error)` of each malformed op.
    malformed: Vec<(usize, Error)>,
    /// Bytes of the batch's text.
    pub bytes: usize,
}

impl<'a> Batch<'a> {
    /// Parses a batch (a JSON array of tagged ops, `lib/protocol.js`).
    pub fn parse(text: &'a str) -> Result<Batch<'a>> {
        // One pass when every op is well formed (always, from lib/protocol.js):
        // ~0.55 µs an 8-op batch's op against ~0.86 for the two passes below,
        // which read each op twice (once to split the array) and exist only
        // to tell a malformed op from the others.
        if let Ok(ops) = serde_json::from_str::<Vec<FlushOp<'a>>>(text) {
            return Ok(Batch {
                ops,
                malformed: Vec::new(),
                bytes: text.len(),
            });
        }
        let mut ops = Vec::new();
        let mut malformed = Vec::new();
        for (i, op) in parse_batch(text)?.into_iter().enumerate() {
            match op {
                Ok(op) => ops.push(op),
                Err(e) => malformed.push((i, e)),
            }
        }
        Ok(Batch {
            ops,
            malformed,
            bytes: text.len(),
        })
    }

    /// The outcome of the whole batch from the outcome of [`Batch::ops`].
    pub fn merge<T>(&self, mut out: FlushOutcome<T>) -> FlushOutcome<T> {
        if self.malformed.is_empty() {
            return out;
        }
        let total = self.ops.len() + self.malformed.len();
        let mut statuses = String::with_capacity(total);
        let mut good = out.statuses.chars();
        // Position in the batch of each good op.
        let mut position = Vec::with_capacity(self.ops.len());
        let mut bad = self.malformed.iter().peekable();
        for i in 0..total {
            if bad.peek().is_some_and(|(at, _)| *at == i) {
                bad.next();
                statuses.push(OpStatus::Failed.as_char());
            } else {
                position.push(i);
                statuses.push(good.next().unwrap_or(OpStatus::Failed.as_char()));
            }
        }
        let mut errors: Vec<OpError> = self
            .malformed
            .iter()
            .map(|(index, e)| OpError {
                index: *index,
                error: Error::Internal(e.to_string()),
            })
            .collect();
        errors.extend(out.errors.drain(..).map(|e| OpError {
            index: position.get(e.index).copied().unwrap_or(e.index),
            error: e.error,
        }));
        errors.sort_by_key(|e| e.index);
        out.statuses = statuses;
        out.errors = errors;
        out
    }
}

/// The error of an op that reported [`OpStatus::Failed`].
#[derive(Debug)]
pub struct OpError {
    /// The op's position in the batch.
    pub index: usize,
    /// What went wrong.
    pub error: Error,
}

/// The result of a flush: one status character per op, the errors of the
/// ops that failed, the runs whose execution the batch ended (completion,
/// failure, hand-back), and whatever the `then` step of
/// [`SqliteStore::flush_then`] returned.
#[derive(Debug)]
pub struct FlushOutcome<T> {
    /// One [`OpStatus::as_char`] per op.
    pub statuses: String,
    /// One entry per op that reported [`OpStatus::Failed`].
    pub errors: Vec<OpError>,
    /// `(run, generation)` of every `complete`, `fail` or `release` op
    /// applied: those executions are over.
    pub ended: Vec<(String, i64)>,
    /// The value of the `then` step.
    pub then: T,
}

#[cfg(test)]
impl<T> FlushOutcome<T> {
    /// `(op index, error code)` of each failed op, for tests' assertions.
    pub(crate) fn error_codes(&self) -> Vec<(usize, &'static str)> {
        self.errors
            .iter()
            .map(|e| (e.index, e.error.code()))
            .collect()
    }
}

impl SqliteStore {
    /// Applies a batch (JSON text) in one transaction, waiting for the lock.
    pub fn flush(&self, ops: &str) -> Result<FlushOutcome<()>> {
        let batch = Batch::parse(ops)?;
        let out = self
            .flush_then(&batch.ops, true, |_, _| Ok(()))?
            .ok_or_else(|| Error::Internal("flush: no outcome".into()))?;
        Ok(batch.merge(out))
    }

    /// Like [`SqliteStore::flush`] but never waits: `None` when the lock is taken.
    pub fn try_flush(&self, ops: &str) -> Result<Option<FlushOutcome<()>>> {
        let batch = Batch::parse(ops)?;
        Ok(self
            .flush_then(&batch.ops, false, |_, _| Ok(()))?
            .map(|o| batch.merge(o)))
    }

    /// Applies a batch of ops and then runs `then` in the same transaction
    /// (the worker claims the next runs there: a run's completion and its
    /// successor's claim share one commit). `then` gets the ended runs.
    /// With `wait == false`, returns `None` at once when the lock is taken.
    pub fn flush_then<T>(
        &self,
        ops: &[FlushOp<'_>],
        wait: bool,
        then: impl FnOnce(&Connection, &[(String, i64)]) -> Result<T>,
    ) -> Result<Option<FlushOutcome<T>>> {
        let now = Now::of(self.now_time());
        let mut then = Some(then);
        // The first pass applies the batch as it is; an op that fails rolls
        // the transaction back (`op_failed`) and a second one applies each op
        // in its own savepoint (see [`apply_all`]).
        let op_failed = std::cell::Cell::new(false);
        // The per-op pass gets no fences: it neither reads nor keeps them (a
        // savepoint rolled back would leave behind what its op taught).
        let mut body = |c: &Connection, fences: Option<&mut Fences>| -> Result<FlushOutcome<T>> {
            let isolated = fences.is_none();
            let out = match apply_all(c, ops, &now, fences) {
                Err(e) if !isolated && !e.fails_whole_batch() => {
                    op_failed.set(true);
                    return Err(e);
                }
                out => out?,
            };
            let ended = super::backend::ended_runs(ops, &out.statuses);
            let then = then
                .take()
                .ok_or_else(|| Error::Internal("flush: then ran twice".into()))?;
            let then = then(c, &ended)?;
            Ok(FlushOutcome {
                statuses: out.statuses,
                errors: out.errors,
                ended,
                then,
            })
        };
        let first = if wait {
            self.write_fenced(|c, f| body(c, Some(f))).map(Some)
        } else {
            self.try_write_fenced(|c, f| body(c, Some(f)))
        };
        match first {
            Err(_) if op_failed.get() => {
                // (The failed first pass already left nothing known;
                // forgetting here keeps the per-op pass right on its own.)
                let isolated = |c: &Connection, f: &mut Fences| {
                    f.forget();
                    body(c, None)
                };
                if wait {
                    Ok(Some(self.write_fenced(isolated)?))
                } else {
                    self.try_write_fenced(isolated)
                }
            }
            first => first,
        }
    }

    /// Fails a run this worker owns (job timeout), fenced like any op.
    pub fn fail_owned(&self, run: &str, generation: i64, error: &str) -> Result<OpStatus> {
        let now = Now::of(self.now_time());
        let op = FlushOp::Fail {
            run: run.to_string(),
            generation,
            error: error.to_string(),
            stack: None,
            progress: None,
            at: now.at.clone(),
            step_index: None,
        };
        self.write(|c| apply_one(c, &op, &now, None))
    }
}

/// One pass over the batch. Without `fences` (isolated), each op runs in its
/// own savepoint and a failed op is reported in the outcome; with them, the
/// first failed op fails the pass. `ended` is left empty.
///
/// Why two passes: a savepoint per op costs two statements per op, ~10 % of
/// a step at `maxConcurrentRuns` 8, to guard against ops that almost never
/// fail, and even one savepoint around the batch costs its two statements
/// and a copy of every page it changes (the savepoint's journal). So the
/// batch first runs bare; only when an op fails is the whole transaction
/// rolled back and the batch applied again, in a new one, with a savepoint
/// per op ([`SqliteStore::flush_then`]).
fn apply_all(
    c: &Connection,
    ops: &[FlushOp],
    now: &Now,
    mut fences: Option<&mut Fences>,
) -> Result<FlushOutcome<()>> {
    let mut out = FlushOutcome {
        statuses: String::with_capacity(ops.len()),
        errors: Vec::new(),
        ended: Vec::new(),
        then: (),
    };
    let limit = length_limit(c);
    for (index, op) in ops.iter().enumerate() {
        let status = match op {
            op if op.value_bytes() > limit => OpStatus::TooBig,
            op if fences.is_some() => apply_one(c, op, now, fences.as_deref_mut())?,
            op => match in_savepoint(c, |c| apply_one(c, op, now, None))? {
                Ok(status) => status,
                Err(Error::TooBig(_)) => OpStatus::TooBig,
                Err(error) => {
                    out.errors.push(OpError { index, error });
                    OpStatus::Failed
                }
            },
        };
        out.statuses.push(status.as_char());
    }
    Ok(out)
}

/// Runs `f` in a savepoint: rolled back alone when it fails. The outer
/// `Result` is the batch's (a failure of the database as a whole, which no
/// op can be blamed for); the inner one is the op's.
pub(crate) fn in_savepoint<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<Result<T>> {
    c.prepare_cached("SAVEPOINT flush_op")?.execute([])?;
    match f(c) {
        Ok(v) => {
            c.prepare_cached("RELEASE flush_op")?.execute([])?;
            Ok(Ok(v))
        }
        Err(e) if e.fails_whole_batch() => Err(e),
        Err(e) => {
            c.prepare_cached("ROLLBACK TO flush_op")?.execute([])?;
            c.prepare_cached("RELEASE flush_op")?.execute([])?;
            Ok(Err(e))
        }
    }
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

/// JSON text of an optional raw value.
fn text<'a>(v: &Option<&'a RawValue>) -> Option<&'a str> {
    v.map(RawValue::get)
}

impl FlushOp<'_> {
    /// Bytes of the values the op stores (JSON texts, error, stack,
    /// message). An op over the backend's size limit is refused before any
    /// of its statements runs, so the batch (and the other runs' ops in it)
    /// still commits, and the op reports [`OpStatus::TooBig`] instead of an
    /// error the writer would retry.
    pub fn value_bytes(&self) -> usize {
        let len = |v: &Option<&RawValue>| v.map_or(0, |s| s.get().len());
        let slen = |v: &Option<String>| v.as_ref().map_or(0, |s| s.len());
        match self {
            FlushOp::Step {
                output,
                error,
                stack,
                progress,
                ..
            } => len(output) + slen(error) + slen(stack) + len(progress),
            FlushOp::Complete {
                output, progress, ..
            } => len(output) + len(progress),
            FlushOp::Fail {
                error,
                stack,
                progress,
                ..
            } => error.len() + slen(stack) + len(progress),
            FlushOp::Progress { progress, .. } => len(progress),
            FlushOp::Log { message, data, .. } => message.len() + len(data),
            FlushOp::Release { .. } => 0,
        }
    }
}

/// Applies one op. `fences`: what earlier fence reads of this connection
/// still tell (see fences.rs), kept up to date with what the op rewrites.
fn apply_one(
    c: &Connection,
    op: &FlushOp,
    now: &Now,
    mut fences: Option<&mut Fences>,
) -> Result<OpStatus> {
    if !matches!(op, FlushOp::Step { .. } | FlushOp::Log { .. }) {
        // Progress, a completion, a failure or a release rewrites the row.
        if let Some(f) = fences.as_deref_mut() {
            f.drop_run(op.lease().0);
        }
    }
    let changed = match op {
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
            // The fence, read-only: the run's row is rewritten only when it
            // must be (see ROW_REFRESH). Skipped while an earlier read's
            // answer still holds. `passes`: the run is this lease's and
            // running; `due`: its row is due for the refresh (a row not read
            // counts as due); `read`: the `updated_at` the fence just read
            // (None when the kept answer served: its entry stays as it is).
            let is_due = |at: &str| at < now.refresh_before.as_str();
            let known = fences
                .as_deref_mut()
                .and_then(|f| f.get(run, *generation))
                .map(is_due);
            let (passes, due, read) = match known {
                Some(due) => (true, due, None),
                None => {
                    let read: Option<String> = c
                        .prepare_cached(concat!(
                            "SELECT updated_at FROM runs WHERE ",
                            lease_fence!()
                        ))?
                        .query_row((run, generation), |r| r.get(0))
                        .optional()?;
                    let due = read.as_deref().is_none_or(is_due);
                    (read.is_some(), due, read)
                }
            };
            let changed = usize::from(passes);
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
                    text(output),
                    error,
                    stack,
                    started_at,
                    completed_at,
                ))?;
                let written = if progress.is_some() || due {
                    c.prepare_cached(concat!(
                        "UPDATE runs SET current_step_index = ",
                        step_index_sql!("NULL", "?1"),
                        ", progress = COALESCE(?2, progress), updated_at = ?3 WHERE id = ?1"
                    ))?
                    .execute((run, text(progress), &now.at))?;
                    Some(now.at.as_str())
                } else {
                    read.as_deref()
                };
                if let (Some(f), Some(updated_at)) = (fences, written) {
                    f.put(run, *generation, updated_at);
                }
            }
            changed
        }
        FlushOp::Complete {
            run,
            generation,
            output,
            progress,
            at,
            step_index,
        } => c
            .prepare_cached(concat!(
                "UPDATE runs SET status = 'completed', output = ?3, \
                 progress = COALESCE(?4, progress), completed_at = ?5, updated_at = ?5, \
                 current_step_index = ",
                step_index_sql!("?6", "?1"),
                " WHERE ",
                lease_fence!()
            ))?
            .execute((
                run,
                generation,
                text(output),
                text(progress),
                at,
                step_index,
            ))?,
        FlushOp::Fail {
            run,
            generation,
            error,
            stack,
            progress,
            at,
            step_index,
        } => c
            .prepare_cached(concat!(
                "UPDATE runs SET status = 'failed', error = ?3, error_stack = ?4, \
                 progress = COALESCE(?5, progress), completed_at = ?6, updated_at = ?6, \
                 current_step_index = ",
                step_index_sql!("?7", "?1"),
                " WHERE ",
                lease_fence!()
            ))?
            .execute((
                run,
                generation,
                error,
                stack,
                text(progress),
                at,
                step_index,
            ))?,
        FlushOp::Progress {
            run,
            generation,
            progress,
        } => c
            .prepare_cached(concat!(
                "UPDATE runs SET progress = ?3, updated_at = ?4 WHERE ",
                lease_fence!()
            ))?
            .execute((run, generation, text(progress).unwrap_or("null"), &now.at))?,
        FlushOp::Release { run, generation } => {
            let changed = c
                .prepare_cached(concat!(
                    "UPDATE runs SET status = 'pending', lease_owner = NULL, updated_at = ?3 WHERE ",
                    lease_fence!()
                ))?
                .execute((run, generation, &now.at))?;
            // (Also when the fence refused it: `pending_keys` may hold more.)
            note_pending_run(c, run)?;
            changed
        }
        FlushOp::Log {
            run,
            generation,
            step,
            level,
            message,
            data,
            at,
        } => c
            .prepare_cached(concat!(
                "INSERT INTO logs (run_id, step_name, level, message, data, timestamp) \
                 SELECT ?1, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM runs WHERE ",
                lease_fence!(),
                ")"
            ))?
            .execute((run, generation, step, level, message, text(data), at))?,
    };
    if changed > 0 {
        return Ok(OpStatus::Ok);
    }
    Ok(match lease_status(c, op.lease().0)? {
        Some(RunStatus::Cancelled) => OpStatus::Cancelled,
        _ => OpStatus::Lost,
    })
}
