//! Claiming pending runs, heartbeats and stale recovery: the lease protocol.
//!
//! A claim is one write transaction: the oldest pending runs of registered
//! jobs whose concurrency key has no running run (and no older pending run)
//! become `running` with `lease_generation + 1`. Every later write of the
//! executing worker names that generation; a reclaimed run has a new one, so
//! the old worker's writes match no row.

use std::collections::HashSet;

use rusqlite::{Connection, ToSql};

use super::flush::lease_fence;
use super::json::array;
use super::json::JsonObject;
use super::query::in_list;
use super::{RunStatus, SqliteStore};
use crate::error::Result;

/// A run this worker now owns, with its completed steps, ready for JS.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// Run id.
    pub id: String,
    /// Its job.
    pub job_name: String,
    /// The lease generation every write must name.
    pub generation: i64,
    /// What executing the run needs, as JSON: `{id, jobName, input, labels,
    /// progress, leaseGeneration, startedAt, steps: [[name, index, output], …]}`
    /// (not the whole run record: a one-step run is cheap enough that reading,
    /// sending and parsing the other dozen fields was ~2 % of its CPU).
    /// Empty for a run its trigger inserted already claimed (see `inserted`).
    pub json: String,
    /// Inserted already claimed by the trigger that created it: it has no
    /// steps, no progress, generation 1 and started when it was created, and
    /// the trigger's caller has its job, input and labels, so no JSON.
    pub inserted: bool,
}

/// The lease generation of a run's first claim (a new run has 0).
pub(super) const FIRST_GENERATION: i64 = 1;

/// A heartbeat that found the run no longer ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The run was cancelled (by any process).
    Cancelled(String),
    /// Another worker took the run over, or it was deleted.
    Lost(String),
}

impl SqliteStore {
    /// True if some pending run of `jobs` could be claimed now (a read, no
    /// lock): the claim's own query, so a worker whose every candidate is
    /// held back by its concurrency key does not take the write lock for
    /// nothing (with several processes on one file, those empty claims were
    /// most of the writes).
    pub fn has_pending(&self, conn: Option<&Connection>, jobs: &[String]) -> Result<bool> {
        let run = |c: &Connection| -> Result<bool> { Ok(!candidates(c, jobs, 1)?.is_empty()) };
        match conn {
            Some(c) => run(c),
            None => self.read(run),
        }
    }

    /// Claims up to `limit` runs of `jobs` for this worker.
    pub fn claim(&self, jobs: &[String], limit: usize) -> Result<Vec<ClaimedRun>> {
        if jobs.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.write(|c| self.claim_in(c, jobs, limit))
    }

    /// Claims inside an open write transaction (see [`SqliteStore::claim`]).
    pub(crate) fn claim_in(
        &self,
        c: &Connection,
        jobs: &[String],
        limit: usize,
    ) -> Result<Vec<ClaimedRun>> {
        let ids = candidates_in(c, jobs, limit, Prune::Yes)?;
        let now = self.now();
        // UPDATE then a primary-key read rather than UPDATE … RETURNING,
        // which materializes its rows in a temporary table first.
        let mut upd = c.prepare_cached(
            "UPDATE runs SET status = 'running', lease_generation = lease_generation + 1, \
             lease_owner = ?2, heartbeat_at = ?3, started_at = COALESCE(started_at, ?3), \
             updated_at = ?3 WHERE id = ?1 AND status = 'pending'",
        )?;
        let mut read = c.prepare_cached(
            "SELECT job_name, input, labels, progress, lease_generation, started_at, \
             concurrency_key FROM runs WHERE id = ?1",
        )?;
        // A key whose last pending run this claim took leaves `pending_keys`
        // at once: with a key per run (or many short-lived keys) the table
        // would otherwise keep every key ever used until a key-by-key search
        // found it dead, and that search reads the whole table.
        let mut unkey = c.prepare_cached(
            "DELETE FROM pending_keys WHERE concurrency_key = ?1 AND NOT EXISTS ( \
               SELECT 1 FROM runs WHERE status = 'pending' AND concurrency_key = ?1)",
        )?;
        let mut steps = c.prepare_cached(
            "SELECT name, \"index\", output FROM steps WHERE run_id = ?1 AND status = 'completed' \
             ORDER BY \"index\"",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if upd.execute((&id, &self.owner, &now))? == 0 {
                continue; // selected above in this transaction, so never happens
            }
            let (mut obj, job_name, generation, key) = read.query_row([&id], |r| {
                let job_name = r.get::<_, String>(0)?;
                let generation = r.get::<_, i64>(4)?;
                let mut o = JsonObject::new();
                o.str("id", Some(&id))
                    .str("jobName", Some(&job_name))
                    .raw("input", Some(&r.get::<_, String>(1)?))
                    .raw("labels", Some(&r.get::<_, String>(2)?))
                    .raw("progress", r.get::<_, Option<String>>(3)?.as_deref())
                    .int("leaseGeneration", generation)
                    .str("startedAt", r.get::<_, Option<String>>(5)?.as_deref());
                Ok((o, job_name, generation, r.get::<_, Option<String>>(6)?))
            })?;
            if let Some(key) = key {
                unkey.execute([key])?;
            }
            // A first claim (generation 1: never `running` before) has no
            // steps: only a fenced write of a running run stores one.
            let done = if generation == FIRST_GENERATION {
                Vec::new()
            } else {
                let rows = steps.query_map([&id], |r| {
                    let mut s = String::from("[");
                    super::json::push_str(&mut s, Some(&r.get::<_, String>(0)?));
                    s.push(',');
                    s.push_str(&r.get::<_, i64>(1)?.to_string());
                    s.push(',');
                    s.push_str(r.get::<_, Option<String>>(2)?.as_deref().unwrap_or("null"));
                    s.push(']');
                    Ok(s)
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            obj.raw("steps", Some(&array(done)));
            out.push(ClaimedRun {
                id,
                job_name,
                generation,
                json: obj.finish(),
                inserted: false,
            });
        }
        Ok(out)
    }

    /// Renews the heartbeat of runs this worker executes; reports the ones it lost.
    pub fn heartbeat(&self, runs: &[(String, i64)]) -> Result<Vec<HeartbeatOutcome>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        self.write(|c| {
            let mut st = c.prepare_cached(concat!(
                "UPDATE runs SET heartbeat_at = ?3 WHERE ",
                lease_fence!()
            ))?;
            let mut lost = Vec::new();
            for (id, generation) in runs {
                if st.execute((id, generation, &now))? == 0 {
                    lost.push(match lease_status(c, id)? {
                        Some(RunStatus::Cancelled) => HeartbeatOutcome::Cancelled(id.clone()),
                        _ => HeartbeatOutcome::Lost(id.clone()),
                    });
                }
            }
            Ok(lost)
        })
    }

    /// Returns `running` runs of `jobs` whose heartbeat is older than
    /// `stale_before` to `pending`; returns how many.
    pub fn recover_stale(&self, jobs: &[String], stale_before: &str) -> Result<usize> {
        self.recover_stale_except(jobs, stale_before, &[])
    }

    /// Like [`SqliteStore::recover_stale`], but leaves alone the runs in `keep`
    /// (`(id, lease_generation)` of the runs the calling worker is executing
    /// right now): they are alive, only their heartbeat is late (e.g. another
    /// process held the write lock for longer than the stale threshold), and
    /// reclaiming them would execute their step in flight a second time.
    pub fn recover_stale_except(
        &self,
        jobs: &[String],
        stale_before: &str,
        keep: &[(String, i64)],
    ) -> Result<usize> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let sql = recover_stale_sql(jobs.len(), keep.len());
        self.write(|c| {
            let mut params: Vec<&dyn ToSql> = vec![&now];
            for _ in 0..2 {
                params.push(&stale_before);
                params.extend(jobs.iter().map(|s| s as &dyn ToSql));
            }
            for (id, generation) in keep {
                params.push(id);
                params.push(generation);
            }
            let mut st = c.prepare_cached(&sql)?;
            let keys = st.query_map(params.as_slice(), |r| r.get::<_, Option<String>>(0))?;
            let mut n = 0;
            for key in keys {
                n += 1;
                if let Some(key) = key? {
                    note_pending_key(c, &key)?;
                }
            }
            Ok(n)
        })
    }

    /// True if a `running` run of `jobs` has a heartbeat older than `stale_before` (read only).
    pub fn has_stale(
        &self,
        conn: Option<&Connection>,
        jobs: &[String],
        stale_before: &str,
    ) -> Result<bool> {
        let sql = has_stale_sql(jobs.len());
        let run = |c: &Connection| -> Result<bool> {
            let mut params: Vec<&dyn ToSql> = Vec::with_capacity(2 * jobs.len() + 2);
            for _ in 0..2 {
                params.push(&stale_before);
                params.extend(jobs.iter().map(|s| s as &dyn ToSql));
            }
            Ok(c.prepare_cached(&sql)?
                .query_row(params.as_slice(), |r| r.get(0))?)
        };
        match conn {
            Some(c) => run(c),
            None => self.read(run),
        }
    }
}

/// The running runs of `jobs` whose heartbeat is older than a bound: a
/// `?` for the bound, then a `?` per job, twice (once for the runs without a
/// concurrency key, once for those with one: each half walks one of the
/// partial indexes of active runs, `runs_active_free` and `runs_active_keyed`).
fn stale_runs_sql(jobs: usize) -> String {
    let in_jobs = in_list("job_name", jobs);
    format!(
        "SELECT id FROM runs WHERE status = 'running' AND concurrency_key IS NULL \
           AND heartbeat_at < ?{in_jobs} \
         UNION ALL \
         SELECT id FROM runs WHERE status = 'running' AND concurrency_key IS NOT NULL \
           AND heartbeat_at < ?{in_jobs}"
    )
}

/// [`SqliteStore::recover_stale_except`]'s statement: the time, then
/// [`stale_runs_sql`]'s parameters, then an `(id, generation)` pair per kept
/// run. Returns each recovered run's concurrency key (for `pending_keys`).
pub(super) fn recover_stale_sql(jobs: usize, keep: usize) -> String {
    let keep_sql = if keep == 0 {
        String::new()
    } else {
        format!(
            " AND (id, lease_generation) NOT IN (VALUES {})",
            vec!["(?, ?)"; keep].join(", ")
        )
    };
    format!(
        "UPDATE runs SET status = 'pending', lease_owner = NULL, updated_at = ? \
         WHERE id IN ({}){keep_sql} RETURNING concurrency_key",
        stale_runs_sql(jobs)
    )
}

/// [`SqliteStore::has_stale`]'s query: [`stale_runs_sql`]'s parameters.
pub(super) fn has_stale_sql(jobs: usize) -> String {
    format!("SELECT EXISTS ({})", stale_runs_sql(jobs))
}

/// How many of the oldest pending runs the claim looks at one by one before
/// it looks at the head of each free concurrency key (see [`candidates`]).
/// With 8 worker processes on 32 keys the walk rarely finds enough (most
/// keys run, and the heads of the free ones are far from the front): there
/// a window of 64 cost more than the key-by-key search after it (8 × 2,000
/// one-step runs: 6,100 runs per CPU-second with 64, 6,900 with 16).
const SCAN_WINDOW: usize = 16;

/// Whether a search for claimable runs may remove the keys it finds with no
/// pending and no running run from `pending_keys` (only inside a write
/// transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prune {
    Yes,
    No,
}

/// The ids of the (at most `limit`) oldest claimable pending runs of `jobs`:
/// runs without a concurrency key, and runs that are the oldest pending run
/// of their key (of any job) while no run of that key is `running`. Oldest
/// first (`created_at`, then `id`). Reads only.
///
/// Two ways to find them, both index searches only:
/// - the oldest pending runs, one by one, each checked against its key (one
///   search a run, for a running run of the key; whether it heads its key
///   follows from the walk's order): cheap when claimable runs are near the
///   front, which is the usual case, and the only cheap way with many
///   distinct keys;
/// - the head of each free key in `pending_keys` (schema 4: the keys that
///   may have pending runs; one search per key for a running run, then one
///   for the head of each free key) plus the oldest keyless runs: cheap when
///   a large backlog sits on a few busy keys. The first way alone walked the
///   whole backlog whenever fewer than `limit` runs were claimable (16,000
///   pending runs on 32 busy keys: 13 ms a claim, under the write lock, for
///   every process, issue 13).
///
/// So the first way looks at up to [`SCAN_WINDOW`] + `limit` runs; when that
/// window was full and did not yield `limit` runs, the second way answers.
pub(super) fn candidates(c: &Connection, jobs: &[String], limit: usize) -> Result<Vec<String>> {
    candidates_in(c, jobs, limit, Prune::No)
}

/// [`candidates`]; with [`Prune::Yes`] (a claim's write transaction) it also
/// drops the keys it found dead from `pending_keys`.
pub(super) fn candidates_in(
    c: &Connection,
    jobs: &[String],
    limit: usize,
    prune: Prune,
) -> Result<Vec<String>> {
    if jobs.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let running = running_keys(c)?;
    candidates_given(c, jobs, limit, prune, running)
}

/// [`candidates_in`] with the keys of the running runs known (`Some`: the
/// set of [`running_keys`]) or to be asked of the index key by key (`None`).
pub(super) fn candidates_given(
    c: &Connection,
    jobs: &[String],
    limit: usize,
    prune: Prune,
    running: Option<HashSet<String>>,
) -> Result<Vec<String>> {
    if jobs.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let window = limit.saturating_add(SCAN_WINDOW).min(i64::MAX as usize) as i64;
    let mut found = Vec::new();
    let mut seen = 0i64;
    {
        let sql = match running {
            Some(_) => scan_sql_unchecked(jobs.len()),
            None => scan_sql(jobs.len()),
        };
        let mut st = c.prepare_cached(&sql)?;
        let mut params: Vec<&dyn ToSql> = Vec::with_capacity(2 * jobs.len() + 1);
        params.extend(jobs.iter().map(|s| s as &dyn ToSql));
        params.extend(jobs.iter().map(|s| s as &dyn ToSql));
        params.push(&window);
        let mut rows = st.query(params.as_slice())?;
        // The keys of the runs seen so far. The walk goes oldest first, so a
        // run heads its key's pending runs exactly when its key was not seen
        // before (a run of any job counts). Asked of the index instead, that
        // check read the pending part of `runs_active_key` once per key, and
        // with several processes on the file each of those reads is a page
        // another process's commit had just evicted (issue 13).
        let mut keys: HashSet<String> = HashSet::new();
        while let Some(row) = rows.next()? {
            seen += 1;
            let (head, free) = match row.get::<_, Option<String>>(3)? {
                None => (true, true),
                Some(k) => {
                    let free = running.as_ref().is_none_or(|r| !r.contains(&k));
                    (keys.insert(k), free)
                }
            };
            if head && free && row.get::<_, bool>(1)? {
                found.push(row.get::<_, String>(0)?);
                if found.len() >= limit {
                    return Ok(found);
                }
            }
        }
    }
    if seen < window {
        return Ok(found); // every pending run was looked at
    }
    match running {
        Some(running) => by_free_key(c, jobs, limit, prune, &running),
        None => by_key(c, jobs, limit, prune),
    }
}

/// At most this many keys of running runs are read into a set that the
/// claim checks each key against (see [`running_keys`]); past that it asks
/// the index key by key.
const RUNNING_KEYS_MAX: i64 = 256;

/// The keys of all running runs (of any job), read in one pass over the
/// running part of `runs_active_key`, or `None` when there are more than
/// [`RUNNING_KEYS_MAX`]. With 8 processes on 32 keys nearly every key runs:
/// a search of the index for a running run of each key the claim looked at
/// (~50 per claim, walk and key-by-key search together) took 40 µs of CPU a
/// claim, where one pass over the ~30 running runs and set lookups take a
/// fraction of it (issue 13).
pub(super) fn running_keys(c: &Connection) -> Result<Option<HashSet<String>>> {
    let mut st = c.prepare_cached(RUNNING_KEYS_SQL)?;
    let mut rows = st.query([RUNNING_KEYS_MAX + 1])?;
    let mut keys = HashSet::new();
    let mut n = 0;
    while let Some(row) = rows.next()? {
        n += 1;
        if n > RUNNING_KEYS_MAX {
            return Ok(None);
        }
        keys.insert(row.get::<_, String>(0)?);
    }
    Ok(Some(keys))
}

/// The keys of running runs (the limit: one more than the set may hold).
pub(super) const RUNNING_KEYS_SQL: &str = "SELECT concurrency_key FROM runs \
     WHERE status = 'running' AND concurrency_key IS NOT NULL LIMIT ?1";

/// The claimable runs found key by key when the keys of the running runs
/// are known: the head of each key of `pending_keys` not among them, and the
/// oldest keyless runs, oldest first (what [`by_key`] finds, without a
/// search of the index per key).
fn by_free_key(
    c: &Connection,
    jobs: &[String],
    limit: usize,
    prune: Prune,
    running: &HashSet<String>,
) -> Result<Vec<String>> {
    // (created_at, id): the claim order.
    let mut heads: Vec<(String, String)> = Vec::new();
    let mut dead: Vec<String> = Vec::new();
    {
        let mut keys = c.prepare_cached(PENDING_KEYS_SQL)?;
        let mut head = c.prepare_cached(KEY_HEAD_SQL)?;
        let mut rows = keys.query([])?;
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            if running.contains(&key) {
                continue;
            }
            let mut h = head.query([&key])?;
            match h.next()? {
                // Free, and no pending run: nothing left to claim on this key.
                None => dead.push(key),
                Some(r) => {
                    let job: String = r.get(1)?;
                    if jobs.contains(&job) {
                        heads.push((r.get(2)?, r.get(0)?));
                    }
                }
            }
        }
    }
    oldest_first(c, jobs, limit, prune, heads, &dead)
}

/// The keys that may have pending runs.
pub(super) const PENDING_KEYS_SQL: &str = "SELECT concurrency_key FROM pending_keys";

/// The head of one key: its oldest pending run (id, job, created_at).
pub(super) const KEY_HEAD_SQL: &str = "SELECT id, job_name, created_at FROM runs \
     WHERE status = 'pending' AND concurrency_key = ?1 ORDER BY created_at, id LIMIT 1";

/// The end of both key-by-key searches: the keys' heads and the oldest
/// keyless runs, the oldest `limit` of them in claim order; keys found
/// dead dropped when `prune` says so.
fn oldest_first(
    c: &Connection,
    jobs: &[String],
    limit: usize,
    prune: Prune,
    mut heads: Vec<(String, String)>,
    dead: &[String],
) -> Result<Vec<String>> {
    keyless_heads(c, jobs, limit, &mut heads)?;
    heads.sort_unstable();
    heads.truncate(limit);
    if prune == Prune::Yes {
        prune_keys(c, dead)?;
    }
    Ok(heads.into_iter().map(|(_, id)| id).collect())
}

/// Adds the oldest `limit` keyless pending runs of `jobs` to `heads`.
fn keyless_heads(
    c: &Connection,
    jobs: &[String],
    limit: usize,
    heads: &mut Vec<(String, String)>,
) -> Result<()> {
    let sql = keyless_sql(jobs.len());
    let mut st = c.prepare_cached(&sql)?;
    let n = limit.min(i64::MAX as usize) as i64;
    let mut params: Vec<&dyn ToSql> = jobs.iter().map(|s| s as &dyn ToSql).collect();
    params.push(&n);
    let rows = st.query_map(params.as_slice(), |r| Ok((r.get(1)?, r.get(0)?)))?;
    for row in rows {
        heads.push(row?);
    }
    Ok(())
}

/// Drops keys found with no pending and no running run from `pending_keys`.
fn prune_keys(c: &Connection, dead: &[String]) -> Result<()> {
    let mut del = c.prepare_cached("DELETE FROM pending_keys WHERE concurrency_key = ?1")?;
    for key in dead {
        del.execute([key])?;
    }
    Ok(())
}

/// The claimable runs found key by key: the head of each free key of
/// `pending_keys` and the oldest keyless runs, oldest first.
fn by_key(c: &Connection, jobs: &[String], limit: usize, prune: Prune) -> Result<Vec<String>> {
    // (created_at, id): the claim order.
    let mut heads: Vec<(String, String)> = Vec::new();
    let mut dead: Vec<String> = Vec::new();
    {
        let mut st = c.prepare_cached(FREE_KEY_HEADS_SQL)?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            match row.get::<_, Option<String>>(1)? {
                // Free, and no pending run: nothing left to claim on this key.
                None => dead.push(row.get(0)?),
                Some(id) => {
                    let job: String = row.get(2)?;
                    if jobs.contains(&job) {
                        heads.push((row.get(3)?, id));
                    }
                }
            }
        }
    }
    oldest_first(c, jobs, limit, prune, heads, &dead)
}

/// The oldest pending runs, each with whether it is claimable by `jobs`
/// should it head its key (its job is one of `jobs` and no run of its key is
/// running), and its key (a `?` per job, the same again, then the limit): the runs without a
/// concurrency key and those with one, each walked in its partial index
/// (`runs_active_free`, `runs_active_keyed`) and merged. A compound ORDER BY
/// merges the two walks row by row; ordered subqueries would each be sorted
/// into a temporary B-tree first, reading `limit` runs of each per claim.
pub(super) fn scan_sql(jobs: usize) -> String {
    let in_jobs = in_list("job_name", jobs);
    format!(
        "SELECT id, (1{in_jobs}), created_at, NULL FROM runs \
           WHERE status = 'pending' AND concurrency_key IS NULL \
         UNION ALL \
         SELECT id, (1{in_jobs}) \
             AND NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.status = 'running' \
                             AND x.concurrency_key = r.concurrency_key), \
           created_at, concurrency_key \
           FROM runs AS r WHERE status = 'pending' AND concurrency_key IS NOT NULL \
         ORDER BY 3, 1 LIMIT ?"
    )
}

/// [`scan_sql`] without the check of each keyed run's key for a running
/// run (the caller checks it against the set of [`running_keys`]): the same
/// columns, the second one only whether the run's job is one of `jobs`.
pub(super) fn scan_sql_unchecked(jobs: usize) -> String {
    let in_jobs = in_list("job_name", jobs);
    format!(
        "SELECT id, (1{in_jobs}), created_at, NULL FROM runs \
           WHERE status = 'pending' AND concurrency_key IS NULL \
         UNION ALL \
         SELECT id, (1{in_jobs}), created_at, concurrency_key \
           FROM runs AS r WHERE status = 'pending' AND concurrency_key IS NOT NULL \
         ORDER BY 3, 1 LIMIT ?"
    )
}

/// Each key of `pending_keys` that has no running run, with its head (the
/// oldest pending run of the key: id, job, created_at), or NULLs when the
/// key has no pending run left.
pub(super) const FREE_KEY_HEADS_SQL: &str =
    "SELECT p.concurrency_key, r.id, r.job_name, r.created_at \
     FROM pending_keys AS p \
     LEFT JOIN runs AS r ON r.id = ( \
       SELECT h.id FROM runs AS h WHERE h.status = 'pending' \
         AND h.concurrency_key = p.concurrency_key ORDER BY h.created_at, h.id LIMIT 1) \
     WHERE NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.status = 'running' \
                       AND x.concurrency_key = p.concurrency_key)";

/// The oldest pending keyless runs of `jobs` (a `?` per job, then the
/// limit): id, created_at.
pub(super) fn keyless_sql(jobs: usize) -> String {
    let in_jobs = in_list("job_name", jobs);
    format!(
        "SELECT id, created_at FROM runs \
           WHERE status = 'pending' AND concurrency_key IS NULL{in_jobs} \
           ORDER BY created_at, id LIMIT ?"
    )
}

/// Records, inside the write that makes a run of `key` pending, that the key
/// may have pending runs (`pending_keys`, which the claim's key-by-key
/// search reads). Every write that sets a run `pending` must call this or
/// [`note_pending_run`].
pub(crate) fn note_pending_key(c: &Connection, key: &str) -> Result<()> {
    c.prepare_cached("INSERT OR IGNORE INTO pending_keys (concurrency_key) VALUES (?1)")?
        .execute([key])?;
    Ok(())
}

/// [`note_pending_key`] for run `id`'s key, if it has one.
pub(crate) fn note_pending_run(c: &Connection, id: &str) -> Result<()> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO pending_keys (concurrency_key) \
         SELECT concurrency_key FROM runs WHERE id = ?1 AND concurrency_key IS NOT NULL",
    )?
    .execute([id])?;
    Ok(())
}

/// The run's status, or `None` if it no longer exists.
pub(crate) fn lease_status(c: &Connection, id: &str) -> Result<Option<RunStatus>> {
    use rusqlite::OptionalExtension;
    Ok(c.prepare_cached("SELECT status FROM runs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}
