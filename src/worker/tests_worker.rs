//! Worker tests: the claim loop, wake-ups, heartbeats and timeouts, with a
//! recording sink (no Node).
//!
//! Each test runs on a current-thread tokio runtime with paused time
//! (`start_paused`), and the store's injectable clock reads the same
//! virtual time (as in `engine::tests`): periods pass without waiting for
//! them, and a blocking store call (on tokio's blocking pool) holds the
//! clock still until it returns. Waits are for a state (`until`), bounded in
//! virtual time; a sleep before an assert only shows that something did
//! *not* happen within a period, which virtual time makes exact.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::store::{Batch, Clock, SqliteStore, StoreOptions, TriggerItem, TriggerOutcome};

#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<ClaimedRun>>,
    lost: Mutex<Vec<(String, LostReason)>>,
    errors: Mutex<Vec<String>>,
}

impl Sink for Recorder {
    fn runs(&self, runs: Vec<ClaimedRun>) {
        lock(&self.runs).extend(runs);
    }
    fn lost(&self, id: &str, reason: LostReason) {
        lock(&self.lost).push((id.to_string(), reason));
    }
    fn error(&self, context: &'static str, err: &Error) {
        lock(&self.errors).push(format!("{context}: {err}"));
    }
}

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    dir: tempfile::TempDir,
    clock: Clock,
    store: Arc<SqliteStore>,
    rec: Arc<Recorder>,
    worker: Worker<SqliteStore>,
}

impl Fixture {
    /// Another "process": its own store on the same file, same clock.
    fn other(&self) -> std::result::Result<SqliteStore, Box<dyn std::error::Error>> {
        Ok(SqliteStore::open_with_clock(
            StoreOptions::new(self.dir.path().join("w.db").to_string_lossy()),
            self.clock.clone(),
        )?)
    }

    fn errors(&self) -> Vec<String> {
        lock(&self.rec.errors).clone()
    }
}

/// Runs `case` on a paused current-thread runtime with a worker whose
/// store's clock is the runtime's virtual time.
fn run<F, Fut>(cfg: WorkerConfig, case: F) -> TestResult
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let origin = tokio::time::Instant::now();
        let base = std::time::SystemTime::now();
        let clock: Clock = Arc::new(move || base + (tokio::time::Instant::now() - origin));
        let store = Arc::new(SqliteStore::open_with_clock(
            StoreOptions::new(dir.path().join("w.db").to_string_lossy()),
            clock.clone(),
        )?);
        store.migrate()?;
        let rec = Arc::new(Recorder::default());
        let worker = Worker::new(
            store.clone(),
            cfg,
            rec.clone(),
            tokio::runtime::Handle::current(),
        );
        worker.set_jobs(vec![("job".into(), None)]);
        case(Fixture {
            dir,
            clock,
            store,
            rec,
            worker,
        })
        .await
    })
}

fn trigger(store: &SqliteStore) -> std::result::Result<String, Box<dyn std::error::Error>> {
    match store.trigger(&TriggerItem::new("job", "null"))? {
        TriggerOutcome::Created { id, .. } => Ok(id),
        other => Err(format!("unexpected {other:?}").into()),
    }
}

/// Waits until `pred` holds, at most `limit` of virtual time.
async fn until(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) -> TestResult {
    let end = tokio::time::Instant::now() + limit;
    while !pred() {
        if tokio::time::Instant::now() >= end {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn status(
    store: &SqliteStore,
    id: &str,
) -> std::result::Result<String, Box<dyn std::error::Error>> {
    let json = store.get_run(id)?.ok_or("run not found")?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    Ok(v["status"].as_str().ok_or("no status")?.to_string())
}

/// Far below the polling interval: only a wake-up (or the change check)
/// can make a claim happen this soon.
const SOON: Duration = Duration::from_millis(100);

#[test]
fn claims_on_wake_and_respects_max_concurrent() -> TestResult {
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(2),
        max_concurrent: 2,
        ..WorkerConfig::default()
    };
    run(cfg, |fx| async move {
        let (store, rec, worker) = (&fx.store, &fx.rec, &fx.worker);
        worker.start();
        let ids: Vec<String> = (0..3).map(|_| trigger(store)).collect::<Result<_, _>>()?;
        worker.wake();
        until(SOON, "two claims", || lock(&rec.runs).len() >= 2).await?;
        // Two polling periods, stale recovery and change checks included:
        // the third run waits for a free slot.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            lock(&rec.runs).len(),
            2,
            "a third run waits for a free slot"
        );
        assert_eq!(worker.inflight(), 2);
        assert_eq!(status(store, &ids[2])?, "pending");
        // A stale release (old generation) frees nothing.
        worker.release(&ids[0], 99);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(lock(&rec.runs).len(), 2, "a stale release frees no slot");
        assert_eq!(worker.inflight(), 2);
        // The release wakes the loop: the third run is claimed long before a poll.
        worker.release(&ids[0], 1);
        until(SOON, "third claim after release", || {
            lock(&rec.runs).len() == 3
        })
        .await?;
        assert_eq!(lock(&rec.runs)[2].id, ids[2]);
        assert_eq!(worker.inflight(), 2);
        assert!(fx.errors().is_empty(), "{:?}", fx.errors());
        worker.close();
        Ok(())
    })
}

#[test]
fn notices_runs_written_by_another_connection() -> TestResult {
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(60),
        ..WorkerConfig::default()
    };
    run(cfg, |fx| async move {
        fx.worker.start();
        // The loop's first pass (claims nothing) ends before virtual time
        // moves: after this, only the change check or a poll can claim.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(lock(&fx.rec.runs).is_empty());
        let other = fx.other()?;
        // No wake() here: the other process cannot reach this worker.
        let id = trigger(&other)?;
        until(SOON, "data_version to notice the run", || {
            lock(&fx.rec.runs).len() == 1
        })
        .await?;
        assert_eq!(lock(&fx.rec.runs)[0].id, id);
        assert!(fx.errors().is_empty(), "{:?}", fx.errors());
        fx.worker.close();
        Ok(())
    })
}

#[test]
fn heartbeat_reports_a_cancelled_run_and_timeouts_fail_runs() -> TestResult {
    let cfg = WorkerConfig {
        heartbeat_interval: Duration::from_millis(30),
        stale_threshold: Duration::from_millis(1000),
        ..WorkerConfig::default()
    };
    run(cfg, |fx| async move {
        let (store, rec, worker) = (&fx.store, &fx.rec, &fx.worker);
        worker.set_jobs(vec![("job".into(), Some(Duration::from_millis(150)))]);
        worker.start();
        let id = trigger(store)?;
        let t0 = tokio::time::Instant::now();
        worker.wake();
        until(SOON, "claim", || lock(&rec.runs).len() == 1).await?;
        // Never released by "JS": the native timeout fails it and frees the
        // slot, not before its deadline, and within a heartbeat tick after.
        tokio::time::sleep(Duration::from_millis(140).saturating_sub(t0.elapsed())).await;
        assert!(lock(&rec.lost).is_empty(), "not before the deadline");
        assert_eq!(status(store, &id)?, "running");
        until(Duration::from_millis(100), "timeout", || {
            !lock(&rec.lost).is_empty()
        })
        .await?;
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert_eq!(lock(&rec.lost)[0], (id.clone(), LostReason::Timeout));
        let run = store.get_run(&id)?.ok_or("run")?;
        assert!(run.contains("\"status\":\"failed\""), "{run}");
        assert!(run.contains("timed out after 150 ms"), "{run}");
        assert_eq!(worker.inflight(), 0);

        // Without a timeout, a run held well past 150 ms (and past the stale
        // threshold) is neither failed nor lost, until it is cancelled.
        worker.set_jobs(vec![("job".into(), None)]);
        let id2 = trigger(store)?;
        worker.wake();
        until(SOON, "second claim", || lock(&rec.runs).len() == 2).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(lock(&rec.lost).len(), 1, "no timeout, not stale");
        assert_eq!(status(store, &id2)?, "running");
        store.cancel(&id2)?;
        until(
            Duration::from_millis(300),
            "heartbeat to see the cancel",
            || lock(&rec.lost).len() == 2,
        )
        .await?;
        assert_eq!(lock(&rec.lost)[1], (id2, LostReason::Cancelled));
        assert!(fx.errors().is_empty(), "{:?}", fx.errors());
        worker.close();
        Ok(())
    })
}

/// A completion batch: `run`'s `complete` op under generation `gen`.
fn completion(run: &str, gen: i64) -> String {
    format!(
        r#"[{{"complete":{{"run":"{run}","gen":{gen},"output":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
    )
}

#[test]
fn a_completion_claims_the_next_run_in_the_same_commit() -> TestResult {
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(60),
        check_interval: Duration::from_secs(60),
        ..WorkerConfig::default()
    };
    run(cfg, |fx| async move {
        let (store, rec, worker) = (&fx.store, &fx.rec, &fx.worker);
        let a = trigger(store)?;
        worker.start();
        until(SOON, "first claim", || lock(&rec.runs).len() == 1).await?;
        let b = trigger(store)?; // no wake: only the flush below can claim it
        let ops = completion(&a, 1);
        let batch = Batch::parse(&ops)?;
        let out = worker.try_flush(&batch.ops)?.ok_or("lock taken")?;
        assert_eq!(out.statuses, "0");
        let claimed = out.then;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, b);
        assert_eq!(status(store, &b)?, "running");
        assert_eq!(worker.inflight(), 1, "a's slot went to b");
        // A stale release of b under an old generation must not free b's slot.
        worker.release(&b, 99);
        assert_eq!(worker.inflight(), 1);
        worker.release(&b, 1);
        assert_eq!(worker.inflight(), 0);
        worker.stop();
        let c = trigger(store)?;
        let ops = completion(&b, 1);
        let batch = Batch::parse(&ops)?;
        let claimed = worker.flush(&batch.ops, batch.bytes).await?.then;
        assert!(
            claimed.is_empty(),
            "a stopped worker claims nothing ({c} stays pending)"
        );
        assert_eq!(status(store, &c)?, "pending");
        worker.close();
        Ok(())
    })
}

#[test]
fn a_completion_claims_ahead_only_while_turned_on_and_no_job_has_a_timeout() -> TestResult {
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(60),
        check_interval: Duration::from_secs(60),
        claim_ahead: 1,
        ..WorkerConfig::default()
    };
    run(cfg, |fx| async move {
        let (store, rec, worker) = (&fx.store, &fx.rec, &fx.worker);
        let a = trigger(store)?;
        worker.start();
        until(SOON, "first claim", || lock(&rec.runs).len() == 1).await?;
        let pending = [
            trigger(store)?,
            trigger(store)?,
            trigger(store)?,
            trigger(store)?,
        ];
        // Off (the default): a's slot goes to one run.
        let text = completion(&a, 1);
        let batch = Batch::parse(&text)?;
        let claimed = worker.try_flush(&batch.ops)?.ok_or("lock taken")?.then;
        assert_eq!(
            claimed.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&pending[0]]
        );
        assert_eq!(worker.inflight(), 1);
        // On: the slot and one more (max_concurrent 1 + claim_ahead 1).
        worker.set_claim_ahead(true);
        let text = completion(&pending[0], 1);
        let batch = Batch::parse(&text)?;
        let claimed = worker.try_flush(&batch.ops)?.ok_or("lock taken")?.then;
        assert_eq!(
            claimed.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&pending[1], &pending[2]]
        );
        assert_eq!(worker.inflight(), 2);
        for id in &pending[1..3] {
            assert_eq!(status(store, id)?, "running");
        }
        // The claim loop never claims ahead: both slots are taken.
        assert_eq!(worker.claim_now(5).await?.len(), 0);
        // A job with a timeout (it counts from the claim): no run waits claimed ahead.
        worker.set_jobs(vec![("job".into(), Some(Duration::from_secs(60)))]);
        let text = completion(&pending[1], 1);
        let batch = Batch::parse(&text)?;
        let claimed = worker.try_flush(&batch.ops)?.ok_or("lock taken")?.then;
        assert!(
            claimed.is_empty(),
            "1 + 0 slots, both taken ({} and the new one's)",
            pending[2]
        );
        assert_eq!(status(store, &pending[3])?, "pending");
        worker.close();
        Ok(())
    })
}

#[test]
fn close_ends_every_background_task_promptly() -> TestResult {
    // Long periods: only the close notification can end the tasks' sleeps.
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(60),
        heartbeat_interval: Duration::from_secs(60),
        stale_threshold: Duration::from_secs(120),
        check_interval: Duration::from_secs(60),
        checkpoint_interval: Duration::from_secs(60),
        ..WorkerConfig::default()
    };
    run(cfg, |fx| async move {
        let worker = &fx.worker;
        worker.start();
        // Several of every period, ending off their ticks (so that no task
        // is already past its sleep when close comes): the tasks keep
        // running until close.
        tokio::time::sleep(Duration::from_millis(600_100)).await;
        assert!(worker.loop_alive(), "the claim loop runs until stop/close");
        assert!(
            Arc::strong_count(&worker.shared) > 1,
            "background tasks run until close"
        );
        assert!(!worker.wait_closed(Duration::ZERO));
        let t = tokio::time::Instant::now();
        worker.close();
        // Every task exits on the notification, long before any period ends.
        until(Duration::from_millis(20), "every task to exit", || {
            Arc::strong_count(&worker.shared) == 1
        })
        .await?;
        assert!(
            t.elapsed() < Duration::from_millis(20),
            "took {:?}",
            t.elapsed()
        );
        assert!(worker.wait_closed(Duration::ZERO), "tasks exited");
        assert!(!worker.loop_alive());
        // Only the fixture and the worker's shared state hold the store now.
        assert_eq!(Arc::strong_count(&fx.store), 2);
        Ok(())
    })
}
