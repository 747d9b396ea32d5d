//! Store tests on temp-file databases (no Node).

use std::time::{Duration, SystemTime};

use super::*;
use crate::error::Error;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn temp_store() -> std::result::Result<(tempfile::TempDir, Store), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db").to_string_lossy().into_owned();
    let store = Store::open(StoreOptions::new(path))?;
    store.migrate()?;
    Ok((dir, store))
}

fn item<'a>(job: &'a str, key: Option<&'a str>, idem: Option<&'a str>) -> TriggerItem<'a> {
    TriggerItem {
        job_name: job,
        input: "{\"n\":1}",
        idempotency_key: idem,
        concurrency_key: key,
        coalesce: false,
        labels: "{}",
    }
}

fn created_id(o: TriggerOutcome) -> String {
    match o {
        TriggerOutcome::Created { id, .. } => id,
        other => panic!("expected a created run, got {other:?}"),
    }
}

fn jobs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn step_op(id: &str, gen: i64, name: &str, index: i64) -> String {
    format!(
        r#"["s","{id}",{gen},"{name}",{index},"completed",{{"v":{index}}},null,null,"2020-01-01T00:00:00.000Z","2020-01-01T00:00:00.001Z",null]"#
    )
}

#[test]
fn migrate_is_idempotent_and_versioned() -> TestResult {
    let (_d, store) = temp_store()?;
    assert_eq!(store.migrate()?, SCHEMA_VERSION);
    assert_eq!(store.schema_version()?, SCHEMA_VERSION);
    let n: i64 = store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM schema_versions", [], |r| r.get(0))?))?;
    assert_eq!(n, SCHEMA_VERSION);
    Ok(())
}

#[test]
fn every_migration_applies_from_each_older_version() -> TestResult {
    let all = migrate::MIGRATIONS_FOR_TESTS;
    for start in 0..=all.len() {
        let conn = rusqlite::Connection::open_in_memory()?;
        migrate::migrate_in(&conn, "t", &all[..start])?;
        assert_eq!(migrate::migrate_in(&conn, "t", all)?, all.len() as i64);
        let tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs','steps','logs')",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(tables, 3);
    }
    Ok(())
}

#[test]
fn a_newer_schema_is_refused() -> TestResult {
    let (_d, store) = temp_store()?;
    store.write(|c| {
        c.execute("INSERT INTO schema_versions VALUES (99, 'future')", [])?;
        Ok(())
    })?;
    let err = store.migrate().unwrap_err();
    assert_eq!(err.code(), "SCHEMA_TOO_NEW");
    assert!(matches!(err, Error::SchemaTooNew { found: 99, .. }));
    assert_eq!(store.check_schema().unwrap_err().code(), "SCHEMA_TOO_NEW");
    Ok(())
}

#[test]
fn bad_files_map_to_codes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let text = dir.path().join("text.db");
    std::fs::write(
        &text,
        "this is not a database, just some text that is long enough ".repeat(20),
    )?;
    let err = Store::open(StoreOptions::new(text.to_string_lossy()))
        .err()
        .ok_or("opened")?;
    assert_eq!(err.code(), "DB_CORRUPT");
    let missing = dir.path().join("no/such/dir/x.db");
    let err = Store::open(StoreOptions::new(missing.to_string_lossy()))
        .err()
        .ok_or("opened")?;
    assert_eq!(err.code(), "DB_CANTOPEN");
    Ok(())
}

#[test]
fn trigger_claim_step_complete() -> TestResult {
    let (_d, store) = temp_store()?;
    let id = created_id(store.trigger(&item("job", None, None))?);
    assert!(
        store.claim(&jobs(&["other"]), 5)?.is_empty(),
        "unregistered jobs are left alone"
    );
    let claimed = store.claim(&jobs(&["job"]), 5)?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].generation, 1);
    assert!(claimed[0].json.contains("\"steps\":[]"));
    let ops = format!(
        "[{},{}]",
        step_op(&id, 1, "a", 0),
        format_args!(r#"["c","{id}",1,{{"done":true}},null,"2020-01-01T00:00:01.000Z"]"#)
    );
    assert_eq!(store.flush(&ops)?, "00");
    let run = store.get_run(&id)?.ok_or("missing run")?;
    assert!(run.contains("\"status\":\"completed\""));
    assert!(run.contains("\"output\":{\"done\":true}"));
    assert!(run.contains("\"currentStepIndex\":1"));
    assert!(store.get_steps(&id)?.contains("\"name\":\"a\""));
    Ok(())
}

#[test]
fn completed_steps_come_with_the_claim() -> TestResult {
    let (_d, store) = temp_store()?;
    let id = created_id(store.trigger(&item("job", None, None))?);
    store.claim(&jobs(&["job"]), 1)?;
    store.flush(&format!(
        "[{},{}]",
        step_op(&id, 1, "a", 0),
        step_op(&id, 1, "b", 1)
    ))?;
    // The worker dies; after the stale threshold the run goes back to pending.
    let future = iso(SystemTime::now() + Duration::from_secs(60));
    assert_eq!(store.recover_stale(&jobs(&["job"]), &future)?, 1);
    let again = store.claim(&jobs(&["job"]), 1)?;
    assert_eq!(again[0].generation, 2);
    assert!(again[0]
        .json
        .contains(r#""steps":[["a",0,{"v":0}],["b",1,{"v":1}]]"#));
    Ok(())
}

#[test]
fn writes_of_a_lost_lease_are_fenced() -> TestResult {
    let (_d, store) = temp_store()?;
    let id = created_id(store.trigger(&item("job", None, None))?);
    store.claim(&jobs(&["job"]), 1)?;
    let future = iso(SystemTime::now() + Duration::from_secs(60));
    store.recover_stale(&jobs(&["job"]), &future)?;
    // Reset to pending: generation 1 may no longer write.
    assert_eq!(store.flush(&format!("[{}]", step_op(&id, 1, "a", 0)))?, "l");
    store.claim(&jobs(&["job"]), 1)?;
    let late_completion =
        format!(r#"[["c","{id}",1,{{"old":true}},null,"2020-01-01T00:00:01.000Z"]]"#);
    assert_eq!(store.flush(&late_completion)?, "l");
    assert_eq!(store.flush(&format!("[{}]", step_op(&id, 2, "a", 0)))?, "0");
    assert_eq!(
        store.heartbeat(&[(id.clone(), 1)])?,
        vec![HeartbeatOutcome::Lost(id.clone())]
    );
    assert!(store.heartbeat(&[(id.clone(), 2)])?.is_empty());
    let steps = store.get_steps(&id)?;
    assert_eq!(steps.matches("\"name\":\"a\"").count(), 1);
    Ok(())
}

#[test]
fn cancel_stops_writes_and_heartbeats() -> TestResult {
    let (_d, store) = temp_store()?;
    let id = created_id(store.trigger(&item("job", None, None))?);
    store.claim(&jobs(&["job"]), 1)?;
    let (prev, run) = store.cancel(&id)?;
    assert_eq!(prev, crate::store::RunStatus::Running);
    assert!(run.contains("\"status\":\"cancelled\""));
    assert_eq!(store.flush(&format!("[{}]", step_op(&id, 1, "a", 0)))?, "c");
    assert_eq!(
        store.heartbeat(&[(id.clone(), 1)])?,
        vec![HeartbeatOutcome::Cancelled(id.clone())]
    );
    assert_eq!(store.cancel(&id).unwrap_err().code(), "CONFLICT");
    assert!(store.retry(&id)?.contains("\"status\":\"pending\""));
    assert_eq!(store.cancel("nope").unwrap_err().code(), "NOT_FOUND");
    Ok(())
}

#[test]
fn concurrency_keys_run_one_at_a_time_in_creation_order() -> TestResult {
    let (_d, store) = temp_store()?;
    let a = created_id(store.trigger(&item("job", Some("k"), None))?);
    let b = created_id(store.trigger(&item("job", Some("k"), None))?);
    let free = created_id(store.trigger(&item("job", None, None))?);
    let first: Vec<String> = store
        .claim(&jobs(&["job"]), 10)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(first, vec![a.clone(), free]);
    assert!(
        store.claim(&jobs(&["job"]), 10)?.is_empty(),
        "b waits for a"
    );
    store.flush(&format!(
        r#"[["c","{a}",1,null,null,"2020-01-01T00:00:01.000Z"]]"#
    ))?;
    let next: Vec<String> = store
        .claim(&jobs(&["job"]), 10)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(next, vec![b]);
    Ok(())
}

#[test]
fn idempotency_and_coalescing() -> TestResult {
    let (_d, store) = temp_store()?;
    let id = created_id(store.trigger(&item("job", None, Some("once")))?);
    match store.trigger(&item("job", None, Some("once")))? {
        TriggerOutcome::Idempotent(json) => assert!(json.contains(&id)),
        other => return Err(format!("expected idempotent, got {other:?}").into()),
    }
    let first = created_id(store.trigger(&item("job", Some("k"), None))?);
    let mut coalesce = item("job", Some("k"), None);
    coalesce.coalesce = true;
    match store.trigger(&coalesce)? {
        TriggerOutcome::Coalesced(json) => assert!(json.contains(&first)),
        other => return Err(format!("expected coalesced, got {other:?}").into()),
    }
    let count: i64 =
        store.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?))?;
    assert_eq!(count, 2);
    Ok(())
}

#[test]
fn a_batch_is_all_or_nothing() -> TestResult {
    let (_d, store) = temp_store()?;
    let dup = [item("job", None, Some("x")), item("job", None, Some("x"))];
    let out = store.trigger_batch(&dup)?;
    assert!(
        matches!(out[1], TriggerOutcome::Idempotent(_)),
        "same key twice: second is idempotent"
    );
    // Make the third insert of a batch fail: nothing of the batch may remain.
    store.write(|c| {
        c.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON runs WHEN NEW.job_name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )?;
        Ok(())
    })?;
    let batch = [
        item("job", None, None),
        item("job", None, None),
        item("boom", None, None),
    ];
    assert!(store.trigger_batch(&batch).is_err());
    let count: i64 =
        store.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?))?;
    assert_eq!(count, 1);
    Ok(())
}

#[test]
fn try_write_never_waits_for_another_connection() -> TestResult {
    let (dir, store) = temp_store()?;
    let other = rusqlite::Connection::open(dir.path().join("t.db"))?;
    other.execute_batch("BEGIN IMMEDIATE")?;
    let started = std::time::Instant::now();
    assert!(store.try_trigger(&item("job", None, None))?.is_none());
    assert!(started.elapsed() < Duration::from_millis(500));
    other.execute_batch("COMMIT")?;
    assert!(store.try_trigger(&item("job", None, None))?.is_some());
    Ok(())
}

#[test]
fn label_filters_bind_keys() -> TestResult {
    let (_d, store) = temp_store()?;
    let mut it = item("job", None, None);
    it.labels = r#"{"a'b":"1","x\") OR 1=1 --":"2"}"#;
    let id = created_id(store.trigger(&it)?);
    store.trigger(&item("job", None, None))?;
    let mut filter = RunFilter {
        labels: Some([("a'b".to_string(), "1".to_string())].into()),
        ..RunFilter::default()
    };
    let runs = store.get_runs(&filter)?;
    assert!(runs.contains(&id));
    assert_eq!(runs.matches("\"id\"").count(), 1);
    filter.labels = Some([("x\") OR 1=1 --".to_string(), "3".to_string())].into());
    assert_eq!(store.get_runs(&filter)?, "[]");
    Ok(())
}

#[test]
fn run_counts_group_by_job_and_status() -> TestResult {
    let (_d, store) = temp_store()?;
    assert_eq!(store.run_counts()?, "[]");
    store.trigger(&item("a", None, None))?;
    store.trigger(&item("a", None, None))?;
    let id = created_id(store.trigger(&item("b", None, None))?);
    store.cancel(&id)?;
    assert_eq!(
        store.run_counts()?,
        r#"[{"jobName":"a","status":"pending","count":2},{"jobName":"b","status":"cancelled","count":1}]"#
    );
    Ok(())
}

#[test]
fn run_records_count_completed_steps() -> TestResult {
    let (_d, store) = temp_store()?;
    let id = created_id(store.trigger(&item("job", None, None))?);
    assert!(store
        .get_run(&id)?
        .ok_or("missing run")?
        .contains("\"completedStepCount\":0"));
    let claimed = store.claim(&jobs(&["job"]), 1)?;
    assert!(claimed[0].json.contains("\"completedStepCount\":0"));
    let failed_step = format!(
        r#"["s","{id}",1,"c",2,"failed",null,"boom",null,"2020-01-01T00:00:00.000Z","2020-01-01T00:00:00.001Z",null]"#
    );
    let ops = format!(
        "[{},{},{failed_step}]",
        step_op(&id, 1, "a", 0),
        step_op(&id, 1, "b", 1)
    );
    assert_eq!(store.flush(&ops)?, "000");
    let f = format!(r#"[["f","{id}",1,"boom",null,null,"2020-01-01T00:00:01.000Z"]]"#);
    assert_eq!(store.flush(&f)?, "0");
    // A failed step is not counted; every record shape carries the count.
    assert!(store
        .get_run(&id)?
        .ok_or("missing run")?
        .contains("\"completedStepCount\":2"));
    let filter = RunFilter::default();
    assert!(store
        .get_runs(&filter)?
        .contains("\"completedStepCount\":2"));
    assert!(store.retry(&id)?.contains("\"completedStepCount\":2"));
    assert!(store.cancel(&id)?.1.contains("\"completedStepCount\":2"));
    Ok(())
}

#[test]
fn claims_reuse_their_prepared_statements() -> TestResult {
    // A cached statement that SQLite expires is parsed and planned again on
    // its next step (SQLITE_STMTSTATUS_REPREPARE counts those).
    let (_dir, store) = temp_store()?;
    for _ in 0..4 {
        store.trigger(&item("j", None, None))?;
    }
    let names = jobs(&["j"]);
    assert!(store.has_pending(None, &names)?);
    assert_eq!(store.claim(&names, 1)?.len(), 1);
    assert!(store.has_pending(None, &names)?);
    assert_eq!(store.claim(&names, 2)?.len(), 2);
    assert_eq!(store.claim(&names, 1)?.len(), 1);
    assert!(!store.has_pending(None, &names)?);
    let sql = claim::candidates_sql(1);
    let reprepared = |c: &Connection| -> Result<i32> {
        Ok(c.prepare_cached(&sql)?
            .get_status(rusqlite::StatementStatus::RePrepare))
    };
    assert_eq!(store.write(reprepared)?, 0, "the claim (writer)");
    assert_eq!(store.read(reprepared)?, 0, "has_pending (reader)");
    Ok(())
}
