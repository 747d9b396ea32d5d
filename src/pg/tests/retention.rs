//! `retainRuns` on PostgreSQL measures a run's age on the database's clock
//! (`now() - retain` in the statement), never the worker's: a worker whose
//! clock is a day ahead or behind deletes exactly what a correct one would.

use std::sync::Arc;
use std::time::Duration;

use super::{item, skip_without_server, TResult, TestSchema};
use crate::engine::{Engine, EngineConfig};
use crate::error::Error;
use crate::pg::PgStore;
use crate::store::{ClaimedRun, Store, TriggerOutcome};
use crate::worker::{LostReason, Sink};

struct NoSink;

impl Sink for NoSink {
    fn runs(&self, _runs: Vec<ClaimedRun>) {}
    fn lost(&self, _id: &str, _reason: LostReason) {}
    fn error(&self, context: &'static str, err: &Error) {
        panic!("unexpected worker error in {context}: {err}");
    }
}

/// A run of `store` completed `ago` before the database's `now()`.
async fn completed(store: &PgStore, db: &TestSchema, ago: &str) -> TResult<String> {
    let TriggerOutcome::Created { id, .. } = store.trigger(&item("job")).await? else {
        return Err("not created".into());
    };
    let raw = db.raw().await?;
    let sql = format!(
        "UPDATE {}.runs SET status = 'completed', completed_at = now() - interval '{ago}', \
         updated_at = now() - interval '{ago}' WHERE id = $1",
        db.name()
    );
    assert_eq!(raw.execute(&sql, &[&id]).await?, 1);
    Ok(id)
}

#[test]
fn retention_cutoff_is_the_database_clock_not_the_workers() -> TResult {
    skip_without_server!();
    let db = TestSchema::new_multi("rclock")?;
    let rt = db.runtime();
    let one_hour = Duration::from_secs(3600);
    rt.block_on(async {
        // skew: this worker's clock a day ahead, then a day behind.
        for skew in [86_400, -86_400] {
            let store = db.store(2).await?.with_clock_skew(skew);
            // The skew is real for anything that reads the local clock.
            let local = Store::now(&store);
            let server = store.db_now().await?;
            let apart = if skew > 0 {
                local.duration_since(server)?
            } else {
                server.duration_since(local)?
            };
            assert!(
                apart > Duration::from_secs(86_000),
                "skew {skew}: {apart:?}"
            );

            let old = completed(&store, &db, "2 hours").await?;
            let recent = completed(&store, &db, "10 minutes").await?;
            let engine = Engine::new(
                Arc::new(store.clone()),
                EngineConfig {
                    retain: Some(one_hour),
                    ..EngineConfig::default()
                },
                Arc::new(NoSink),
                tokio::runtime::Handle::current(),
            );
            // What processOne does first: stale recovery, then retainRuns.
            engine.before_processing().await?;
            // A day ahead, a local cutoff would take the recent run too; a day
            // behind, it would keep the old one.
            assert_eq!(
                store.get_run(&old).await?,
                None,
                "skew {skew}: old run kept"
            );
            assert!(
                store.get_run(&recent).await?.is_some(),
                "skew {skew}: recent run deleted"
            );
            // The retention timer's call, directly: the same cutoff.
            let older = completed(&store, &db, "3 hours").await?;
            assert_eq!(Store::purge_older_than(&store, one_hour, 100).await?, 1);
            assert_eq!(store.get_run(&older).await?, None);
            assert!(store.get_run(&recent).await?.is_some());
            Store::purge_older_than(&store, Duration::ZERO, 100).await?;
            engine.close();
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    Ok(())
}

#[test]
fn a_retention_age_beyond_any_run_deletes_nothing() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("rhuge")?;
    let rt = db.runtime();
    rt.block_on(async {
        let store = db.store(1).await?;
        let id = completed(&store, &db, "40 years").await?;
        // Clamped to 1000 years, inside PostgreSQL's interval range.
        let forever = Duration::from_secs(u64::MAX / 4);
        assert_eq!(Store::purge_older_than(&store, forever, 100).await?, 0);
        assert!(store.get_run(&id).await?.is_some());
        assert_eq!(
            Store::purge_older_than(&store, Duration::from_secs(30 * 366 * 86_400), 100).await?,
            1
        );
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    Ok(())
}
