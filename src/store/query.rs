//! Reads: runs, steps and logs as JSON text for the JS layer.

use rusqlite::{Connection, OptionalExtension, Row, ToSql};
use serde::Deserialize;

use super::flush::step_index_sql;
use super::json::{array, JsonObject};
use super::{RunStatus, SqliteStore};
use crate::error::{Error, Result};

/// Columns of `runs` in the order [`run_json`] reads them, plus the number
/// of completed steps (a subquery on the steps index: select them `FROM runs`,
/// not aliased, and not in a `RETURNING` clause). `currentStepIndex` is the
/// position after the last completed step, read from the steps: a running
/// run's `current_step_index` column may lag by the steps of its last
/// second (`flush::ROW_REFRESH`).
pub(crate) const RUN_COLUMNS: &str = concat!(
    "id, job_name, input, status, idempotency_key, concurrency_key, labels, ",
    step_index_sql!("NULL", "runs.id"),
    ", progress, output, error, error_stack, \
    heartbeat_at, lease_owner, lease_generation, created_at, updated_at, started_at, completed_at, \
    (SELECT COUNT(*) FROM steps WHERE steps.run_id = runs.id AND steps.status = 'completed')"
);

/// `getRuns` filter; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunFilter {
    /// Any of these statuses.
    pub status: Option<Vec<String>>,
    /// Any of these job names.
    pub job_name: Option<Vec<String>>,
    /// All of these labels must match exactly.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// At most this many runs.
    pub limit: Option<i64>,
    /// Skip this many runs.
    pub offset: Option<i64>,
}

/// Starts the JSON object of the run in `row` (selected with [`RUN_COLUMNS`]).
pub(crate) fn run_object(r: &Row) -> rusqlite::Result<JsonObject> {
    let mut o = JsonObject::new();
    o.str("id", Some(&r.get::<_, String>(0)?))
        .str("jobName", Some(&r.get::<_, String>(1)?))
        .raw("input", Some(&r.get::<_, String>(2)?))
        .str("status", Some(&r.get::<_, String>(3)?))
        .str("idempotencyKey", r.get::<_, Option<String>>(4)?.as_deref())
        .str("concurrencyKey", r.get::<_, Option<String>>(5)?.as_deref())
        .raw("labels", Some(&r.get::<_, String>(6)?))
        .int("currentStepIndex", r.get(7)?)
        .raw("progress", r.get::<_, Option<String>>(8)?.as_deref())
        .raw("output", r.get::<_, Option<String>>(9)?.as_deref())
        .str("error", r.get::<_, Option<String>>(10)?.as_deref())
        .str("errorStack", r.get::<_, Option<String>>(11)?.as_deref())
        .str("heartbeatAt", r.get::<_, Option<String>>(12)?.as_deref())
        .str("leaseOwner", r.get::<_, Option<String>>(13)?.as_deref())
        .int("leaseGeneration", r.get(14)?)
        .str("createdAt", Some(&r.get::<_, String>(15)?))
        .str("updatedAt", Some(&r.get::<_, String>(16)?))
        .str("startedAt", r.get::<_, Option<String>>(17)?.as_deref())
        .str("completedAt", r.get::<_, Option<String>>(18)?.as_deref())
        .int("completedStepCount", r.get(19)?);
    Ok(o)
}

/// The run in `row` as JSON text.
pub(crate) fn run_json(r: &Row) -> rusqlite::Result<String> {
    Ok(run_object(r)?.finish())
}

/// One run by id, as JSON text.
pub(crate) fn get_run_in(conn: &Connection, id: &str) -> Result<Option<String>> {
    let mut st = conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?;
    Ok(st.query_row([id], run_json).optional()?)
}

impl SqliteStore {
    /// One run as JSON, or `None`.
    pub fn get_run(&self, id: &str) -> Result<Option<String>> {
        self.read(|c| get_run_in(c, id))
    }

    /// Runs matching `filter`, newest first, as a JSON array.
    pub fn get_runs(&self, filter: &RunFilter) -> Result<String> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut params: Vec<&dyn ToSql> = Vec::new();
        if let Some(statuses) = &filter.status {
            for s in statuses {
                s.parse::<RunStatus>()?;
            }
            sql.push_str(&in_list("status", statuses.len()));
            params.extend(statuses.iter().map(|s| s as &dyn ToSql));
        }
        if let Some(jobs) = &filter.job_name {
            sql.push_str(&in_list("job_name", jobs.len()));
            params.extend(jobs.iter().map(|s| s as &dyn ToSql));
        }
        if let Some(labels) = &filter.labels {
            for (k, v) in labels {
                // Keys and values are bound parameters: never part of the SQL text.
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM json_each(runs.labels) AS l \
                     WHERE l.key = ? AND l.value = ?)",
                );
                params.push(k);
                params.push(v);
            }
        }
        let limit = filter.limit.unwrap_or(-1);
        let offset = filter.offset.unwrap_or(0);
        if limit < -1 || offset < 0 {
            return Err(Error::Validation(
                "limit and offset must not be negative".into(),
            ));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?");
        params.push(&limit);
        params.push(&offset);
        self.read(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(params.as_slice(), run_json)?;
            Ok(array(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
    }

    /// The run's steps in execution order, as a JSON array.
    pub fn get_steps(&self, run_id: &str) -> Result<String> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, run_id, name, \"index\", status, output, error, error_stack, \
                 started_at, completed_at FROM steps WHERE run_id = ?1 ORDER BY \"index\", id",
            )?;
            let rows = st.query_map([run_id], |r| {
                let mut o = JsonObject::new();
                o.str("id", Some(&r.get::<_, i64>(0)?.to_string()))
                    .str("runId", Some(&r.get::<_, String>(1)?))
                    .str("name", Some(&r.get::<_, String>(2)?))
                    .int("index", r.get(3)?)
                    .str("status", Some(&r.get::<_, String>(4)?))
                    .raw("output", r.get::<_, Option<String>>(5)?.as_deref())
                    .str("error", r.get::<_, Option<String>>(6)?.as_deref())
                    .str("errorStack", r.get::<_, Option<String>>(7)?.as_deref())
                    .str("startedAt", Some(&r.get::<_, String>(8)?))
                    .str("completedAt", r.get::<_, Option<String>>(9)?.as_deref());
                Ok(o.finish())
            })?;
            Ok(array(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
    }

    /// How many runs there are per job and status, as a JSON array of
    /// `{"jobName", "status", "count"}` (one grouped scan, no run payloads).
    pub fn run_counts(&self) -> Result<String> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT job_name, status, COUNT(*) FROM runs GROUP BY job_name, status \
                 ORDER BY job_name, status",
            )?;
            let rows = st.query_map([], |r| {
                let mut o = JsonObject::new();
                o.str("jobName", Some(&r.get::<_, String>(0)?))
                    .str("status", Some(&r.get::<_, String>(1)?))
                    .int("count", r.get(2)?);
                Ok(o.finish())
            })?;
            Ok(array(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
    }

    /// The run's persisted logs in time order, as a JSON array.
    pub fn get_logs(&self, run_id: &str) -> Result<String> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, run_id, step_name, level, message, data, timestamp FROM logs \
                 WHERE run_id = ?1 ORDER BY timestamp, id",
            )?;
            let rows = st.query_map([run_id], |r| {
                let mut o = JsonObject::new();
                o.str("id", Some(&r.get::<_, i64>(0)?.to_string()))
                    .str("runId", Some(&r.get::<_, String>(1)?))
                    .str("stepName", r.get::<_, Option<String>>(2)?.as_deref())
                    .str("level", Some(&r.get::<_, String>(3)?))
                    .str("message", Some(&r.get::<_, String>(4)?))
                    .raw("data", r.get::<_, Option<String>>(5)?.as_deref())
                    .str("timestamp", Some(&r.get::<_, String>(6)?));
                Ok(o.finish())
            })?;
            Ok(array(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
    }
}

/// ` AND col IN (?, ?, …)` with `n` placeholders (`n == 0` matches nothing).
pub(crate) fn in_list(col: &str, n: usize) -> String {
    if n == 0 {
        return " AND 0".into();
    }
    let marks = vec!["?"; n].join(", ");
    format!(" AND {col} IN ({marks})")
}
