//! The executing worker's writes on PostgreSQL: step results, completion,
//! failure, progress, logs and hand-back, a batch per transaction (group
//! commit, as on SQLite), its statements piped (`pipe.rs`): a batch that
//! ends no run is one round trip (`BEGIN`, the ops, `COMMIT`); one whose
//! ended runs' successors are claimed in the same commit is two (`BEGIN`,
//! the ops, the claim's plan setting, `SAVEPOINT`, the claim; then `COMMIT`).
//!
//! Four or more step ops of a batch share one statement ([`STEPS_SQL`],
//! fenced per run as below, on its generic plan; `bind_units` says which
//! ops group, [`GROUP_MIN`] why four); every other op, and a step op
//! outside such a group, is one statement fenced like SQLite's: it changes the run only
//! `WHERE id = $1 AND lease_generation = $2 AND status = 'running'`, and
//! the same statement reports the run's status, so a refused op is told
//! apart (cancelled, or lost to another lease) without a second round trip.
//! A step's row (and a log's) is written by the same statement, only when
//! the fenced update (or check) matched.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use deadpool_postgres::Object;
use serde_json::value::RawValue;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::claim::{claim_sql, claimed_runs, CLAIM_ATTEMPTS, CLAIM_PLAN};
use super::events::NOTIFY_ALL_SQL;
use super::pipe::{take_err, OpenTx, Params, Pipeline};
use super::{is_claim_race, session_ended, PgStore};
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

/// A step result alone: `$1` run, `$2` generation, `$3` completed, `$4`
/// next step index, `$5` progress, `$6`… the step row. The op of a batch
/// with one step op (e2e at one run at a time: every batch), and of a batch
/// applied op by op ([`PgStore::flush_isolated`]): a plan of index probes on
/// the run's key, nothing else.
const STEP_SQL: &str = "WITH upd AS ( \
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
     SELECT (SELECT count(*) FROM upd), (SELECT status FROM runs WHERE id = $1)";

/// Two or more step results of a batch, one statement for all of them,
/// their reduction done by [`bind_steps`] so that the server has no
/// aggregate or sort to run: `$1`… one element per (run, generation) of the
/// ops, its update as one after another would leave it (`$3` the highest
/// next index of its completed steps or NULL, `$4` its last progress or
/// NULL), fenced as a single op is; `$5`… one element per step row, the last
/// op's for a (run, generation, name), `$5` its (run, generation)'s
/// position. The rows of the runs that matched are written. Answers a row
/// per (run, generation): its position, whether it matched, and if not the
/// run's status.
const STEPS_SQL: &str = "WITH r AS ( \
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], \
         $4::text[]) WITH ORDINALITY AS r(run, generation, next, progress, \
         ord)), \
     upd AS ( \
       UPDATE runs SET current_step_index = \
         GREATEST(current_step_index, r.next), \
       progress = COALESCE(r.progress::json, runs.progress), \
       updated_at = now() \
       FROM r WHERE id = r.run AND lease_generation = r.generation \
         AND status = 'running' \
       RETURNING r.ord, runs.id), \
     ins AS ( \
       INSERT INTO steps (run_id, name, \"index\", status, output, error, \
         error_stack, started_at, completed_at) \
       SELECT upd.id, s.name, s.idx, s.status, s.output::json, s.error, \
         s.stack, s.started_at, s.completed_at \
       FROM unnest($5::bigint[], $6::text[], $7::bigint[], $8::text[], \
         $9::text[], $10::text[], $11::text[], $12::timestamptz[], \
         $13::timestamptz[]) AS s(ord, name, idx, status, output, error, \
         stack, started_at, completed_at) \
       JOIN upd ON upd.ord = s.ord \
       ON CONFLICT (run_id, name) DO UPDATE SET \"index\" = excluded.\"index\", \
         status = excluded.status, output = excluded.output, \
         error = excluded.error, error_stack = excluded.error_stack, \
         started_at = excluded.started_at, \
         completed_at = excluded.completed_at) \
     SELECT r.ord, upd.ord IS NOT NULL, CASE WHEN upd.ord IS NULL \
       THEN (SELECT status FROM runs WHERE id = r.run) END \
     FROM r LEFT JOIN upd ON upd.ord = r.ord";

/// Completes run `$1` under generation `$2` (output `$3`, progress `$4`).
/// A run with a concurrency key wakes `$5` (its successor may be claimable
/// now) only while some process is registered for wake-ups (the `wakers`
/// table, schema v5): the statement reads that table, so it holds its
/// ACCESS SHARE lock until the commit, and a registration (ACCESS EXCLUSIVE,
/// `listen.rs`) either is seen here or waits for this commit and then
/// claims. `FAIL_SQL` and `COMPLETES_SQL` do the same.
pub(crate) const COMPLETE_SQL: &str = "WITH upd AS ( \
       UPDATE runs SET status = 'completed', output = $3::text::json, \
       progress = COALESCE($4::text::json, progress), completed_at = now(), \
       updated_at = now() \
       WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
       RETURNING concurrency_key) \
     SELECT (SELECT count(*) FROM upd), \
       (SELECT status FROM runs WHERE id = $1), \
       (SELECT pg_notify($5, '')::text FROM upd \
          WHERE concurrency_key IS NOT NULL AND EXISTS (SELECT 1 FROM wakers \
            WHERE expires_at > now()))";

/// Two or more completions of a batch, one statement for all of them (as
/// [`STEPS_SQL`] for steps, on its generic plan): `$1` runs, `$2` their
/// generations, `$3` outputs, `$4` progresses, each fenced as
/// [`COMPLETE_SQL`] is; `$5` the wake-up channel, notified once when a
/// completed run held a concurrency key. Answers a row per op: its position
/// (1-based), whether it matched, and if not the run's status.
const COMPLETES_SQL: &str = "WITH r AS ( \
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], \
         $4::text[]) WITH ORDINALITY AS r(run, generation, output, progress, \
         ord)), \
     upd AS ( \
       UPDATE runs SET status = 'completed', output = r.output::json, \
       progress = COALESCE(r.progress::json, runs.progress), \
       completed_at = now(), updated_at = now() \
       FROM r WHERE id = r.run AND lease_generation = r.generation \
         AND status = 'running' \
       RETURNING r.ord, runs.concurrency_key) \
     SELECT r.ord, upd.ord IS NOT NULL, CASE WHEN upd.ord IS NULL \
       THEN (SELECT status FROM runs WHERE id = r.run) END, \
       CASE WHEN r.ord = 1 THEN (SELECT pg_notify($5, '')::text FROM upd \
         WHERE concurrency_key IS NOT NULL AND EXISTS (SELECT 1 FROM wakers \
           WHERE expires_at > now()) LIMIT 1) END \
     FROM r LEFT JOIN upd ON upd.ord = r.ord";

const FAIL_SQL: &str = "WITH upd AS ( \
       UPDATE runs SET status = 'failed', error = $3, error_stack = $4, \
       progress = COALESCE($5::text::json, progress), completed_at = now(), \
       updated_at = now() \
       WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
       RETURNING concurrency_key) \
     SELECT (SELECT count(*) FROM upd), \
       (SELECT status FROM runs WHERE id = $1), \
       (SELECT pg_notify($6, '')::text FROM upd \
          WHERE concurrency_key IS NOT NULL AND EXISTS (SELECT 1 FROM wakers \
            WHERE expires_at > now()))";

const PROGRESS_SQL: &str = "WITH upd AS ( \
       UPDATE runs SET progress = $3::text::json, updated_at = now() \
       WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
       RETURNING 1) \
     SELECT (SELECT count(*) FROM upd), (SELECT status FROM runs WHERE id = $1)";

const RELEASE_SQL: &str = "WITH upd AS ( \
       UPDATE runs SET status = 'pending', lease_owner = NULL, \
       updated_at = now() \
       WHERE id = $1 AND lease_generation = $2 AND status = 'running' \
       RETURNING job_name) \
     SELECT (SELECT count(*) FROM upd), \
       (SELECT status FROM runs WHERE id = $1), \
       (SELECT pg_notify($3, job_name)::text FROM upd)";

const LOG_SQL: &str = "WITH ins AS ( \
       INSERT INTO logs (run_id, step_name, level, message, data, timestamp) \
       SELECT $1::text, $3::text, $4::text, $5::text, $6::text::json, \
         $7::timestamptz WHERE EXISTS ( \
         SELECT 1 FROM runs \
         WHERE id = $1 AND lease_generation = $2 AND status = 'running') \
       RETURNING 1) \
     SELECT (SELECT count(*) FROM ins), (SELECT status FROM runs WHERE id = $1)";

/// A group of steps is at least this many step ops: below, the ops alone
/// ([`STEP_SQL`] each) cost the server less than [`STEPS_SQL`] (measured
/// with pgbench on generic plans: about even at 2 and 3 ops, a fifth less
/// server CPU at 4, a third at 8).
const GROUP_MIN: usize = 4;

/// Opens a batch's transaction when it has a group of steps: the group's
/// statement runs on its generic plan (fine for any number of ops, see
/// [`STEPS_SQL`]). Otherwise PostgreSQL's default (`auto`) plans it anew on
/// every execution (a custom plan, costed for the arrays' actual length,
/// always looks cheaper than the generic one's 100 rows per `unnest`): that
/// planning cost about as much server CPU as writing 4 to 8 steps.
const BEGIN_GENERIC: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// The savepoint the claim after a batch runs in.
const SAVEPOINT: &str = "SAVEPOINT durably_claim";

/// Before the claim after a batch: [`CLAIM_PLAN`] and [`SAVEPOINT`] in one
/// simple-protocol message (one parse and reply instead of two).
const THEN_CLAIM: &str = "SET LOCAL enable_sort = off; SAVEPOINT durably_claim";

/// The same after a group: first undoes [`BEGIN_GENERIC`]'s setting for
/// the claim.
const GROUP_THEN_CLAIM: &str =
    "SET LOCAL plan_cache_mode = DEFAULT; SET LOCAL enable_sort = off; SAVEPOINT durably_claim";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT durably_claim";

/// How many times a batch is sent in all when the server ended the session
/// before applying it (each time on a fresh connection).
const RESEND_ATTEMPTS: usize = 3;

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
        // Which executions the batch ends is known before it runs: every
        // complete, fail or release op, whatever its status (`ended_runs`
        // leaves out only `OpStatus::Failed`, which this store never
        // answers). So the claim is planned first and piped with the ops.
        let ended = ended_runs(ops, &OpStatus::Ok.as_char().to_string().repeat(ops.len()));
        let claim = match then(&ended) {
            Some((jobs, limit)) if !jobs.is_empty() && limit > 0 => Some((jobs, limit)),
            _ => None,
        };
        let mut attempt = 1;
        loop {
            let mut unapplied = false;
            match self
                .flush_once(ops, claim.clone(), ended.clone(), &mut unapplied)
                .await
            {
                Err(_) if unapplied && attempt < RESEND_ATTEMPTS => {
                    // The server ended the session before it applied the
                    // batch: its other idle sessions are suspect too (a
                    // mass termination, a restart), so the batch goes again
                    // on a fresh connection.
                    self.forget_idle_connections();
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`PgStore::flush_then_claim`]. On an error,
    /// `unapplied` tells whether the server provably applied nothing of the
    /// batch (it ended the session before the statement that commits), so
    /// that sending it again cannot apply it twice.
    async fn flush_once(
        &self,
        ops: &[FlushOp<'_>],
        claim: Option<(std::sync::Arc<[String]>, usize)>,
        ended: Vec<(String, i64)>,
        unapplied: &mut bool,
    ) -> Result<FlushOutcome<Vec<ClaimedRun>>> {
        let tx = OpenTx::new(self.client().await?);
        let bound = match self.bind_units(tx.conn(), ops, true).await {
            Ok(b) => b,
            Err(e) => {
                // Nothing was sent but statements to prepare: a failure of
                // the connection applied nothing.
                *unapplied = matches!(e, Error::Postgres(_) | Error::ConnectionLost(_));
                return Err(e);
            }
        };
        let claim_st = match &claim {
            Some(_) => match tx.conn().prepare_cached(&claim_sql()).await {
                Ok(st) => Some(st),
                Err(e) => {
                    *unapplied = session_ended(&e);
                    return Err(e.into());
                }
            },
            None => None,
        };
        let owner = self.owner();
        let claim_params: Option<Params<'_>> = claim.as_ref().map(|(jobs, limit)| {
            let p: Params<'_> = vec![
                Box::new(jobs.to_vec()),
                Box::new(*limit as i64),
                Box::new(owner),
            ];
            p
        });
        // A group of steps is planned once per connection (see
        // `GENERIC_PLAN`): that setting needs a transaction.
        let grouped = bound.iter().any(|u| u.answers.is_some());
        // One statement alone needs no transaction of its own.
        let wrap = claim.is_some() || bound.len() > 1 || grouped;
        // Run events queued meanwhile go with the batch's COMMIT, right
        // after it (their own transaction: whatever the batch's outcome): in
        // this round trip, or in the one that commits after the claim; unless
        // they are being published already (`events.rs`).
        let mut events = self.take_for_flush();
        let notify = match &events {
            Some(_) => Some(tx.conn().prepare_cached(NOTIFY_ALL_SQL).await),
            None => None,
        };
        let notify = match notify {
            Some(Ok(st)) => Some(st),
            // (the events go back to the outbox)
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        let channel = self.events_channel();
        let notify_params: Option<Params<'_>> = events.as_ref().map(|ev| {
            let p: Params<'_> = vec![Box::new(channel), Box::new(ev.payloads.clone())];
            p
        });
        let mut p = Pipeline::new(tx.client());
        if wrap {
            p.command(if grouped { BEGIN_GENERIC } else { "BEGIN" });
        }
        let first_op = usize::from(wrap);
        for unit in &bound {
            p.query(&unit.st, &unit.params);
        }
        let claim_at = match (&claim_st, &claim_params) {
            (Some(st), Some(params)) => {
                // One message: the claim planned as it is without a group.
                p.command(if grouped {
                    GROUP_THEN_CLAIM
                } else {
                    THEN_CLAIM
                });
                Some(p.query(st, params))
            }
            _ => None,
        };
        let sent = p.send().await;
        if wrap && claim_at.is_none() {
            // Commit only what was all sent; a later failure on the server
            // turns this COMMIT into a rollback (see `pipe.rs`).
            p.command(if sent { "COMMIT" } else { "ROLLBACK" });
        }
        let notify_at = match (&notify, &notify_params, &claim_at) {
            (Some(st), Some(params), None) => Some(p.query(st, params)),
            _ => None,
        };
        let completed = p.completed();
        let mut replies = p.finish().await;
        if let Some(at) = notify_at {
            // The last reply; the batch's own are the ones before it.
            debug_assert_eq!(at + 1, replies.len());
            if replies.pop().is_some_and(|r| r.is_ok()) {
                if let Some(ev) = events.take() {
                    ev.sent();
                }
            }
        }
        // The first failure in order is the cause; the statements after it
        // failed with "current transaction is aborted".
        let failed = replies.iter().position(Result::is_err);
        if let Some(i) = failed {
            // The server ended the session at statement `i`: nothing after
            // it ran. Applied nothing if `i` comes before the COMMIT (piped
            // last, or sent after the claim), or is a statement alone that
            // the server had not reported complete (it commits at the
            // `Sync` after that).
            let commits_at = if !wrap {
                None
            } else if claim_at.is_none() {
                Some(replies.len() - 1)
            } else {
                Some(replies.len())
            };
            *unapplied = replies[i].as_ref().err().is_some_and(session_ended)
                && match commits_at {
                    Some(c) => i < c,
                    None => !completed.get(i),
                };
        }
        let claim_rows = match (claim_at, failed) {
            (None, None) => None,
            (None, Some(i)) => {
                // The COMMIT piped after the ops rolled back (or a single
                // statement failed alone): the connection is usable as is,
                // unless it is lost (then it is closed, not pooled: the
                // pool's check may not see it closed yet).
                let e = take_err(&mut replies, i);
                if refused_alone(&e, i, first_op, &bound) {
                    drop(replies);
                    return self.flush_isolated(tx, ops, None, ended).await;
                }
                if !(e.is_closed() || session_ended(&e)) {
                    tx.close();
                }
                return Err(e.into());
            }
            (Some(at), Some(i)) if i < at => {
                let e = take_err(&mut replies, i);
                if refused_alone(&e, i, first_op, &bound)
                    && tx.client().batch_execute("ROLLBACK").await.is_ok()
                {
                    drop(replies);
                    return self.flush_isolated(tx, ops, claim, ended).await;
                }
                rollback(tx).await;
                return Err(e.into());
            }
            (Some(at), Some(_)) => {
                let e = take_err(&mut replies, at);
                let again = match (&claim_st, &claim_params) {
                    (Some(st), Some(params)) if is_claim_race(&e) => {
                        // Lost a race to another claim (`claim.rs`): only
                        // the claim rolls back, to its savepoint.
                        claim_again(&tx, st, params).await
                    }
                    _ => Err(e),
                };
                match again {
                    Ok(rows) => Some(rows),
                    Err(e) => {
                        rollback(tx).await;
                        return Err(e.into());
                    }
                }
            }
            (Some(at), None) => match std::mem::replace(&mut replies[at], Ok(Vec::new())) {
                Ok(rows) => Some(rows),
                Err(e) => return Err(e.into()),
            },
        };
        let mut answers = vec![OpStatus::TooBig; ops.len()];
        for (unit, reply) in bound.iter().zip(&replies[first_op..]) {
            match reply {
                Ok(rows) => unit.answer(rows, &mut answers)?,
                Err(_) => unreachable!("no op failed"),
            }
        }
        recheck_lost(tx.client(), ops, &mut answers).await;
        let statuses: String = answers.iter().map(|a| a.as_char()).collect();
        let claimed = match claim_rows {
            Some(rows) => claimed_runs(rows)?,
            None => Vec::new(),
        };
        if claim_at.is_some() {
            match (&notify, &notify_params, events) {
                (Some(st), Some(params), Some(ev)) => {
                    // The events with the COMMIT: no round trip of their own.
                    let mut p = Pipeline::new(tx.client());
                    p.command("COMMIT");
                    p.query(st, params);
                    let mut replies = p.finish().await;
                    if replies.pop().is_some_and(|r| r.is_ok()) {
                        ev.sent();
                    }
                    if let Some(Err(e)) = replies.pop() {
                        return Err(e.into());
                    }
                }
                _ => tx.client().batch_execute("COMMIT").await?,
            }
        }
        tx.close();
        debug_assert_eq!(ended, ended_runs(ops, &statuses));
        Ok(FlushOutcome {
            statuses,
            errors: Vec::new(),
            ended,
            then: claimed,
        })
    }

    /// The batch again after an op the server refused (the piped pass rolled
    /// back whole): each op in its own savepoint, one after another, so a
    /// refused op fails alone with its error (`OpStatus::Failed`) and the
    /// others commit, as on SQLite. The claim then takes one run fewer for
    /// each ending op that failed (its execution goes on).
    async fn flush_isolated(
        &self,
        tx: OpenTx,
        ops: &[FlushOp<'_>],
        claim: Option<(std::sync::Arc<[String]>, usize)>,
        planned: Vec<(String, i64)>,
    ) -> Result<FlushOutcome<Vec<ClaimedRun>>> {
        let c = tx.client();
        // Each op alone (a step op too: its statement with one element).
        let bound = self.bind_units(tx.conn(), ops, false).await?;
        c.batch_execute("BEGIN").await?;
        let mut answers = vec![OpStatus::TooBig; ops.len()];
        let mut errors = Vec::new();
        for unit in &bound {
            c.batch_execute("SAVEPOINT flush_op").await?;
            match c.query(&unit.st, &refs(&unit.params)).await {
                Ok(rows) => {
                    c.batch_execute("RELEASE flush_op").await?;
                    unit.answer(&rows, &mut answers)?;
                }
                Err(e) => {
                    let error = Error::from(e);
                    if error.fails_whole_batch() {
                        rollback(tx).await;
                        return Err(error);
                    }
                    c.batch_execute("ROLLBACK TO flush_op; RELEASE flush_op")
                        .await?;
                    for &index in &unit.ops {
                        answers[index] = OpStatus::Failed;
                    }
                    let [index] = unit.ops[..] else {
                        unreachable!("an op alone")
                    };
                    errors.push(OpError { index, error });
                }
            }
        }
        recheck_lost(c, ops, &mut answers).await;
        let statuses: String = answers.iter().map(|a| a.as_char()).collect();
        let ended = ended_runs(ops, &statuses);
        let mut claimed = Vec::new();
        if let Some((jobs, limit)) = claim {
            let limit = limit.saturating_sub(planned.len() - ended.len());
            if limit > 0 {
                let st = tx.conn().prepare_cached(&claim_sql()).await?;
                let params: Params<'_> = vec![
                    Box::new(jobs.to_vec()),
                    Box::new(limit as i64),
                    Box::new(self.owner()),
                ];
                c.batch_execute(CLAIM_PLAN).await?;
                c.batch_execute(SAVEPOINT).await?;
                let rows = match c.query(&st, &refs(&params)).await {
                    Ok(rows) => rows,
                    Err(e) if is_claim_race(&e) => claim_again(&tx, &st, &params).await?,
                    Err(e) => {
                        rollback(tx).await;
                        return Err(e.into());
                    }
                };
                claimed = claimed_runs(rows)?;
            }
        }
        c.batch_execute("COMMIT").await?;
        tx.close();
        Ok(FlushOutcome {
            statuses,
            errors,
            ended,
            then: claimed,
        })
    }

    /// The batch's ops bound to their statements, in the order they are
    /// sent; an op over the server's limit is in none (its statement would
    /// fail and abort the whole batch: it is refused alone, as SQLite's
    /// store does). With `grouped`, the step ops are grouped: a step op
    /// joins the group opened by an earlier one (written at that place)
    /// unless an op of another kind on its run came in between (so no op
    /// moves past one on its run); otherwise each op is alone. A group of
    /// [`GROUP_MIN`] or more is one [`STEPS_SQL`]; a smaller one is its ops
    /// alone, [`STEP_SQL`] each, at the group's place. Prepared once per
    /// connection (deadpool's statement cache).
    async fn bind_units<'a>(
        &'a self,
        conn: &Object,
        ops: &'a [FlushOp<'a>],
        grouped: bool,
    ) -> Result<Vec<Unit<'a>>> {
        let mut units = Vec::with_capacity(ops.len());
        for (kind, members) in places(ops, grouped, self.inner.max_op_bytes) {
            let Some(kind) = kind.filter(|_| members.len() >= GROUP_MIN) else {
                // Each alone, in order, at the place (where a group would
                // have written them).
                for &i in &members {
                    let (st, params) = self.bind(conn, &ops[i]).await?;
                    units.push(Unit::single(i, st, params));
                }
                continue;
            };
            let (sql, (params, answers)) = match kind {
                Kind::Steps => (STEPS_SQL, bind_steps(ops, &members)?),
                Kind::Completes => (COMPLETES_SQL, self.bind_completes(ops, &members)?),
            };
            units.push(Unit {
                ops: members,
                st: conn.prepare_cached(sql).await?,
                params,
                answers: Some(answers),
            });
        }
        Ok(units)
    }

    /// The parameters of [`COMPLETES_SQL`] for the complete ops `members`
    /// of `ops` (one per run: see [`PgStore::bind_units`]), and per member
    /// its position in the answer (with how many there are).
    fn bind_completes<'a>(
        &'a self,
        ops: &'a [FlushOp<'a>],
        members: &[usize],
    ) -> Result<(Params<'a>, (Vec<usize>, usize))> {
        let n = members.len();
        let mut runs = Vec::with_capacity(n);
        let mut generations = Vec::with_capacity(n);
        let mut outputs = Vec::with_capacity(n);
        let mut progresses = Vec::with_capacity(n);
        for &i in members {
            let FlushOp::Complete {
                run,
                generation,
                output,
                progress,
                at: _,
                step_index: _,
            } = &ops[i]
            else {
                return Err(Error::Internal(format!("flush op {i} is not a completion")));
            };
            runs.push(run.as_str());
            generations.push(*generation);
            outputs.push(text(output));
            progresses.push(text(progress));
        }
        let params: Params<'a> = vec![
            Box::new(runs),
            Box::new(generations),
            Box::new(outputs),
            Box::new(progresses),
            Box::new(self.wake_channel()),
        ];
        Ok((params, ((0..n).collect(), n)))
    }

    /// Binds an op alone to its prepared statement.
    async fn bind<'a>(
        &'a self,
        conn: &Object,
        op: &'a FlushOp<'a>,
    ) -> Result<(Statement, Params<'a>)> {
        Ok(match op {
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
                let started_at = time("startedAt", started_at)?;
                let completed_at = completed_at
                    .as_deref()
                    .map(|t| time("completedAt", t))
                    .transpose()?;
                let p: Params<'a> = vec![
                    Box::new(run.as_str()),
                    Box::new(*generation),
                    Box::new(status == "completed"),
                    Box::new(index + 1),
                    Box::new(text(progress)),
                    Box::new(name.as_str()),
                    Box::new(*index),
                    Box::new(status.as_str()),
                    Box::new(text(output)),
                    Box::new(error.as_deref()),
                    Box::new(stack.as_deref()),
                    Box::new(started_at),
                    Box::new(completed_at),
                ];
                (conn.prepare_cached(STEP_SQL).await?, p)
            }
            FlushOp::Complete {
                run,
                generation,
                output,
                progress,
                at: _,
                step_index: _,
            } => {
                let p: Params<'a> = vec![
                    Box::new(run.as_str()),
                    Box::new(*generation),
                    Box::new(text(output)),
                    Box::new(text(progress)),
                    Box::new(self.wake_channel()),
                ];
                (conn.prepare_cached(COMPLETE_SQL).await?, p)
            }
            FlushOp::Fail {
                run,
                generation,
                error,
                stack,
                progress,
                at: _,
                step_index: _,
            } => {
                let p: Params<'a> = vec![
                    Box::new(run.as_str()),
                    Box::new(*generation),
                    Box::new(error.as_str()),
                    Box::new(stack.as_deref()),
                    Box::new(text(progress)),
                    Box::new(self.wake_channel()),
                ];
                (conn.prepare_cached(FAIL_SQL).await?, p)
            }
            FlushOp::Progress {
                run,
                generation,
                progress,
            } => {
                // `null` progress is stored as the JSON text `null`, as on SQLite.
                let p: Params<'a> = vec![
                    Box::new(run.as_str()),
                    Box::new(*generation),
                    Box::new(text(progress).unwrap_or("null")),
                ];
                (conn.prepare_cached(PROGRESS_SQL).await?, p)
            }
            FlushOp::Release { run, generation } => {
                let p: Params<'a> = vec![
                    Box::new(run.as_str()),
                    Box::new(*generation),
                    Box::new(self.wake_channel()),
                ];
                (conn.prepare_cached(RELEASE_SQL).await?, p)
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
                let p: Params<'a> = vec![
                    Box::new(run.as_str()),
                    Box::new(*generation),
                    Box::new(step.as_deref()),
                    Box::new(level.as_str()),
                    Box::new(message.as_str()),
                    Box::new(text(data)),
                    Box::new(time("at", at)?),
                ];
                (conn.prepare_cached(LOG_SQL).await?, p)
            }
        })
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
            step_index: None,
        };
        // One statement: its own transaction.
        let c = self.client().await?;
        let (st, params) = self.bind(&c, &op).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let mut answer = [op_status(&c.query(&st, &refs).await?)?];
        recheck_lost(&c, std::slice::from_ref(&op), &mut answer).await;
        Ok(answer[0])
    }
}

/// Where a batch's ops are written, in order: each place one op alone
/// (`None`), or a group of ops of one kind (written as one statement when
/// it has [`GROUP_MIN`] ops or more, else each alone, at the group's
/// place). An op over `max_op_bytes` is in none. With `grouped`, an op
/// joins the group of its kind opened by an earlier one unless an op of
/// another kind on its run came in between (so no op moves past one on its
/// run), or, for a completion, its run has one in the group already (a run
/// completes once: the statement would write it once, with either op's
/// values); otherwise it opens a group.
fn places(
    ops: &[FlushOp<'_>],
    grouped: bool,
    max_op_bytes: usize,
) -> Vec<(Option<Kind>, Vec<usize>)> {
    let mut places: Vec<(Option<Kind>, Vec<usize>)> = Vec::with_capacity(ops.len());
    // The open group of each kind (its place), and the runs it may not
    // take an op of.
    let mut open: [Option<usize>; 2] = [None, None];
    let mut touched: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
    for (i, op) in ops.iter().enumerate() {
        if op.value_bytes() > max_op_bytes {
            continue;
        }
        let run = op.lease().0;
        let kind = match op {
            FlushOp::Step { .. } => Some(Kind::Steps),
            FlushOp::Complete { .. } => Some(Kind::Completes),
            _ => None,
        };
        for k in [Kind::Steps, Kind::Completes] {
            if Some(k) != kind {
                touched[k as usize].push(run);
            }
        }
        let Some(k) = kind else {
            places.push((None, vec![i]));
            continue;
        };
        match open[k as usize] {
            Some(at) if grouped && !touched[k as usize].contains(&run) => places[at].1.push(i),
            _ => {
                open[k as usize] = Some(places.len());
                places.push((Some(k), vec![i]));
                touched[k as usize].clear();
            }
        }
        if k == Kind::Completes {
            touched[k as usize].push(run);
        }
    }
    places
}

/// The ops that share a statement when a batch has [`GROUP_MIN`] or more
/// of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Steps = 0,
    Completes = 1,
}

/// One statement of a batch: the ops it writes (one, or a group of step
/// ops), in order.
pub(crate) struct Unit<'a> {
    ops: Vec<usize>,
    st: Statement,
    params: Params<'a>,
    /// For a [`STEPS_SQL`] group: per op, its (run, generation)'s position
    /// in the statement's answer, and how many rows that answer has. `None`
    /// for an op alone (one row: rows changed, the run's status).
    answers: Option<(Vec<usize>, usize)>,
}

impl<'a> Unit<'a> {
    fn single(op: usize, st: Statement, params: Params<'a>) -> Unit<'a> {
        Unit {
            ops: vec![op],
            st,
            params,
            answers: None,
        }
    }

    /// Each of the unit's ops' status, from its statement's rows.
    fn answer(&self, rows: &[Row], answers: &mut [OpStatus]) -> Result<()> {
        let Some((positions, expected)) = &self.answers else {
            let [op] = self.ops[..] else {
                unreachable!("a unit without positions is one op")
            };
            answers[op] = op_status(rows)?;
            return Ok(());
        };
        if rows.len() != *expected {
            return Err(Error::Internal(format!(
                "{} runs of a batch's steps answered {} rows",
                expected,
                rows.len()
            )));
        }
        // Per (run, generation), by position (1-based in the answer).
        let mut by_run = vec![None; *expected];
        for row in rows {
            let at: i64 = row.try_get(0)?;
            let slot = usize::try_from(at - 1)
                .ok()
                .and_then(|i| by_run.get_mut(i))
                .ok_or_else(|| Error::Internal(format!("a step answer at {at}")))?;
            *slot = Some(if row.try_get::<_, bool>(1)? {
                OpStatus::Ok
            } else {
                refused(row.try_get::<_, Option<&str>>(2)?)
            });
        }
        for (&op, &at) in self.ops.iter().zip(positions) {
            answers[op] = by_run[at]
                .ok_or_else(|| Error::Internal(format!("no answer for the steps of run {at}")))?;
        }
        Ok(())
    }
}

/// The parameters of [`STEPS_SQL`] for the step ops `members` of `ops`,
/// and per member its (run, generation)'s position in the answer (with
/// how many there are): the ops reduced as one after another would leave
/// the rows. Per (run, generation): the highest next index of its
/// completed steps, its last progress given. Per (run, generation, name):
/// the last op's row (a run matches with one generation at most, so no
/// step row is written twice by the statement).
fn bind_steps<'a>(
    ops: &'a [FlushOp<'a>],
    members: &[usize],
) -> Result<(Params<'a>, (Vec<usize>, usize))> {
    let n = members.len();
    let mut leases: HashMap<(&str, i64), usize> = HashMap::with_capacity(n);
    let mut runs = Vec::with_capacity(n);
    let mut generations = Vec::with_capacity(n);
    let mut next: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut progresses: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut rows: HashMap<(usize, &str), usize> = HashMap::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut indexes = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut outputs = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut stacks = Vec::with_capacity(n);
    let mut starts = Vec::with_capacity(n);
    let mut ends = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    for &i in members {
        let FlushOp::Step {
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
        } = &ops[i]
        else {
            return Err(Error::Internal(format!("flush op {i} is not a step")));
        };
        let at = *leases
            .entry((run.as_str(), *generation))
            .or_insert_with(|| {
                runs.push(run.as_str());
                generations.push(*generation);
                next.push(None);
                progresses.push(None);
                runs.len() - 1
            });
        positions.push(at);
        if status == "completed" {
            next[at] = Some(next[at].map_or(index + 1, |n: i64| n.max(index + 1)));
        }
        if let Some(p) = text(progress) {
            progresses[at] = Some(p);
        }
        let started_at = time("startedAt", started_at)?;
        let completed_at = completed_at
            .as_deref()
            .map(|t| time("completedAt", t))
            .transpose()?;
        let row = *rows.entry((at, name.as_str())).or_insert_with(|| {
            owners.push(at as i64 + 1);
            names.push(name.as_str());
            indexes.push(0);
            statuses.push("");
            outputs.push(None);
            errors.push(None);
            stacks.push(None);
            starts.push(started_at);
            ends.push(None);
            names.len() - 1
        });
        indexes[row] = *index;
        statuses[row] = status.as_str();
        outputs[row] = text(output);
        errors[row] = error.as_deref();
        stacks[row] = stack.as_deref();
        starts[row] = started_at;
        ends[row] = completed_at;
    }
    let count = runs.len();
    let params: Params<'a> = vec![
        Box::new(runs),
        Box::new(generations),
        Box::new(next),
        Box::new(progresses),
        Box::new(owners),
        Box::new(names),
        Box::new(indexes),
        Box::new(statuses),
        Box::new(outputs),
        Box::new(errors),
        Box::new(stacks),
        Box::new(starts),
        Box::new(ends),
    ];
    Ok((params, (positions, count)))
}

/// The parameters of a bound op as tokio-postgres takes them.
fn refs<'a>(params: &'a Params<'_>) -> Vec<&'a (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// True when reply `i` is an op that the server refused (a database error,
/// not one of the database as a whole): the batch is then applied again
/// with each op isolated ([`PgStore::flush_isolated`]).
fn refused_alone(e: &tokio_postgres::Error, i: usize, first_op: usize, bound: &[Unit<'_>]) -> bool {
    use tokio_postgres::error::SqlState;
    let ops = bound.len();
    let Some(db) = e.as_db_error() else {
        return false;
    };
    if session_ended(e) {
        return false;
    }
    let code = db.code();
    // (what `Error::from` maps to a failure of the database as a whole, and
    // the connection and operator classes: a terminated backend)
    let whole = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::DISK_FULL,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ]
    .contains(code)
        || code.code().starts_with("08")
        || code.code().starts_with("57");
    (first_op..first_op + ops).contains(&i) && !whole
}

/// Ends a transaction that failed; the connection goes back to the pool only
/// if the rollback went through.
async fn rollback(tx: OpenTx) {
    if tx.client().batch_execute("ROLLBACK").await.is_ok() {
        tx.close();
    }
}

/// After a claim lost a race: rolls back to the savepoint and claims again,
/// up to [`CLAIM_ATTEMPTS`] in all; nothing when every attempt lost (heavy
/// contention on the keys: the next wake-up or poll tries again).
async fn claim_again(
    tx: &OpenTx,
    st: &Statement,
    params: &Params<'_>,
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    for _ in 1..CLAIM_ATTEMPTS {
        let mut p = Pipeline::new(tx.client());
        p.command(ROLLBACK_TO_SAVEPOINT);
        p.query(st, params);
        p.send().await;
        let mut replies = p.finish().await.into_iter();
        let (Some(rolled_back), Some(claimed)) = (replies.next(), replies.next()) else {
            unreachable!("two piped statements, two replies")
        };
        rolled_back?;
        match claimed {
            Err(e) if is_claim_race(&e) => continue,
            other => return other,
        }
    }
    tx.client().batch_execute(ROLLBACK_TO_SAVEPOINT).await?;
    Ok(Vec::new())
}

/// An op's status from its statement's row: (rows changed, the run's status).
fn op_status(rows: &[Row]) -> Result<OpStatus> {
    let [row] = rows else {
        return Err(Error::Internal(format!(
            "a flush op answered {} rows instead of one",
            rows.len()
        )));
    };
    row_status(row)
}

/// An op's status from its row: (rows changed, the run's status).
fn row_status(row: &Row) -> Result<OpStatus> {
    let changed: i64 = row.try_get(0)?;
    if changed > 0 {
        return Ok(OpStatus::Ok);
    }
    Ok(refused(row.try_get::<_, Option<&str>>(1)?))
}

/// The runs among `runs` that are cancelled, read by a statement of its own.
///
/// Why a statement of its own: under READ COMMITTED a statement reads from
/// the snapshot taken when it started, but its UPDATE checks the fence again
/// on the row's latest version once the row lock it waited for is free. A
/// cancel that committed during that wait makes the fence refuse while the
/// status read by the same statement still says `running`, which would tell
/// the refusal as a lost lease. A later statement's snapshot sees the cancel.
/// Only refused ops come here: a batch that wrote everything pays nothing.
pub(crate) async fn cancelled_among(c: &Client, runs: &[&str]) -> Result<HashSet<String>> {
    let rows = c
        .query(
            "SELECT id FROM runs WHERE id = ANY($1) AND status = 'cancelled'",
            &[&runs],
        )
        .await?;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0).map_err(Error::from))
        .collect()
}

/// Ops answered [`OpStatus::Lost`] whose run is cancelled after all (see
/// [`cancelled_among`]) are answered [`OpStatus::Cancelled`]. If that read
/// fails, the answers stay as they are: the batch may be committed already,
/// and either answer stops the execution (only the reason it is given
/// differs), so the failure must not turn into the batch's.
async fn recheck_lost(c: &Client, ops: &[FlushOp<'_>], answers: &mut [OpStatus]) {
    let lost: Vec<&str> = ops
        .iter()
        .zip(answers.iter())
        .filter(|(_, a)| **a == OpStatus::Lost)
        .map(|(op, _)| op.lease().0)
        .collect();
    if lost.is_empty() {
        return;
    }
    let Ok(cancelled) = cancelled_among(c, &lost).await else {
        return;
    };
    for (op, a) in ops.iter().zip(answers.iter_mut()) {
        if *a == OpStatus::Lost && cancelled.contains(op.lease().0) {
            *a = OpStatus::Cancelled;
        }
    }
}

/// The status of an op its fence refused, from its run's status (as the
/// op's statement read it: see [`cancelled_among`] for a `Lost` answer).
fn refused(status: Option<&str>) -> OpStatus {
    match status {
        Some("cancelled") => OpStatus::Cancelled,
        _ => OpStatus::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(run: &str) -> FlushOp<'static> {
        FlushOp::Complete {
            run: run.into(),
            generation: 1,
            output: None,
            progress: None,
            at: String::new(),
            step_index: None,
        }
    }

    fn step(run: &str) -> FlushOp<'static> {
        FlushOp::Step {
            run: run.into(),
            generation: 1,
            name: "s".into(),
            index: 0,
            status: "completed".into(),
            output: None,
            error: None,
            stack: None,
            started_at: String::new(),
            completed_at: None,
            progress: None,
        }
    }

    /// Completions group like steps (no op moves past one on its run), and a
    /// run completed twice in a batch is not in one group twice.
    #[test]
    fn completions_group_without_moving_past_their_runs_ops() {
        use Kind::*;
        let ops = [
            complete("a"),
            step("b"),
            complete("c"),
            step("d"),
            complete("b"),
            complete("a"),
            complete("d"),
            complete("e"),
            FlushOp::Release {
                run: "f".into(),
                generation: 1,
            },
            complete("f"),
            complete("g"),
            complete("g"),
        ];
        assert_eq!(
            places(&ops, true, usize::MAX),
            [
                (Some(Completes), vec![0, 2]),
                (Some(Steps), vec![1, 3]),
                // (d's step is at an earlier place)
                (Some(Completes), vec![4, 5, 6, 7]),
                (None, vec![8]),
                (Some(Completes), vec![9, 10]),
                (Some(Completes), vec![11]),
            ]
        );
        // Ungrouped: each op its own place.
        let alone: Vec<_> = places(&ops, false, usize::MAX)
            .into_iter()
            .map(|p| p.1)
            .collect();
        assert_eq!(alone, (0..ops.len()).map(|i| vec![i]).collect::<Vec<_>>());
    }

    #[test]
    fn the_claims_preludes_are_its_plan_setting_and_savepoint() {
        assert_eq!(THEN_CLAIM, format!("{CLAIM_PLAN}; {SAVEPOINT}"));
        assert_eq!(
            GROUP_THEN_CLAIM,
            format!("SET LOCAL plan_cache_mode = DEFAULT; {THEN_CLAIM}")
        );
    }
}
