//! [`Engine`]: the store, its worker and the engine's own tasks (tokio).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::policy;
use crate::error::{Error, Result};
use crate::store::{
    lock, poll_once, Batch, ClaimedRun, FlushOutcome, Notice, RunFilter, RunStatus, Store,
    SyncStore, TriggerItem, TriggerOutcome,
};
use crate::worker::{Sink, Worker, WorkerConfig};

/// How an engine runs.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// The worker's timing and limits.
    pub worker: WorkerConfig,
    /// `retainRuns`: terminal runs older than this are deleted by a started
    /// worker every [`policy::retention_period`] and before `processOne`.
    pub retain: Option<Duration>,
}

/// One open database with its worker.
pub struct Engine<S: Store> {
    store: Arc<S>,
    worker: Worker<S>,
    rt: Handle,
    retain: Option<Duration>,
    /// Bumped by every start and stop: a retention task of an older start exits.
    epoch: Arc<AtomicU64>,
    /// Retention passes done (each purged, or found nothing to purge).
    passes: Arc<AtomicU64>,
    /// Other processes' notices ([`Store::listen`]) until close; `None` for a
    /// backend without them.
    listener: Mutex<Option<Box<dyn Send + Sync>>>,
    /// Run events to publish to other processes, in order (the publisher
    /// task); `None` for a backend without notices, or after close.
    publisher: Mutex<Option<mpsc::UnboundedSender<()>>>,
}

impl<S: Store> Engine<S> {
    /// The engine of `store` (opened and, for a new database, migrated by
    /// the caller); its background tasks run on `rt`.
    pub fn new(store: Arc<S>, cfg: EngineConfig, sink: Arc<dyn Sink>, rt: Handle) -> Engine<S> {
        let worker = Worker::new(store.clone(), cfg.worker, sink, rt.clone());
        let listener = {
            let _in = rt.enter();
            let w = worker.clone_handle();
            store.listen(Box::new(move |n| on_notice(&w, n)))
        };
        let publisher = listener.is_some().then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            rt.spawn(publish(store.clone(), worker.sink().clone(), rx));
            tx
        });
        Engine {
            store,
            worker,
            rt,
            retain: cfg.retain,
            epoch: Arc::new(AtomicU64::new(0)),
            passes: Arc::new(AtomicU64::new(0)),
            listener: Mutex::new(listener),
            publisher: Mutex::new(publisher),
        }
    }

    /// Whether other processes' notices reach this engine ([`Store::listen`]):
    /// then the JS layer publishes its run events ([`Engine::publish_event`]).
    pub fn listens(&self) -> bool {
        lock(&self.listener).is_some()
    }

    /// Whether other processes' run events reach the sink (see
    /// [`Store::set_remote_events`]).
    pub fn set_remote_events(&self, on: bool) {
        self.store.set_remote_events(on);
    }

    /// See [`Store::register_listener`].
    pub async fn register_listener(&self) -> Result<()> {
        self.store.register_listener().await
    }

    /// See [`Store::unregister_listener`].
    pub async fn unregister_listener(&self) -> Result<()> {
        self.store.unregister_listener().await
    }

    /// Publishes a run event (JSON text) to other processes, after the ones
    /// published before it; nothing on a backend without notices.
    pub fn publish_event(&self, run_id: String, json: String) {
        self.publish_events(vec![(run_id, json)]);
    }

    /// [`Engine::publish_event`] for several `(run id, JSON)` events, in
    /// order: the publisher gets them at once (one wake-up, one publish for
    /// up to its batch size).
    pub fn publish_events(&self, events: Vec<(String, String)>) {
        if events.is_empty() {
            return;
        }
        if let Some(tx) = lock(&self.publisher).as_ref() {
            self.store.queue_events(events);
            let _ = tx.send(());
        }
    }

    /// Queues run events (see [`Engine::publish_events`]) without waking the
    /// publisher: for the next [`Engine::flush`], which sends them in its
    /// round trip where the store can (PostgreSQL), else hands them to the
    /// publisher when it ends.
    pub fn queue_events(&self, events: Vec<(String, String)>) {
        if !events.is_empty() && self.listens() {
            self.store.queue_events(events);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The worker.
    pub fn worker(&self) -> &Worker<S> {
        &self.worker
    }

    /// Runs one of this engine's futures to completion on the calling
    /// thread, which must not be one of the runtime's (a libuv pool thread,
    /// a test): a blocking store's completes on its first poll; an async
    /// store's is driven by the runtime.
    pub fn wait<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        if S::BLOCKING {
            poll_once(fut)
        } else {
            self.rt.block_on(fut)
        }
    }

    // ---- schema ----------------------------------------------------------

    /// Creates or upgrades the schema; returns the version.
    pub async fn migrate(&self) -> Result<i64> {
        self.store.migrate().await
    }

    /// Fails if the schema is newer than this library.
    pub async fn check_schema(&self) -> Result<()> {
        self.store.check_schema().await
    }

    /// The schema version (0 when not migrated).
    pub async fn schema_version(&self) -> Result<i64> {
        self.store.schema_version().await
    }

    // ---- the worker --------------------------------------------------------

    /// Jobs this worker may claim, with their timeouts.
    pub fn set_jobs(&self, jobs: Vec<(String, Option<Duration>)>) {
        self.worker.set_jobs(jobs);
    }

    /// Starts the claim loop and, with `retain`, the retention timer.
    pub fn start(&self) {
        let first = !self.worker.is_running();
        self.worker.start();
        if first {
            let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(retain) = self.retain {
                self.rt.spawn(retention(
                    self.worker_handle(),
                    self.epoch.clone(),
                    epoch,
                    retain,
                    self.passes.clone(),
                ));
            }
        }
    }

    /// Stops claiming and the retention timer (runs in flight go on).
    pub fn stop(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.worker.stop();
    }

    /// Whether the claim loop task is still alive (finishing a claim after [`Engine::stop`]).
    pub fn loop_alive(&self) -> bool {
        self.worker.loop_alive()
    }

    /// Wakes the claim loop.
    pub fn wake(&self) {
        self.worker.wake();
    }

    /// Turns claiming ahead on or off (see [`crate::worker::Worker::set_claim_ahead`]).
    pub fn set_claim_ahead(&self, on: bool) {
        self.worker.set_claim_ahead(on);
    }

    /// A run's execution under lease `generation` ended here: frees its slot.
    pub fn release(&self, id: &str, generation: i64) {
        self.worker.release(id, generation);
    }

    /// Retention passes done so far (by the timer of a started worker).
    pub fn retention_passes(&self) -> u64 {
        self.passes.load(Ordering::SeqCst)
    }

    /// Runs in flight.
    pub fn inflight(&self) -> usize {
        self.worker.inflight()
    }

    /// Stops everything; [`Engine::wait_closed`] then waits for the tasks.
    pub fn close(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        drop(lock(&self.listener).take());
        drop(lock(&self.publisher).take());
        self.worker.close();
    }

    /// After [`Engine::close`]: true once every background task exited (up to `limit`).
    pub fn wait_closed(&self, limit: Duration) -> bool {
        self.worker.wait_closed(limit)
    }

    fn worker_handle(&self) -> WorkerHandle<S> {
        WorkerHandle {
            store: self.store.clone(),
            worker: self.worker.clone_handle(),
        }
    }

    // ---- runs ----------------------------------------------------------------

    /// Creates one run, waiting for the lock. Does not wake the claim loop:
    /// the caller does once it announced the run.
    pub async fn trigger(&self, item: &TriggerItem<'_>) -> Result<TriggerOutcome> {
        self.store.trigger(item).await
    }

    /// Creates the runs of a batch (all or nothing), waiting for the lock.
    /// Does not wake the claim loop (see [`Engine::trigger`]).
    pub async fn trigger_batch(&self, items: &[TriggerItem<'_>]) -> Result<Vec<TriggerOutcome>> {
        self.store.trigger_batch(items).await
    }

    /// Commits a batch of the executing worker's writes (JSON text,
    /// `lib/protocol.js`), waiting for the lock, and claims the successors
    /// of the runs it ended in the same commit. A malformed op fails alone.
    pub async fn flush(&self, text: &str) -> Result<FlushOutcome<Vec<ClaimedRun>>> {
        let out = self.flush_batch(text).await;
        // Events the batch did not send (none queued, or a publish under way
        // had them) go with the publisher.
        if self.store.events_queued() {
            if let Some(tx) = lock(&self.publisher).as_ref() {
                let _ = tx.send(());
            }
        }
        out
    }

    async fn flush_batch(&self, text: &str) -> Result<FlushOutcome<Vec<ClaimedRun>>> {
        let batch = Batch::parse(text)?;
        let out = self.worker.flush(&batch.ops, batch.bytes).await?;
        Ok(batch.merge(out))
    }

    /// Claims up to `limit` runs now (processOne).
    pub async fn claim(&self, limit: usize) -> Result<Vec<ClaimedRun>> {
        self.worker.claim_now(limit).await
    }

    /// Returns stale runs of the registered jobs to pending now; how many.
    pub async fn recover_stale(&self) -> Result<usize> {
        self.worker.recover_stale().await
    }

    /// What a started worker does on its own, done once before
    /// `processOne`/`processUntilIdle`: stale recovery, then retention.
    pub async fn before_processing(&self) -> Result<()> {
        self.worker.recover_stale().await?;
        if let Some(retain) = self.retain {
            // On the store's clock (PostgreSQL: the database's).
            self.store
                .purge_older_than(retain, policy::PROCESS_RETAIN_BATCH)
                .await?;
        }
        Ok(())
    }

    /// Cancels a pending or running run: `(previous status, run JSON)`.
    pub async fn cancel(&self, id: &str) -> Result<(RunStatus, String)> {
        self.store.cancel(id).await
    }

    /// Failed or cancelled → pending; returns the run. Does not wake the
    /// claim loop (the caller does once it announced the retry).
    pub async fn retry(&self, id: &str) -> Result<String> {
        self.store.retry(id).await
    }

    /// Deletes a terminal run; returns it.
    pub async fn delete_run(&self, id: &str) -> Result<String> {
        self.store.delete_run(id).await
    }

    /// Deletes up to `limit` terminal runs that finished before `older_than`.
    pub async fn purge(&self, older_than: SystemTime, limit: i64) -> Result<usize> {
        self.store.purge(older_than, limit).await
    }

    /// One run as JSON, or `None`.
    pub async fn get_run(&self, id: &str) -> Result<Option<String>> {
        self.store.get_run(id).await
    }

    /// Runs matching `filter`, newest first (JSON array).
    pub async fn get_runs(&self, filter: &RunFilter) -> Result<String> {
        self.store.get_runs(filter).await
    }

    /// A run's steps (JSON array).
    pub async fn get_steps(&self, run_id: &str) -> Result<String> {
        self.store.get_steps(run_id).await
    }

    /// A run's logs (JSON array).
    pub async fn get_logs(&self, run_id: &str) -> Result<String> {
        self.store.get_logs(run_id).await
    }

    /// Run counts per job and status (JSON array).
    pub async fn run_counts(&self) -> Result<String> {
        self.store.run_counts().await
    }
}

/// The non-waiting fast paths, for a caller that must never wait for a
/// lock (the JS thread). Each answers `None` when the lock is taken; the
/// caller then uses the waiting operation off its thread.
impl<S: SyncStore> Engine<S> {
    /// Creates one run without waiting; wakes the claim loop when it wrote,
    /// unless the run it created was claimed here ([`policy::wake_after_trigger`]).
    /// When it created a run and the worker is on, the same commit claims
    /// one run for a free slot (the oldest claimable, usually this one,
    /// then inserted already claimed), for the caller to execute now
    /// ([`Worker::try_trigger`]).
    #[allow(clippy::type_complexity)]
    pub fn try_trigger(
        &self,
        item: &TriggerItem<'_>,
    ) -> Result<Option<(TriggerOutcome, Vec<ClaimedRun>)>> {
        let out = self.worker.try_trigger(item)?;
        if let Some((outcome, claimed)) = &out {
            if policy::wake_after_trigger(outcome, claimed) {
                self.worker.wake();
            }
        }
        Ok(out)
    }

    /// After a waiting trigger (on a pool thread; the fast path claims in
    /// the trigger's own commit, see [`Engine::try_trigger`]): when it
    /// created a run and the worker is on ([`policy::start_locally`]), claims
    /// one run (the oldest claimable, usually this one) now on the calling
    /// thread, without waiting for the lock, so the caller executes it
    /// without a hop through the claim loop.
    /// Nothing when the lock or no slot is free (the woken loop claims it);
    /// a failed claim is reported to the sink (`claim`), not to the trigger.
    pub fn start_locally(&self, outcome: &TriggerOutcome) -> Vec<ClaimedRun> {
        let created = matches!(outcome, TriggerOutcome::Created { .. });
        if !policy::start_locally(created, self.worker.is_running()) {
            return Vec::new();
        }
        match self.worker.try_claim(1) {
            Ok(runs) => runs.unwrap_or_default(),
            Err(e) => {
                self.worker.sink().error("claim", &e);
                Vec::new()
            }
        }
    }

    /// Creates a batch's runs without waiting; wakes the claim loop when it wrote.
    pub fn try_trigger_batch(
        &self,
        items: &[TriggerItem<'_>],
    ) -> Result<Option<Vec<TriggerOutcome>>> {
        let out = self.store.try_trigger_batch(items)?;
        if out.is_some() {
            self.worker.wake();
        }
        Ok(out)
    }

    /// [`Engine::flush`] without waiting. A big batch is declined (`None`):
    /// it is committed, and checkpointed, off the JS thread.
    pub fn try_flush(&self, text: &str) -> Result<Option<FlushOutcome<Vec<ClaimedRun>>>> {
        if policy::commit_off_thread(text.len()) {
            return Ok(None);
        }
        let batch = Batch::parse(text)?;
        Ok(self.worker.try_flush(&batch.ops)?.map(|o| batch.merge(o)))
    }

    /// Claims up to `limit` runs now if the claim loop is on and the lock is
    /// free at once (a local trigger starts its run on the calling thread).
    pub fn try_claim(&self, limit: usize) -> Result<Option<Vec<ClaimedRun>>> {
        self.worker.try_claim(limit)
    }

    /// One run, read on the calling thread (a blocking store's read).
    pub fn get_run_now(&self, id: &str) -> Result<Option<String>> {
        poll_once(self.store.get_run(id))
    }
}

/// What the engine's own tasks hold: the store and the worker's shared state.
struct WorkerHandle<S: Store> {
    store: Arc<S>,
    worker: Worker<S>,
}

/// The retention timer of one start: every [`policy::retention_period`],
/// while no run executes here, deletes a small batch of terminal runs older
/// than `retain`. Ends with the next stop or close.
async fn retention<S: Store>(
    h: WorkerHandle<S>,
    epoch: Arc<AtomicU64>,
    mine: u64,
    retain: Duration,
    passes: Arc<AtomicU64>,
) {
    let period = policy::retention_period(h.worker.config().polling_interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = h.worker.closed() => return,
        }
        if epoch.load(Ordering::SeqCst) != mine || h.worker.is_closed() {
            return;
        }
        if !policy::retention_due(h.worker.inflight()) {
            continue;
        }
        let store = h.store.clone();
        let done = run_store(store, move |s| async move {
            s.purge_older_than(retain, policy::RETAIN_BATCH).await
        })
        .await;
        match done {
            Ok(_) => {
                passes.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => h.worker.sink().error("retain", &e),
        }
    }
}

/// What another process's notice does here. Polling stays the fallback for
/// a notice that never arrives.
fn on_notice<S: Store>(w: &Worker<S>, n: Notice) {
    match n {
        // Claim now; after a (re)connect, once, for what was missed.
        Notice::Wake | Notice::Poll => w.wake(),
        Notice::Cancel(id) => w.cancelled_elsewhere(&id),
        Notice::Event { run_id, json } => w.sink().event(&run_id, &json),
        Notice::Error(e) => w.sink().error("watch", &Error::Internal(e)),
    }
}

/// Publishes the queued run events ([`Store::queue_events`]) whenever
/// poked, in order: what queued up meanwhile goes in one publish.
async fn publish<S: Store>(
    store: Arc<S>,
    sink: Arc<dyn crate::worker::Sink>,
    mut rx: mpsc::UnboundedReceiver<()>,
) {
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        if let Err(e) = store.publish_queued().await {
            sink.error("watch", &e);
        }
    }
}

/// Runs a store call from a task: a blocking store's on tokio's blocking
/// pool, an async store's awaited.
async fn run_store<S, T, F, Fut>(store: Arc<S>, f: F) -> Result<T>
where
    S: Store,
    T: Send + 'static,
    F: FnOnce(Arc<S>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    if S::BLOCKING {
        tokio::task::spawn_blocking(move || poll_once(f(store)))
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("engine task failed: {e}"))))
    } else {
        f(store).await
    }
}
