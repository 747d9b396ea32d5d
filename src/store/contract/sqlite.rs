//! The contract suite on the SQLite [`Store`]: its adapter, its opener, and
//! the suite itself (`cargo test --lib store::contract`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{CResult, ContractStore, Outcome, Row, Snapshot, Workers, Write};
use crate::store::{
    iso, Clock, HeartbeatOutcome, Store, StoreOptions, TriggerItem, TriggerOutcome,
};

/// A clock that moves 1 ms forward on every reading, from the real time.
fn ticking_clock() -> Clock {
    let start = SystemTime::now();
    let ticks = Arc::new(AtomicU64::new(0));
    Arc::new(move || start + Duration::from_millis(ticks.fetch_add(1, Ordering::SeqCst)))
}

/// Two stores (two connections pairs, two lease owners) on one fresh file.
pub(crate) fn open_pair() -> CResult<Workers<Store>> {
    let dir = tempfile::tempdir()?;
    let path = dir
        .path()
        .join("contract.db")
        .to_string_lossy()
        .into_owned();
    let clock = ticking_clock();
    let a = Store::open_with_clock(StoreOptions::new(path.clone()), clock.clone())?;
    a.migrate()?;
    let b = Store::open_with_clock(StoreOptions::new(path), clock)?;
    Ok(Workers {
        a,
        b,
        keep: Box::new(dir),
    })
}

/// A flush status character (see `OpStatus::as_char`); any other status is
/// an error of the case.
fn outcome(c: char) -> CResult<Outcome> {
    Ok(match c {
        '0' => Outcome::Ok,
        'c' => Outcome::Cancelled,
        'l' => Outcome::Lost,
        _ => return Err(format!("unknown op status {c:?}").into()),
    })
}

fn opt(v: &Option<Value>) -> Value {
    v.clone().unwrap_or(Value::Null)
}

/// The flush op of a batched write (see `flush.rs` for the formats).
fn op(store: &Store, w: &Write) -> CResult<Value> {
    let now = store.now();
    Ok(match w {
        Write::Step {
            run,
            generation,
            name,
            index,
            output,
            progress,
        } => json!({"step": {
            "run": run, "gen": generation, "name": name, "index": index,
            "status": "completed", "output": output, "error": null, "stack": null,
            "startedAt": now, "completedAt": now, "progress": opt(progress)
        }}),
        Write::Complete {
            run,
            generation,
            output,
            progress,
        } => json!({"complete": {
            "run": run, "gen": generation, "output": output, "progress": opt(progress), "at": now
        }}),
        Write::Fail {
            run,
            generation,
            error,
            progress,
        } => json!({"fail": {
            "run": run, "gen": generation, "error": error, "stack": null,
            "progress": opt(progress), "at": now
        }}),
        Write::Progress {
            run,
            generation,
            progress,
        } => json!({"progress": {"run": run, "gen": generation, "progress": progress}}),
        Write::Log {
            run,
            generation,
            message,
        } => json!({"log": {
            "run": run, "gen": generation, "step": null, "level": "info",
            "message": message, "data": {"n": 1}, "at": now
        }}),
        Write::Release { run, generation } => {
            json!({"release": {"run": run, "gen": generation}})
        }
        Write::TimeoutFail { .. } | Write::Heartbeat { .. } => {
            return Err(format!("{w:?} is not sent in a write batch").into())
        }
    })
}

impl ContractStore for Store {
    fn create_run(&self, job: &str) -> CResult<String> {
        match self.trigger(&TriggerItem {
            job_name: job,
            input: "{}",
            idempotency_key: None,
            concurrency_key: None,
            coalesce: false,
            labels: "{}",
        })? {
            TriggerOutcome::Created { id, .. } => Ok(id),
            other => Err(format!("expected a new run, got {other:?}").into()),
        }
    }

    fn claim_one(&self, job: &str) -> CResult<(String, i64)> {
        let mut runs = self.claim(&[job.to_string()], 1)?;
        let run = runs
            .pop()
            .ok_or_else(|| format!("no run of {job} to claim"))?;
        Ok((run.id, run.generation))
    }

    fn recover_stale(&self, job: &str) -> CResult<usize> {
        let every_heartbeat = iso(self.now_time() + Duration::from_secs(3600));
        Ok(Store::recover_stale(
            self,
            &[job.to_string()],
            &every_heartbeat,
        )?)
    }

    fn cancel(&self, run: &str) -> CResult {
        Store::cancel(self, run)?;
        Ok(())
    }

    fn write(&self, w: &Write) -> CResult<Outcome> {
        match w {
            Write::Heartbeat { run, generation } => Ok(
                match self.heartbeat(&[(run.clone(), *generation)])?.as_slice() {
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
            } => outcome(self.fail_owned(run, *generation, error)?.as_char()),
            _ => {
                let mut out = self.write_batch(std::slice::from_ref(w))?;
                out.pop().ok_or_else(|| "no outcome".into())
            }
        }
    }

    fn write_batch(&self, ws: &[Write]) -> CResult<Vec<Outcome>> {
        let ops = ws
            .iter()
            .map(|w| op(self, w))
            .collect::<CResult<Vec<Value>>>()?;
        let statuses = self.flush(&serde_json::to_string(&ops)?)?.statuses;
        if statuses.chars().count() != ws.len() {
            return Err(format!("{} ops, statuses {statuses:?}", ws.len()).into());
        }
        statuses.chars().map(outcome).collect()
    }

    fn snapshot(&self) -> CResult<Snapshot> {
        Ok(self.read(|c| {
            let tables: Vec<String> = c
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut snap = Snapshot::default();
            for table in tables {
                let mut st = c.prepare(&format!("SELECT * FROM \"{table}\""))?;
                let cols: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
                let rows = st
                    .query_map([], |r| {
                        let mut row = Row::new();
                        for (i, col) in cols.iter().enumerate() {
                            row.insert(col.clone(), value(r.get_ref(i)?));
                        }
                        Ok(row)
                    })?
                    .collect::<rusqlite::Result<Vec<Row>>>()?;
                snap.insert(&table, rows);
            }
            Ok(snap)
        })?)
    }
}

fn value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(format!("blob:{b:?}")),
    }
}

super::store_contract_suite!(Store, open_pair);
