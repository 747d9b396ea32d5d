//! The native worker: a tokio task that claims runs and hands them to a
//! [`Sink`] (the JS layer), plus the heartbeat/timeout task and the store's
//! upkeep (SQLite: the WAL checkpointer). Generic over the [`Store`]; nothing
//! here knows about Node. A blocking store's calls run on tokio's blocking
//! pool ([`Store::BLOCKING`]); an async store's are awaited.
//!
//! Wake-ups: a trigger in this process calls [`Worker::wake`]; a run
//! finishing frees a slot and wakes the loop; runs written by other
//! processes are noticed by a `PRAGMA data_version` check every
//! `check_interval` (cheap: no I/O when nothing changed); stale recovery and a
//! full poll happen every `polling_interval`.

mod tasks;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::policy;
use crate::error::{Error, Result};
use crate::store::{
    lock, poll_once, ClaimRequest, ClaimedRun, FlushOp, FlushOutcome, Store, SyncStore,
    TriggerItem, TriggerOutcome,
};

pub use crate::engine::policy::LostReason;

/// Where the worker sends what it learns. Implemented by the binding.
pub trait Sink: Send + Sync + 'static {
    /// Runs claimed for this worker, to execute.
    fn runs(&self, runs: Vec<ClaimedRun>);
    /// A run in flight was lost (cancelled elsewhere, reclaimed, timed out).
    fn lost(&self, id: &str, reason: LostReason);
    /// An error outside any run (busy database, full disk…); `context` names
    /// the task it happened in: `claim`, `recover` (stale recovery), `watch`
    /// (the cross-process change check), `heartbeat`, `timeout`, `checkpoint`,
    /// `file` (the database file found replaced), `step-write` (a flush retried
    /// after `DB_BUSY`), `retain` (the retention pass).
    fn error(&self, context: &'static str, err: &Error);
    /// A run event another process published (PostgreSQL), as JSON text.
    fn event(&self, _run_id: &str, _json: &str) {}
}

/// Worker timing and limits.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Full poll period (stale recovery, fallback claim).
    pub polling_interval: Duration,
    /// Heartbeat period for runs in flight.
    pub heartbeat_interval: Duration,
    /// A running run whose heartbeat is older is reclaimed.
    pub stale_threshold: Duration,
    /// Runs in flight at once.
    pub max_concurrent: usize,
    /// Runs a flush that ends runs may claim beyond `max_concurrent` while
    /// claiming ahead is on ([`Worker::set_claim_ahead`]) and no registered
    /// job has a timeout (it runs from the claim): the JS side holds them
    /// until a slot frees, so that the next run's first write and the ended
    /// run's completion share one commit (see `lib/runner.js`).
    pub claim_ahead: usize,
    /// Period of the cheap cross-process change check.
    pub check_interval: Duration,
    /// Period of the store's upkeep (SQLite: the WAL checkpointer).
    pub checkpoint_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            polling_interval: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(5000),
            stale_threshold: Duration::from_millis(30000),
            max_concurrent: 1,
            claim_ahead: 0,
            check_interval: Duration::from_millis(10),
            checkpoint_interval: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Clone)]
struct Inflight {
    generation: i64,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    /// Lost/cancelled/timed out: no more heartbeats.
    gone: bool,
}

pub(crate) struct Shared<S> {
    store: Arc<S>,
    cfg: WorkerConfig,
    /// Registered jobs and their optional timeouts.
    jobs: RwLock<Arc<JobSet>>,
    inflight: Mutex<HashMap<String, Inflight>>,
    /// Slots promised to claims in progress; changed only under `inflight`'s lock.
    reserved: AtomicUsize,
    /// Whether the store was last told that wake-ups are wanted (see
    /// [`Shared::update_wakes`]).
    wakes_wanted: Mutex<bool>,
    wake: Notify,
    running: AtomicBool,
    /// Whether flushes claim `claim_ahead` more runs now (the JS side turns it
    /// on while runs end quickly: see [`Worker::set_claim_ahead`]).
    ahead_on: AtomicBool,
    loop_alive: AtomicBool,
    closed: AtomicBool,
    closed_notify: Notify,
    sink: Arc<dyn Sink>,
}

#[derive(Debug)]
pub(crate) struct JobSet {
    names: Arc<[String]>,
    timeouts: HashMap<String, Duration>,
}

impl Default for JobSet {
    fn default() -> Self {
        JobSet {
            names: Arc::from(Vec::new()),
            timeouts: HashMap::new(),
        }
    }
}

/// The worker of one durably instance.
pub struct Worker<S: Store> {
    shared: Arc<Shared<S>>,
    rt: Handle,
}

/// Runs a store call from the worker's tasks: a blocking store's on tokio's
/// blocking pool (its future completes on the first poll there), an async
/// store's awaited here.
pub(crate) async fn call<S, T, F, Fut>(sh: &Arc<Shared<S>>, f: F) -> Result<T>
where
    S: Store,
    T: Send + 'static,
    F: FnOnce(Arc<Shared<S>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    if S::BLOCKING {
        let sh = sh.clone();
        tokio::task::spawn_blocking(move || poll_once(f(sh)))
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("worker task failed: {e}"))))
    } else {
        f(sh.clone()).await
    }
}

impl<S: Store> Worker<S> {
    /// Creates the worker and starts its background tasks (heartbeats,
    /// timeouts, upkeep) on `rt`. The claim loop starts with [`Worker::start`].
    pub fn new(store: Arc<S>, cfg: WorkerConfig, sink: Arc<dyn Sink>, rt: Handle) -> Worker<S> {
        let shared = Arc::new(Shared {
            store,
            cfg,
            jobs: RwLock::new(Arc::new(JobSet::default())),
            inflight: Mutex::new(HashMap::new()),
            reserved: AtomicUsize::new(0),
            wakes_wanted: Mutex::new(false),
            wake: Notify::new(),
            running: AtomicBool::new(false),
            ahead_on: AtomicBool::new(false),
            loop_alive: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            sink,
        });
        // No wake-up is wanted until the claim loop starts.
        shared.store.set_wakes_wanted(false);
        rt.spawn(tasks::heartbeats(shared.clone()));
        rt.spawn(tasks::upkeep(shared.clone()));
        Worker { shared, rt }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.shared.store
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.shared.cfg
    }

    /// Where errors and runs go.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.shared.sink
    }

    /// Sets the jobs this worker may claim, with their timeouts.
    pub fn set_jobs(&self, jobs: Vec<(String, Option<Duration>)>) {
        let mut names = Vec::with_capacity(jobs.len());
        let mut timeouts = HashMap::new();
        for (name, timeout) in jobs {
            if let Some(t) = timeout {
                timeouts.insert(name.clone(), t);
            }
            names.push(name);
        }
        let set = JobSet {
            names: Arc::from(names),
            timeouts,
        };
        *self.shared.jobs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.wake();
    }

    /// Starts the claim loop (idempotent).
    pub fn start(&self) {
        self.shared.running.store(true, Ordering::SeqCst);
        if !self.shared.loop_alive.swap(true, Ordering::SeqCst) {
            self.rt.spawn(tasks::claim_loop(self.shared.clone()));
        }
        self.shared.update_wakes();
        self.wake();
    }

    /// Stops claiming. Runs in flight are not touched (the JS layer awaits them).
    pub fn stop(&self) {
        self.shared.running.store(false, Ordering::SeqCst);
        self.shared.update_wakes();
        self.wake();
    }

    /// Whether the claim loop task is still alive (it may be finishing a
    /// claim after [`Worker::stop`]).
    pub fn loop_alive(&self) -> bool {
        self.shared.loop_alive.load(Ordering::SeqCst)
    }

    /// Whether the claim loop is on.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Whether [`Worker::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Stops everything, background tasks included.
    pub fn close(&self) {
        self.stop();
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.closed_notify.notify_waiters();
    }

    /// Resolves once the worker is closed (for the engine's own tasks).
    pub async fn closed(&self) {
        let closed = self.shared.closed_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.is_closed() {
            return;
        }
        closed.await
    }

    /// After [`Worker::close`]: waits (up to `limit`) until every background
    /// task has exited and dropped its connections. True if they all did.
    pub fn wait_closed(&self, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        // Each task (and each of its blocking calls) holds a clone of `shared`.
        while Arc::strong_count(&self.shared) > 1 {
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Turns claiming ahead on or off (`WorkerConfig::claim_ahead`): on
    /// while the runs here end quickly, so a run claimed ahead waits little.
    pub fn set_claim_ahead(&self, on: bool) {
        self.shared.ahead_on.store(on, Ordering::SeqCst);
    }

    /// Wakes the claim loop (a run was triggered or a slot was freed).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Claims up to `limit` runs right now (for `processOne`), bounded by free slots.
    pub async fn claim_now(&self, limit: usize) -> Result<Vec<ClaimedRun>> {
        self.shared.claim(limit).await
    }

    /// Returns the stale runs of this worker's jobs to `pending` now (what the
    /// claim loop does every polling interval), for `processOne` without the
    /// loop. Runs this worker executes are left alone. Returns how many.
    pub async fn recover_stale(&self) -> Result<usize> {
        tasks::recover_stale(&self.shared, None).await
    }

    /// Another process cancelled run `id`: if it runs here (and was not
    /// already reported lost), the sink hears `lost(id, Cancelled)` at once.
    pub fn cancelled_elsewhere(&self, id: &str) {
        let hit = match lock(&self.shared.inflight).get_mut(id) {
            Some(f) if !f.gone => {
                f.gone = true;
                true
            }
            _ => false,
        };
        if hit {
            self.shared.sink.lost(id, LostReason::Cancelled);
        }
    }

    /// A run's JS execution under lease `generation` ended: frees its slot.
    /// (The generation matters: the run may already run again under a new one.)
    pub fn release(&self, id: &str, generation: i64) {
        let mut inflight = lock(&self.shared.inflight);
        if inflight.get(id).is_some_and(|f| f.generation == generation) {
            inflight.remove(id);
            drop(inflight);
            self.shared.update_wakes();
            self.wake();
        }
    }

    /// Commits a batch of the JS side's writes, waiting for the lock (see
    /// [`Store::flush_then_claim`]). When the batch ends runs and the claim
    /// loop is on, the same transaction claims their successors, returned
    /// with the statuses: a finished run hands its slot on without a second
    /// commit or a wake-up.
    pub async fn flush(
        &self,
        ops: &[FlushOp<'_>],
        bytes: usize,
    ) -> Result<FlushOutcome<Vec<ClaimedRun>>> {
        let sh = &self.shared;
        loop {
            let claiming = sh.running.load(Ordering::SeqCst);
            let mut reserved = 0;
            let out = sh
                .store
                .flush_then_claim(ops, |ended| sh.plan_claim(claiming, ended, &mut reserved))
                .await;
            match out {
                // A waiting flush holds results the job functions already
                // produced: giving up on them would leave the runs `running`
                // until stale recovery executes those steps a second time.
                // So a lock held past the busy timeout is reported and the
                // batch is tried again, for as long as the worker is open
                // (another worker that reclaims a run meanwhile bumps its
                // lease, and the retried ops for it are then refused).
                Err(e) if e.is_busy() && !sh.closed.load(Ordering::SeqCst) => {
                    sh.settle(reserved, &[]);
                    sh.sink.error("step-write", &e);
                }
                Ok(out) => {
                    sh.store.after_write(bytes);
                    self.flushed(reserved, &out);
                    return Ok(out);
                }
                Err(e) => {
                    sh.settle(reserved, &[]);
                    return Err(e);
                }
            }
        }
    }

    /// Records what a committed flush ended and claimed.
    fn flushed(&self, reserved: usize, out: &FlushOutcome<Vec<ClaimedRun>>) {
        let sh = &self.shared;
        {
            let mut inflight = lock(&sh.inflight);
            for (id, generation) in &out.ended {
                if inflight
                    .get(id)
                    .is_some_and(|f| f.generation == *generation)
                {
                    inflight.remove(id);
                }
            }
        }
        sh.settle(reserved, &out.then);
        if !out.ended.is_empty() && out.then.len() < reserved.max(1) {
            // Slots left free: let the loop look for work.
            self.wake();
        }
    }

    /// Number of runs in flight.
    pub fn inflight(&self) -> usize {
        lock(&self.shared.inflight).len()
    }
}

impl<S: SyncStore> Worker<S> {
    /// Like [`Worker::claim_now`] but only while the claim loop is on, and
    /// without ever waiting for the lock (`None` when it is taken): lets a
    /// local trigger start its run on the calling thread, skipping the hop
    /// through the loop and the callback.
    pub fn try_claim(&self, limit: usize) -> Result<Option<Vec<ClaimedRun>>> {
        let sh = &self.shared;
        if !sh.running.load(Ordering::SeqCst) {
            return Ok(Some(Vec::new()));
        }
        let jobs = sh.job_set();
        if jobs.names.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let n = sh.reserve(limit, &[], 0);
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        let out = sh.store.try_claim(&jobs.names, n);
        match &out {
            Ok(Some(runs)) => sh.settle(n, runs),
            _ => sh.settle(n, &[]),
        }
        out
    }

    /// Creates one run without waiting and, when it created one while the
    /// claim loop is on ([`policy::start_locally`]), claims in the same
    /// commit the oldest claimable run (usually this one) for a free slot:
    /// the caller executes it without a hop through the loop, and a trigger
    /// that starts its run here costs one commit (with nothing else pending,
    /// the run is inserted already claimed: [`ClaimedRun::inserted`]). A
    /// failed claim is reported to the sink (`claim`), not to the trigger.
    /// `None` when the lock is taken.
    #[allow(clippy::type_complexity)]
    pub fn try_trigger(
        &self,
        item: &TriggerItem<'_>,
    ) -> Result<Option<(TriggerOutcome, Vec<ClaimedRun>)>> {
        let sh = &self.shared;
        let running = sh.running.load(Ordering::SeqCst);
        let mut reserved = 0;
        let out = sh.store.try_trigger_then_claim(item, |outcome| {
            let created = matches!(outcome, TriggerOutcome::Created { .. });
            if !policy::start_locally(created, running) {
                return None;
            }
            let jobs = sh.job_set();
            if jobs.names.is_empty() {
                return None;
            }
            reserved = sh.reserve(1, &[], 0);
            if reserved == 0 {
                return None;
            }
            Some((jobs.names.clone(), reserved))
        });
        match out {
            Ok(Some((outcome, Ok(runs)))) => {
                sh.settle(reserved, &runs);
                Ok(Some((outcome, runs)))
            }
            Ok(Some((outcome, Err(e)))) => {
                sh.settle(reserved, &[]);
                sh.sink.error("claim", &e);
                Ok(Some((outcome, Vec::new())))
            }
            Ok(None) => {
                sh.settle(reserved, &[]);
                Ok(None)
            }
            Err(e) => {
                sh.settle(reserved, &[]);
                Err(e)
            }
        }
    }

    /// [`Worker::flush`] without waiting: `None` when the lock is taken.
    pub fn try_flush(&self, ops: &[FlushOp<'_>]) -> Result<Option<FlushOutcome<Vec<ClaimedRun>>>> {
        let sh = &self.shared;
        let claiming = sh.running.load(Ordering::SeqCst);
        let mut reserved = 0;
        let out = sh
            .store
            .try_flush_then_claim(ops, |ended| sh.plan_claim(claiming, ended, &mut reserved));
        match out {
            Ok(Some(out)) => {
                self.flushed(reserved, &out);
                Ok(Some(out))
            }
            Ok(None) => {
                sh.settle(reserved, &[]);
                Ok(None)
            }
            Err(e) => {
                sh.settle(reserved, &[]);
                Err(e)
            }
        }
    }
}

impl<S: Store> Shared<S> {
    fn job_set(&self) -> Arc<JobSet> {
        self.jobs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Tells the store whether wake-ups are wanted: only while the claim
    /// loop is on and a slot is free (else a wake-up could only be ignored;
    /// see [`Store::set_wakes_wanted`]). Called after each change of the
    /// runs in flight and at start and stop, never under the runs' lock; the
    /// decision and the call are made under `wakes_wanted`'s lock, so the
    /// last call made reflects the latest state.
    fn update_wakes(&self) {
        let mut told = lock(&self.wakes_wanted);
        let taken = lock(&self.inflight).len();
        let want = self.running.load(Ordering::SeqCst)
            && policy::free_slots(self.cfg.max_concurrent, taken, 0) > 0;
        if *told != want {
            *told = want;
            self.store.set_wakes_wanted(want);
        }
    }

    fn free_slots(&self) -> usize {
        let inflight = lock(&self.inflight);
        policy::free_slots(
            self.cfg.max_concurrent,
            inflight.len(),
            self.reserved.load(Ordering::SeqCst),
        )
    }

    /// What a flush claims in its transaction: when the claim loop is on and
    /// the batch ended runs, as many runs as slots are free, counting the
    /// ended runs' slots (reserved in `reserved`).
    fn plan_claim(
        &self,
        claiming: bool,
        ended: &[(String, i64)],
        reserved: &mut usize,
    ) -> ClaimRequest {
        if !claiming || ended.is_empty() {
            return None;
        }
        let jobs = self.job_set();
        // (a job timeout runs from the claim: no run waits claimed ahead then)
        let ahead = if self.ahead_on.load(Ordering::SeqCst) && jobs.timeouts.is_empty() {
            self.cfg.claim_ahead
        } else {
            0
        };
        *reserved = self.reserve(usize::MAX, ended, ahead);
        if *reserved == 0 || jobs.names.is_empty() {
            return None;
        }
        Some((jobs.names.clone(), *reserved))
    }

    /// Reserves up to `want` free slots, counting the slots of `ending` runs
    /// (still in flight, about to end) as free and `ahead` more. Returns how many.
    fn reserve(&self, want: usize, ending: &[(String, i64)], ahead: usize) -> usize {
        let inflight = lock(&self.inflight);
        let freed = ending
            .iter()
            .filter(|(id, g)| inflight.get(id).is_some_and(|f| f.generation == *g))
            .count();
        let n = policy::slots_to_reserve(
            self.cfg.max_concurrent + ahead,
            inflight.len(),
            self.reserved.load(Ordering::SeqCst),
            freed,
            want,
        );
        self.reserved.fetch_add(n, Ordering::SeqCst);
        n
    }

    /// Turns `reserved` slots into the runs claimed with them (freeing the rest).
    fn settle(&self, reserved: usize, runs: &[ClaimedRun]) {
        let jobs = self.job_set();
        let now = Instant::now();
        let mut inflight = lock(&self.inflight);
        self.reserved.fetch_sub(reserved, Ordering::SeqCst);
        for r in runs {
            let timeout = jobs.timeouts.get(&r.job_name).copied();
            inflight.insert(
                r.id.clone(),
                Inflight {
                    generation: r.generation,
                    deadline: timeout.map(|t| now + t),
                    timeout,
                    gone: false,
                },
            );
        }
        drop(inflight);
        self.update_wakes();
    }

    /// The runs this worker executes and still holds: `(id, generation)`.
    fn held(&self) -> Vec<(String, i64)> {
        lock(&self.inflight)
            .iter()
            .filter(|(_, f)| !f.gone)
            .map(|(id, f)| (id.clone(), f.generation))
            .collect()
    }

    /// Claims up to `limit` runs (bounded by free slots) and records them in flight.
    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedRun>> {
        let jobs = self.job_set();
        if jobs.names.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.reserve(limit, &[], 0);
        if n == 0 {
            return Ok(Vec::new());
        }
        match self.store.claim(&jobs.names, n).await {
            Ok(runs) => {
                self.settle(n, &runs);
                Ok(runs)
            }
            Err(e) => {
                self.settle(n, &[]);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests_worker;

impl<S: Store> Worker<S> {
    /// Another handle on this worker's shared state (for the engine's tasks;
    /// it counts as a task in [`Worker::wait_closed`]).
    pub(crate) fn clone_handle(&self) -> Worker<S> {
        Worker {
            shared: self.shared.clone(),
            rt: self.rt.clone(),
        }
    }
}
