//! Creating runs: single triggers and batches, with idempotency keys and
//! coalescing decided inside the write transaction, so they hold across
//! processes.

use std::borrow::Cow;
use std::sync::OnceLock;

use rusqlite::{Connection, OptionalExtension, ToSql};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::backend::ClaimRequest;
use super::claim::{note_pending_key, FIRST_GENERATION};
use super::flush::in_savepoint;
use super::query::{run_json, RUN_COLUMNS};
use super::{ClaimedRun, SqliteStore};
use crate::error::Result;

/// One run to create. `input` and `labels` are JSON text.
#[derive(Debug, Clone)]
pub struct TriggerItem<'a> {
    /// Registered job name.
    pub job_name: &'a str,
    /// Input as (tagged) JSON text.
    pub input: &'a str,
    /// Same job + key already exists → that run is returned, nothing written.
    pub idempotency_key: Option<&'a str>,
    /// Runs sharing a key never run at once.
    pub concurrency_key: Option<&'a str>,
    /// With a concurrency key: return an existing pending run of that key instead.
    pub coalesce: bool,
    /// Labels as a JSON object of strings.
    pub labels: &'a str,
}

impl<'a> TriggerItem<'a> {
    /// A run of `job_name` with `input` (JSON text), no keys, no coalesce,
    /// no labels: the start of a struct update for the other fields.
    pub fn new(job_name: &'a str, input: &'a str) -> Self {
        TriggerItem {
            job_name,
            input,
            idempotency_key: None,
            concurrency_key: None,
            coalesce: false,
            labels: "{}",
        }
    }
}

/// One item of a trigger batch as the JS layer sends it (`triggerItem` in
/// lib/protocol.js): `{"job": "…", "input": <JSON>, "idempotencyKey": "…" | null,
/// "concurrencyKey": "…" | null, "coalesce": false, "labels": {…}}`. The input
/// and labels stay JSON text; strings borrow from the message unless they
/// needed unescaping.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerRequest<'a> {
    /// Registered job name.
    #[serde(borrow)]
    pub job: Cow<'a, str>,
    /// Input as (tagged) JSON text.
    #[serde(borrow)]
    pub input: &'a RawValue,
    /// See [`TriggerItem::idempotency_key`].
    #[serde(borrow)]
    pub idempotency_key: Option<Cow<'a, str>>,
    /// See [`TriggerItem::concurrency_key`].
    #[serde(borrow)]
    pub concurrency_key: Option<Cow<'a, str>>,
    /// See [`TriggerItem::coalesce`].
    pub coalesce: bool,
    /// Labels as a JSON object of strings.
    #[serde(borrow)]
    pub labels: &'a RawValue,
}

impl TriggerRequest<'_> {
    /// Parses a JSON array of items (built by the JS layer, so a malformed
    /// one is an internal error).
    pub fn parse_batch(text: &str) -> Result<Vec<TriggerRequest<'_>>> {
        Ok(serde_json::from_str(text)?)
    }

    /// The store's view of this item.
    pub fn as_item(&self) -> TriggerItem<'_> {
        TriggerItem {
            job_name: &self.job,
            input: self.input.get(),
            idempotency_key: self.idempotency_key.as_deref(),
            concurrency_key: self.concurrency_key.as_deref(),
            coalesce: self.coalesce,
            labels: self.labels.get(),
        }
    }
}

/// What a trigger did.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerOutcome {
    /// A new pending run.
    Created { id: String, created_at: String },
    /// The run that already had this idempotency key (JSON).
    Idempotent(String),
    /// The pending run this trigger was coalesced into (JSON).
    Coalesced(String),
}

impl SqliteStore {
    /// Creates one run (waits for the write lock).
    pub fn trigger(&self, item: &TriggerItem) -> Result<TriggerOutcome> {
        self.write(|c| self.trigger_in(c, item, &self.now()))
    }

    /// Creates one run without ever waiting; `None` when the lock is taken.
    pub fn try_trigger(&self, item: &TriggerItem) -> Result<Option<TriggerOutcome>> {
        self.try_write(|c| self.trigger_in(c, item, &self.now()))
    }

    /// Creates all runs in one transaction: all or nothing.
    /// The runs of a batch share one `created_at` (their ids keep their order).
    pub fn trigger_batch(&self, items: &[TriggerItem]) -> Result<Vec<TriggerOutcome>> {
        self.write(|c| self.trigger_batch_in(c, items, &self.now()))
    }

    /// Like [`SqliteStore::trigger_batch`] but never waits; `None` when the lock is taken.
    pub fn try_trigger_batch(&self, items: &[TriggerItem]) -> Result<Option<Vec<TriggerOutcome>>> {
        self.try_write(|c| self.trigger_batch_in(c, items, &self.now()))
    }

    /// The runs of a batch, in order. Runs of consecutive plain items (no
    /// idempotency key, no coalescing: nothing to look up first) are
    /// inserted [`BATCH_ROWS`] per statement; the others one by one.
    fn trigger_batch_in(
        &self,
        c: &Connection,
        items: &[TriggerItem],
        now: &str,
    ) -> Result<Vec<TriggerOutcome>> {
        let plain = |it: &TriggerItem| it.idempotency_key.is_none() && !it.coalesce;
        let mut out = Vec::with_capacity(items.len());
        let mut rest = items;
        while let Some(first) = rest.first() {
            if !plain(first) {
                out.push(self.trigger_in(c, first, now)?);
                rest = &rest[1..];
                continue;
            }
            let n = rest
                .iter()
                .take(BATCH_ROWS)
                .take_while(|it| plain(it))
                .count();
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let ids = self.new_ids(chunk.len());
            if n == BATCH_ROWS {
                let mut params: Vec<&dyn ToSql> = Vec::with_capacity(n * ROW_PARAMS);
                for (it, id) in chunk.iter().zip(&ids) {
                    params.extend_from_slice(&[
                        id as &dyn ToSql,
                        &it.job_name,
                        &it.input,
                        &it.concurrency_key,
                        &it.labels,
                        &now,
                    ]);
                }
                c.prepare_cached(insert_rows_sql())?
                    .execute(params.as_slice())?;
            } else {
                let mut st = c.prepare_cached(INSERT_RUN)?;
                for (it, id) in chunk.iter().zip(&ids) {
                    st.execute((
                        id,
                        it.job_name,
                        it.input,
                        None::<&str>,
                        it.concurrency_key,
                        it.labels,
                        now,
                    ))?;
                }
            }
            // Their keys, each once (a batch has few distinct keys).
            let mut keys: Vec<&str> = chunk.iter().filter_map(|it| it.concurrency_key).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                note_pending_key(c, key)?;
            }
            out.extend(ids.into_iter().map(|id| TriggerOutcome::Created {
                id,
                created_at: now.to_string(),
            }));
        }
        Ok(out)
    }

    fn trigger_in(&self, c: &Connection, it: &TriggerItem, now: &str) -> Result<TriggerOutcome> {
        if let Some(found) = existing_in(c, it)? {
            return Ok(found);
        }
        let id = self.new_id();
        insert_in(c, &id, it, now, None)?;
        Ok(TriggerOutcome::Created {
            id,
            created_at: now.to_string(),
        })
    }

    /// [`SqliteStore::try_trigger`], then, in the same transaction, the
    /// claim `then` asks for given the outcome. When the new run is the one
    /// that claim would take first ([`claimable_alone`]), it is inserted
    /// already `running` under this store's lease (generation 1, as its first
    /// claim would give it), one write instead of an insert and a claim;
    /// it comes back [`ClaimedRun::inserted`] (no JSON: the caller has its
    /// job, input and labels). Otherwise it is inserted `pending` and the
    /// claim runs in a savepoint: a claim that fails is rolled back alone and
    /// returned beside the outcome.
    #[allow(clippy::type_complexity)]
    pub(crate) fn try_trigger_claim(
        &self,
        it: &TriggerItem,
        then: impl FnOnce(&TriggerOutcome) -> ClaimRequest,
    ) -> Result<Option<(TriggerOutcome, Result<Vec<ClaimedRun>>)>> {
        self.try_write(|c| {
            let now = self.now();
            let (outcome, request) = match existing_in(c, it)? {
                Some(found) => {
                    let request = then(&found);
                    (found, request)
                }
                None => {
                    let outcome = TriggerOutcome::Created {
                        id: self.new_id(),
                        created_at: now.clone(),
                    };
                    let request = then(&outcome);
                    let TriggerOutcome::Created { id, .. } = &outcome else {
                        unreachable!("built above")
                    };
                    let alone = match &request {
                        Some((jobs, limit))
                            if *limit > 0 && jobs.iter().any(|j| j == it.job_name) =>
                        {
                            claimable_alone(c, it.concurrency_key)
                        }
                        _ => Ok(false),
                    };
                    match alone {
                        Ok(true) => {
                            insert_in(c, id, it, &now, Some(&self.owner))?;
                            let run = ClaimedRun {
                                id: id.clone(),
                                job_name: it.job_name.to_string(),
                                generation: FIRST_GENERATION,
                                json: String::new(),
                                inserted: true,
                            };
                            return Ok((outcome, Ok(vec![run])));
                        }
                        Ok(false) => insert_in(c, id, it, &now, None)?,
                        Err(e) => {
                            insert_in(c, id, it, &now, None)?;
                            return Ok((outcome, Err(e)));
                        }
                    }
                    (outcome, request)
                }
            };
            let claimed = match request {
                Some((jobs, limit)) if !jobs.is_empty() && limit > 0 => {
                    in_savepoint(c, |c| self.claim_in(c, &jobs, limit))?
                }
                _ => Ok(Vec::new()),
            };
            Ok((outcome, claimed))
        })
    }
}

/// The run an idempotency key or coalescing finds, if any (nothing written).
fn existing_in(c: &Connection, it: &TriggerItem) -> Result<Option<TriggerOutcome>> {
    if let Some(key) = it.idempotency_key {
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job_name = ?1 AND idempotency_key = ?2"
        ))?;
        if let Some(json) = st.query_row([it.job_name, key], run_json).optional()? {
            return Ok(Some(TriggerOutcome::Idempotent(json)));
        }
    }
    if let (true, Some(key)) = (it.coalesce, it.concurrency_key) {
        let mut st = c.prepare_cached(&coalesce_sql())?;
        if let Some(json) = st.query_row([it.job_name, key], run_json).optional()? {
            return Ok(Some(TriggerOutcome::Coalesced(json)));
        }
    }
    Ok(None)
}

/// Inserts the run: `pending`, or with `owner` already `running` under that
/// lease owner, as a first claim leaves it (generation 1, heartbeat and
/// start at its creation time).
fn insert_in(
    c: &Connection,
    id: &str,
    it: &TriggerItem,
    now: &str,
    owner: Option<&str>,
) -> Result<()> {
    let params = (
        id,
        it.job_name,
        it.input,
        it.idempotency_key,
        it.concurrency_key,
        it.labels,
        now,
    );
    match owner {
        None => {
            c.prepare_cached(INSERT_RUN)?.execute(params)?;
            if let Some(key) = it.concurrency_key {
                note_pending_key(c, key)?;
            }
        }
        // Running: its key is recorded when it goes back to pending.
        Some(owner) => {
            c.prepare_cached(INSERT_CLAIMED_RUN)?.execute((
                params.0,
                params.1,
                params.2,
                params.3,
                params.4,
                params.5,
                params.6,
                owner,
                FIRST_GENERATION,
            ))?;
        }
    };
    Ok(())
}

/// Whether a run about to be created with `concurrency_key` is the one a
/// claim would take first once it exists, told cheaply and conservatively:
/// no run is pending at all (so none is older, of any job or key), and its
/// key, if any, has no running run. (With runs pending, the trigger inserts
/// its run `pending` and claims as usual, which takes the oldest claimable.)
/// One statement of three index probes, no walk, whatever the backlog.
pub(super) fn claimable_alone(c: &Connection, concurrency_key: Option<&str>) -> Result<bool> {
    Ok(c.prepare_cached(CLAIMABLE_ALONE)?
        .query_row([concurrency_key], |r| r.get(0))?)
}

/// [`claimable_alone`]'s query: the concurrency key (or NULL). Each probe
/// walks one of the partial indexes of active runs.
pub(super) const CLAIMABLE_ALONE: &str = "SELECT \
     NOT EXISTS (SELECT 1 FROM runs WHERE status = 'pending' AND concurrency_key IS NULL) \
     AND NOT EXISTS (SELECT 1 FROM runs WHERE status = 'pending' AND concurrency_key IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM runs WHERE status = 'running' AND concurrency_key = ?1)";

/// The pending run a coalescing trigger joins: the oldest of its job and
/// key (job, key).
pub(super) fn coalesce_sql() -> String {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'pending' AND concurrency_key = ?2 \
         AND job_name = ?1 ORDER BY created_at, id LIMIT 1"
    )
}

/// One new pending run: id, job, input, idempotency key, concurrency key,
/// labels, created (and updated) at.
const INSERT_RUN: &str = "INSERT INTO runs (id, job_name, input, status, idempotency_key, \
     concurrency_key, labels, created_at, updated_at) \
     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?7)";

/// [`INSERT_RUN`] already claimed: then lease owner, lease generation; the
/// heartbeat and start at the creation time.
const INSERT_CLAIMED_RUN: &str = "INSERT INTO runs (id, job_name, input, status, \
     idempotency_key, concurrency_key, labels, created_at, updated_at, lease_owner, \
     lease_generation, heartbeat_at, started_at) \
     VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?7, ?7)";

/// Plain runs of a batch inserted by one statement (fewer statement
/// executions per run; the statement is prepared once and cached).
const BATCH_ROWS: usize = 50;

/// Parameters per row of [`insert_rows_sql`]: id, job, input, concurrency
/// key, labels, created (and updated) at.
const ROW_PARAMS: usize = 6;

/// `INSERT` of [`BATCH_ROWS`] plain pending runs (no idempotency key).
fn insert_rows_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let rows: Vec<String> = (0..BATCH_ROWS)
            .map(|r| {
                let p = r * ROW_PARAMS;
                format!(
                    "(?{}, ?{}, ?{}, 'pending', NULL, ?{}, ?{}, ?{}, ?{})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 6
                )
            })
            .collect();
        format!(
            "INSERT INTO runs (id, job_name, input, status, idempotency_key, concurrency_key, \
             labels, created_at, updated_at) VALUES {}",
            rows.join(", ")
        )
    })
}
