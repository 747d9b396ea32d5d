//! The benchmark's `ceiling`: the physical limit for sequential steps.
//!
//! Opens a [`Store`] with the library's own pragmas and schema, creates and
//! claims runs through the store API, then times the step writes of the flush
//! path done directly in Rust: per step one [`Store::flush`] of a one-op
//! batch, i.e. one `BEGIN IMMEDIATE` transaction doing exactly the run update
//! and the step insert the engine does for a `ctx.run` result. Runs are
//! written one after another, like `maxConcurrentRuns: 1`. As in a running
//! worker (whose writer has autocheckpoint off), a side connection runs
//! passive WAL checkpoints meanwhile. `npm run bench` reports the end-to-end
//! step rate as a fraction of this one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Store, StoreOptions, Synchronous, TriggerItem, TriggerOutcome};
use crate::error::{Error, Result};

/// Job name of the benchmark's runs.
const JOB: &str = "ceiling";

/// Period of the side checkpoints; the worker's checkpointer default.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// What [`ceiling`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Step writes (= transactions) timed.
    pub writes: u64,
    /// Time they took.
    pub elapsed: Duration,
}

impl Ceiling {
    /// Step writes per second.
    pub fn per_second(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the ceiling benchmark on `path` (a fresh file is expected): `runs`
/// runs of `steps_per_run` steps, each step returning `{"i": index}`.
pub fn ceiling(
    path: &str,
    synchronous: Synchronous,
    runs: usize,
    steps_per_run: usize,
) -> Result<Ceiling> {
    let store = Store::open(StoreOptions {
        synchronous,
        ..StoreOptions::new(path)
    })?;
    store.migrate()?;
    let claimed = create_and_claim(&store, runs)?;
    let side = store.side_connection()?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        if let Some(conn) = side {
            let stop = &stop;
            let store = &store;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    // A failed passive checkpoint only leaves the WAL longer.
                    let _ = store.checkpoint(&conn);
                }
            });
        }
        let out = write_steps(&store, &claimed, steps_per_run);
        stop.store(true, Ordering::Relaxed);
        out
    })
}

fn create_and_claim(store: &Store, runs: usize) -> Result<Vec<(String, i64)>> {
    let inputs: Vec<String> = (0..runs).map(|n| format!("{{\"n\":{n}}}")).collect();
    for chunk in inputs.chunks(500) {
        let items: Vec<TriggerItem> = chunk
            .iter()
            .map(|input| TriggerItem {
                job_name: JOB,
                input,
                idempotency_key: None,
                concurrency_key: None,
                coalesce: false,
                labels: "{}",
            })
            .collect();
        for outcome in store.trigger_batch(&items)? {
            if !matches!(outcome, TriggerOutcome::Created { .. }) {
                return Err(Error::Internal("ceiling: a run was not created".into()));
            }
        }
    }
    let claimed = store.claim(&[JOB.to_string()], runs)?;
    if claimed.len() != runs {
        return Err(Error::Internal(format!(
            "ceiling: claimed {} of {runs} runs",
            claimed.len()
        )));
    }
    Ok(claimed.into_iter().map(|r| (r.id, r.generation)).collect())
}

fn write_steps(store: &Store, runs: &[(String, i64)], steps: usize) -> Result<Ceiling> {
    let start = Instant::now();
    let mut writes = 0u64;
    for (id, generation) in runs {
        for i in 0..steps {
            let now = store.now();
            let op = format!(
                r#"[["s","{id}",{generation},"s{i}",{i},"completed",{{"i":{i}}},null,null,"{now}","{now}",null]]"#
            );
            if store.flush(&op)? != "0" {
                return Err(Error::Internal(format!(
                    "ceiling: the step write of run {id} was refused"
                )));
            }
            writes += 1;
        }
    }
    Ok(Ceiling {
        writes,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_step_of_every_run() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.db").to_string_lossy().into_owned();
        let c = ceiling(&path, Synchronous::Normal, 3, 4)?;
        assert_eq!(c.writes, 12);
        assert!(c.per_second() > 0.0);
        let store = Store::open(StoreOptions::new(path))?;
        let (steps, at_end): (i64, i64) = store.read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT COUNT(*) FROM steps WHERE status = 'completed'), \
                 (SELECT COUNT(*) FROM runs WHERE current_step_index = 4 AND status = 'running')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })?;
        assert_eq!((steps, at_end), (12, 3));
        Ok(())
    }
}
