//! Creating runs: single triggers and batches, with idempotency keys and
//! coalescing decided inside the write transaction, so they hold across
//! processes.

use std::borrow::Cow;
use std::sync::OnceLock;

use rusqlite::{Connection, OptionalExtension, ToSql};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::query::{run_json, RUN_COLUMNS};
use super::SqliteStore;
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

    /// [`SqliteStore::try_trigger`], then `then` in the same transaction
    /// (given the outcome; its error fails the whole transaction).
    pub(crate) fn try_trigger_then<T>(
        &self,
        item: &TriggerItem,
        then: impl FnOnce(&Connection, &TriggerOutcome) -> Result<T>,
    ) -> Result<Option<(TriggerOutcome, T)>> {
        self.try_write(|c| {
            let out = self.trigger_in(c, item, &self.now())?;
            let then = then(c, &out)?;
            Ok((out, then))
        })
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
            out.extend(ids.into_iter().map(|id| TriggerOutcome::Created {
                id,
                created_at: now.to_string(),
            }));
        }
        Ok(out)
    }

    fn trigger_in(&self, c: &Connection, it: &TriggerItem, now: &str) -> Result<TriggerOutcome> {
        if let Some(key) = it.idempotency_key {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE job_name = ?1 AND idempotency_key = ?2"
            ))?;
            if let Some(json) = st.query_row([it.job_name, key], run_json).optional()? {
                return Ok(TriggerOutcome::Idempotent(json));
            }
        }
        if let (true, Some(key)) = (it.coalesce, it.concurrency_key) {
            let mut st = c.prepare_cached(&coalesce_sql())?;
            if let Some(json) = st.query_row([it.job_name, key], run_json).optional()? {
                return Ok(TriggerOutcome::Coalesced(json));
            }
        }
        let id = self.new_id();
        let mut st = c.prepare_cached(INSERT_RUN)?;
        st.execute((
            &id,
            it.job_name,
            it.input,
            it.idempotency_key,
            it.concurrency_key,
            it.labels,
            now,
        ))?;
        Ok(TriggerOutcome::Created {
            id,
            created_at: now.to_string(),
        })
    }
}

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
