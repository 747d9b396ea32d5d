//! The PostgreSQL store behind the [`Store`] interface: an async backend
//! (every call awaits the server; leases on the database clock).

use std::time::{Duration, SystemTime};

use super::{ListenOptions, PgNotice, PgPurgeOptions, PgStore};
use crate::error::Result;
use crate::store::{
    ClaimRequest, ClaimedRun, FlushOp, FlushOutcome, HeartbeatOutcome, Notice, OpStatus, RunFilter,
    RunStatus, Store, TriggerItem, TriggerOutcome,
};

impl Store for PgStore {
    const BLOCKING: bool = false;
    /// No side connection: other machines' writes arrive by `LISTEN`
    /// ([`Store::listen`]) and the poll; the server does its own upkeep.
    type Side = ();

    fn owner(&self) -> &str {
        PgStore::owner(self)
    }

    fn now(&self) -> SystemTime {
        // Leases and retention (`purge_older_than`) use the database's clock
        // inside the statements; only an explicit purge cutoff comes from here.
        self.local_now()
    }

    async fn migrate(&self) -> Result<i64> {
        self.again_if_lost(|| PgStore::migrate(self)).await
    }

    async fn schema_version(&self) -> Result<i64> {
        self.again_if_lost(|| PgStore::schema_version(self)).await
    }

    async fn check_schema(&self) -> Result<()> {
        self.again_if_lost(|| PgStore::check_schema(self)).await
    }

    async fn trigger(&self, item: &TriggerItem<'_>) -> Result<TriggerOutcome> {
        PgStore::trigger(self, item).await
    }

    async fn trigger_batch(&self, items: &[TriggerItem<'_>]) -> Result<Vec<TriggerOutcome>> {
        PgStore::trigger_batch(self, items).await
    }

    async fn has_pending(&self, _side: Option<&()>, jobs: &[String]) -> Result<bool> {
        self.again_if_lost(|| PgStore::has_pending(self, jobs))
            .await
    }

    async fn claim(&self, jobs: &[String], limit: usize) -> Result<Vec<ClaimedRun>> {
        PgStore::claim(self, jobs, limit).await
    }

    async fn flush_then_claim<F>(
        &self,
        ops: &[FlushOp<'_>],
        then: F,
    ) -> Result<FlushOutcome<Vec<ClaimedRun>>>
    where
        F: FnOnce(&[(String, i64)]) -> ClaimRequest + Send,
    {
        PgStore::flush_then_claim(self, ops, then).await
    }

    async fn fail_owned(&self, run: &str, generation: i64, error: &str) -> Result<OpStatus> {
        PgStore::fail_owned(self, run, generation, error).await
    }

    async fn heartbeat(&self, runs: &[(String, i64)]) -> Result<Vec<HeartbeatOutcome>> {
        self.again_if_lost(|| PgStore::heartbeat(self, runs)).await
    }

    async fn has_stale(
        &self,
        _side: Option<&()>,
        jobs: &[String],
        threshold: Duration,
    ) -> Result<bool> {
        self.again_if_lost(|| PgStore::has_stale(self, jobs, threshold))
            .await
    }

    async fn recover_stale(
        &self,
        jobs: &[String],
        threshold: Duration,
        keep: &[(String, i64)],
    ) -> Result<usize> {
        self.recover_stale_except(jobs, threshold, keep).await
    }

    async fn cancel(&self, id: &str) -> Result<(RunStatus, String)> {
        let (prev, run) = PgStore::cancel(self, id).await?;
        Ok((prev.parse()?, run))
    }

    async fn retry(&self, id: &str) -> Result<String> {
        PgStore::retry(self, id).await
    }

    async fn delete_run(&self, id: &str) -> Result<String> {
        PgStore::delete_run(self, id).await
    }

    async fn purge(&self, older_than: SystemTime, limit: i64) -> Result<usize> {
        PgStore::purge(self, &PgPurgeOptions { older_than, limit }).await
    }

    async fn purge_older_than(&self, age: Duration, limit: i64) -> Result<usize> {
        PgStore::purge_older_than(self, age, limit).await
    }

    async fn get_run(&self, id: &str) -> Result<Option<String>> {
        self.again_if_lost(|| PgStore::get_run(self, id)).await
    }

    async fn get_runs(&self, filter: &RunFilter) -> Result<String> {
        self.again_if_lost(|| PgStore::get_runs(self, filter)).await
    }

    async fn get_steps(&self, run_id: &str) -> Result<String> {
        self.again_if_lost(|| PgStore::get_steps(self, run_id))
            .await
    }

    async fn get_logs(&self, run_id: &str) -> Result<String> {
        self.again_if_lost(|| PgStore::get_logs(self, run_id)).await
    }

    async fn run_counts(&self) -> Result<String> {
        self.again_if_lost(|| PgStore::run_counts(self)).await
    }

    fn side(&self) -> Result<Option<()>> {
        Ok(None)
    }

    async fn change_token(&self, _side: &()) -> Result<Option<i64>> {
        Ok(None)
    }

    async fn upkeep(&self, _side: &()) -> Result<()> {
        Ok(())
    }

    fn listen(&self, on: Box<dyn Fn(Notice) + Send + Sync>) -> Option<Box<dyn Send + Sync>> {
        let mut l = PgStore::listen(self, ListenOptions::default());
        let task = tokio::spawn(async move {
            let mut outage = Outage::default();
            while let Some(n) = l.recv().await {
                if let Some(n) = outage.notice(n) {
                    on(n);
                }
            }
        });
        Some(Box::new(AbortOnDrop(task)))
    }

    async fn publish_events(&self, events: &[(&str, &str)]) -> Result<()> {
        PgStore::publish_events(self, events).await
    }

    fn queue_events(&self, events: Vec<(String, String)>) {
        PgStore::queue_events(self, events)
    }

    fn set_remote_events(&self, on: bool) {
        PgStore::set_remote_events(self, on)
    }

    fn set_wakes_wanted(&self, on: bool) {
        PgStore::set_wakes_wanted(self, on)
    }

    async fn register_listener(&self) -> Result<()> {
        PgStore::register_listener(self).await
    }

    async fn unregister_listener(&self) -> Result<()> {
        PgStore::unregister_listener(self).await
    }

    fn events_queued(&self) -> bool {
        PgStore::events_queued(self)
    }

    async fn publish_queued(&self) -> Result<()> {
        PgStore::publish_queued(self).await
    }
}

/// The engine's notices from the listen connection's. While the server is
/// down the connection is retried with a backoff and each failed attempt is
/// a [`PgNotice::Disconnected`]: only the first of an outage is reported
/// (one `worker:error`, context `watch`), until the connection listens again
/// (then the engine polls once; the JS API has no "back" event).
#[derive(Debug, Default)]
pub(crate) struct Outage {
    down: bool,
}

impl Outage {
    pub(crate) fn notice(&mut self, n: PgNotice) -> Option<Notice> {
        Some(match n {
            PgNotice::Listening { .. } => {
                self.down = false;
                Notice::Poll
            }
            PgNotice::Disconnected { .. } if self.down => return None,
            PgNotice::Disconnected { error } => {
                self.down = true;
                Notice::Error(error)
            }
            PgNotice::Wake { .. } | PgNotice::Resumed => Notice::Wake,
            PgNotice::Cancel { run_id } => Notice::Cancel(run_id),
            PgNotice::Event(ev) => Notice::Event {
                run_id: ev.run_id,
                json: ev.json,
            },
        })
    }
}

/// Stops the listen task (and so closes its connection) when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
