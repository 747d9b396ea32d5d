//! Reads: runs, steps and logs as the same JSON text as the SQLite store's.

use std::time::SystemTime;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{iso_opt, PgStore};
use crate::error::{Error, Result};
use crate::store::iso;
use crate::store::json::{array, JsonObject};
use crate::store::RunFilter;

/// Columns of `runs` in the order [`run_object`] reads them (JSON as its
/// exact text).
pub(crate) const RUN_COLUMNS: &str = "runs.id, runs.job_name, runs.input::text, runs.status, \
    runs.idempotency_key, runs.concurrency_key, runs.labels::text, runs.current_step_index, \
    runs.progress::text, runs.output::text, runs.error, runs.error_stack, runs.heartbeat_at, \
    runs.lease_owner, runs.lease_generation, runs.created_at, runs.updated_at, \
    runs.started_at, runs.completed_at, \
    (SELECT count(*) FROM steps WHERE steps.run_id = runs.id AND steps.status = 'completed')";

/// Index of `lease_generation` in [`RUN_COLUMNS`].
pub(crate) const GENERATION_COLUMN: usize = 14;
/// Index of `created_at` in [`RUN_COLUMNS`].
pub(crate) const CREATED_COLUMN: usize = 15;

/// False for an id no run can have: PostgreSQL `text` cannot hold NUL
/// (binding one fails the statement), so such an id is simply not found,
/// as on SQLite.
pub(crate) fn storable_id(id: &str) -> bool {
    !id.contains('\0')
}

/// Run statuses as stored.
const STATUSES: [&str; 5] = ["pending", "running", "completed", "failed", "cancelled"];

/// Starts the JSON object of the run in `r` (selected with [`RUN_COLUMNS`]).
pub(crate) fn run_object(r: &Row) -> Result<JsonObject> {
    let mut o = JsonObject::new();
    o.str("id", Some(r.try_get::<_, &str>(0)?))
        .str("jobName", Some(r.try_get::<_, &str>(1)?))
        .raw("input", Some(r.try_get::<_, &str>(2)?))
        .str("status", Some(r.try_get::<_, &str>(3)?))
        .str("idempotencyKey", r.try_get::<_, Option<&str>>(4)?)
        .str("concurrencyKey", r.try_get::<_, Option<&str>>(5)?)
        .raw("labels", Some(r.try_get::<_, &str>(6)?))
        .int("currentStepIndex", r.try_get(7)?)
        .raw("progress", r.try_get::<_, Option<&str>>(8)?)
        .raw("output", r.try_get::<_, Option<&str>>(9)?)
        .str("error", r.try_get::<_, Option<&str>>(10)?)
        .str("errorStack", r.try_get::<_, Option<&str>>(11)?)
        .str("heartbeatAt", time_opt(r, 12)?.as_deref())
        .str("leaseOwner", r.try_get::<_, Option<&str>>(13)?)
        .int("leaseGeneration", r.try_get(14)?)
        .str("createdAt", Some(&iso(r.try_get(15)?)))
        .str("updatedAt", Some(&iso(r.try_get(16)?)))
        .str("startedAt", time_opt(r, 17)?.as_deref())
        .str("completedAt", time_opt(r, 18)?.as_deref())
        .int("completedStepCount", r.try_get(19)?);
    Ok(o)
}

fn time_opt(r: &Row, i: usize) -> Result<Option<String>> {
    Ok(iso_opt(r.try_get::<_, Option<SystemTime>>(i)?))
}

/// The run in `r` as JSON text.
pub(crate) fn run_json(r: &Row) -> Result<String> {
    Ok(run_object(r)?.finish())
}

impl PgStore {
    /// One run as JSON, or `None`.
    pub async fn get_run(&self, id: &str) -> Result<Option<String>> {
        if !storable_id(id) {
            return Ok(None);
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .await?;
        c.query_opt(&st, &[&id])
            .await?
            .as_ref()
            .map(run_json)
            .transpose()
    }

    /// Runs matching `filter`, newest first, as a JSON array.
    pub async fn get_runs(&self, filter: &RunFilter) -> Result<String> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE true");
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        if let Some(statuses) = &filter.status {
            for s in statuses {
                if !STATUSES.contains(&s.as_str()) {
                    return Err(Error::Validation(format!(
                        "unknown status '{s}' (expected one of {})",
                        STATUSES.join(", ")
                    )));
                }
            }
            params.push(Box::new(statuses.clone()));
            sql.push_str(&format!(" AND status = ANY(${})", params.len()));
        }
        if let Some(jobs) = &filter.job_name {
            // A name holding NUL (text cannot) names no job: left out.
            let jobs: Vec<String> = jobs.iter().filter(|j| storable_id(j)).cloned().collect();
            if jobs.is_empty() && filter.job_name.as_ref().is_some_and(|j| !j.is_empty()) {
                return Ok("[]".into());
            }
            params.push(Box::new(jobs));
            sql.push_str(&format!(" AND job_name = ANY(${})", params.len()));
        }
        if let Some(labels) = &filter.labels {
            // jsonb cannot hold NUL (`\u0000`), and no stored label can
            // match one (triggers refuse them): nothing matches.
            if labels
                .iter()
                .any(|(k, v)| k.contains('\0') || v.contains('\0'))
            {
                return Ok("[]".into());
            }
            if !labels.is_empty() {
                // All labels at once: the stored object contains this one.
                params.push(Box::new(serde_json::to_string(labels)?));
                sql.push_str(&format!(
                    " AND labels::jsonb @> ${}::text::jsonb",
                    params.len()
                ));
            }
        }
        let limit = filter.limit.unwrap_or(-1);
        let offset = filter.offset.unwrap_or(0);
        if limit < -1 || offset < 0 {
            return Err(Error::Validation(
                "limit and offset must not be negative".into(),
            ));
        }
        // -1 is "no limit", as in SQLite; LIMIT NULL is PostgreSQL's.
        params.push(Box::new(if limit == -1 { None } else { Some(limit) }));
        params.push(Box::new(offset));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            params.len() - 1,
            params.len()
        ));
        let c = self.client().await?;
        let st = c.prepare_cached(&sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = c.query(&st, &refs).await?;
        Ok(array(
            rows.iter().map(run_json).collect::<Result<Vec<_>>>()?,
        ))
    }

    /// The run's steps in execution order, as a JSON array.
    pub async fn get_steps(&self, run_id: &str) -> Result<String> {
        if !storable_id(run_id) {
            return Ok("[]".into());
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, run_id, name, \"index\", status, output::text, error, error_stack, \
                 started_at, completed_at FROM steps WHERE run_id = $1 ORDER BY \"index\", id",
            )
            .await?;
        let rows = c.query(&st, &[&run_id]).await?;
        let steps = rows
            .iter()
            .map(|r| -> Result<String> {
                let mut o = JsonObject::new();
                o.str("id", Some(&r.try_get::<_, i64>(0)?.to_string()))
                    .str("runId", Some(r.try_get::<_, &str>(1)?))
                    .str("name", Some(r.try_get::<_, &str>(2)?))
                    .int("index", r.try_get(3)?)
                    .str("status", Some(r.try_get::<_, &str>(4)?))
                    .raw("output", r.try_get::<_, Option<&str>>(5)?)
                    .str("error", r.try_get::<_, Option<&str>>(6)?)
                    .str("errorStack", r.try_get::<_, Option<&str>>(7)?)
                    .str("startedAt", Some(&iso(r.try_get(8)?)))
                    .str("completedAt", time_opt(r, 9)?.as_deref());
                Ok(o.finish())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(array(steps))
    }

    /// How many runs there are per job and status, as a JSON array of
    /// `{"jobName", "status", "count"}`.
    pub async fn run_counts(&self) -> Result<String> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT job_name, status, COUNT(*) FROM runs GROUP BY job_name, status \
                 ORDER BY job_name, status",
            )
            .await?;
        let rows = c.query(&st, &[]).await?;
        let counts = rows
            .iter()
            .map(|r| -> Result<String> {
                let mut o = JsonObject::new();
                o.str("jobName", Some(r.try_get::<_, &str>(0)?))
                    .str("status", Some(r.try_get::<_, &str>(1)?))
                    .int("count", r.try_get(2)?);
                Ok(o.finish())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(array(counts))
    }

    /// The run's persisted logs in time order, as a JSON array.
    pub async fn get_logs(&self, run_id: &str) -> Result<String> {
        if !storable_id(run_id) {
            return Ok("[]".into());
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, run_id, step_name, level, message, data::text, timestamp FROM logs \
                 WHERE run_id = $1 ORDER BY timestamp, id",
            )
            .await?;
        let rows = c.query(&st, &[&run_id]).await?;
        let logs = rows
            .iter()
            .map(|r| -> Result<String> {
                let mut o = JsonObject::new();
                o.str("id", Some(&r.try_get::<_, i64>(0)?.to_string()))
                    .str("runId", Some(r.try_get::<_, &str>(1)?))
                    .str("stepName", r.try_get::<_, Option<&str>>(2)?)
                    .str("level", Some(r.try_get::<_, &str>(3)?))
                    .str("message", Some(r.try_get::<_, &str>(4)?))
                    .raw("data", r.try_get::<_, Option<&str>>(5)?)
                    .str("timestamp", Some(&iso(r.try_get(6)?)));
                Ok(o.finish())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(array(logs))
    }
}
