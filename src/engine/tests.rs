//! The engine's policy (retention timer, job timeouts, stale recovery
//! before processing), one body per case, generic over the [`Store`]:
//!
//! - on SQLite under tokio's paused time (`start_paused`) with the store's
//!   injectable clock reading the same virtual time, so a period passes
//!   without waiting for it and "nothing happened before the period" is
//!   exact;
//! - on PostgreSQL (`--features postgres`, `DURABLY_TEST_PG_URL`) in real
//!   time: its leases use the database's clock, which tests cannot move.
//!
//! Waits are for a state (`until`), bounded, never a sleep then an assert,
//! except to show that something did *not* happen within a period; in real
//! time (PostgreSQL) such a check must not depend on the sleep ending on
//! time (a loaded machine oversleeps), so it compares recorded instants.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Engine, EngineConfig};
use crate::error::Error;
use crate::store::{iso, lock, ClaimedRun, Store, TriggerItem, TriggerOutcome};
use crate::worker::{LostReason, Sink, WorkerConfig};

type TResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<ClaimedRun>>,
    lost: Mutex<Vec<(String, LostReason)>>,
    /// When each `lost` was reported (the runtime's time).
    lost_at: Mutex<Vec<tokio::time::Instant>>,
    errors: Mutex<Vec<String>>,
}

impl Sink for Recorder {
    fn runs(&self, runs: Vec<ClaimedRun>) {
        lock(&self.runs).extend(runs);
    }
    fn lost(&self, id: &str, reason: LostReason) {
        lock(&self.lost).push((id.to_string(), reason));
        lock(&self.lost_at).push(tokio::time::Instant::now());
    }
    fn error(&self, context: &'static str, err: &Error) {
        lock(&self.errors).push(format!("{context}: {err}"));
    }
}

/// What a case gets: the engine, its sink, a second handle on the same
/// database (another process), and whatever keeps the database alive.
struct Fixture<S: Store> {
    engine: Engine<S>,
    rec: Arc<Recorder>,
    other: Arc<S>,
    #[allow(dead_code)]
    keep: Box<dyn std::any::Any>,
}

const JOB: &str = "job";
const POLL: Duration = Duration::from_millis(1000);
const STALE: Duration = Duration::from_millis(1000);

fn config(retain: Option<Duration>) -> EngineConfig {
    EngineConfig {
        worker: WorkerConfig {
            polling_interval: POLL,
            heartbeat_interval: Duration::from_millis(200),
            stale_threshold: STALE,
            max_concurrent: 4,
            ..WorkerConfig::default()
        },
        retain,
    }
}

/// Waits (bounded by `limit` of the runtime's time) until `pred` holds.
async fn until(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) -> TResult {
    let end = tokio::time::Instant::now() + limit;
    while !pred() {
        if tokio::time::Instant::now() >= end {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn create<S: Store>(s: &S) -> TResult<String> {
    match s.trigger(&TriggerItem::new(JOB, "null")).await? {
        TriggerOutcome::Created { id, .. } => Ok(id),
        other => Err(format!("unexpected {other:?}").into()),
    }
}

/// Completes `run` through the engine's flush (as the JS layer does).
async fn complete<S: Store>(e: &Engine<S>, run: &ClaimedRun) -> TResult {
    let op = format!(
        r#"[{{"complete":{{"run":"{}","gen":{},"output":1,"progress":null,"at":"{}"}}}}]"#,
        run.id,
        run.generation,
        iso(e.store().now())
    );
    assert_eq!(e.flush(&op).await?.statuses, "0");
    Ok(())
}

async fn status<S: Store>(s: &S, id: &str) -> TResult<Option<String>> {
    Ok(match s.get_run(id).await? {
        Some(json) => {
            let v: serde_json::Value = serde_json::from_str(&json)?;
            v["status"].as_str().map(str::to_string)
        }
        None => None,
    })
}

/// A started worker applies retention on its period, never while a run
/// executes here, and not before the first period.
async fn retention_on_its_period<S: Store>(fx: Fixture<S>) -> TResult {
    let e = &fx.engine;
    e.set_jobs(vec![(JOB.into(), None)]);
    let old = create(e.store().as_ref()).await?;
    let run = e.claim(1).await?.pop().ok_or("no claim")?;
    complete(e, &run).await?;
    let busy = create(e.store().as_ref()).await?;
    let held = e.claim(1).await?.pop().ok_or("no claim")?;
    assert_eq!(held.id, busy);
    e.start();
    let period = super::policy::retention_period(POLL);
    // Three periods with a run in flight: no pass.
    tokio::time::sleep(period * 3).await;
    assert_eq!(e.retention_passes(), 0, "no pass while a run executes");
    assert_eq!(
        status(e.store().as_ref(), &old).await?.as_deref(),
        Some("completed")
    );
    e.release(&held.id, held.generation);
    until(period * 5, "a retention pass", || e.retention_passes() >= 1).await?;
    assert_eq!(
        status(e.store().as_ref(), &old).await?,
        None,
        "the old run was purged"
    );
    assert_eq!(
        status(e.store().as_ref(), &busy).await?.as_deref(),
        Some("running"),
        "a run that did not end is kept"
    );
    assert!(
        lock(&fx.rec.errors).is_empty(),
        "{:?}",
        lock(&fx.rec.errors)
    );
    e.close();
    Ok(())
}

/// Stopping ends the retention timer; starting again starts a new one.
async fn stop_ends_retention<S: Store>(fx: Fixture<S>) -> TResult {
    let e = &fx.engine;
    e.set_jobs(vec![(JOB.into(), None)]);
    let old = create(e.store().as_ref()).await?;
    let run = e.claim(1).await?.pop().ok_or("no claim")?;
    complete(e, &run).await?;
    let period = super::policy::retention_period(POLL);
    let t0 = tokio::time::Instant::now();
    e.start();
    tokio::time::sleep(period / 2).await;
    // Exact in virtual time; in real time the sleep may overrun the period
    // and a pass may then have run (the count is read before the clock).
    let early = e.retention_passes();
    assert!(
        early == 0 || t0.elapsed() >= period,
        "no pass before the first period ({early} after {:?})",
        t0.elapsed()
    );
    e.stop();
    // In real time a pass begun before the stop may still end: let it.
    tokio::time::sleep(period).await;
    let at_stop = e.retention_passes();
    tokio::time::sleep(period * 3).await;
    assert_eq!(e.retention_passes(), at_stop, "no pass after stop");
    if at_stop == 0 {
        assert_eq!(
            status(e.store().as_ref(), &old).await?.as_deref(),
            Some("completed")
        );
    }
    e.start();
    until(period * 5, "a retention pass", || {
        e.retention_passes() > at_stop
    })
    .await?;
    assert_eq!(status(e.store().as_ref(), &old).await?, None);
    e.close();
    Ok(())
}

/// Without `retainRuns` there is no retention timer.
async fn no_retention_without_retain<S: Store>(fx: Fixture<S>) -> TResult {
    let e = &fx.engine;
    e.set_jobs(vec![(JOB.into(), None)]);
    let old = create(e.store().as_ref()).await?;
    let run = e.claim(1).await?.pop().ok_or("no claim")?;
    complete(e, &run).await?;
    e.start();
    tokio::time::sleep(super::policy::retention_period(POLL) * 3).await;
    assert_eq!(e.retention_passes(), 0);
    assert_eq!(
        status(e.store().as_ref(), &old).await?.as_deref(),
        Some("completed")
    );
    e.close();
    Ok(())
}

/// A run over its job's timeout is failed by the worker, the JS side is
/// told (`timeout`), and its slot is free again; not before the deadline.
async fn job_timeout<S: Store>(fx: Fixture<S>) -> TResult {
    let e = &fx.engine;
    let timeout = Duration::from_millis(600);
    e.set_jobs(vec![(JOB.into(), Some(timeout))]);
    e.start();
    // Before the run exists, so before its claim: its deadline is at least
    // `timeout` after this instant (in real time as in virtual time).
    let t0 = tokio::time::Instant::now();
    let id = create(e.store().as_ref()).await?;
    e.wake();
    until(Duration::from_secs(5), "the claim", || {
        lock(&fx.rec.runs).len() == 1
    })
    .await?;
    assert_eq!(e.inflight(), 1);
    until(Duration::from_secs(5), "the timeout", || {
        !lock(&fx.rec.lost).is_empty()
    })
    .await?;
    let after = lock(&fx.rec.lost_at)[0] - t0;
    assert!(after >= timeout, "not before the deadline: after {after:?}");
    assert_eq!(lock(&fx.rec.lost)[0], (id.clone(), LostReason::Timeout));
    assert_eq!(
        status(e.store().as_ref(), &id).await?.as_deref(),
        Some("failed")
    );
    assert_eq!(e.inflight(), 0, "the slot is free");
    e.close();
    Ok(())
}

/// Before processing without the loop: another process's stale run goes
/// back to pending (and is then claimable here), and old terminal runs go.
async fn before_processing<S: Store>(fx: Fixture<S>) -> TResult {
    let e = &fx.engine;
    e.set_jobs(vec![(JOB.into(), None)]);
    let old = create(e.store().as_ref()).await?;
    let run = e.claim(1).await?.pop().ok_or("no claim")?;
    complete(e, &run).await?;
    // The other process claims a run, then dies (no heartbeats).
    let orphan = create(fx.other.as_ref()).await?;
    let mine = fx.other.claim(&[JOB.to_string()], 1).await?;
    assert_eq!(mine.len(), 1);
    e.before_processing().await?;
    assert_eq!(
        status(e.store().as_ref(), &orphan).await?.as_deref(),
        Some("running"),
        "not stale yet"
    );
    tokio::time::sleep(STALE * 2).await;
    e.before_processing().await?;
    assert_eq!(
        status(e.store().as_ref(), &orphan).await?.as_deref(),
        Some("pending")
    );
    assert_eq!(
        status(e.store().as_ref(), &old).await?,
        None,
        "retained runs purged"
    );
    let again = e.claim(1).await?.pop().ok_or("no claim")?;
    assert_eq!(again.id, orphan);
    assert_eq!(again.generation, 2);
    e.close();
    Ok(())
}

/// The SQLite fixtures: paused tokio time, and a store clock reading it.
mod sqlite {
    use super::*;
    use crate::store::{Clock, SqliteStore, StoreOptions};

    fn run<F, Fut>(retain: Option<Duration>, case: F) -> TResult
    where
        F: FnOnce(Fixture<SqliteStore>) -> Fut,
        Fut: Future<Output = TResult>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()?;
        rt.block_on(async {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("e.db").to_string_lossy().into_owned();
            // The store's "now" is the runtime's virtual time.
            let origin = tokio::time::Instant::now();
            let base = std::time::SystemTime::now();
            let clock: Clock = Arc::new(move || base + (tokio::time::Instant::now() - origin));
            let store = Arc::new(SqliteStore::open_with_clock(
                StoreOptions::new(path.clone()),
                clock.clone(),
            )?);
            store.migrate()?;
            let other = Arc::new(SqliteStore::open_with_clock(
                StoreOptions::new(path),
                clock,
            )?);
            let rec = Arc::new(Recorder::default());
            let engine = Engine::new(
                store,
                config(retain),
                rec.clone(),
                tokio::runtime::Handle::current(),
            );
            case(Fixture {
                engine,
                rec,
                other,
                keep: Box::new(dir),
            })
            .await
        })
    }

    #[test]
    fn retention_runs_on_its_period_and_never_while_runs_execute() -> TResult {
        run(Some(Duration::ZERO), retention_on_its_period)
    }

    #[test]
    fn stop_ends_the_retention_timer() -> TResult {
        run(Some(Duration::ZERO), stop_ends_retention)
    }

    #[test]
    fn no_retention_timer_without_retain_runs() -> TResult {
        run(None, no_retention_without_retain)
    }

    #[test]
    fn a_job_timeout_fails_the_run_and_frees_its_slot() -> TResult {
        run(None, job_timeout)
    }

    #[test]
    fn before_processing_recovers_stale_runs_and_applies_retention() -> TResult {
        run(Some(Duration::ZERO), before_processing)
    }

    /// A trigger that created a run claims it on the calling thread while
    /// the worker is on, in the trigger's own commit; not when stopped, not
    /// for an idempotent hit, and not when no slot is free.
    #[test]
    fn a_created_run_starts_locally_only_while_the_worker_is_on() -> TResult {
        run(None, |fx| async move {
            let e = &fx.engine;
            e.set_jobs(vec![(JOB.into(), None)]);
            let item = |key| TriggerItem {
                idempotency_key: key,
                ..TriggerItem::new(JOB, "null")
            };
            let (_, claimed) = e.try_trigger(&item(Some("a")))?.ok_or("lock taken")?;
            assert!(claimed.is_empty(), "the worker is off");
            // The loop is on but gets no turn: this (paused, single-threaded)
            // runtime runs no task until the test awaits.
            e.start();
            let (hit, claimed) = e.try_trigger(&item(Some("a")))?.ok_or("lock taken")?;
            assert!(matches!(hit, TriggerOutcome::Idempotent(_)));
            assert!(claimed.is_empty(), "nothing was created");
            let commits = e.store().commit_count();
            let (created, claimed) = e.try_trigger(&item(None))?.ok_or("lock taken")?;
            assert_eq!(claimed.len(), 1, "the oldest claimable run");
            assert!(matches!(created, TriggerOutcome::Created { .. }));
            assert_eq!(
                e.store().commit_count(),
                commits + 1,
                "the run was created and claimed in one commit"
            );
            let v: serde_json::Value = serde_json::from_str(&claimed[0].json)?;
            assert_eq!(v["leaseGeneration"], 1);
            assert_eq!(
                status(e.store().as_ref(), &claimed[0].id).await?.as_deref(),
                Some("running")
            );
            assert_eq!(e.inflight(), 1);
            let more: Vec<_> = (0..4)
                .map(|_| e.try_trigger(&item(None)))
                .collect::<crate::error::Result<_>>()?;
            let started: usize = more.iter().flatten().map(|(_, c)| c.len()).sum();
            assert_eq!(started, 3, "up to max_concurrent (4) in flight");
            assert_eq!(e.inflight(), 4);
            assert_eq!(
                status(e.store().as_ref(), &claimed[0].id).await?.as_deref(),
                Some("running")
            );
            assert!(
                lock(&fx.rec.errors).is_empty(),
                "{:?}",
                lock(&fx.rec.errors)
            );
            e.close();
            Ok(())
        })
    }
}

/// The same cases on PostgreSQL, in real time.
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::pg::tests::{skip_reason, TestSchema};
    use crate::pg::PgStore;

    fn run<F, Fut>(retain: Option<Duration>, case: F) -> TResult
    where
        F: FnOnce(Fixture<PgStore>) -> Fut,
        Fut: Future<Output = TResult>,
    {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return Ok(());
        }
        let schema = TestSchema::new_multi("engine")?;
        let rt = schema.runtime();
        rt.block_on(async {
            let store = Arc::new(schema.store(4).await?);
            let other = Arc::new(schema.store(2).await?);
            let rec = Arc::new(Recorder::default());
            let engine = Engine::new(
                store,
                config(retain),
                rec.clone(),
                tokio::runtime::Handle::current(),
            );
            let fx = Fixture {
                engine,
                rec,
                other,
                keep: Box::new(()),
            };
            let out = case(fx).await;
            out
        })?;
        drop(schema);
        Ok(())
    }

    #[test]
    fn retention_runs_on_its_period_and_never_while_runs_execute() -> TResult {
        run(Some(Duration::ZERO), retention_on_its_period)
    }

    #[test]
    fn stop_ends_the_retention_timer() -> TResult {
        run(Some(Duration::ZERO), stop_ends_retention)
    }

    #[test]
    fn no_retention_timer_without_retain_runs() -> TResult {
        run(None, no_retention_without_retain)
    }

    #[test]
    fn a_job_timeout_fails_the_run_and_frees_its_slot() -> TResult {
        run(None, job_timeout)
    }

    #[test]
    fn before_processing_recovers_stale_runs_and_applies_retention() -> TResult {
        run(Some(Duration::ZERO), before_processing)
    }
}
