//! Claiming pending runs, heartbeats and stale recovery on PostgreSQL.
//!
//! A claim is one statement: the oldest pending runs of the given jobs whose
//! concurrency key has no running run and no older pending run are locked
//! `FOR UPDATE SKIP LOCKED` (two claimers never wait for each other, nor
//! take the same run) and become `running` with `lease_generation + 1`,
//! `heartbeat_at = now()` of the database.
//!
//! ## Concurrency keys under READ COMMITTED
//!
//! The key checks (`NOT EXISTS` a running run, or an older pending run, of
//! the key) read the statement's snapshot, and `FOR UPDATE` re-checks only
//! the locked row itself. So two claims in flight can each see a different
//! run of one key as "the oldest pending, nothing running":
//!
//! 1. claim B starts; run r2 (key K) is the only pending run of K it sees;
//! 2. a trigger whose transaction began earlier commits r1 (key K, older
//!    `created_at`);
//! 3. claim A starts while B has not committed: it sees r1 as the oldest
//!    pending run of K and r2 still pending, nothing running;
//! 4. A takes r1, B takes r2: two running runs of K.
//!
//! (A cancel then retry of the oldest run between two claims does the same.)
//! The partial unique index `runs_one_running_per_key` makes step 4
//! impossible: A's update of r1 waits for B's transaction and then fails
//! with a unique violation, which [`PgStore::claim`] answers by claiming
//! again (a new statement sees B's running run and skips K). So the database
//! itself, not the timing, guarantees one running run per key.
//! `pg::tests::claims` replays this interleaving step by step, with and
//! without the index.

use std::time::Duration;

#[cfg(test)]
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::flush::cancelled_among;
use super::pipe::{take_err, take_rows, Pipeline};

use super::query::{run_object, CREATED_COLUMN, GENERATION_COLUMN, RUN_COLUMNS};
use super::{is_claim_race, PgStore};
use crate::error::{Error, Result};
use crate::store::json::{array, push_str};
use crate::store::{ClaimedRun, HeartbeatOutcome};

/// The unique index that allows one running run per concurrency key.
pub(crate) const RUNNING_KEY_INDEX: &str = "runs_one_running_per_key";

/// Claims that lost a race to another claim are retried this many times.
pub(crate) const CLAIM_ATTEMPTS: usize = 8;

/// Set (`SET LOCAL`) in the claim's transaction before the claim statement:
/// the claim must walk `runs_pending_order` in claim order and stop after
/// the runs it takes. Without statistics (a table not analyzed yet, e.g. a
/// large batch just triggered into a new schema) the planner misjudged how
/// many runs are pending and chose to filter every pending run, then sort
/// (40 ms per claim with 6,000 pending instead of 0.2 ms). With sorting
/// priced out, the index order is the only plan left. Only the claim's
/// transaction sees the setting.
pub(crate) const CLAIM_PLAN: &str = "SET LOCAL enable_sort = off";

/// The claim statement: `$1` jobs, `$2` limit, `$3` lease owner.
///
/// "No older pending run of the key" is asked as "this run is the first
/// pending run of its key" (`ORDER BY … LIMIT 1`), which the planner answers
/// with one probe of `runs_pending_key_order` (schema v3). Asked as
/// `NOT EXISTS (… older …)`, it chose a sequential scan per candidate on a
/// table never vacuumed yet (it expects an early match, and there is none
/// for a key's first run): `tests::claims` reads the plan.
pub(crate) const CLAIM_SQL: &str = "WITH cand AS ( \
       SELECT id FROM runs AS r WHERE status = 'pending' AND job_name = ANY($1) \
       AND (concurrency_key IS NULL OR ( \
         NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.status = 'running' \
                     AND x.concurrency_key = r.concurrency_key) \
         AND r.id = (SELECT y.id FROM runs AS y WHERE y.status = 'pending' \
                     AND y.concurrency_key = r.concurrency_key \
                     ORDER BY y.created_at, y.id LIMIT 1))) \
       ORDER BY created_at, id LIMIT $2 \
       FOR UPDATE SKIP LOCKED) \
     UPDATE runs SET status = 'running', lease_generation = lease_generation + 1, \
       lease_owner = $3, heartbeat_at = now(), started_at = COALESCE(started_at, now()), \
       updated_at = now() \
     FROM cand WHERE runs.id = cand.id AND runs.status = 'pending'";

impl PgStore {
    /// True if some pending run of `jobs` exists (a cheap read).
    pub async fn has_pending(&self, jobs: &[String]) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'pending' AND job_name = ANY($1))",
            )
            .await?;
        Ok(c.query_one(&st, &[&jobs]).await?.try_get(0)?)
    }

    /// Claims up to `limit` runs of `jobs` for this worker, oldest first.
    /// One statement (with [`CLAIM_PLAN`] in its own transaction, piped: one
    /// round trip, the claimed runs' completed steps included); a lost race
    /// fails it whole and it is tried again.
    pub async fn claim(&self, jobs: &[String], limit: usize) -> Result<Vec<ClaimedRun>> {
        if jobs.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let st = c.prepare_cached(&claim_sql()).await?;
        let (limit, owner) = (limit as i64, self.owner());
        let params: [&(dyn ToSql + Sync); 3] = [&jobs, &limit, &owner];
        for _ in 0..CLAIM_ATTEMPTS {
            // One round trip: its plan setting needs a transaction.
            let mut p = Pipeline::new(&c);
            p.command("BEGIN");
            p.command(CLAIM_PLAN);
            let q = p.query_refs(&st, &params);
            let sent = p.send().await;
            p.command(if sent { "COMMIT" } else { "ROLLBACK" });
            let mut replies = p.finish().await;
            match replies.iter().position(Result::is_err) {
                Some(i) => {
                    let e = take_err(&mut replies, i);
                    if i != q || !is_claim_race(&e) {
                        return Err(e.into());
                    }
                }
                None => return claimed_runs(take_rows(&mut replies, q)),
            }
        }
        // Lost every attempt (heavy contention on the keys): nothing now;
        // the next wake-up or poll tries again.
        Ok(Vec::new())
    }

    /// Renews the heartbeat (database clock) of runs this worker executes;
    /// reports the ones it lost.
    pub async fn heartbeat(&self, runs: &[(String, i64)]) -> Result<Vec<HeartbeatOutcome>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        // One statement (its own transaction) per run, not one transaction
        // for all, piped: a heartbeat then never holds a run's row lock while it
        // waits for another's, so it cannot deadlock with a write batch that
        // locks the same runs in another order (tests::semantics).
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH upd AS (UPDATE runs SET heartbeat_at = now() \
                   WHERE id = $1 AND lease_generation = $2 AND status = 'running' RETURNING 1) \
                 SELECT (SELECT count(*) FROM upd), (SELECT status FROM runs WHERE id = $1)",
            )
            .await?;
        // Piped: one round trip for all of them.
        let params: Vec<[&(dyn ToSql + Sync); 2]> = runs
            .iter()
            .map(|(id, g)| [id as &(dyn ToSql + Sync), g as &(dyn ToSql + Sync)])
            .collect();
        let mut p = Pipeline::new(&c);
        for ps in &params {
            p.query_refs(&st, ps);
        }
        p.send().await;
        let mut lost = Vec::new();
        for ((id, _), reply) in runs.iter().zip(p.finish().await) {
            let rows = reply?;
            let row = rows
                .first()
                .ok_or_else(|| Error::Internal("a heartbeat answered no row".into()))?;
            let changed: i64 = row.try_get(0)?;
            if changed == 0 {
                lost.push(match row.try_get::<_, Option<&str>>(1)? {
                    Some("cancelled") => HeartbeatOutcome::Cancelled(id.clone()),
                    _ => HeartbeatOutcome::Lost(id.clone()),
                });
            }
        }
        // A cancel that committed while a beat waited for the row reads as
        // `running` in that beat's snapshot (see `cancelled_among`).
        let unsure: Vec<&str> = lost
            .iter()
            .filter_map(|o| match o {
                HeartbeatOutcome::Lost(id) => Some(id.as_str()),
                HeartbeatOutcome::Cancelled(_) => None,
            })
            .collect();
        if unsure.is_empty() {
            return Ok(lost);
        }
        // (If that read fails, the beat's answers stand: either one stops the
        // execution, only its reason differs.)
        let cancelled = cancelled_among(&c, &unsure).await.unwrap_or_default();
        for o in &mut lost {
            if let HeartbeatOutcome::Lost(id) = o {
                if cancelled.contains(id.as_str()) {
                    *o = HeartbeatOutcome::Cancelled(std::mem::take(id));
                }
            }
        }
        Ok(lost)
    }

    /// Returns `running` runs of `jobs` whose heartbeat is older than
    /// `threshold` on the database clock to `pending`; returns how many.
    pub async fn recover_stale(&self, jobs: &[String], threshold: Duration) -> Result<usize> {
        self.recover_stale_except(jobs, threshold, &[]).await
    }

    /// Like [`PgStore::recover_stale`], but leaves alone the runs in `keep`
    /// (`(id, lease_generation)` of the runs the calling worker executes now).
    pub async fn recover_stale_except(
        &self,
        jobs: &[String],
        threshold: Duration,
        keep: &[(String, i64)],
    ) -> Result<usize> {
        self.recover_older_than_ms(jobs, millis(threshold)?, keep)
            .await
    }

    /// Recovery with the threshold in milliseconds; negative counts every
    /// heartbeat as stale (the contract suite's "another worker's recovery").
    pub(crate) async fn recover_older_than_ms(
        &self,
        jobs: &[String],
        threshold_ms: i64,
        keep: &[(String, i64)],
    ) -> Result<usize> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let keep_ids: Vec<&str> = keep.iter().map(|(id, _)| id.as_str()).collect();
        let keep_gens: Vec<i64> = keep.iter().map(|(_, g)| *g).collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "UPDATE runs SET status = 'pending', lease_owner = NULL, updated_at = now() \
                 WHERE status = 'running' AND job_name = ANY($1) \
                 AND heartbeat_at < now() - $2::bigint * interval '1 millisecond' \
                 AND (id, lease_generation) NOT IN \
                   (SELECT * FROM unnest($3::text[], $4::bigint[])) \
                 RETURNING job_name",
            )
            .await?;
        let rows = tx
            .query(&st, &[&jobs, &threshold_ms, &keep_ids, &keep_gens])
            .await?;
        if !rows.is_empty() {
            let mut woken: Vec<&str> = rows
                .iter()
                .map(|r| r.try_get::<_, &str>(0))
                .collect::<std::result::Result<_, _>>()?;
            woken.sort_unstable();
            woken.dedup();
            tx.execute(
                "SELECT pg_notify($1, job) FROM unnest($2::text[]) AS j(job)",
                &[&self.wake_channel(), &woken],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// True if a `running` run of `jobs` has a heartbeat older than
    /// `threshold` on the database clock (read only).
    pub async fn has_stale(&self, jobs: &[String], threshold: Duration) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'running' \
                 AND job_name = ANY($1) \
                 AND heartbeat_at < now() - $2::bigint * interval '1 millisecond')",
            )
            .await?;
        Ok(c.query_one(&st, &[&jobs, &millis(threshold)?])
            .await?
            .try_get(0)?)
    }
}

fn millis(d: Duration) -> Result<i64> {
    i64::try_from(d.as_millis())
        .map_err(|_| Error::Validation(format!("stale threshold {d:?} is too long")))
}

/// The claimed runs' completed steps, in step order, as three arrays
/// (names, indexes, outputs as JSON text), read only for a run that has
/// one (`current_step_index > 0`): a fresh run costs no scan of `steps`.
const CLAIM_STEPS: &str = "\
    CASE WHEN runs.current_step_index > 0 THEN ARRAY(SELECT s.name FROM steps AS s \
      WHERE s.run_id = runs.id AND s.status = 'completed' ORDER BY s.\"index\", s.id) END, \
    CASE WHEN runs.current_step_index > 0 THEN ARRAY(SELECT s.\"index\" FROM steps AS s \
      WHERE s.run_id = runs.id AND s.status = 'completed' ORDER BY s.\"index\", s.id) END, \
    CASE WHEN runs.current_step_index > 0 THEN ARRAY(SELECT s.output::text FROM steps AS s \
      WHERE s.run_id = runs.id AND s.status = 'completed' ORDER BY s.\"index\", s.id) END";

/// Index of the first [`CLAIM_STEPS`] column in a claimed row.
const STEPS_COLUMN: usize = 20;

/// The claim statement with what it returns: `$1` jobs, `$2` limit, `$3` lease owner.
pub(crate) fn claim_sql() -> String {
    format!("{CLAIM_SQL} RETURNING {RUN_COLUMNS}, {CLAIM_STEPS}")
}

/// Runs the claim statement once (tests replay races with it).
#[cfg(test)]
pub(crate) async fn claim_statement(
    tx: &Transaction<'_>,
    jobs: &[String],
    limit: usize,
    owner: &str,
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    let st = tx.prepare_cached(&claim_sql()).await?;
    tx.query(&st, &[&jobs, &(limit as i64), &owner]).await
}

/// The claimed rows (of [`claim_sql`]) with their completed steps, in claim order.
pub(crate) fn claimed_runs(mut rows: Vec<Row>) -> Result<Vec<ClaimedRun>> {
    // RETURNING has no order: claim order is (created_at, id).
    let mut keyed = Vec::with_capacity(rows.len());
    for r in rows.drain(..) {
        let at: std::time::SystemTime = r.try_get(CREATED_COLUMN)?;
        let id: String = r.try_get(0)?;
        keyed.push((at, id, r));
    }
    keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut out = Vec::with_capacity(keyed.len());
    for (_, id, r) in &keyed {
        let names: Option<Vec<&str>> = r.try_get(STEPS_COLUMN)?;
        let indexes: Option<Vec<i64>> = r.try_get(STEPS_COLUMN + 1)?;
        let outputs: Option<Vec<Option<&str>>> = r.try_get(STEPS_COLUMN + 2)?;
        let (names, indexes, outputs) = (
            names.unwrap_or_default(),
            indexes.unwrap_or_default(),
            outputs.unwrap_or_default(),
        );
        if indexes.len() != names.len() || outputs.len() != names.len() {
            return Err(Error::Internal(format!(
                "claimed run {id}: step arrays of different lengths"
            )));
        }
        let mut steps = Vec::with_capacity(names.len());
        for ((name, index), output) in names.iter().zip(&indexes).zip(&outputs) {
            let mut t = String::from("[");
            push_str(&mut t, Some(name));
            t.push(',');
            t.push_str(&index.to_string());
            t.push(',');
            t.push_str(output.unwrap_or("null"));
            t.push(']');
            steps.push(t);
        }
        let mut obj = run_object(r)?;
        obj.raw("steps", Some(&array(steps)));
        out.push(ClaimedRun {
            id: id.clone(),
            job_name: r.try_get(1)?,
            generation: r.try_get(GENERATION_COLUMN)?,
            json: obj.finish(),
            inserted: false,
        });
    }
    Ok(out)
}
