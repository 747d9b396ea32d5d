//! The one [`ContractStore`]: any [`Store`], driven through the interface.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

use super::{CResult, ContractStore, Outcome, Snapshot, Write};
use crate::store::{iso, FlushOp, HeartbeatOutcome, OpStatus, Store, TriggerItem, TriggerOutcome};

/// Runs a future to completion: polled once for a blocking store, a runtime's
/// `block_on` for an async one. (Type-erased, so this module needs no runtime.)
pub(crate) type Driver = Arc<dyn for<'a> Fn(Pin<Box<dyn Future<Output = ()> + 'a>>) + Send + Sync>;

/// One worker's handle: the store, how to drive it, and how to read every row.
pub(crate) struct Handle<S: Store> {
    pub store: S,
    pub drive: Driver,
    pub snap: fn(&Handle<S>) -> CResult<Snapshot>,
}

impl<S: Store> Handle<S> {
    /// The value of one of the store's futures.
    pub fn run<T>(&self, fut: impl Future<Output = crate::error::Result<T>>) -> CResult<T> {
        let mut out = None;
        (self.drive)(Box::pin(async {
            out = Some(fut.await);
        }));
        Ok(out.ok_or("the driver did not complete the future")??)
    }
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

fn status(c: char) -> CResult<Outcome> {
    match c {
        '0' => Ok(Outcome::Ok),
        'c' => Ok(Outcome::Cancelled),
        'l' => Ok(Outcome::Lost),
        _ => Err(format!("unknown op status {c:?}").into()),
    }
}

/// The JSON values of a batch's ops, kept alive while the ops borrow them.
fn raw(v: &Value) -> CResult<Box<RawValue>> {
    Ok(to_raw_value(v)?)
}

/// The values one write stores, as raw JSON: (output, progress, data).
type Values = (Option<Box<RawValue>>, Option<Box<RawValue>>);

fn values_of(w: &Write) -> CResult<Values> {
    let opt = |v: &Option<Value>| v.as_ref().map(raw).transpose();
    Ok(match w {
        Write::Step {
            output, progress, ..
        }
        | Write::Complete {
            output, progress, ..
        } => (Some(raw(output)?), opt(progress)?),
        Write::Fail { progress, .. } => (None, opt(progress)?),
        Write::Progress { progress, .. } => (None, Some(raw(progress)?)),
        Write::Log { .. } => (Some(raw(&serde_json::json!({"n": 1}))?), None),
        _ => (None, None),
    })
}

/// The flush op of a batched write, borrowing its values from `v`.
fn op<'a>(w: &'a Write, v: &'a Values, now: &str) -> CResult<FlushOp<'a>> {
    let (first, progress) = (v.0.as_deref(), v.1.as_deref());
    Ok(match w {
        Write::Step {
            run,
            generation,
            name,
            index,
            ..
        } => FlushOp::Step {
            run: run.clone(),
            generation: *generation,
            name: name.clone(),
            index: *index,
            status: "completed".into(),
            output: first,
            error: None,
            stack: None,
            started_at: now.to_string(),
            completed_at: Some(now.to_string()),
            progress,
        },
        Write::Complete {
            run, generation, ..
        } => FlushOp::Complete {
            run: run.clone(),
            generation: *generation,
            output: first,
            progress,
            at: now.to_string(),
            step_index: None,
        },
        Write::Fail {
            run,
            generation,
            error,
            ..
        } => FlushOp::Fail {
            run: run.clone(),
            generation: *generation,
            error: error.clone(),
            stack: None,
            progress,
            at: now.to_string(),
            step_index: None,
        },
        Write::Progress {
            run, generation, ..
        } => FlushOp::Progress {
            run: run.clone(),
            generation: *generation,
            progress,
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
            data: first,
            at: now.to_string(),
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

impl<S: Store> ContractStore for Handle<S> {
    fn create_run(&self, job: &str) -> CResult<String> {
        match self.run(self.store.trigger(&TriggerItem::new(job, "{}")))? {
            TriggerOutcome::Created { id, .. } => Ok(id),
            other => Err(format!("expected a new run, got {other:?}").into()),
        }
    }

    fn claim_one(&self, job: &str) -> CResult<(String, i64)> {
        let mut runs = self.run(self.store.claim(&[job.to_string()], 1))?;
        let run = runs
            .pop()
            .ok_or_else(|| format!("no run of {job} to claim"))?;
        Ok((run.id, run.generation))
    }

    fn recover_stale(&self, job: &str) -> CResult<usize> {
        // A zero threshold: every heartbeat written before now is stale.
        self.run(
            self.store
                .recover_stale(&[job.to_string()], Duration::ZERO, &[]),
        )
    }

    fn cancel(&self, run: &str) -> CResult {
        self.run(self.store.cancel(run))?;
        Ok(())
    }

    fn write(&self, w: &Write) -> CResult<Outcome> {
        match w {
            Write::Heartbeat { run, generation } => Ok(
                match self
                    .run(self.store.heartbeat(&[(run.clone(), *generation)]))?
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
            } => outcome(self.run(self.store.fail_owned(run, *generation, error))?),
            _ => {
                let mut out = self.write_batch(std::slice::from_ref(w))?;
                out.pop().ok_or_else(|| "no outcome".into())
            }
        }
    }

    fn write_batch(&self, ws: &[Write]) -> CResult<Vec<Outcome>> {
        let now = iso(self.store.now());
        let values = ws.iter().map(values_of).collect::<CResult<Vec<_>>>()?;
        let ops = ws
            .iter()
            .zip(&values)
            .map(|(w, v)| op(w, v, &now))
            .collect::<CResult<Vec<_>>>()?;
        let out = self.run(self.store.flush_then_claim(&ops, |_| None))?;
        if !out.errors.is_empty() {
            return Err(format!("ops failed: {:?}", out.errors).into());
        }
        if out.statuses.chars().count() != ws.len() {
            return Err(format!("{} ops, statuses {:?}", ws.len(), out.statuses).into());
        }
        out.statuses.chars().map(status).collect()
    }

    fn snapshot(&self) -> CResult<Snapshot> {
        (self.snap)(self)
    }
}
