//! The only napi-aware code: the `Engine` class the JS layer wraps,
//! argument/record conversion, the ThreadsafeFunction sink and error
//! conversion. Every operation converts its arguments and delegates to the
//! napi-free [`crate::engine::Engine`]; no SQL and no scheduling decisions
//! live here.

mod convert;
mod sink;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::engine::EngineConfig;
use crate::error::Error as EngineError;
use crate::store::{lock, RunFilter, SqliteStore, StoreOptions, Synchronous, TriggerRequest};
use crate::worker::{Sink, WorkerConfig};
use convert::{
    to_js, CancelResult, FlushDone, FlushResult, JsCode, NativeTask, TriggerBatchResult,
    TriggerResult,
};
use sink::JsSink;

/// Delivers what a `flushSend` batch did to the JS callback given as the
/// constructor's `onFlushed` (weak: the JS writer keeps the process alive
/// while a batch is in flight).
type FlushedFn = napi::threadsafe_function::ThreadsafeFunction<
    FlushDone,
    (),
    FlushDone,
    napi::Status,
    false,
    true,
>;

/// The engine on whichever backend this instance opened. The SQLite engine
/// has synchronous fast paths; on an async backend they answer "busy"
/// (`None`) and the JS layer takes the waiting path.
enum AnyEngine {
    Sqlite(crate::engine::Engine<SqliteStore>),
    #[cfg(feature = "postgres")]
    Pg(crate::engine::Engine<crate::pg::PgStore>),
}

/// Runs `$body` with `$e` bound to the concrete engine.
macro_rules! with_engine {
    ($any:expr, $e:ident => $body:expr) => {
        match $any {
            AnyEngine::Sqlite($e) => $body,
            #[cfg(feature = "postgres")]
            AnyEngine::Pg($e) => $body,
        }
    };
}

impl AnyEngine {
    /// The SQLite engine of `opts`.
    fn open_sqlite(
        store: StoreOptions,
        cfg: EngineConfig,
        sink: Arc<dyn Sink>,
    ) -> Result<AnyEngine, JsCode> {
        let store = Arc::new(SqliteStore::open(store).map_err(to_js)?);
        let rt = runtime()?;
        Ok(AnyEngine::Sqlite(crate::engine::Engine::new(
            store,
            cfg,
            sink,
            rt.handle().clone(),
        )))
    }

    /// The PostgreSQL engine (cargo feature `postgres`; not reachable from
    /// JS yet: a constructor taking a URL calls this).
    #[cfg(feature = "postgres")]
    fn open_postgres(
        opts: crate::pg::PgOptions,
        cfg: EngineConfig,
        sink: Arc<dyn Sink>,
    ) -> Result<AnyEngine, JsCode> {
        let rt = runtime()?;
        // No connection yet: the JS thread never waits for the server (a
        // slow accept, a TLS handshake); the first call connects off it.
        let store = crate::pg::PgStore::new(opts).map_err(to_js)?;
        Ok(AnyEngine::Pg(crate::engine::Engine::new(
            Arc::new(store),
            cfg,
            sink,
            rt.handle().clone(),
        )))
    }

    /// The busy timeout a close waits for calls in flight (plus a margin):
    /// how long any call may wait for a lock (SQLite's busy handler;
    /// PostgreSQL's pool wait and `lock_timeout`) before it fails with
    /// `DB_BUSY`.
    fn busy_timeout(&self) -> Duration {
        match self {
            AnyEngine::Sqlite(e) => e.store().options().busy_timeout,
            #[cfg(feature = "postgres")]
            AnyEngine::Pg(e) => e.store().busy_timeout(),
        }
    }

    /// The schema version this library migrates this engine's store to
    /// (SQLite and PostgreSQL number their migrations apart).
    fn library_schema_version(&self) -> i64 {
        match self {
            AnyEngine::Sqlite(_) => crate::store::SCHEMA_VERSION,
            #[cfg(feature = "postgres")]
            AnyEngine::Pg(_) => crate::pg::PG_SCHEMA_VERSION,
        }
    }

    /// Whether reads are served on the calling thread (`getRun` …): a
    /// blocking store's (SQLite) are, without waiting on the network; an
    /// async store's go through the `…Async` calls.
    fn sync_reads(&self) -> bool {
        match self {
            AnyEngine::Sqlite(_) => true,
            #[cfg(feature = "postgres")]
            AnyEngine::Pg(_) => false,
        }
    }
}

fn runtime() -> Result<&'static tokio::runtime::Runtime, JsCode> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("durably-worker")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        to_js(EngineError::Internal(format!(
            "cannot start the worker runtime: {e}"
        )))
    })
}

/// `flushSend` on a PostgreSQL engine: the batch is applied by a task on the
/// runtime, which answers through `onFlushed` (also when the flush panicked).
#[cfg(feature = "postgres")]
fn spawn_flush(inner: Arc<Inner>, ops: String) -> Result<(), JsCode> {
    runtime()?.spawn(async move {
        let AnyEngine::Pg(e) = &inner.engine else {
            unreachable!("only a PostgreSQL engine has no sync reads")
        };
        let done = match convert::CatchUnwind(Box::pin(e.flush(&ops))).await {
            Ok(Ok(o)) => FlushDone::ok(o.into()),
            Ok(Err(err)) => FlushDone::err(&err),
            Err(()) => FlushDone::err(&EngineError::Internal("panic in flush".into())),
        };
        if let Some(f) = &inner.flushed {
            f.call(
                done,
                napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
            );
        }
    });
    Ok(())
}

/// Without PostgreSQL every engine answers reads at once (SQLite).
#[cfg(not(feature = "postgres"))]
fn spawn_flush(_inner: Arc<Inner>, _ops: String) -> Result<(), JsCode> {
    unreachable!("only a PostgreSQL engine has no sync reads")
}

/// `(run id, event JSON)` pairs from two arrays of the same length.
fn event_pairs(
    call: &str,
    run_ids: Vec<String>,
    jsons: Vec<String>,
) -> Result<Vec<(String, String)>, JsCode> {
    if run_ids.len() != jsons.len() {
        return Err(to_js(EngineError::Validation(format!(
            "{call}: {} run ids for {} events",
            run_ids.len(),
            jsons.len()
        ))));
    }
    Ok(run_ids.into_iter().zip(jsons).collect())
}

/// Options for [`Engine`], validated by the JS layer.
#[napi(object)]
pub struct EngineOptions {
    /// Database file or `:memory:`.
    pub path: String,
    /// `normal` or `full`.
    pub synchronous: String,
    /// Milliseconds a write waits for another connection's lock.
    pub busy_timeout: u32,
    /// Idle polling period (ms).
    pub polling_interval: u32,
    /// Heartbeat period (ms).
    pub heartbeat_interval: u32,
    /// Stale threshold (ms).
    pub stale_threshold: u32,
    /// Runs in flight at once.
    pub max_concurrent_runs: u32,
    /// Runs a flush may claim ahead beyond `max_concurrent_runs` (see
    /// `WorkerConfig::claim_ahead`); absent for none.
    pub claim_ahead: Option<u32>,
    /// `retainRuns` in ms: a started worker deletes terminal runs older than
    /// this (and `processOne` does first); absent for none.
    pub retain_ms: Option<f64>,
    /// A PostgreSQL URL instead of `path` (cargo feature `postgres`).
    pub url: Option<String>,
    /// With `url`: the schema holding durably's tables.
    pub schema: Option<String>,
}

/// True when this addon can open a PostgreSQL engine (`EngineOptions.url`).
#[napi]
pub fn postgres_supported() -> bool {
    cfg!(feature = "postgres")
}

struct Inner {
    engine: AnyEngine,
    /// The constructor's `onFlushed` (`flushSend`'s answers).
    flushed: Option<FlushedFn>,
}

/// The newest schema version this library knows (files at another version
/// are refused by tools that must not migrate, such as the CLI).
#[napi]
pub fn library_schema_version() -> i64 {
    crate::store::SCHEMA_VERSION
}

/// One open database with its worker.
#[napi]
pub struct Engine {
    inner: Mutex<Option<Arc<Inner>>>,
}

/// A `getRuns` filter (JSON from lib/checks.js).
fn run_filter(text: &str) -> std::result::Result<RunFilter, EngineError> {
    serde_json::from_str(text)
        .map_err(|e| EngineError::Validation(format!("invalid run filter: {e}")))
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(v as u64)
}

#[napi]
impl Engine {
    /// Opens the database. `on_message` receives worker messages as JSON text;
    /// `on_flushed`, what each `flushSend` batch did.
    #[napi(constructor, catch_unwind)]
    pub fn new(
        opts: EngineOptions,
        on_message: Function<String, ()>,
        on_flushed: Option<Function<FlushDone, ()>>,
    ) -> Result<Self, JsCode> {
        let synchronous = match opts.synchronous.as_str() {
            "full" => Synchronous::Full,
            _ => Synchronous::Normal,
        };
        let tsfn = on_message
            .build_threadsafe_function::<String>()
            .weak::<true>()
            .callee_handled::<false>()
            .build()
            .map_err(|e| to_js(EngineError::Internal(e.to_string())))?;
        let flushed = on_flushed
            .map(|f| {
                f.build_threadsafe_function::<FlushDone>()
                    .weak::<true>()
                    .callee_handled::<false>()
                    .build()
            })
            .transpose()
            .map_err(|e| to_js(EngineError::Internal(e.to_string())))?;
        let cfg = EngineConfig {
            worker: WorkerConfig {
                polling_interval: ms(opts.polling_interval),
                heartbeat_interval: ms(opts.heartbeat_interval),
                stale_threshold: ms(opts.stale_threshold),
                max_concurrent: opts.max_concurrent_runs.max(1) as usize,
                claim_ahead: opts.claim_ahead.unwrap_or(0) as usize,
                ..WorkerConfig::default()
            },
            retain: opts
                .retain_ms
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| Duration::from_millis(v as u64)),
        };
        #[cfg(feature = "postgres")]
        if let Some(url) = opts.url {
            let mut pg = crate::pg::PgOptions::new(url);
            if let Some(schema) = opts.schema {
                pg.schema = schema;
            }
            pg.pool_size = (cfg.worker.max_concurrent + 2).max(4);
            pg.timeout = ms(opts.busy_timeout.max(1000));
            let engine = AnyEngine::open_postgres(pg, cfg, Arc::new(JsSink::new(tsfn)))?;
            return Ok(Engine {
                inner: Mutex::new(Some(Arc::new(Inner { engine, flushed }))),
            });
        }
        #[cfg(not(feature = "postgres"))]
        if opts.url.is_some() {
            return Err(to_js(EngineError::Validation(
                "this addon was built without PostgreSQL support".into(),
            )));
        }
        let engine = AnyEngine::open_sqlite(
            StoreOptions {
                path: opts.path,
                synchronous,
                busy_timeout: ms(opts.busy_timeout),
            },
            cfg,
            Arc::new(JsSink::new(tsfn)),
        )?;
        Ok(Engine {
            inner: Mutex::new(Some(Arc::new(Inner { engine, flushed }))),
        })
    }

    fn inner(&self) -> Result<Arc<Inner>, JsCode> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| to_js(EngineError::Closed))
    }

    /// `inner` for a call served on the JS thread: refused (INTERNAL, a bug
    /// of the JS layer) on a store whose reads are network round trips, which
    /// would stall the event loop meanwhile.
    fn sync_inner(&self, call: &str) -> Result<Arc<Inner>, JsCode> {
        let inner = self.inner()?;
        if !inner.engine.sync_reads() {
            return Err(to_js(EngineError::Internal(format!(
                "{call} would block the JS thread on this database: use {call}Async"
            ))));
        }
        Ok(inner)
    }

    /// Creates or upgrades the schema (waits for the lock); returns the version.
    #[napi(catch_unwind)]
    pub fn migrate(&self) -> Result<i64, JsCode> {
        with_engine!(&self.inner()?.engine, e => e.wait(e.migrate())).map_err(to_js)
    }

    /// Fails if the file's schema is newer than this library.
    #[napi(catch_unwind)]
    pub fn check_schema(&self) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.wait(e.check_schema())).map_err(to_js)
    }

    /// The schema version in the file (0 when not migrated).
    #[napi(catch_unwind)]
    pub fn schema_version(&self) -> Result<i64, JsCode> {
        with_engine!(&self.inner()?.engine, e => e.wait(e.schema_version())).map_err(to_js)
    }

    /// `schemaVersion` off the JS thread (PostgreSQL: a round trip).
    #[napi(catch_unwind, ts_return_type = "Promise<number>")]
    pub fn schema_version_async(&self) -> Result<AsyncTask<NativeTask<i64>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.schema_version())),
        ))
    }

    /// The newest schema version this library knows for this engine's
    /// store (`librarySchemaVersion()` is SQLite's).
    #[napi(catch_unwind)]
    pub fn library_schema_version(&self) -> Result<i64, JsCode> {
        Ok(self.inner()?.engine.library_schema_version())
    }

    /// Jobs this worker may claim; `timeouts[i]` in ms, 0 for none.
    #[napi(catch_unwind)]
    pub fn set_jobs(&self, names: Vec<String>, timeouts: Vec<u32>) -> Result<(), JsCode> {
        let jobs: Vec<_> = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let t = timeouts.get(i).copied().unwrap_or(0);
                (n, (t > 0).then(|| ms(t)))
            })
            .collect();
        with_engine!(&self.inner()?.engine, e => e.set_jobs(jobs));
        Ok(())
    }

    /// Starts the claim loop (and the retention timer).
    #[napi(catch_unwind)]
    pub fn start(&self) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.start());
        Ok(())
    }

    /// Stops claiming (runs in flight continue).
    #[napi(catch_unwind)]
    pub fn stop(&self) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.stop());
        Ok(())
    }

    /// Whether the claim loop task is still alive (finishing a claim after `stop`).
    #[napi(catch_unwind)]
    pub fn loop_alive(&self) -> Result<bool, JsCode> {
        Ok(with_engine!(&self.inner()?.engine, e => e.loop_alive()))
    }

    /// Whether run events must be published for other processes
    /// (`publishEvent`): true on PostgreSQL.
    #[napi(catch_unwind)]
    pub fn listens(&self) -> Result<bool, JsCode> {
        Ok(with_engine!(&self.inner()?.engine, e => e.listens()))
    }

    /// Whether the run events of other processes are wanted (PostgreSQL):
    /// on while something here listens to every event; while off they are
    /// dropped before they reach JS.
    #[napi(catch_unwind)]
    pub fn set_remote_events(&self, on: bool) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.set_remote_events(on));
        Ok(())
    }

    /// Registers this process for run events while they are wanted
    /// (`setRemoteEvents(true)`): other processes publish theirs only while
    /// some process is registered. Resolves once registered: a read made
    /// after it sees the effect of every event this process will not hear.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn register_listener_async(&self) -> Result<AsyncTask<NativeTask<()>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.register_listener())),
        ))
    }

    /// Ends the registration unless run events are wanted again by now.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn unregister_listener_async(&self) -> Result<AsyncTask<NativeTask<()>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.unregister_listener())),
        ))
    }

    /// Publishes a run event (JSON text) to the other processes on this
    /// database, in order, without waiting.
    #[napi(catch_unwind)]
    pub fn publish_event(&self, run_id: String, json: String) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.publish_event(run_id, json));
        Ok(())
    }

    /// `publishEvent` for several events (`run_ids[i]`, `jsons[i]`), in
    /// order, handed to the publisher at once.
    #[napi(catch_unwind)]
    pub fn publish_events(&self, run_ids: Vec<String>, jsons: Vec<String>) -> Result<(), JsCode> {
        let events = event_pairs("publishEvents", run_ids, jsons)?;
        with_engine!(&self.inner()?.engine, e => e.publish_events(events));
        Ok(())
    }

    /// Wakes the claim loop.
    #[napi(catch_unwind)]
    pub fn wake(&self) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.wake());
        Ok(())
    }

    /// Turns claiming ahead on or off (`claimAhead`; lib/runner.js turns it
    /// on while runs end quickly).
    #[napi(catch_unwind)]
    pub fn set_claim_ahead(&self, on: bool) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.set_claim_ahead(on));
        Ok(())
    }

    /// A run's JS execution under lease `generation` ended: frees its slot.
    #[napi(catch_unwind)]
    pub fn release(&self, id: String, generation: i64) -> Result<(), JsCode> {
        with_engine!(&self.inner()?.engine, e => e.release(&id, generation));
        Ok(())
    }

    /// Creates a run without waiting for the lock; `null` when the lock is
    /// taken (then call `triggerAsync`). When it created a run and the worker
    /// is on, the result carries the runs claimed right after it (`claimed`).
    /// A created run comes back as text (see [`convert::trigger_answer`]).
    #[napi(catch_unwind)]
    pub fn trigger(
        &self,
        job: String,
        input: String,
        idempotency_key: Option<String>,
        concurrency_key: Option<String>,
        coalesce: bool,
        labels: String,
    ) -> Result<Option<Either<String, TriggerResult>>, JsCode> {
        let inner = self.inner()?;
        let item = crate::store::TriggerItem {
            job_name: &job,
            input: &input,
            idempotency_key: idempotency_key.as_deref(),
            concurrency_key: concurrency_key.as_deref(),
            coalesce,
            labels: &labels,
        };
        Ok(match &inner.engine {
            AnyEngine::Sqlite(e) => e
                .try_trigger(&item)
                .map_err(to_js)?
                .map(|(o, claimed)| convert::trigger_answer(o, claimed)),
            #[cfg(feature = "postgres")]
            AnyEngine::Pg(_) => None,
        })
    }

    /// `trigger` that waits for the lock on a pool thread.
    #[napi(catch_unwind, ts_return_type = "Promise<TriggerResult>")]
    pub fn trigger_async(
        &self,
        job: String,
        input: String,
        idempotency_key: Option<String>,
        concurrency_key: Option<String>,
        coalesce: bool,
        labels: String,
    ) -> Result<AsyncTask<NativeTask<TriggerResult>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            let item = crate::store::TriggerItem {
                job_name: &job,
                input: &input,
                idempotency_key: idempotency_key.as_deref(),
                concurrency_key: concurrency_key.as_deref(),
                coalesce,
                labels: &labels,
            };
            // No wake here: the JS side wakes the worker after it emitted
            // run:trigger, so run:start cannot overtake it. The runs claimed
            // here come back with the result: the JS side executes them
            // after emitting run:trigger.
            Ok(match &inner.engine {
                AnyEngine::Sqlite(e) => {
                    let out = e.wait(e.trigger(&item))?;
                    let claimed = e.start_locally(&out);
                    TriggerResult::from(out).with_claimed(claimed)
                }
                #[cfg(feature = "postgres")]
                AnyEngine::Pg(e) => e.wait(e.trigger(&item))?.into(),
            })
        }))
    }

    /// Creates all runs of a batch (a JSON array of `TriggerRequest`s, see
    /// `triggerItem` in lib/protocol.js) in one transaction without waiting;
    /// a `TriggerBatchResult`, or `null` when busy.
    #[napi(catch_unwind)]
    pub fn trigger_batch(&self, items: String) -> Result<Option<TriggerBatchResult>, JsCode> {
        let inner = self.inner()?;
        let parsed = TriggerRequest::parse_batch(&items).map_err(to_js)?;
        let items: Vec<_> = parsed.iter().map(|b| b.as_item()).collect();
        let out = match &inner.engine {
            AnyEngine::Sqlite(e) => e.try_trigger_batch(&items).map_err(to_js)?,
            #[cfg(feature = "postgres")]
            AnyEngine::Pg(_) => None,
        };
        Ok(out.map(TriggerBatchResult::from))
    }

    /// `triggerBatch` that waits for the lock on a pool thread.
    #[napi(catch_unwind, ts_return_type = "Promise<TriggerBatchResult>")]
    pub fn trigger_batch_async(
        &self,
        items: String,
    ) -> Result<AsyncTask<NativeTask<TriggerBatchResult>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            let parsed = TriggerRequest::parse_batch(&items)?;
            let items: Vec<_> = parsed.iter().map(|b| b.as_item()).collect();
            // The JS side wakes the worker after emitting run:trigger.
            let out = with_engine!(&inner.engine, e => e.wait(e.trigger_batch(&items)))?;
            Ok(TriggerBatchResult::from(out))
        }))
    }

    /// Applies a batch of worker writes (a JSON array of flush ops, see
    /// lib/protocol.js) without waiting for the lock: `null` when busy or
    /// too big for the JS thread (then `flushAsync`). What it did comes back
    /// as text when no op failed (see [`convert::flush_answer`]: a status code
    /// per op, then the runs claimed in the same commit), else as a
    /// `FlushResult`. Building the result object cost ~2 µs of a one-step
    /// flush of ~30 µs.
    #[napi(catch_unwind)]
    pub fn flush(&self, ops: String) -> Result<Option<Either<String, FlushResult>>, JsCode> {
        let out = match &self.inner()?.engine {
            AnyEngine::Sqlite(e) => e.try_flush(&ops).map_err(to_js)?,
            #[cfg(feature = "postgres")]
            AnyEngine::Pg(_) => None,
        };
        Ok(out.map(convert::flush_answer))
    }

    /// `flush` that waits for the lock on a pool thread (answering as `flush`).
    #[napi(catch_unwind, ts_return_type = "Promise<string | FlushResult>")]
    pub fn flush_async(
        &self,
        ops: String,
    ) -> Result<AsyncTask<NativeTask<Either<String, FlushResult>>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            // A waiting flush only gives up with an error (closed, or not busy).
            let out = with_engine!(&inner.engine, e => e.wait(e.flush(&ops)))?;
            Ok(convert::flush_answer(out))
        }))
    }

    /// `flushAsync` for a store whose writes are network round trips
    /// (PostgreSQL): the batch is applied on the engine's runtime, where the
    /// connections' I/O runs, and its answer goes to the constructor's
    /// `onFlushed` callback, without a pool thread in between (two thread
    /// hand-offs fewer per batch). Answers arrive in send order only if the
    /// caller waits for each before sending the next (the JS writer does).
    /// `INTERNAL` on SQLite or without `onFlushed`: use `flushAsync`.
    ///
    /// `run_ids`/`events`: run events to publish (as `publishEvents`), queued
    /// before the batch is sent: they go in its round trip.
    #[napi(catch_unwind)]
    pub fn flush_send(
        &self,
        ops: String,
        run_ids: Option<Vec<String>>,
        events: Option<Vec<String>>,
    ) -> Result<(), JsCode> {
        let inner = self.inner()?;
        if inner.flushed.is_none() || inner.engine.sync_reads() {
            return Err(to_js(EngineError::Internal(
                "flushSend needs a PostgreSQL engine opened with onFlushed: use flushAsync".into(),
            )));
        }
        let events = event_pairs(
            "flushSend",
            run_ids.unwrap_or_default(),
            events.unwrap_or_default(),
        )?;
        with_engine!(&inner.engine, e => e.queue_events(events));
        spawn_flush(inner, ops)
    }

    /// Claims up to `limit` runs now (processOne); JSON array of claimed runs.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn claim(&self, limit: u32) -> Result<AsyncTask<NativeTask<String>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            let runs = with_engine!(&inner.engine, e => e.wait(e.claim(limit as usize)))?;
            Ok(crate::store::json::array(runs.into_iter().map(|r| r.json)))
        }))
    }

    /// Returns stale runs of the registered jobs to pending now; resolves with the count.
    #[napi(catch_unwind, ts_return_type = "Promise<number>")]
    pub fn recover_stale(&self) -> Result<AsyncTask<NativeTask<u32>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            let n = with_engine!(&inner.engine, e => e.wait(e.recover_stale()))?;
            Ok(n as u32)
        }))
    }

    /// What the worker loop does on its own, before `processOne` and
    /// `processUntilIdle`: stale recovery, then `retainRuns`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn before_processing(&self) -> Result<AsyncTask<NativeTask<()>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.before_processing())),
        ))
    }

    /// Whether `getRun`, `getRuns`, `getSteps`, `getLogs` and `runCounts`
    /// may be called (SQLite: served on the calling thread at once). When
    /// false (PostgreSQL: every read is a network round trip) they throw and
    /// the `…Async` calls serve them off the JS thread. (`migrate` stays
    /// callable for the implicit migration of a first call; `migrate()` and
    /// `init()` use `migrateAsync` there.)
    #[napi(catch_unwind)]
    pub fn sync_reads(&self) -> Result<bool, JsCode> {
        Ok(self.inner()?.engine.sync_reads())
    }

    /// One run as JSON, or null.
    #[napi(catch_unwind)]
    pub fn get_run(&self, id: String) -> Result<Option<String>, JsCode> {
        let inner = self.sync_inner("getRun")?;
        with_engine!(&inner.engine, e => e.wait(e.get_run(&id))).map_err(to_js)
    }

    /// Runs matching a JSON filter, newest first (JSON array).
    #[napi(catch_unwind)]
    pub fn get_runs(&self, filter: String) -> Result<String, JsCode> {
        let inner = self.sync_inner("getRuns")?;
        let filter = run_filter(&filter).map_err(to_js)?;
        with_engine!(&inner.engine, e => e.wait(e.get_runs(&filter))).map_err(to_js)
    }

    /// A run's steps (JSON array).
    #[napi(catch_unwind)]
    pub fn get_steps(&self, run_id: String) -> Result<String, JsCode> {
        let inner = self.sync_inner("getSteps")?;
        with_engine!(&inner.engine, e => e.wait(e.get_steps(&run_id))).map_err(to_js)
    }

    /// A run's persisted logs (JSON array).
    #[napi(catch_unwind)]
    pub fn get_logs(&self, run_id: String) -> Result<String, JsCode> {
        let inner = self.sync_inner("getLogs")?;
        with_engine!(&inner.engine, e => e.wait(e.get_logs(&run_id))).map_err(to_js)
    }

    /// Run counts per job and status (JSON array of `{jobName, status, count}`).
    #[napi(catch_unwind)]
    pub fn run_counts(&self) -> Result<String, JsCode> {
        let inner = self.sync_inner("runCounts")?;
        with_engine!(&inner.engine, e => e.wait(e.run_counts())).map_err(to_js)
    }

    /// `migrate` off the JS thread.
    #[napi(catch_unwind, ts_return_type = "Promise<number>")]
    pub fn migrate_async(&self) -> Result<AsyncTask<NativeTask<i64>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.migrate())),
        ))
    }

    /// `getRun` off the JS thread.
    #[napi(catch_unwind, ts_return_type = "Promise<string | null>")]
    pub fn get_run_async(
        &self,
        id: String,
    ) -> Result<AsyncTask<NativeTask<Option<String>>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.get_run(&id))),
        ))
    }

    /// `getRuns` off the JS thread.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn get_runs_async(&self, filter: String) -> Result<AsyncTask<NativeTask<String>>, JsCode> {
        let inner = self.inner()?;
        let filter = run_filter(&filter).map_err(to_js)?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.get_runs(&filter))),
        ))
    }

    /// `getSteps` off the JS thread.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn get_steps_async(&self, run_id: String) -> Result<AsyncTask<NativeTask<String>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.get_steps(&run_id))),
        ))
    }

    /// `getLogs` off the JS thread.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn get_logs_async(&self, run_id: String) -> Result<AsyncTask<NativeTask<String>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.get_logs(&run_id))),
        ))
    }

    /// `runCounts` off the JS thread.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn run_counts_async(&self) -> Result<AsyncTask<NativeTask<String>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.run_counts())),
        ))
    }

    /// Cancels a run.
    #[napi(catch_unwind, ts_return_type = "Promise<CancelResult>")]
    pub fn cancel(&self, id: String) -> Result<AsyncTask<NativeTask<CancelResult>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            let (previous, run) = with_engine!(&inner.engine, e => e.wait(e.cancel(&id)))?;
            Ok(CancelResult {
                previous: previous.into(),
                run,
            })
        }))
    }

    /// Failed/cancelled → pending, same run; returns the run.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn retry(&self, id: String) -> Result<AsyncTask<NativeTask<String>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            // The JS side wakes the worker after emitting run:retry.
            with_engine!(&inner.engine, e => e.wait(e.retry(&id)))
        }))
    }

    /// Deletes a terminal run; returns it.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn delete_run(&self, id: String) -> Result<AsyncTask<NativeTask<String>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(
            move || with_engine!(&inner.engine, e => e.wait(e.delete_run(&id))),
        ))
    }

    /// Deletes up to `limit` terminal runs finished before `older_than` (ISO); returns the count.
    #[napi(catch_unwind, ts_return_type = "Promise<number>")]
    pub fn purge(
        &self,
        older_than: String,
        limit: u32,
    ) -> Result<AsyncTask<NativeTask<u32>>, JsCode> {
        let inner = self.inner()?;
        Ok(NativeTask::spawn(move || {
            let before = convert::iso_time(&older_than)?;
            let n = with_engine!(&inner.engine, e => e.wait(e.purge(before, limit as i64)))?;
            Ok(n as u32)
        }))
    }

    /// Stops the worker and closes the database; resolves once every
    /// connection (and so every file handle) is closed. Later calls of other
    /// methods fail with `CLOSED`; a second `close` resolves at once.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close(&self) -> Result<AsyncTask<NativeTask<()>>, JsCode> {
        let taken = lock(&self.inner).take();
        Ok(NativeTask::spawn(move || {
            let Some(inner) = taken else {
                return Ok(());
            };
            with_engine!(&inner.engine, e => e.close());
            let limit = inner.engine.busy_timeout() + Duration::from_secs(5);
            let tasks_done = with_engine!(&inner.engine, e => e.wait_closed(limit));
            // Other calls in flight (a query, a flush on the pool) hold `inner` too.
            let mut inner = Some(inner);
            let start = std::time::Instant::now();
            while let Some(i) = inner.take() {
                match Arc::try_unwrap(i) {
                    Ok(alone) => drop(alone), // closes the connections
                    Err(shared) if start.elapsed() < limit => {
                        inner = Some(shared);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => {
                        return Err(EngineError::Internal(
                            "close: a native call is still using the database".into(),
                        ))
                    }
                }
            }
            if !tasks_done {
                return Err(EngineError::Internal(
                    "close: the worker's background tasks did not exit".into(),
                ));
            }
            Ok(())
        }))
    }
}
