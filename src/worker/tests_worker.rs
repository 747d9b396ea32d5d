//! Worker tests: the claim loop, wake-ups, heartbeats and timeouts, with a
//! recording sink (no Node).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::store::{Batch, SqliteStore, StoreOptions, TriggerItem, TriggerOutcome};

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

type Fixture = (
    tempfile::TempDir,
    Arc<SqliteStore>,
    Arc<Recorder>,
    Worker<SqliteStore>,
    tokio::runtime::Runtime,
);

fn setup(cfg: WorkerConfig) -> std::result::Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(StoreOptions::new(
        dir.path().join("w.db").to_string_lossy(),
    ))?);
    store.migrate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()?;
    let rec = Arc::new(Recorder::default());
    let worker = Worker::new(store.clone(), cfg, rec.clone(), rt.handle().clone());
    worker.set_jobs(vec![("job".into(), None)]);
    Ok((dir, store, rec, worker, rt))
}

fn trigger(store: &SqliteStore) -> std::result::Result<String, Box<dyn std::error::Error>> {
    match store.trigger(&TriggerItem {
        job_name: "job",
        input: "null",
        idempotency_key: None,
        concurrency_key: None,
        coalesce: false,
        labels: "{}",
    })? {
        TriggerOutcome::Created { id, .. } => Ok(id),
        other => Err(format!("unexpected {other:?}").into()),
    }
}

fn wait_for(mut pred: impl FnMut() -> bool, what: &str) -> TestResult {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !pred() {
        if std::time::Instant::now() > end {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[test]
fn claims_on_wake_and_respects_max_concurrent() -> TestResult {
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(60),
        max_concurrent: 2,
        ..WorkerConfig::default()
    };
    let (_d, store, rec, worker, _rt) = setup(cfg)?;
    worker.start();
    let ids: Vec<String> = (0..3).map(|_| trigger(&store)).collect::<Result<_, _>>()?;
    worker.wake();
    wait_for(|| lock(&rec.runs).len() == 2, "two claims")?;
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        lock(&rec.runs).len(),
        2,
        "a third run waits for a free slot"
    );
    assert_eq!(worker.inflight(), 2);
    worker.release(&ids[0], 1);
    wait_for(|| lock(&rec.runs).len() == 3, "third claim after release")?;
    worker.close();
    Ok(())
}

#[test]
fn notices_runs_written_by_another_connection() -> TestResult {
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(60),
        ..WorkerConfig::default()
    };
    let (dir, _store, rec, worker, _rt) = setup(cfg)?;
    worker.start();
    std::thread::sleep(Duration::from_millis(30));
    // Another "process": its own store on the same file; no wake() here.
    let other = SqliteStore::open(StoreOptions::new(dir.path().join("w.db").to_string_lossy()))?;
    trigger(&other)?;
    wait_for(
        || lock(&rec.runs).len() == 1,
        "data_version to notice the run",
    )?;
    worker.close();
    Ok(())
}

#[test]
fn heartbeat_reports_a_cancelled_run_and_timeouts_fail_runs() -> TestResult {
    let cfg = WorkerConfig {
        heartbeat_interval: Duration::from_millis(30),
        stale_threshold: Duration::from_millis(1000),
        ..WorkerConfig::default()
    };
    let (_d, store, rec, worker, _rt) = setup(cfg)?;
    worker.set_jobs(vec![("job".into(), Some(Duration::from_millis(150)))]);
    worker.start();
    let id = trigger(&store)?;
    worker.wake();
    wait_for(|| lock(&rec.runs).len() == 1, "claim")?;
    // Never released by "JS": the native timeout fails it and frees the slot.
    wait_for(|| !lock(&rec.lost).is_empty(), "timeout")?;
    assert_eq!(lock(&rec.lost)[0], (id.clone(), LostReason::Timeout));
    let run = store.get_run(&id)?.ok_or("run")?;
    assert!(run.contains("\"status\":\"failed\""));
    assert!(run.contains("timed out after 150 ms"));
    assert_eq!(worker.inflight(), 0);

    worker.set_jobs(vec![("job".into(), None)]);
    let id2 = trigger(&store)?;
    worker.wake();
    wait_for(|| lock(&rec.runs).len() == 2, "second claim")?;
    store.cancel(&id2)?;
    wait_for(|| lock(&rec.lost).len() == 2, "heartbeat to see the cancel")?;
    assert_eq!(lock(&rec.lost)[1], (id2, LostReason::Cancelled));
    assert!(lock(&rec.errors).is_empty(), "{:?}", lock(&rec.errors));
    worker.close();
    Ok(())
}

#[test]
fn a_completion_claims_the_next_run_in_the_same_commit() -> TestResult {
    let cfg = WorkerConfig {
        polling_interval: Duration::from_secs(60),
        check_interval: Duration::from_secs(60),
        ..WorkerConfig::default()
    };
    let (_d, store, rec, worker, _rt) = setup(cfg)?;
    let a = trigger(&store)?;
    worker.start();
    wait_for(|| lock(&rec.runs).len() == 1, "first claim")?;
    let b = trigger(&store)?; // no wake: only the flush below can claim it
    let ops = format!(
        r#"[{{"complete":{{"run":"{a}","gen":1,"output":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
    );
    let batch = Batch::parse(&ops)?;
    let out = worker.try_flush(&batch.ops)?.ok_or("lock taken")?;
    assert_eq!(out.statuses, "0");
    let claimed = out.then;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, b);
    assert_eq!(worker.inflight(), 1, "a's slot went to b");
    // A stale release of a under an old generation must not free b's slot.
    worker.release(&b, 99);
    assert_eq!(worker.inflight(), 1);
    worker.release(&b, 1);
    assert_eq!(worker.inflight(), 0);
    worker.stop();
    let c = trigger(&store)?;
    let ops = format!(
        r#"[{{"complete":{{"run":"{b}","gen":1,"output":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
    );
    let batch = Batch::parse(&ops)?;
    let claimed = poll_once(worker.flush(&batch.ops, batch.bytes))?.then;
    assert!(
        claimed.is_empty(),
        "a stopped worker claims nothing ({c} stays pending)"
    );
    worker.close();
    Ok(())
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
    let (_dir, store, _rec, worker, _rt) = setup(cfg)?;
    worker.start();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !worker.wait_closed(Duration::from_millis(20)),
        "tasks run until close"
    );
    let t = std::time::Instant::now();
    worker.close();
    assert!(worker.wait_closed(Duration::from_secs(5)), "tasks exited");
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "took {:?}",
        t.elapsed()
    );
    // Only the fixture and the worker's shared state hold the store now.
    assert_eq!(Arc::strong_count(&store), 2);
    Ok(())
}
