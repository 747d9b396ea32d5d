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

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::query::{run_object, CREATED_COLUMN, GENERATION_COLUMN, RUN_COLUMNS, STEP_INDEX_COLUMN};
use super::{is_claim_race, PgStore};
use crate::error::{Error, Result};
use crate::store::json::{array, push_str};
use crate::store::{ClaimedRun, HeartbeatOutcome};

/// The unique index that allows one running run per concurrency key.
pub(crate) const RUNNING_KEY_INDEX: &str = "runs_one_running_per_key";

/// Claims that lost a race to another claim are retried this many times.
const CLAIM_ATTEMPTS: usize = 8;

/// The claim statement: `$1` jobs, `$2` limit, `$3` lease owner.
pub(crate) const CLAIM_SQL: &str = "WITH cand AS ( \
       SELECT id FROM runs AS r WHERE status = 'pending' AND job_name = ANY($1) \
       AND (concurrency_key IS NULL OR ( \
         NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.status = 'running' \
                     AND x.concurrency_key = r.concurrency_key) \
         AND NOT EXISTS (SELECT 1 FROM runs AS y WHERE y.status = 'pending' \
                     AND y.concurrency_key = r.concurrency_key \
                     AND (y.created_at, y.id) < (r.created_at, r.id)))) \
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
    pub async fn claim(&self, jobs: &[String], limit: usize) -> Result<Vec<ClaimedRun>> {
        if jobs.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Its own transaction: a lost race rolls it back whole (no savepoint).
            let tx = c.transaction().await?;
            match claim_statement(&tx, jobs, limit, self.owner()).await {
                Ok(rows) => {
                    let out = claimed_runs(&tx, rows).await?;
                    tx.commit().await?;
                    return Ok(out);
                }
                Err(e) if is_claim_race(&e) => {
                    tx.rollback().await?;
                    if attempt >= CLAIM_ATTEMPTS {
                        // Lost every attempt (heavy contention on the keys):
                        // nothing now; the next wake-up or poll tries again.
                        return Ok(Vec::new());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Claims inside an open transaction, each attempt in a savepoint so a
    /// lost race (see the module docs) rolls back only the claim.
    pub(crate) async fn claim_in(
        &self,
        tx: &mut Transaction<'_>,
        jobs: &[String],
        limit: usize,
    ) -> Result<Vec<ClaimedRun>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sp = tx.savepoint("durably_claim").await?;
            match claim_statement(&sp, jobs, limit, self.owner()).await {
                Ok(rows) => {
                    let out = claimed_runs(&sp, rows).await?;
                    sp.commit().await?;
                    return Ok(out);
                }
                Err(e) if is_claim_race(&e) && attempt < CLAIM_ATTEMPTS => {
                    sp.rollback().await?;
                }
                Err(e) if is_claim_race(&e) => {
                    // Lost every attempt (heavy contention on the keys): claim
                    // nothing now; the next wake-up or poll tries again.
                    sp.rollback().await?;
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Renews the heartbeat (database clock) of runs this worker executes;
    /// reports the ones it lost.
    pub async fn heartbeat(&self, runs: &[(String, i64)]) -> Result<Vec<HeartbeatOutcome>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        // One statement (its own transaction) per run, not one transaction
        // for all: a heartbeat then never holds a run's row lock while it
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
        let mut lost = Vec::new();
        for (id, generation) in runs {
            let row = c.query_one(&st, &[id, generation]).await?;
            let changed: i64 = row.try_get(0)?;
            if changed == 0 {
                lost.push(match row.try_get::<_, Option<&str>>(1)? {
                    Some("cancelled") => HeartbeatOutcome::Cancelled(id.clone()),
                    _ => HeartbeatOutcome::Lost(id.clone()),
                });
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

/// Runs the claim statement once.
pub(crate) async fn claim_statement(
    tx: &Transaction<'_>,
    jobs: &[String],
    limit: usize,
    owner: &str,
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    let st = tx
        .prepare_cached(&format!("{CLAIM_SQL} RETURNING {RUN_COLUMNS}"))
        .await?;
    tx.query(&st, &[&jobs, &(limit as i64), &owner]).await
}

/// The claimed rows with their completed steps, in claim order.
async fn claimed_runs(tx: &Transaction<'_>, mut rows: Vec<Row>) -> Result<Vec<ClaimedRun>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // RETURNING has no order: claim order is (created_at, id).
    let mut keyed = Vec::with_capacity(rows.len());
    for r in rows.drain(..) {
        let at: std::time::SystemTime = r.try_get(CREATED_COLUMN)?;
        let id: String = r.try_get(0)?;
        keyed.push((at, id, r));
    }
    keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    // Only a run with a completed step has current_step_index > 0: a batch
    // of fresh runs needs no second round trip.
    let ids: Vec<&str> = keyed
        .iter()
        .filter(|(_, _, r)| r.get::<_, i64>(STEP_INDEX_COLUMN) > 0)
        .map(|(_, id, _)| id.as_str())
        .collect();
    let step_rows = if ids.is_empty() {
        Vec::new()
    } else {
        let st = tx
            .prepare_cached(
                "SELECT run_id, name, \"index\", output::text FROM steps \
                 WHERE run_id = ANY($1) AND status = 'completed' ORDER BY run_id, \"index\"",
            )
            .await?;
        tx.query(&st, &[&ids]).await?
    };
    let mut out = Vec::with_capacity(keyed.len());
    for (_, id, r) in &keyed {
        let mut steps = Vec::new();
        for s in step_rows
            .iter()
            .filter(|s| s.get::<_, &str>(0) == id.as_str())
        {
            let mut t = String::from("[");
            push_str(&mut t, Some(s.try_get::<_, &str>(1)?));
            t.push(',');
            t.push_str(&s.try_get::<_, i64>(2)?.to_string());
            t.push(',');
            t.push_str(s.try_get::<_, Option<&str>>(3)?.unwrap_or("null"));
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
        });
    }
    Ok(out)
}
