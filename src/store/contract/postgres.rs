//! The contract suite on the PostgreSQL store (`cargo test --features
//! postgres store::contract::postgres`, with `DURABLY_TEST_PG_URL` set, e.g.
//! by `eval "$(scripts/test-pg.sh start)"`). Each case gets a fresh schema,
//! dropped afterwards. The suite is synchronous: the adapter drives the
//! async store on a current-thread runtime shared by both workers.
//!
//! The store's clock is the database's (`now()`), not the ticking clock of
//! the SQLite opener: every transaction starts later than the previous
//! one's, so a heartbeat still visibly moves forward.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::runtime::Runtime;

use super::{CResult, ContractStore, Outcome, Row, Snapshot, Workers, Write};
use crate::pg::tests::{skip_reason, TestSchema};
use crate::pg::{FlushOp, PgStore};
use crate::store::{HeartbeatOutcome, OpStatus, TriggerItem, TriggerOutcome};

/// One worker's handle: the store and the runtime that drives it.
pub(crate) struct PgWorker {
    store: PgStore,
    rt: Arc<Runtime>,
}

/// Two stores (two pools, two lease owners) on one fresh schema.
fn open_pair() -> CResult<Workers<PgWorker>> {
    let schema = TestSchema::new("contract").map_err(|e| -> Box<dyn std::error::Error> { e })?;
    let rt = schema.runtime();
    let a = rt.block_on(schema.store(2))?;
    let b = rt.block_on(schema.store(2))?;
    Ok(Workers {
        a: PgWorker {
            store: a,
            rt: rt.clone(),
        },
        b: PgWorker { store: b, rt },
        keep: Box::new(schema),
    })
}

fn outcome(s: OpStatus) -> CResult<Outcome> {
    Ok(match s {
        OpStatus::Ok => Outcome::Ok,
        OpStatus::Cancelled => Outcome::Cancelled,
        OpStatus::Lost => Outcome::Lost,
        OpStatus::TooBig => return Err("the suite's small values were refused as too big".into()),
        OpStatus::Failed => return Err("an op of the suite failed".into()),
    })
}

fn text(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

/// The flush op of a batched write.
fn op(w: &Write) -> CResult<FlushOp> {
    let now = SystemTime::now();
    Ok(match w {
        Write::Step {
            run,
            generation,
            name,
            index,
            output,
            progress,
        } => FlushOp::Step {
            run: run.clone(),
            generation: *generation,
            name: name.clone(),
            index: *index,
            status: "completed".into(),
            output: Some(output.to_string()),
            error: None,
            stack: None,
            started_at: now,
            completed_at: Some(now),
            progress: text(progress),
        },
        Write::Complete {
            run,
            generation,
            output,
            progress,
        } => FlushOp::Complete {
            run: run.clone(),
            generation: *generation,
            output: Some(output.to_string()),
            progress: text(progress),
        },
        Write::Fail {
            run,
            generation,
            error,
            progress,
        } => FlushOp::Fail {
            run: run.clone(),
            generation: *generation,
            error: error.clone(),
            stack: None,
            progress: text(progress),
        },
        Write::Progress {
            run,
            generation,
            progress,
        } => FlushOp::Progress {
            run: run.clone(),
            generation: *generation,
            progress: progress.to_string(),
        },
        Write::Log {
            run,
            generation,
            message,
        } => FlushOp::Log {
            run: run.clone(),
            generation: *generation,
            step: None,
            level: "info".into(),
            message: message.clone(),
            data: Some(r#"{"n":1}"#.into()),
            at: now,
        },
        Write::Release { run, generation } => FlushOp::Release {
            run: run.clone(),
            generation: *generation,
        },
        Write::TimeoutFail { .. } | Write::Heartbeat { .. } => {
            return Err(format!("{w:?} is not sent in a write batch").into())
        }
    })
}

impl ContractStore for PgWorker {
    fn create_run(&self, job: &str) -> CResult<String> {
        let item = TriggerItem {
            job_name: job,
            input: "{}",
            idempotency_key: None,
            concurrency_key: None,
            coalesce: false,
            labels: "{}",
        };
        match self.rt.block_on(self.store.trigger(&item))? {
            TriggerOutcome::Created { id, .. } => Ok(id),
            other => Err(format!("expected a new run, got {other:?}").into()),
        }
    }

    fn claim_one(&self, job: &str) -> CResult<(String, i64)> {
        let mut runs = self.rt.block_on(self.store.claim(&[job.to_string()], 1))?;
        let run = runs
            .pop()
            .ok_or_else(|| format!("no run of {job} to claim"))?;
        Ok((run.id, run.generation))
    }

    fn recover_stale(&self, job: &str) -> CResult<usize> {
        // A threshold an hour in the future: every heartbeat is stale.
        Ok(self.rt.block_on(self.store.recover_older_than_ms(
            &[job.to_string()],
            -3_600_000,
            &[],
        ))?)
    }

    fn cancel(&self, run: &str) -> CResult {
        self.rt.block_on(self.store.cancel(run))?;
        Ok(())
    }

    fn write(&self, w: &Write) -> CResult<Outcome> {
        match w {
            Write::Heartbeat { run, generation } => Ok(
                match self
                    .rt
                    .block_on(self.store.heartbeat(&[(run.clone(), *generation)]))?
                    .as_slice()
                {
                    [] => Outcome::Ok,
                    [HeartbeatOutcome::Cancelled(id)] if id == run => Outcome::Cancelled,
                    [HeartbeatOutcome::Lost(id)] if id == run => Outcome::Lost,
                    other => return Err(format!("unexpected heartbeat outcome {other:?}").into()),
                },
            ),
            Write::TimeoutFail {
                run,
                generation,
                error,
            } => outcome(
                self.rt
                    .block_on(self.store.fail_owned(run, *generation, error))?,
            ),
            _ => {
                let mut out = self.write_batch(std::slice::from_ref(w))?;
                out.pop().ok_or_else(|| "no outcome".into())
            }
        }
    }

    fn write_batch(&self, ws: &[Write]) -> CResult<Vec<Outcome>> {
        let ops = ws.iter().map(op).collect::<CResult<Vec<FlushOp>>>()?;
        let statuses = self.rt.block_on(self.store.flush(&ops))?;
        if statuses.chars().count() != ws.len() {
            return Err(format!("{} ops, statuses {statuses:?}", ws.len()).into());
        }
        statuses
            .chars()
            .map(|c| match c {
                '0' => Ok(Outcome::Ok),
                'c' => Ok(Outcome::Cancelled),
                'l' => Ok(Outcome::Lost),
                _ => Err(format!("unknown op status {c:?}").into()),
            })
            .collect()
    }

    fn snapshot(&self) -> CResult<Snapshot> {
        self.rt.block_on(snapshot(&self.store))
    }
}

/// Every row of every table of the store's schema: integers as numbers,
/// times as fixed-width UTC text (microseconds, so text order is time
/// order), everything else (JSON included) as its text.
async fn snapshot(store: &PgStore) -> CResult<Snapshot> {
    let c = store.client().await?;
    let tables = c
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
            &[&store.schema()],
        )
        .await?;
    let mut snap = Snapshot::default();
    for t in tables {
        let table: String = t.get(0);
        let cols = c
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&store.schema(), &table],
            )
            .await?;
        let cols: Vec<(String, String)> = cols.iter().map(|r| (r.get(0), r.get(1))).collect();
        let select = cols
            .iter()
            .map(|(name, ty)| {
                if ty.starts_with("timestamp") {
                    format!(
                        "to_char(\"{name}\" AT TIME ZONE 'UTC', \
                         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                    )
                } else {
                    format!("\"{name}\"::text")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rows = c
            .query(&format!("SELECT {select} FROM \"{table}\""), &[])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Row::new();
            for (i, (name, ty)) in cols.iter().enumerate() {
                let v: Option<String> = r.get(i);
                let v = match v {
                    None => serde_json::Value::Null,
                    Some(s) if ty == "bigint" || ty == "integer" => {
                        serde_json::Value::from(s.parse::<i64>()?)
                    }
                    Some(s) => serde_json::Value::String(s),
                };
                row.insert(name.clone(), v);
            }
            out.push(row);
        }
        snap.insert(&table, out);
    }
    Ok(snap)
}

super::store_contract_suite!(PgWorker, open_pair, skip_unless: skip_reason);
