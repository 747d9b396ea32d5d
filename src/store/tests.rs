//! SqliteStore tests on temp-file databases (no Node).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::error::Error;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn temp_store() -> std::result::Result<(tempfile::TempDir, SqliteStore), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db").to_string_lossy().into_owned();
    let store = SqliteStore::open(StoreOptions::new(path))?;
    store.migrate()?;
    Ok((dir, store))
}

fn item<'a>(job: &'a str, key: Option<&'a str>, idem: Option<&'a str>) -> TriggerItem<'a> {
    TriggerItem {
        idempotency_key: idem,
        concurrency_key: key,
        ..TriggerItem::new(job, "{\"n\":1}")
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
        r#"{{"step":{{"run":"{id}","gen":{gen},"name":"{name}","index":{index},"status":"completed","output":{{"v":{index}}},"error":null,"stack":null,"startedAt":"2020-01-01T00:00:00.000Z","completedAt":"2020-01-01T00:00:00.001Z","progress":null}}}}"#
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
        if start > 0 {
            // Runs written by the older schema are found by the newer one's
            // claim (its indexes are built from the rows there).
            conn.execute_batch(
                "INSERT INTO runs (id, job_name, input, status, concurrency_key, created_at, updated_at) VALUES \
                 ('a', 'j', '{}', 'completed', NULL, '1', '1'), ('b', 'j', '{}', 'pending', 'k', '2', '2'), \
                 ('c', 'j', '{}', 'pending', NULL, '3', '3'), ('d', 'j', '{}', 'pending', 'k', '4', '4'), \
                 ('e', 'j', '{}', 'running', 'm', '5', '5'), ('f', 'j', '{}', 'pending', 'm', '6', '6')",
            )?;
        }
        assert_eq!(migrate::migrate_in(&conn, "t", all)?, all.len() as i64);
        if start > 0 {
            assert_eq!(claim::candidates(&conn, &jobs(&["j"]), 10)?, ["b", "c"]);
        }
        if (1..4).contains(&start) {
            // Schema 4 records the keys of the pending runs written before it
            // (the claim's key-by-key search sees only these).
            let keys: Vec<String> = conn
                .prepare("SELECT concurrency_key FROM pending_keys ORDER BY 1")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            assert_eq!(keys, ["k", "m"], "from version {start}");
        }
        let tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs','steps','logs')",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(tables, 3);
        // Schema 3 (issue 19): only pending and running runs are indexed by
        // status, and a run without a concurrency key is in one status index.
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' \
                 AND sql IS NOT NULL ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(
            indexes,
            [
                "runs_active_free",
                "runs_active_key",
                "runs_active_keyed",
                "runs_job_idempotency"
            ],
            "from version {start}"
        );
        let steps: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'steps' \
                 AND sql IS NOT NULL ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(steps, ["steps_run_name"], "from version {start}");
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
    let err = SqliteStore::open(StoreOptions::new(text.to_string_lossy()))
        .err()
        .ok_or("opened")?;
    assert_eq!(err.code(), "DB_CORRUPT");
    let missing = dir.path().join("no/such/dir/x.db");
    let err = SqliteStore::open(StoreOptions::new(missing.to_string_lossy()))
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
    // What an execution needs, not the whole run record (issue 19).
    let v: serde_json::Value = serde_json::from_str(&claimed[0].json)?;
    let keys: Vec<&str> = v
        .as_object()
        .ok_or("not an object")?
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "id",
            "input",
            "jobName",
            "labels",
            "leaseGeneration",
            "progress",
            "startedAt",
            "steps"
        ],
        "{}",
        claimed[0].json
    );
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["jobName"], "job");
    assert_eq!(v["input"], serde_json::json!({"n": 1}));
    assert_eq!(v["labels"], serde_json::json!({}));
    assert_eq!(v["progress"], serde_json::Value::Null);
    assert_eq!(v["leaseGeneration"], 1);
    assert!(v["startedAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(v["steps"], serde_json::json!([]));
    let ops = format!(
        "[{},{}]",
        step_op(&id, 1, "a", 0),
        format_args!(
            r#"{{"complete":{{"run":"{id}","gen":1,"output":{{"done":true}},"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}"#
        )
    );
    assert_eq!(store.flush(&ops)?.statuses, "00");
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
    assert_eq!(
        store
            .flush(&format!("[{}]", step_op(&id, 1, "a", 0)))?
            .statuses,
        "l"
    );
    store.claim(&jobs(&["job"]), 1)?;
    let late_completion = format!(
        r#"[{{"complete":{{"run":"{id}","gen":1,"output":{{"old":true}},"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
    );
    assert_eq!(store.flush(&late_completion)?.statuses, "l");
    assert_eq!(
        store
            .flush(&format!("[{}]", step_op(&id, 2, "a", 0)))?
            .statuses,
        "0"
    );
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
    assert_eq!(
        store
            .flush(&format!("[{}]", step_op(&id, 1, "a", 0)))?
            .statuses,
        "c"
    );
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
        r#"[{{"complete":{{"run":"{a}","gen":1,"output":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
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
    store.claim(&jobs(&["job"]), 1)?;
    let failed_step = format!(
        r#"{{"step":{{"run":"{id}","gen":1,"name":"c","index":2,"status":"failed","output":null,"error":"boom","stack":null,"startedAt":"2020-01-01T00:00:00.000Z","completedAt":"2020-01-01T00:00:00.001Z","progress":null}}}}"#
    );
    let ops = format!(
        "[{},{},{failed_step}]",
        step_op(&id, 1, "a", 0),
        step_op(&id, 1, "b", 1)
    );
    assert_eq!(store.flush(&ops)?.statuses, "000");
    let f = format!(
        r#"[{{"fail":{{"run":"{id}","gen":1,"error":"boom","stack":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
    );
    assert_eq!(store.flush(&f)?.statuses, "0");
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
    // The key-by-key way too: a backlog past the scan window on one busy key.
    let busy = created_id(store.trigger(&item("j", Some("k"), None))?);
    assert_eq!(store.claim(&names, 1)?[0].id, busy);
    for _ in 0..80 {
        store.trigger(&item("j", Some("k"), None))?;
    }
    assert!(!store.has_pending(None, &names)?);
    assert!(store.claim(&names, 1)?.is_empty());
    assert!(!store.has_pending(None, &names)?);
    assert!(store.claim(&names, 1)?.is_empty());
    for sql in [
        claim::scan_sql(1),
        claim::FREE_KEY_HEADS_SQL.to_string(),
        claim::keyless_sql(1),
        claim::scan_sql_unchecked(1),
        claim::RUNNING_KEYS_SQL.to_string(),
        claim::KEY_HEAD_SQL.to_string(),
        claim::PENDING_KEYS_SQL.to_string(),
    ] {
        let reprepared = |c: &Connection| -> Result<i32> {
            Ok(c.prepare_cached(&sql)?
                .get_status(rusqlite::StatementStatus::RePrepare))
        };
        assert_eq!(store.write(reprepared)?, 0, "the claim (writer): {sql}");
        assert_eq!(store.read(reprepared)?, 0, "has_pending (reader): {sql}");
    }
    Ok(())
}

/// The step write path compiles no SQL per commit: `BEGIN IMMEDIATE` and
/// `COMMIT` run as cached statements (rusqlite's `Transaction` parses both
/// on every use), and a batch whose ops all apply runs no savepoint (only a
/// batch with a failing op is applied again op by op, in savepoints).
#[test]
fn flushes_reuse_begin_and_commit_and_open_no_savepoint() -> TestResult {
    let (_d, store) = temp_store()?;
    let a = created_id(store.trigger(&item("job", None, None))?);
    assert_eq!(store.claim(&jobs(&["job"]), 1)?.len(), 1);
    for i in 0..5 {
        let out = store.flush(&format!("[{}]", step_op(&a, 1, &format!("s{i}"), i)))?;
        assert_eq!(out.statuses, "0");
        let out = store
            .try_flush(&format!("[{}]", step_op(&a, 1, &format!("t{i}"), 10 + i)))?
            .ok_or("the lock is free")?;
        assert_eq!(out.statuses, "0");
    }
    let runs = |sql: &'static str| {
        move |c: &Connection| -> Result<i32> {
            Ok(c.prepare_cached(sql)?
                .get_status(rusqlite::StatementStatus::Run))
        }
    };
    // (this write's own BEGIN counts once more)
    assert!(store.write(runs("BEGIN IMMEDIATE"))? >= 10);
    assert!(store.write(runs("COMMIT"))? >= 10);
    assert_eq!(store.write(runs("SAVEPOINT flush_op"))?, 0);
    assert_eq!(
        store
            .get_steps(&a)?
            .matches("\"status\":\"completed\"")
            .count(),
        10
    );
    // The non-waiting path too: an op that fails sends the batch through the
    // savepoint pass, and the op before it is written once.
    let log = format!(
        r#"{{"log":{{"run":"{a}","gen":1,"step":null,"level":"info","message":"m","data":null,"at":"2020-01-01T00:00:00.000Z"}}}}"#
    );
    let refused = step_op(&a, 1, "bad", 99).replace("\"completed\"", "\"bogus\"");
    let out = store
        .try_flush(&format!("[{log},{refused}]"))?
        .ok_or("the lock is free")?;
    assert_eq!(out.statuses, "0e");
    assert_eq!(store.get_logs(&a)?.matches("\"message\":\"m\"").count(), 1);
    assert!(!store.get_steps(&a)?.contains("\"bad\""));
    Ok(())
}

/// The claim's definition, as one plain query (what the claim ran before
/// issue 13): the oldest pending runs of the jobs that have no concurrency
/// key, or are the oldest pending run of their key while no run of the key
/// is running. The reference the claim's two ways are checked against.
fn reference_candidates(c: &Connection, jobs: &[String], limit: i64) -> Result<Vec<String>> {
    Ok(reference_with_steps(c, jobs, limit)?.0)
}

/// [`reference_candidates`] and the virtual machine steps it took.
fn reference_with_steps(c: &Connection, jobs: &[String], limit: i64) -> Result<(Vec<String>, i64)> {
    let sql = format!(
        "SELECT id FROM runs AS r WHERE status = 'pending'{} AND (concurrency_key IS NULL OR ( \
           NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.status = 'running' \
                       AND x.concurrency_key = r.concurrency_key) \
           AND NOT EXISTS (SELECT 1 FROM runs AS y WHERE y.status = 'pending' \
                       AND y.concurrency_key = r.concurrency_key \
                       AND (y.created_at < r.created_at \
                            OR (y.created_at = r.created_at AND y.id < r.id))))) \
         ORDER BY created_at, id LIMIT ?",
        query::in_list("job_name", jobs.len())
    );
    let mut params: Vec<&dyn rusqlite::ToSql> =
        jobs.iter().map(|s| s as &dyn rusqlite::ToSql).collect();
    params.push(&limit);
    let mut st = c.prepare(&sql)?;
    let ids = st
        .query_map(params.as_slice(), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let steps = i64::from(st.get_status(rusqlite::StatementStatus::VmStep));
    Ok((ids, steps))
}

/// Issue 13: the claim finds exactly the runs of its definition, in order,
/// whichever of its two ways answers: random backlogs (a few keys or many,
/// keyless runs, runs of a job this worker does not run, shared `created_at`
/// instants, running runs holding keys), below and well past the scan window.
#[test]
fn claim_candidates_match_their_definition() -> TestResult {
    let (_d, store) = temp_store()?;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mine = jobs(&["a", "b"]);
    let mut by_way = [0usize; 2];
    let mut by_set = [0usize; 2];
    for case in 0..60 {
        store.write(|c| Ok(c.execute("DELETE FROM runs", [])?))?;
        let runs = [5, 40, 300, 4000][case % 4] as u64;
        let keys = [1, 3, 32, 1000][rand(4) as usize];
        store.write(|c| {
            let mut ins = c.prepare(
                "INSERT INTO runs (id, job_name, input, status, concurrency_key, created_at, updated_at) \
                 VALUES (?1, ?2, '{}', ?3, ?4, ?5, ?5)",
            )?;
            for i in 0..runs {
                let job = ["a", "b", "other"][rand(3) as usize];
                let status = match rand(10) {
                    0 => "running",
                    1 => "completed",
                    _ => "pending",
                };
                let key = (rand(5) > 0).then(|| format!("k{}", rand(keys)));
                // Few distinct instants: ties are decided by id.
                let at = format!("2026-01-01T00:00:{:02}.000Z", rand(runs / 4 + 1));
                let id = format!("{:026}", rand(1 << 40) * 1000 + i);
                ins.execute((&id, job, status, key, &at))?;
            }
            // What the writes that make runs pending record (inserted
            // directly here); the keys of earlier cases stay, as keys whose
            // runs are gone do until a claim finds them dead.
            c.execute(
                "INSERT OR IGNORE INTO pending_keys SELECT concurrency_key FROM runs \
                 WHERE status = 'pending' AND concurrency_key IS NOT NULL",
                [],
            )?;
            Ok(())
        })?;
        for limit in [1usize, 2, 4, 100] {
            let want = store.read(|c| reference_candidates(c, &mine, limit as i64))?;
            let (got, by_key, with_set) = store.read(|c| {
                let steps = |c: &Connection, sql: &str| -> Result<i32> {
                    Ok(c.prepare_cached(sql)?
                        .get_status(rusqlite::StatementStatus::VmStep))
                };
                let key_steps = |c: &Connection| -> Result<i32> {
                    Ok(steps(c, claim::FREE_KEY_HEADS_SQL)? + steps(c, claim::KEY_HEAD_SQL)?)
                };
                let set_steps = |c: &Connection| steps(c, &claim::scan_sql_unchecked(2));
                let (before, set_before) = (key_steps(c)?, set_steps(c)?);
                let got = claim::candidates(c, &mine, limit)?;
                Ok((got, key_steps(c)? != before, set_steps(c)? != set_before))
            })?;
            assert_eq!(got, want, "case {case}, limit {limit}");
            by_way[usize::from(by_key)] += 1;
            by_set[usize::from(with_set)] += 1;
            assert_eq!(store.has_pending(None, &mine)?, !want.is_empty());
        }
    }
    // Both ways answered some of the cases, and so did both ways of telling
    // a running key: the set of running keys, and the index (past the set's
    // bound: the largest backlogs have more running runs).
    assert!(by_way.iter().all(|&n| n > 5), "{by_way:?}");
    assert!(by_set.iter().all(|&n| n > 5), "{by_set:?}");
    Ok(())
}

/// Issue 13: a claim's cost does not grow with the backlog when the backlog
/// sits on busy keys. 16,000 pending runs on 32 keys, each key running: the
/// claim looked at every pending run (13 ms, under the write lock, for each
/// of the processes); now at most the scan window plus one visit per key.
#[test]
fn claim_cost_is_bounded_by_keys_not_backlog() -> TestResult {
    let (_d, store) = temp_store()?;
    let keys: Vec<String> = (0..32).map(|k| format!("k{k}")).collect();
    let per_batch: Vec<TriggerItem> = (0..500)
        .map(|i| item("j", Some(keys[i % 32].as_str()), None))
        .collect();
    for _ in 0..32 {
        store.trigger_batch(&per_batch)?;
    }
    let names = jobs(&["j"]);
    assert_eq!(store.claim(&names, 100)?.len(), 32, "one run per key");
    let (now, then) = store.read(|c| {
        let before = claim_vm_steps(c)?;
        assert!(claim::candidates(c, &names, 4)?.is_empty());
        let now = claim_vm_steps(c)? - before;
        let (none, then) = reference_with_steps(c, &names, 4)?;
        assert!(none.is_empty());
        Ok((now, then))
    })?;
    assert!(store.claim(&names, 4)?.is_empty());
    assert!(!store.has_pending(None, &names)?);
    // (the reference visits all 15,968 pending runs)
    assert!(then > 200_000, "the reference took {then} steps");
    assert!(now < 20_000, "the claim took {now} virtual machine steps");
    Ok(())
}

/// Issue 13: with 8 processes on 32 keys nearly every key runs, and the
/// claim asked the index, for each key it looked at (~50 a claim, walk and
/// key-by-key search together), whether a run of it is running: 40 µs of CPU
/// a claim. It now reads the running runs' keys once and looks them up in a
/// set. Here 32 keys with backlogs, 28 running: the same answer, in fewer
/// index searches (virtual machine steps stand in for them: a search is a
/// few steps, a row of the running runs' pass one or two).
#[test]
fn claim_reads_the_running_keys_once() -> TestResult {
    let (_d, store) = every_key_running(50)?;
    let names = jobs(&["j"]);
    // 4 keys free again: their runs completed.
    store.write(|c| {
        Ok(c.execute(
            "UPDATE runs SET status = 'completed' WHERE status = 'running' \
             AND concurrency_key IN ('k03', 'k11', 'k20', 'k29')",
            [],
        )?)
    })?;
    let (with_set, asked, set_pages, asked_pages) = store.read(|c| {
        let before = page_fetches(c);
        let running = claim::running_keys(c)?;
        assert_eq!(running.as_ref().map(|r| r.len()), Some(28));
        let with_set = claim::candidates_given(c, &names, 4, claim::Prune::No, running)?;
        let middle = page_fetches(c);
        let asked = claim::candidates_given(c, &names, 4, claim::Prune::No, None)?;
        Ok((with_set, asked, middle - before, page_fetches(c) - middle))
    })?;
    assert_eq!(with_set.len(), 4);
    assert_eq!(with_set, asked);
    assert_eq!(
        with_set,
        store.read(|c| reference_candidates(c, &names, 4))?
    );
    assert!(
        set_pages * 2 < asked_pages,
        "with the set of running keys {set_pages} page fetches, asking the index {asked_pages}"
    );
    Ok(())
}

/// A store with `per_key` pending runs of job `j` on each of 32 keys
/// (`k00`…`k31`, created round-robin), the oldest of each key claimed.
fn every_key_running(
    per_key: usize,
) -> std::result::Result<(tempfile::TempDir, SqliteStore), Box<dyn std::error::Error>> {
    let (d, store) = temp_store()?;
    let keys: Vec<String> = (0..32).map(|k| format!("k{k:02}")).collect();
    let backlog: Vec<TriggerItem> = (0..per_key * keys.len())
        .map(|i| item("j", Some(&keys[i % keys.len()]), None))
        .collect();
    store.trigger_batch(&backlog)?;
    assert_eq!(store.claim(&jobs(&["j"]), 32)?.len(), 32, "one run per key");
    Ok((d, store))
}

/// Pages `c` fetched so far (page-cache hits and misses): a search of an
/// index fetches a page per level of its tree.
fn page_fetches(c: &Connection) -> i64 {
    db_status(c, rusqlite::ffi::SQLITE_DBSTATUS_CACHE_HIT) + cache_misses(c)
}

/// Pages `c` read from the file or the log (its page-cache misses) so far.
fn cache_misses(c: &Connection) -> i64 {
    db_status(c, rusqlite::ffi::SQLITE_DBSTATUS_CACHE_MISS)
}

/// The current value of one of `c`'s `sqlite3_db_status` counters.
fn db_status(c: &Connection, op: std::os::raw::c_int) -> i64 {
    let (mut cur, mut hi) = (0, 0);
    // SAFETY: a live connection's handle, two out-parameters, no reset.
    unsafe { rusqlite::ffi::sqlite3_db_status(c.handle(), op, &mut cur, &mut hi, 0) };
    i64::from(cur)
}

/// Issue 13: the claim's walk tells a key's head by the walk's own order
/// instead of asking the key's part of the index whether an older pending
/// run exists. With several processes on one file every transaction starts
/// with an empty page cache (another process committed), so each of those
/// questions read a page from the log: at 8 processes the candidate search
/// was ~70 % of a worker's page reads, ~25 a claim, ~20 with this. Here 8 keys,
/// each headed by a run of another job and then one of ours (8 runs that
/// do not head their key), then 4 keyless runs of ours, all inside the walk's
/// window; after every key a long tail, so each key's pending runs fill a
/// page of their own. The old walk read a page per key (8) for the same answer.
#[test]
fn claim_walk_reads_no_page_per_key() -> TestResult {
    let (_d, store) = temp_store()?;
    let keys: Vec<String> = (0..8).map(|k| format!("k{k:02}")).collect();
    let heads: Vec<TriggerItem> = keys.iter().map(|k| item("other", Some(k), None)).collect();
    let ours: Vec<TriggerItem> = keys.iter().map(|k| item("mine", Some(k), None)).collect();
    store.trigger_batch(&heads)?;
    store.trigger_batch(&ours)?;
    let free: Vec<String> = (0..4)
        .map(|_| Ok(created_id(store.trigger(&item("mine", None, None))?)))
        .collect::<Result<_>>()?;
    let tail: Vec<TriggerItem> = (0..200 * keys.len())
        .map(|i| item("other", Some(&keys[i % keys.len()]), None))
        .collect();
    store.trigger_batch(&tail)?;
    let other = SqliteStore::open(StoreOptions::new(store.options().path.clone()))?;
    let names = jobs(&["mine"]);
    // A commit by another connection empties this one's page cache.
    let walk = |sql: Option<&str>| -> Result<(Vec<String>, i64)> {
        other.trigger(&item("elsewhere", None, None))?;
        store.write(|c| {
            let before = cache_misses(c);
            let got = match sql {
                None => claim::candidates(c, &names, 4)?,
                Some(sql) => c
                    .prepare(sql)?
                    .query_map(["mine"], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            };
            Ok((got, cache_misses(c) - before))
        })
    };
    let (got, pages) = walk(None)?;
    assert_eq!(got, free);
    // The same walk asking the index for an older pending run of each key.
    let (old, old_pages) = walk(Some(
        "SELECT id FROM (SELECT id, created_at, (job_name = ?1) AND NOT EXISTS ( \
           SELECT 1 FROM runs AS x WHERE x.status = 'running' \
           AND x.concurrency_key = r.concurrency_key) AND NOT EXISTS ( \
           SELECT 1 FROM runs AS y WHERE y.status = 'pending' \
           AND y.concurrency_key = r.concurrency_key \
           AND (y.created_at, y.id) < (r.created_at, r.id)) AS ok \
         FROM runs AS r WHERE status = 'pending' AND concurrency_key IS NOT NULL \
         UNION ALL SELECT id, created_at, job_name = ?1 FROM runs \
           WHERE status = 'pending' AND concurrency_key IS NULL \
         ORDER BY 2, 1 LIMIT 68) WHERE ok LIMIT 4",
    ))?;
    assert_eq!(old, free);
    assert!(
        pages + 5 <= old_pages,
        "the claim's walk read {pages} pages, the walk asking each key {old_pages}"
    );
    Ok(())
}

/// Issue 13, schema 4: when the walk's window does not yield enough runs,
/// the claim looks at the keys of `pending_keys`, and reads a page for the
/// head of each free key only. With 8 processes on 32 keys nearly every key
/// runs, and schema 3's skip-scan over the pending runs' keys read a page per
/// key (another process's commit having emptied the page cache). Here 32
/// keys with long backlogs, 30 of them running: the claim finds the heads of
/// the 2 free ones reading a few pages; the skip-scan read one per key.
#[test]
fn claim_by_key_reads_pages_of_free_keys_only() -> TestResult {
    let (_d, store) = every_key_running(300)?;
    let names = jobs(&["j"]);
    // Keys k05 and k17 free again: their runs went back to pending.
    let free_heads: Vec<String> = store.write(|c| {
        let mut ids = Vec::new();
        for k in ["k05", "k17"] {
            let id: String = c.query_row(
                "SELECT id FROM runs WHERE status = 'running' AND concurrency_key = ?1",
                [k],
                |r| r.get(0),
            )?;
            ids.push(id);
        }
        Ok(ids)
    })?;
    for id in &free_heads {
        assert_eq!(
            store
                .flush(&format!(r#"[{{"release":{{"run":"{id}","gen":1}}}}]"#))?
                .statuses,
            "0"
        );
    }
    let other = SqliteStore::open(StoreOptions::new(store.options().path.clone()))?;
    let read = |sql: Option<&str>| -> Result<(Vec<String>, i64)> {
        // A commit by another connection empties this one's page cache.
        other.trigger(&item("elsewhere", None, None))?;
        store.write(|c| {
            let before = cache_misses(c);
            let got = match sql {
                None => claim::candidates(c, &names, 4)?,
                Some(sql) => c
                    .prepare(sql)?
                    .query_map(["j"], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            };
            Ok((got, cache_misses(c) - before))
        })
    };
    let (got, pages) = read(None)?;
    let mut want = free_heads.clone();
    want.sort();
    assert_eq!(got, want);
    // Schema 3's search: a skip-scan over the keys of the pending runs.
    let (old, old_pages) = read(Some(
        "WITH RECURSIVE keys(k) AS ( \
           SELECT (SELECT concurrency_key FROM runs WHERE status = 'pending' \
                   AND concurrency_key IS NOT NULL ORDER BY concurrency_key LIMIT 1) \
           UNION ALL \
           SELECT (SELECT concurrency_key FROM runs WHERE status = 'pending' \
                   AND concurrency_key > keys.k ORDER BY concurrency_key LIMIT 1) \
           FROM keys WHERE keys.k IS NOT NULL) \
         SELECT r.id FROM keys JOIN runs AS r ON r.id = ( \
             SELECT h.id FROM runs AS h WHERE h.status = 'pending' AND h.concurrency_key = keys.k \
             ORDER BY h.created_at, h.id LIMIT 1) \
           WHERE keys.k IS NOT NULL AND r.job_name = ?1 \
           AND NOT EXISTS (SELECT 1 FROM runs AS x WHERE x.status = 'running' \
                           AND x.concurrency_key = keys.k) \
         ORDER BY r.created_at, r.id LIMIT 4",
    ))?;
    assert_eq!(old, want);
    assert!(
        pages + 15 <= old_pages,
        "the claim read {pages} pages, schema 3's skip-scan over the keys {old_pages}"
    );
    Ok(())
}

/// Issue 13, schema 4: every write that makes a run pending records its key
/// in `pending_keys`, or the claim's key-by-key search would never see the
/// run once it lies past the walk's window. Each way (trigger, batch,
/// release, stale recovery, retry) makes a run of key `k` pending behind a
/// backlog of runs of a running key that fills the window; the claim must
/// still take it. Where the run was running or failed before, `k` is first
/// taken out of `pending_keys`, as after an upgrade from schema 3 (which
/// recorded the keys of pending runs only) or a claim that pruned it.
#[test]
fn every_way_to_pending_records_the_key() -> TestResult {
    let names = jobs(&["j"]);
    for way in ["trigger", "batch", "release", "recover", "retry"] {
        let (_d, store) = temp_store()?;
        // A running run of "busy" and a backlog on it, older than k's run.
        let backlog: Vec<TriggerItem> = (0..40).map(|_| item("j", Some("busy"), None)).collect();
        store.trigger_batch(&backlog)?;
        let busy = store.claim(&names, 1)?;
        assert_eq!(busy.len(), 1);
        let forget_k = || -> Result<()> {
            store.write(|c| {
                c.execute("DELETE FROM pending_keys WHERE concurrency_key = 'k'", [])?;
                Ok(())
            })
        };
        let id = match way {
            "trigger" => created_id(store.trigger(&item("j", Some("k"), None))?),
            "batch" => created_id(
                store
                    .trigger_batch(&[item("j", Some("k"), None)])?
                    .remove(0),
            ),
            _ => {
                let id = created_id(store.trigger(&item("j", Some("k"), None))?);
                assert_eq!(store.claim(&names, 1)?[0].id, id);
                forget_k()?;
                match way {
                    "release" => {
                        let op = format!(r#"[{{"release":{{"run":"{id}","gen":1}}}}]"#);
                        assert_eq!(store.flush(&op)?.statuses, "0");
                    }
                    "recover" => {
                        let keep = [(busy[0].id.clone(), busy[0].generation)];
                        let n = store.recover_stale_except(&names, "9999", &keep)?;
                        assert_eq!(n, 1);
                    }
                    _ => {
                        let op = format!(
                            r#"[{{"fail":{{"run":"{id}","gen":1,"error":"boom","stack":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
                        );
                        assert_eq!(store.flush(&op)?.statuses, "0");
                        forget_k()?;
                        store.retry(&id)?;
                    }
                }
                id
            }
        };
        assert!(store.has_pending(None, &names)?, "{way}");
        let claimed = store.claim(&names, 4)?;
        let ids: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [id.as_str()], "{way}");
    }
    Ok(())
}

/// Issue 13, schema 4: `pending_keys` does not keep keys that have nothing
/// pending. A claim that takes a key's last pending run drops the key (with a
/// key per run, the table would otherwise hold every key ever used); a key
/// whose pending runs went another way (cancelled) is dropped by the next
/// claim's key-by-key search, which drops only keys with no pending and no
/// running run; a read (`has_pending`) changes nothing.
#[test]
fn claims_prune_dead_keys_only() -> TestResult {
    let (_d, store) = temp_store()?;
    let names = jobs(&["j"]);
    let keys = |store: &SqliteStore| -> Result<Vec<String>> {
        store.read(|c| {
            Ok(
                c.prepare("SELECT concurrency_key FROM pending_keys ORDER BY 1")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            )
        })
    };
    // "held": its only run is claimed; "gone": its only run is cancelled
    // while pending; "busy": a running run and a backlog that fills the
    // walk's window.
    store.trigger(&item("j", Some("held"), None))?;
    let gone = created_id(store.trigger(&item("j", Some("gone"), None))?);
    let backlog: Vec<TriggerItem> = (0..40).map(|_| item("j", Some("busy"), None)).collect();
    store.trigger_batch(&backlog)?;
    assert_eq!(keys(&store)?, ["busy", "gone", "held"]);
    store.cancel(&gone)?;
    let claimed = store.claim(&names, 2)?;
    assert_eq!(claimed.len(), 2, "held's run and busy's first");
    assert_eq!(
        keys(&store)?,
        ["busy", "gone"],
        "held's last pending run was claimed"
    );
    assert!(!store.has_pending(None, &names)?);
    assert_eq!(keys(&store)?, ["busy", "gone"], "a read prunes nothing");
    assert!(store.claim(&names, 4)?.is_empty());
    assert_eq!(keys(&store)?, ["busy"], "the search dropped gone, not busy");
    // A new run of a dropped key is found again, past the window.
    let again = created_id(store.trigger(&item("j", Some("gone"), None))?);
    assert_eq!(store.claim(&names, 4)?[0].id, again);
    Ok(())
}

/// Virtual machine steps the claim's cached statements on `c` took so far.
fn claim_vm_steps(c: &Connection) -> Result<i64> {
    let mut total = 0;
    for sql in [
        claim::scan_sql(1),
        claim::FREE_KEY_HEADS_SQL.to_string(),
        claim::keyless_sql(1),
        claim::scan_sql_unchecked(1),
        claim::RUNNING_KEYS_SQL.to_string(),
        claim::KEY_HEAD_SQL.to_string(),
        claim::PENDING_KEYS_SQL.to_string(),
    ] {
        total += i64::from(
            c.prepare_cached(&sql)?
                .get_status(rusqlite::StatementStatus::VmStep),
        );
    }
    Ok(total)
}

/// Each op runs in its own savepoint: an op SQLite refuses halfway (its run
/// row already updated, its step row refused by a CHECK) and a malformed op
/// fail alone, rolled back, with their errors; the other runs' ops commit.
#[test]
fn one_bad_op_fails_alone_and_is_rolled_back() -> TestResult {
    let (_d, store) = temp_store()?;
    let a = created_id(store.trigger(&item("job", None, None))?);
    let b = created_id(store.trigger(&item("job", None, None))?);
    let c = created_id(store.trigger(&item("job", None, None))?);
    assert_eq!(store.claim(&jobs(&["job"]), 3)?.len(), 3);
    let refused_step = format!(
        r#"{{"step":{{"run":"{b}","gen":1,"name":"x","index":0,"status":"bogus","output":null,"error":null,"stack":null,"startedAt":"2020-01-01T00:00:00.000Z","completedAt":null,"progress":{{"half":true}}}}}}"#
    );
    let malformed = format!(r#"{{"complete":{{"run":"{c}","output":null}}}}"#);
    let unknown_kind = format!(r#"{{"explode":{{"run":"{c}","gen":1}}}}"#);
    let done_c = format!(
        r#"{{"complete":{{"run":"{c}","gen":1,"output":7,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}"#
    );
    let log_a = format!(
        r#"{{"log":{{"run":"{a}","gen":1,"step":null,"level":"info","message":"once","data":null,"at":"2020-01-01T00:00:00.000Z"}}}}"#
    );
    let ops = format!(
        "[{},{log_a},{refused_step},{malformed},{unknown_kind},{done_c}]",
        step_op(&a, 1, "s", 0)
    );
    let out = store.flush(&ops)?;
    assert_eq!(out.statuses, "00eee0");
    let errors = out.error_codes();
    assert_eq!(
        errors,
        vec![(2, "DB_ERROR"), (3, "INTERNAL"), (4, "INTERNAL")]
    );
    assert!(
        out.errors[0].error.to_string().contains("CHECK"),
        "{:?}",
        out.errors[0]
    );
    assert!(
        out.errors[1].error.to_string().contains("flush op 3"),
        "{:?}",
        out.errors[1]
    );
    assert!(
        out.errors[1].error.to_string().contains("gen"),
        "{:?}",
        out.errors[1]
    );
    assert_eq!(out.ended, vec![(c.clone(), 1)]);
    // The valid ops committed, once: the pass that met the refused op left
    // nothing behind (its log line is not there twice).
    assert!(store.get_steps(&a)?.contains("\"name\":\"s\""));
    assert_eq!(
        store.get_logs(&a)?.matches("\"message\":\"once\"").count(),
        1
    );
    let run_c = store.get_run(&c)?.ok_or("missing run c")?;
    assert!(run_c.contains("\"status\":\"completed\""), "{run_c}");
    // The refused op left nothing behind: its run row's update was rolled back too.
    let run_b = store.get_run(&b)?.ok_or("missing run b")?;
    assert!(run_b.contains("\"progress\":null"), "{run_b}");
    assert!(run_b.contains("\"status\":\"running\""), "{run_b}");
    assert_eq!(store.get_steps(&b)?, "[]");
    Ok(())
}

/// A batch that is not a JSON array of ops fails as a whole, naming why.
#[test]
fn a_batch_that_is_not_an_array_is_refused() -> TestResult {
    let (_d, store) = temp_store()?;
    let err = store.flush(r#"{"step":{}}"#).unwrap_err();
    assert_eq!(err.code(), "INTERNAL");
    assert!(err.to_string().contains("JSON array of ops"), "{err}");
    Ok(())
}

/// The typed op serializes to the format it parses (Rust tests and other
/// backends can build batches from the enum instead of hand-written JSON).
#[test]
fn flush_ops_round_trip_through_json() -> TestResult {
    let output = serde_json::value::RawValue::from_string("{\"k\":[1,2]}".into())?;
    let ops = vec![
        FlushOp::Complete {
            run: "r".into(),
            generation: 3,
            output: Some(&output),
            progress: None,
            at: "2020-01-01T00:00:01.000Z".into(),
            step_index: None,
        },
        FlushOp::Release {
            run: "r".into(),
            generation: 3,
        },
    ];
    let text = serde_json::to_string(&ops)?;
    assert_eq!(
        text,
        r#"[{"complete":{"run":"r","gen":3,"output":{"k":[1,2]},"progress":null,"at":"2020-01-01T00:00:01.000Z"}},{"release":{"run":"r","gen":3}}]"#
    );
    let back = parse_batch(&text)?;
    assert_eq!(back.len(), 2);
    let first = back[0].as_ref().map_err(|e| e.to_string())?;
    assert_eq!(first.lease(), ("r", 3));
    assert!(first.ends_execution());
    Ok(())
}

/// The JS encoder's output for every op kind (pinned in the fixture by
/// `__test__/protocol.test.mjs`) is what the Rust parser reads, field by field,
/// and a store applies it.
#[test]
fn protocol_fixture_parses() -> TestResult {
    let fixture = include_str!("../../__test__/fixtures/protocol-ops.json");
    let ops = parse_batch(fixture)?;
    let ops: Vec<&FlushOp> = ops
        .iter()
        .map(|op| op.as_ref().map_err(|e| e.to_string()))
        .collect::<std::result::Result<_, _>>()?;
    let kinds: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            FlushOp::Step { .. } => "step",
            FlushOp::Complete { .. } => "complete",
            FlushOp::Fail { .. } => "fail",
            FlushOp::Progress { .. } => "progress",
            FlushOp::Log { .. } => "log",
            FlushOp::Release { .. } => "release",
        })
        .collect();
    assert_eq!(
        kinds,
        ["step", "step", "complete", "complete", "fail", "progress", "log", "log", "release"]
    );
    for op in &ops {
        assert_eq!(op.lease(), ("01JB0000000000000000000000", 3));
    }
    match ops[0] {
        FlushOp::Step {
            name,
            index,
            status,
            output,
            error,
            completed_at,
            progress,
            ..
        } => {
            assert_eq!(name, "fetch \"page\"\n1");
            assert_eq!(*index, 0);
            assert_eq!(status, "completed");
            let out: serde_json::Value = serde_json::from_str(output.ok_or("no output")?.get())?;
            assert_eq!(out, serde_json::json!({"html": "<p>é</p>"}));
            assert_eq!(*error, None);
            assert_eq!(completed_at.as_deref(), Some("2026-01-02T03:04:05.678Z"));
            assert!(progress.is_none());
        }
        _ => return Err("op 0 is not a step".into()),
    }
    match ops[1] {
        FlushOp::Step { error, stack, .. } => {
            assert_eq!(error.as_deref(), Some("bad: \"x\""));
            assert_eq!(stack.as_deref(), Some("Error: bad\n    at f"));
        }
        _ => return Err("op 1 is not a step".into()),
    }
    match (ops[2], ops[3], ops[4]) {
        (
            FlushOp::Complete { step_index: a, .. },
            FlushOp::Complete { step_index: b, .. },
            FlushOp::Fail { step_index: c, .. },
        ) => assert_eq!((*a, *b, *c), (Some(2), None, Some(1))),
        _ => return Err("ops 2-4 are not complete, complete, fail".into()),
    }
    match ops[7] {
        FlushOp::Log {
            step, level, data, ..
        } => {
            assert_eq!(*step, None);
            assert_eq!(level, "info");
            assert!(data.is_none());
        }
        _ => return Err("op 7 is not a log".into()),
    }
    // Applied to a run this worker holds: everything up to its completion is
    // written; what follows is refused by the fence (the run has ended).
    let (_d, store) = temp_store()?;
    let id = created_id(store.trigger(&item("job", None, None))?);
    store.claim(&jobs(&["job"]), 1)?;
    let batch = fixture
        .replace("01JB0000000000000000000000", &id)
        .replace("\"gen\": 3", "\"gen\": 1");
    let out = store.flush(&batch)?;
    assert_eq!(out.statuses, "000llllll");
    assert!(out.errors.is_empty());
    Ok(())
}

/// The JS encoder's trigger batch items (pinned in the fixture by
/// `__test__/protocol.test.mjs`) parse into `TriggerRequest`s, and a batch
/// of them creates, then dedupes and coalesces, runs.
#[test]
fn protocol_trigger_fixture_parses() -> TestResult {
    let fixture = include_str!("../../__test__/fixtures/protocol-triggers.json");
    let items = TriggerRequest::parse_batch(fixture)?;
    assert_eq!(items.len(), 2);
    let a = items[0].as_item();
    assert_eq!(a.job_name, "import \"csv\"\n☃");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(a.input)?,
        serde_json::json!({ "rows": [1, null, "é"] })
    );
    assert_eq!(a.idempotency_key, Some("order-42"));
    assert_eq!(a.concurrency_key, None);
    assert!(!a.coalesce);
    assert_eq!(a.labels, "{}");
    let b = items[1].as_item();
    assert_eq!(b.input, "null");
    assert_eq!(b.idempotency_key, None);
    assert_eq!(b.concurrency_key, Some("tenant \"a\""));
    assert!(b.coalesce);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(b.labels)?,
        serde_json::json!({ "tenant": "a", "region": "eu\tw" })
    );
    let (_d, store) = temp_store()?;
    let batch: Vec<TriggerItem> = items.iter().map(|i| i.as_item()).collect();
    let first = store.trigger_batch(&batch)?;
    assert!(first
        .iter()
        .all(|o| matches!(o, TriggerOutcome::Created { .. })));
    let again = store.trigger_batch(&batch)?;
    assert!(matches!(again[0], TriggerOutcome::Idempotent(_)));
    assert!(matches!(again[1], TriggerOutcome::Coalesced(_)));
    // An incomplete item, or one with a field the engine does not know, is refused.
    assert!(TriggerRequest::parse_batch(r#"[{"job": "j", "input": 1}]"#).is_err());
    assert!(TriggerRequest::parse_batch(
        r#"[{"job": "j", "input": 1, "idempotencyKey": null, "concurrencyKey": null, "coalesce": false, "labels": {}, "extra": 1}]"#
    )
    .is_err());
    Ok(())
}

#[test]
fn iso_formats_every_instant_without_panicking() {
    // The civil-date arithmetic agrees with humantime wherever humantime works.
    let mut ms: u64 = 0;
    while ms < 253_402_300_800_000 {
        let t = UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(
            iso_from_millis(i128::from(ms)),
            humantime::format_rfc3339_millis(t).to_string(),
            "at {ms} ms"
        );
        ms = ms * 3 + 86_399_999 + ms % 7_919;
    }
    let before = |ms: u64| iso(UNIX_EPOCH - Duration::from_millis(ms));
    assert_eq!(before(1), "1969-12-31T23:59:59.999Z");
    assert_eq!(before(86_400_000), "1969-12-31T00:00:00.000Z");
    assert_eq!(before(2_208_988_800_000), "1900-01-01T00:00:00.000Z");
    assert_eq!(before(62_167_219_200_000), "0000-01-01T00:00:00.000Z");
    assert_eq!(before(62_167_219_200_001), "-000001-12-31T23:59:59.999Z");
    // Half a millisecond before the epoch is still in 1969.
    assert_eq!(
        iso(UNIX_EPOCH - Duration::from_micros(500)),
        "1969-12-31T23:59:59.999Z"
    );
    let after = |s: u64| iso(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(after(253_402_300_799), "9999-12-31T23:59:59.000Z");
    assert_eq!(after(253_402_300_800), "+010000-01-01T00:00:00.000Z");
}

/// A trigger claims in its own commit; a claim that fails is rolled back
/// alone (no run left `running` for nobody) and the trigger still commits.
#[test]
fn a_trigger_and_its_claim_share_one_commit_and_a_failed_claim_leaves_nothing() -> TestResult {
    use super::backend::SyncStore;
    use std::sync::Arc;
    let (_d, store) = temp_store()?;
    let names: Arc<[String]> = jobs(&["ok", "refused"]).into();
    // One commit for both.
    let commits = store.commit_count();
    let (out, claimed) = store
        .try_trigger_then_claim(&item("ok", None, None), |_| Some((names.clone(), 1)))?
        .ok_or("lock taken")?;
    assert_eq!(store.commit_count(), commits + 1);
    assert_eq!(claimed?.len(), 1);
    assert!(matches!(out, TriggerOutcome::Created { .. }));
    // A claim of two whose second update fails: the first is undone too.
    let older = created_id(store.trigger(&item("ok", None, None))?);
    store.write(|c| {
        Ok(c.execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE UPDATE OF status ON main.runs \
             WHEN NEW.job_name = 'refused' AND NEW.status = 'running' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )?)
    })?;
    let (out, claimed) = store
        .try_trigger_then_claim(&item("refused", None, None), |_| Some((names.clone(), 2)))?
        .ok_or("lock taken")?;
    assert!(claimed.is_err(), "the claim failed");
    let created = created_id(out);
    let status = |id: &str| -> std::result::Result<String, Box<dyn std::error::Error>> {
        Ok(store.read(|c| {
            Ok(c.query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))?)
        })?)
    };
    assert_eq!(status(&created)?, "pending", "the trigger committed");
    assert_eq!(status(&older)?, "pending", "the failed claim took nothing");
    Ok(())
}

/// A long batch mixing plain items (inserted many rows per statement) with
/// keyed and coalescing ones (one by one): every item gets its own outcome,
/// in order, and every run is stored as its item says.
#[test]
fn a_long_mixed_batch_keeps_each_item_and_its_order() -> TestResult {
    let (_d, store) = temp_store()?;
    let inputs: Vec<String> = (0..130).map(|i| format!("{{\"i\":{i}}}")).collect();
    let mut items: Vec<TriggerItem> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| TriggerItem {
            input,
            concurrency_key: (i % 7 == 0).then_some("k"),
            ..item("job", None, None)
        })
        .collect();
    items[60].idempotency_key = Some("same"); // splits the plain items
    items[61].idempotency_key = Some("same"); // the run of item 60
    items[62].coalesce = true; // coalesced into the oldest pending run of key "k"
    items[62].concurrency_key = Some("k");
    let out = store.trigger_batch(&items)?;
    assert_eq!(out.len(), items.len());
    let created: Vec<(usize, String)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            TriggerOutcome::Created { id, .. } => Some((i, id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), items.len() - 2);
    assert!(matches!(out[61], TriggerOutcome::Idempotent(ref j) if j.contains(&created[60].1)));
    assert!(matches!(out[62], TriggerOutcome::Coalesced(ref j) if j.contains(&created[0].1)));
    assert!(
        created.windows(2).all(|w| w[0].1 < w[1].1),
        "ids keep the batch's order"
    );
    for (i, id) in &created {
        let (input, key, idem, status): (String, Option<String>, Option<String>, String) =
            store.read(|c| {
                Ok(c.query_row(
                    "SELECT input, concurrency_key, idempotency_key, status FROM runs WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?)
            })?;
        assert_eq!(input, inputs[*i]);
        assert_eq!(key.as_deref(), items[*i].concurrency_key);
        assert_eq!(idem.as_deref(), items[*i].idempotency_key);
        assert_eq!(status, "pending");
    }
    Ok(())
}

/// The worker's change check on its own thread (issue 13: no hop to a
/// blocking thread every 10 ms): the same token as the waiting call, a new
/// one once another connection committed, and `None` (use the waiting call)
/// when the side connection is in use.
#[test]
fn change_check_without_waiting() -> TestResult {
    let (dir, store) = temp_store()?;
    let side = Store::side(&store)?.ok_or("no side connection")?;
    let now = |s: &SqliteStore| -> Result<i64> {
        Store::change_token_now(s, &side)
            .ok_or_else(|| Error::Internal("declined".into()))?
            .map(|t| t.unwrap_or(-1))
    };
    let first = now(&store)?;
    assert_eq!(Some(first), poll_once(Store::change_token(&store, &side))?);
    assert_eq!(now(&store)?, first, "nothing was committed");
    let other = SqliteStore::open(StoreOptions::new(
        dir.path().join("t.db").to_string_lossy().into_owned(),
    ))?;
    other.trigger(&item("j", None, None))?;
    let second = now(&store)?;
    assert_ne!(second, first, "another process's commit is seen");
    store.trigger(&item("j", None, None))?;
    assert_ne!(
        now(&store)?,
        second,
        "this store's writer is another connection too"
    );
    let held = lock(&side);
    assert!(Store::change_token_now(&store, &side).is_none());
    drop(held);
    assert!(Store::change_token_now(&store, &side).is_some());
    Ok(())
}

/// The upkeep task skips its tick (and the hop to a blocking thread) until
/// enough commits were made for a checkpoint pass.
#[test]
fn upkeep_is_due_after_enough_commits() -> TestResult {
    let (_d, store) = temp_store()?;
    let side = Store::side(&store)?.ok_or("no side connection")?;
    assert!(!Store::upkeep_due(&store));
    while !Store::upkeep_due(&store) {
        store.trigger(&item("j", None, None))?;
    }
    poll_once(Store::upkeep(&store, &side))?;
    assert!(!Store::upkeep_due(&store), "the pass was made");
    for _ in 0..CHECKPOINT_MIN_COMMITS - 1 {
        store.trigger(&item("j", None, None))?;
    }
    assert!(!Store::upkeep_due(&store));
    store.trigger(&item("j", None, None))?;
    assert!(Store::upkeep_due(&store));
    Ok(())
}

/// A long log written to all the time: the checkpointer copies what came
/// during its first (long) pass in more passive passes before the `RESTART`
/// that holds the writers, and the log still starts over afterwards.
#[test]
fn a_long_log_under_writes_gets_more_passive_passes_then_resets() -> TestResult {
    let (_d, store) = temp_store()?;
    let store = std::sync::Arc::new(store);
    let side = store.side_connection()?.ok_or("no side connection")?;
    // 3 frames or more a commit (the run's page, its overflow page, an
    // index's page): well past WAL_RESET_FRAMES. (Nothing checkpoints yet:
    // asking the log's length would checkpoint it.)
    let big = format!("\"{}\"", "x".repeat(6000));
    let mut long = item("j", None, None);
    long.input = &big;
    for _ in 0..2000 {
        store.trigger(&long)?;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64> {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                store.trigger(&item("j", None, None))?;
                n += 1;
            }
            Ok(n)
        })
    };
    // Writes land during the passes (and make the pass due).
    while !store.checkpoint_due() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let wal = format!("{}-wal", store.opts.path);
    let size_before = std::fs::metadata(&wal)?.len();
    let (passes, restarted) = store.checkpoint(&side)?;
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().map_err(|_| "writer panicked")??;
    assert!(written > 0);
    assert!(
        restarted,
        "a long log ends in a RESTART that copies all of it"
    );
    assert!(
        passes > 1,
        "a pass over 5,000+ frames under writes is long: {passes} pass(es)"
    );
    assert!(passes <= MAX_PASSIVE_PASSES);
    // The next write starts the log over.
    store.trigger(&item("j", None, None))?;
    let (frames, _) = checkpoint_pass(&side, "PASSIVE")?.ok_or("checkpoint busy")?;
    assert!(frames < 100, "log not reset: {frames} frames");
    // Under JOURNAL_SIZE_LIMIT the file is not cut back: the next round of
    // the log overwrites it instead of growing it again.
    let size_after = std::fs::metadata(&wal)?.len();
    assert!(size_before < JOURNAL_SIZE_LIMIT as u64, "{size_before}");
    assert!(
        size_after >= size_before,
        "log file cut from {size_before} to {size_after} bytes"
    );
    Ok(())
}

/// The plan of `sql` (EXPLAIN QUERY PLAN's details, one per line), with
/// every `?` bound to NULL.
fn plan(c: &Connection, sql: &str) -> Result<String> {
    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let params = vec![rusqlite::types::Null; st.parameter_count()];
    let rows = st.query_map(rusqlite::params_from_iter(params), |r| {
        r.get::<_, String>(3)
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("\n"))
}

/// Issue 19, schema 3: the claim, the coalesce and the stale check find
/// their runs in the partial indexes of active runs (a query's terms must
/// imply an index's condition, or SQLite reads the whole table instead).
#[test]
fn status_queries_use_the_active_indexes() -> TestResult {
    let (_d, store) = temp_store()?;
    // Either index of keyed runs serves the running ones.
    const KEYED: &str = "runs_active_keyed|runs_active_key";
    let cases = [
        (
            claim::scan_sql(1),
            &["runs_active_free", "runs_active_keyed", "runs_active_key"][..],
        ),
        (claim::FREE_KEY_HEADS_SQL.to_string(), &["runs_active_key"]),
        (
            claim::scan_sql_unchecked(1),
            &["runs_active_free", "runs_active_keyed"],
        ),
        (claim::RUNNING_KEYS_SQL.to_string(), &["runs_active_key"]),
        (claim::KEY_HEAD_SQL.to_string(), &["runs_active_key"]),
        (claim::keyless_sql(1), &["runs_active_free"]),
        (trigger::coalesce_sql(), &["runs_active_key"]),
        (claim::has_stale_sql(1), &["runs_active_free", KEYED]),
        (claim::recover_stale_sql(1, 0), &["runs_active_free", KEYED]),
        (claim::recover_stale_sql(1, 2), &["runs_active_free", KEYED]),
        (
            trigger::CLAIMABLE_ALONE.to_string(),
            &["runs_active_free", KEYED],
        ),
    ];
    store.read(|c| {
        for (sql, indexes) in &cases {
            let plan = plan(c, sql)?;
            for index in indexes.iter() {
                assert!(
                    index
                        .split('|')
                        .any(|i| plan.contains(&format!("INDEX {i} "))),
                    "{index} not used by {sql}:\n{plan}"
                );
            }
            for line in plan.lines() {
                let whole = ["SCAN runs", "SCAN r ", "SCAN h", "SCAN x", "SCAN y"];
                assert!(
                    !whole.iter().any(|w| format!("{line} ").starts_with(w)),
                    "{sql} reads the whole table:\n{plan}"
                );
            }
        }
        // The claim's walk stops at the first claimable run: its two halves
        // are merged as they are read, never sorted (read whole) first.
        for sql in [claim::scan_sql(1), claim::scan_sql_unchecked(1)] {
            let walk = plan(c, &sql)?;
            assert!(!walk.contains("TEMP B-TREE"), "{walk}");
        }
        // The head of a key and the running runs' keys: read in index order.
        for sql in [claim::KEY_HEAD_SQL, claim::RUNNING_KEYS_SQL] {
            let p = plan(c, sql)?;
            assert!(!p.contains("TEMP B-TREE"), "{p}");
        }
        Ok(())
    })?;
    Ok(())
}

/// Issue 19, schema 3: what one run writes to the log, in pages (WAL
/// frames; nothing checkpoints here). A run without keys is in the table and
/// one status index while it is pending or running, and in no status index
/// once it ended; a step is in the table and one index, plus its run's row.
/// Schema 2 wrote 4.0 pages a trigger, 3 a claim, 4.1 a step, 3 a completion.
#[test]
fn a_plain_run_writes_few_pages() -> TestResult {
    let (dir, store) = temp_store()?;
    let wal = dir.path().join("t.db-wal");
    let frame = 24
        + store.read(|c| Ok(c.query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0))?))? as u64;
    let size = || -> std::io::Result<u64> { Ok(std::fs::metadata(&wal)?.len()) };
    let names = jobs(&["job"]);
    let n = 200u64;
    let mut pages = [0u64; 4];
    let mut took = |i: usize, before: u64| -> std::io::Result<()> {
        pages[i] += (size()? - before) / frame;
        Ok(())
    };
    for _ in 0..n {
        let before = size()?;
        let id = created_id(store.trigger(&item("job", None, None))?);
        took(0, before)?;
        let before = size()?;
        assert_eq!(store.claim(&names, 1)?.len(), 1);
        took(1, before)?;
        let before = size()?;
        assert_eq!(
            store
                .flush(&format!("[{}]", step_op(&id, 1, "a", 0)))?
                .statuses,
            "0"
        );
        took(2, before)?;
        let before = size()?;
        let complete = format!(
            r#"[{{"complete":{{"run":"{id}","gen":1,"output":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}]"#
        );
        assert_eq!(store.flush(&complete)?.statuses, "0");
        took(3, before)?;
    }
    let per = pages.map(|p| p as f64 / n as f64);
    let [trigger, claim, step, complete] = per;
    assert!(trigger <= 3.0, "a trigger wrote {trigger} pages ({per:?})");
    assert!(claim <= 2.0, "a claim wrote {claim} pages ({per:?})");
    assert!(step <= 3.5, "a step wrote {step} pages ({per:?})");
    assert!(
        complete <= 2.0,
        "a completion wrote {complete} pages ({per:?})"
    );
    Ok(())
}

/// Issue 19: a write transaction's BEGIN and COMMIT are cached statements,
/// run again each time, not parsed again for every commit; a transaction
/// whose work fails is rolled back, and one whose lock is taken leaves no
/// transaction open either.
#[test]
fn commits_reuse_their_begin_and_commit() -> TestResult {
    let (_d, store) = temp_store()?;
    let runs = |c: &Connection, sql: &str| -> Result<i32> {
        Ok(c.prepare_cached(sql)?
            .get_status(rusqlite::StatementStatus::Run))
    };
    let before = store.write(|c| Ok((runs(c, "BEGIN IMMEDIATE")?, runs(c, "COMMIT")?)))?;
    for _ in 0..5 {
        store.trigger(&item("j", None, None))?;
    }
    assert!(store.try_trigger(&item("j", None, None))?.is_some());
    let after = store.write(|c| Ok((runs(c, "BEGIN IMMEDIATE")?, runs(c, "COMMIT")?)))?;
    assert_eq!(after.0 - before.0, 7, "BEGIN runs: {before:?} → {after:?}");
    assert_eq!(after.1 - before.1, 7, "COMMIT runs: {before:?} → {after:?}");

    let err = store
        .write(|c| -> Result<()> {
            c.execute("DELETE FROM runs", [])?;
            Err(Error::Validation("no".into()))
        })
        .unwrap_err();
    assert_eq!(err.code(), "VALIDATION_ERROR");
    let n: i64 = store.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?))?;
    assert_eq!(n, 6, "the failed transaction was rolled back");
    assert!(
        !store.write(|c| Ok(c.is_autocommit()))?,
        "a write runs in a transaction"
    );
    assert!(
        lock(&store.writer).conn.is_autocommit(),
        "no transaction left open"
    );

    // Another connection holds the write lock: try_write gives up at once
    // and leaves nothing open on the writer.
    let other = store.side_connection()?.ok_or("no side connection")?;
    other.execute_batch("BEGIN IMMEDIATE")?;
    assert!(store.try_trigger(&item("j", None, None))?.is_none());
    assert!(lock(&store.writer).conn.is_autocommit());
    other.execute_batch("ROLLBACK")?;
    assert!(store.try_trigger(&item("j", None, None))?.is_some());
    Ok(())
}

/// Schema 3 splits active runs by whether they have a concurrency key: the
/// stale check and recovery ask both halves, and leave the runs in `keep`.
#[test]
fn stale_runs_with_and_without_keys_are_recovered_except_kept_ones() -> TestResult {
    let (_d, store) = temp_store()?;
    let names = jobs(&["j"]);
    let free = created_id(store.trigger(&item("j", None, None))?);
    let keyed = created_id(store.trigger(&item("j", Some("k"), None))?);
    let kept = created_id(store.trigger(&item("j", Some("m"), None))?);
    assert_eq!(store.claim(&names, 3)?.len(), 3);
    let past = iso(SystemTime::now() - Duration::from_secs(60));
    let future = iso(SystemTime::now() + Duration::from_secs(60));
    assert!(!store.has_stale(None, &names, &past)?);
    assert!(store.has_stale(None, &names, &future)?);
    assert!(!store.has_stale(None, &jobs(&["other"]), &future)?);
    let keep = [(kept.clone(), 1)];
    assert_eq!(store.recover_stale_except(&names, &future, &keep)?, 2);
    let status = |id: &str| -> Result<String> {
        store
            .read(|c| Ok(c.query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))?))
    };
    assert_eq!(status(&free)?, "pending");
    assert_eq!(status(&keyed)?, "pending");
    assert_eq!(status(&kept)?, "running");
    // Only the kept run is still running (and stale).
    assert!(store.has_stale(None, &names, &future)?);
    assert_eq!(store.recover_stale(&names, &future)?, 1);
    assert!(!store.has_stale(None, &names, &future)?);
    Ok(())
}

/// Issue 19: a trigger whose run is the one a claim would take first (worker
/// on, a slot free) inserts it already `running` under this store's lease,
/// one write instead of an insert, a claim query and an update. The row is
/// the one an insert and a first claim leave, and its lease is fenced like
/// any claimed run's: heartbeats renew it, stale recovery takes it back,
/// generation 1 can no longer write once another worker holds generation 2.
#[test]
fn a_trigger_inserts_its_run_claimed_and_the_lease_holds() -> TestResult {
    use super::backend::SyncStore;
    use std::sync::Arc;
    let (dir, store) = temp_store()?;
    let names: Arc<[String]> = jobs(&["job"]).into();
    let (out, claimed) = store
        .try_trigger_then_claim(&item("job", None, None), |_| Some((names.clone(), 1)))?
        .ok_or("lock taken")?;
    let claimed = claimed?;
    let TriggerOutcome::Created { id, created_at } = out else {
        panic!("expected a created run, got {out:?}")
    };
    assert_eq!(claimed.len(), 1);
    let run = &claimed[0];
    assert!(run.inserted, "inserted claimed");
    assert_eq!(
        (run.id.as_str(), run.job_name.as_str()),
        (id.as_str(), "job")
    );
    assert_eq!(run.generation, 1);
    // The row an insert then a first claim would leave (compared with one
    // that went that way, ids and times aside).
    let row = |id: &str| -> std::result::Result<Vec<Option<String>>, Box<dyn std::error::Error>> {
        Ok(store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT status, lease_generation, lease_owner, heartbeat_at, started_at, \
                 created_at, updated_at, input, labels, progress, current_step_index \
                 FROM runs WHERE id = ?1",
                    [id],
                    |r| {
                        (0..11)
                            .map(|i| r.get::<_, rusqlite::types::Value>(i))
                            .collect::<rusqlite::Result<Vec<_>>>()
                    },
                )?)
            })?
            .into_iter()
            .map(|v| match v {
                rusqlite::types::Value::Null => None,
                rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                rusqlite::types::Value::Text(s) => Some(s),
                other => Some(format!("{other:?}")),
            })
            .collect())
    };
    let mine = row(&id)?;
    let t = Some(created_at.clone());
    let owner = Some(store.owner().to_string());
    assert_eq!(
        mine,
        vec![
            Some("running".into()),
            Some("1".into()),
            owner.clone(),
            t.clone(),
            t.clone(),
            t.clone(),
            t,
            Some("{\"n\":1}".into()),
            Some("{}".into()),
            None,
            Some("0".into())
        ]
    );
    let other = created_id(store.trigger(&item("elsewhere", None, None))?);
    store.claim(&jobs(&["elsewhere"]), 1)?;
    let theirs = row(&other)?;
    let shape = |r: &[Option<String>]| -> Vec<Option<String>> {
        r.iter()
            .enumerate()
            .map(|(i, v)| {
                if (3..=6).contains(&i) {
                    v.as_ref().map(|_| "time".into())
                } else {
                    v.clone()
                }
            })
            .collect()
    };
    assert_eq!(shape(&mine), shape(&theirs), "the row of a claimed run");

    // Heartbeats renew the lease of generation 1.
    assert!(store.heartbeat(&[(id.clone(), 1)])?.is_empty());
    // Another worker (another connection, another owner) finds it stale and
    // takes it over: generation 1 is fenced off.
    let path = dir.path().join("t.db").to_string_lossy().into_owned();
    let b = SqliteStore::open(StoreOptions::new(path))?;
    let future = iso(SystemTime::now() + Duration::from_secs(60));
    assert_eq!(b.recover_stale(&jobs(&["job"]), &future)?, 1);
    let reclaimed = b.claim(&jobs(&["job"]), 1)?;
    assert_eq!(
        reclaimed
            .iter()
            .map(|r| (r.id.as_str(), r.generation, r.inserted))
            .collect::<Vec<_>>(),
        vec![(id.as_str(), 2, false)]
    );
    assert_eq!(
        store.heartbeat(&[(id.clone(), 1)])?,
        vec![HeartbeatOutcome::Lost(id.clone())]
    );
    assert_eq!(
        store
            .flush(&format!("[{}]", step_op(&id, 1, "a", 0)))?
            .statuses,
        "l"
    );
    assert_eq!(
        b.flush(&format!("[{}]", step_op(&id, 2, "a", 0)))?.statuses,
        "0"
    );
    Ok(())
}

/// Issue 19: a run is inserted claimed only when a claim would take it
/// first, told conservatively: nothing pending at all, and its key free.
/// Otherwise it is inserted `pending` and the claim in the same commit takes
/// what it always took (the oldest claimable run, maybe this one, or nothing).
#[test]
fn a_trigger_inserts_its_run_claimed_only_when_a_claim_would_take_it() -> TestResult {
    use super::backend::SyncStore;
    use std::sync::Arc;
    /// What the trigger's commit claims.
    #[derive(Debug, PartialEq)]
    enum Claims {
        /// The new run, inserted claimed.
        Inserted,
        /// The new run, inserted pending then claimed.
        New,
        /// The run the set-up returned (older).
        Older,
        /// Nothing (the new run stays pending).
        Nothing,
    }
    type Setup = fn(&SqliteStore) -> Result<Option<String>>;
    let names: Arc<[String]> = jobs(&["job", "other"]).into();
    let cases: Vec<(&str, Setup, TriggerItem, Claims)> = vec![
        (
            "an empty queue",
            |_| Ok(None),
            item("job", None, None),
            Claims::Inserted,
        ),
        (
            "an older claimable run of a registered job goes first",
            |s| Ok(Some(created_id(s.trigger(&item("other", None, None))?))),
            item("job", None, None),
            Claims::Older,
        ),
        (
            "an older pending run of another process's job: claimed as usual",
            |s| {
                s.trigger(&item("foreign", None, None))?;
                Ok(None)
            },
            item("job", None, None),
            Claims::New,
        ),
        (
            "a key with a running run holds the new run back",
            |s| {
                s.trigger(&item("job", Some("k"), None))?;
                s.claim(&jobs(&["job"]), 1)?;
                Ok(None)
            },
            item("job", Some("k"), None),
            Claims::Nothing,
        ),
        (
            "a key whose head is a pending run of another process's job comes first",
            |s| {
                s.trigger(&item("foreign", Some("k"), None))?;
                Ok(None)
            },
            item("job", Some("k"), None),
            Claims::Nothing,
        ),
        (
            "a running run of another key does not hold this one back",
            |s| {
                s.trigger(&item("job", Some("busy"), None))?;
                s.claim(&jobs(&["job"]), 1)?;
                Ok(None)
            },
            item("job", Some("k"), None),
            Claims::Inserted,
        ),
        (
            "a run of another key held back: claimed as usual",
            |s| {
                s.trigger(&item("job", Some("busy"), None))?;
                s.claim(&jobs(&["job"]), 1)?;
                s.trigger(&item("job", Some("busy"), None))?;
                Ok(None)
            },
            item("job", Some("k"), None),
            Claims::New,
        ),
        (
            "a free key, an idempotency key",
            |_| Ok(None),
            item("job", Some("k"), Some("idem")),
            Claims::Inserted,
        ),
        (
            "a job this worker does not run",
            |_| Ok(None),
            item("foreign", None, None),
            Claims::Nothing,
        ),
    ];
    for (what, setup, it, want) in cases {
        let (_d, store) = temp_store()?;
        let older = setup(&store)?;
        let commits = store.commit_count();
        let (out, claimed) = store
            .try_trigger_then_claim(&it, |_| Some((names.clone(), 1)))?
            .ok_or("lock taken")?;
        assert_eq!(store.commit_count(), commits + 1, "{what}: one commit");
        let id = created_id(out);
        let claimed = claimed?;
        let status: String = store.read(|c| {
            Ok(c.query_row("SELECT status FROM runs WHERE id = ?1", [&id], |r| r.get(0))?)
        })?;
        let got = match &claimed[..] {
            [] => Claims::Nothing,
            [r] if r.id == id && r.inserted => Claims::Inserted,
            [r] if r.id == id && !r.inserted && !r.json.is_empty() => Claims::New,
            [r] if Some(&r.id) == older.as_ref() && !r.inserted => Claims::Older,
            other => panic!("{what}: claimed {other:?}"),
        };
        assert_eq!(got, want, "{what}");
        let running = matches!(want, Claims::Inserted | Claims::New);
        assert_eq!(
            status,
            if running { "running" } else { "pending" },
            "{what}"
        );
    }
    // No claim asked (worker off, no slot): pending, nothing claimed.
    let (_d, store) = temp_store()?;
    let (out, claimed) = store
        .try_trigger_then_claim(&item("job", None, None), |_| None)?
        .ok_or("lock taken")?;
    assert!(claimed?.is_empty());
    assert!(store
        .get_run(&created_id(out))?
        .ok_or("no run")?
        .contains("\"status\":\"pending\""));
    Ok(())
}

/// The bundled SQLite is compiled with the options of `.cargo/config.toml`
/// (LIBSQLITE3_FLAGS; issue 19): above all no memory statistics, whose global
/// mutex every malloc and free of SQLite took (about 60 lock/unlock pairs of a
/// one-step run). The addon, `cargo test` and the bench's references share them.
#[test]
fn sqlite_is_compiled_with_the_options_of_cargo_config() -> TestResult {
    let conn = rusqlite::Connection::open_in_memory()?;
    let options = conn
        .prepare("PRAGMA compile_options")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for want in [
        "DEFAULT_MEMSTATUS=0",
        "DQS=0",
        "LIKE_DOESNT_MATCH_BLOBS",
        "OMIT_SHARED_CACHE",
        "USE_ALLOCA",
        "OMIT_DEPRECATED",
    ] {
        assert!(
            options.iter().any(|o| o == want),
            "SQLite lacks {want}: {options:?}"
        );
    }
    // DQS=0 in effect: a double-quoted word that names no column is an error,
    // not the string 'nope'.
    assert!(conn
        .query_row("SELECT \"nope\"", [], |r| r.get::<_, String>(0))
        .is_err());
    Ok(())
}

/// Statements that check the CHECK constraints of runs, steps and logs, and
/// how many temporary B-trees each one's program opens.
fn ephemeral_tables(c: &rusqlite::Connection) -> rusqlite::Result<Vec<(&'static str, usize)>> {
    [
        "INSERT INTO runs DEFAULT VALUES",
        "UPDATE runs SET status = ?1 WHERE id = ?2",
        "INSERT INTO steps DEFAULT VALUES",
        "UPDATE steps SET status = ?1 WHERE id = ?2",
        "INSERT INTO logs DEFAULT VALUES",
    ]
    .into_iter()
    .map(|q| {
        let mut st = c.prepare(&format!("EXPLAIN {q}"))?;
        for i in 1..=st.parameter_count() {
            st.raw_bind_parameter(i, i as i64)?;
        }
        let mut rows = st.raw_query();
        let mut n = 0;
        while let Some(r) = rows.next()? {
            if r.get::<_, String>(1)? == "OpenEphemeral" {
                n += 1;
            }
        }
        Ok((q, n))
    })
    .collect()
}

/// Schema 5 (issue 19): SQLite tested `status IN ('pending', …)` by filling
/// a temporary B-tree with the list on every insert and status update; the
/// same constraints written as `=` chains are tested in place.
#[test]
fn the_check_constraints_open_no_temporary_btree() -> TestResult {
    let all = migrate::MIGRATIONS_FOR_TESTS;
    let conn = rusqlite::Connection::open_in_memory()?;
    migrate::migrate_in(&conn, "t", &all[..4])?;
    // Schema 4's constraints did: the statements of the check below see them.
    assert!(ephemeral_tables(&conn)?.iter().all(|(_, n)| *n == 1));
    migrate::migrate_in(&conn, "t", all)?;
    for (q, n) in ephemeral_tables(&conn)? {
        assert_eq!(n, 0, "{q}");
    }
    let (_d, store) = temp_store()?;
    store.read(|c| {
        for (q, n) in ephemeral_tables(c)? {
            assert_eq!(n, 0, "a new file: {q}");
        }
        Ok(())
    })?;
    Ok(())
}

/// The rewritten constraints refuse what the old ones refused, and keep the
/// rows and the file intact.
#[test]
fn the_rewritten_checks_refuse_bad_values_and_keep_the_rows() -> TestResult {
    let all = migrate::MIGRATIONS_FOR_TESTS;
    let conn = rusqlite::Connection::open_in_memory()?;
    migrate::migrate_in(&conn, "t", &all[..4])?;
    conn.execute_batch(
        "INSERT INTO runs (id, job_name, input, status, created_at, updated_at) VALUES \
         ('a', 'j', '{}', 'completed', '1', '1'), ('b', 'j', '{}', 'pending', '2', '2'); \
         INSERT INTO steps (run_id, name, \"index\", status, started_at, completed_at) \
         VALUES ('a', 's', 0, 'completed', '1', '1'); \
         INSERT INTO logs (run_id, level, message, timestamp) VALUES ('a', 'warn', 'm', '1');",
    )?;
    migrate::migrate_in(&conn, "t", all)?;
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(ok, "ok");
    let rows: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM runs) * 100 + (SELECT COUNT(*) FROM steps) * 10 \
         + (SELECT COUNT(*) FROM logs)",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(rows, 211);
    for status in ["pending", "running", "completed", "failed", "cancelled"] {
        conn.execute("UPDATE runs SET status = ?1 WHERE id = 'b'", [status])?;
    }
    for (sql, refused) in [
        (
            "UPDATE runs SET status = 'done' WHERE id = 'b'",
            "CHECK constraint failed: status = 'pending'",
        ),
        (
            "UPDATE runs SET status = NULL WHERE id = 'b'",
            "NOT NULL constraint failed: runs.status",
        ),
        (
            "UPDATE steps SET status = 'running'",
            "CHECK constraint failed: status = 'completed'",
        ),
        (
            "UPDATE logs SET level = 'debug'",
            "CHECK constraint failed: level = 'info'",
        ),
    ] {
        let err = conn.execute(sql, []).expect_err(sql).to_string();
        assert!(err.contains(refused), "{sql}: {err}");
    }
    Ok(())
}

/// Schema 5 rewrites sqlite_master in place and then sets a new schema
/// cookie: another connection that had parsed schema 4 parses it again (its
/// constraint error names the new text).
#[test]
fn another_connection_sees_the_rewritten_checks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db");
    let all = migrate::MIGRATIONS_FOR_TESTS;
    let first = rusqlite::Connection::open(&path)?;
    migrate::migrate_in(&first, "t", &all[..4])?;
    let other = rusqlite::Connection::open(&path)?;
    let bad = "INSERT INTO runs (id, job_name, input, status, created_at, updated_at) \
               VALUES ('x', 'j', '{}', 'done', '1', '1')";
    let before = other.execute(bad, []).expect_err("schema 4").to_string();
    assert!(before.contains("status IN ("), "{before}");
    migrate::migrate_in(&first, "t", all)?;
    let after = other.execute(bad, []).expect_err("schema 5").to_string();
    assert!(
        after.contains("status = 'pending' OR status = 'running'"),
        "{after}"
    );
    Ok(())
}

/// A step's commit rewrites its run's row only when it must (see
/// `flush::ROW_REFRESH`): at the run's first completed step, with progress,
/// or when the row's `updated_at` is over a second old. Between, the
/// columns lag, reads compute `currentStepIndex` from the steps, and the op
/// that ends the run sets the column exactly (from the worker's
/// `stepIndex`, or the steps when it sends none).
#[test]
fn step_writes_rewrite_the_run_row_only_when_due() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db").to_string_lossy().into_owned();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let at = Arc::new(Mutex::new(t0));
    let clock_at = at.clone();
    let clock: Clock = Arc::new(move || *clock_at.lock().unwrap_or_else(|p| p.into_inner()));
    let store = SqliteStore::open_with_clock(StoreOptions::new(path), clock)?;
    store.migrate()?;
    let set =
        |ms: u64| *at.lock().unwrap_or_else(|p| p.into_inner()) = t0 + Duration::from_millis(ms);
    let row = |id: &str| -> std::result::Result<(i64, String), Box<dyn std::error::Error>> {
        Ok(store.read(|c| {
            Ok(c.query_row(
                "SELECT current_step_index, updated_at FROM runs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })?)
    };
    let api_index = |id: &str| -> std::result::Result<i64, Box<dyn std::error::Error>> {
        let run: serde_json::Value =
            serde_json::from_str(&store.get_run(id)?.ok_or("missing run")?)?;
        run["currentStepIndex"]
            .as_i64()
            .ok_or_else(|| "no currentStepIndex".into())
    };
    // One step op of generation 1 in a batch of its own: its status.
    let step = |id: &str,
                name: &str,
                index: i64|
     -> std::result::Result<String, Box<dyn std::error::Error>> {
        Ok(store
            .flush(&format!("[{}]", step_op(id, 1, name, index)))?
            .statuses)
    };
    let id = created_id(store.trigger(&item("job", None, None))?);
    assert_eq!(store.claim(&jobs(&["job"]), 1)?.len(), 1);
    let claimed_at = row(&id)?.1;

    assert_eq!(claimed_at, iso(t0));
    // Within the second after the claim's rewrite, the first completed step
    // and two more leave the row alone; reads are exact.
    set(100);
    assert_eq!(step(&id, "a", 0)?, "0");
    assert_eq!(row(&id)?, (0, claimed_at.clone()));
    assert_eq!(api_index(&id)?, 1);
    set(600);
    let two = format!("[{},{}]", step_op(&id, 1, "b", 1), step_op(&id, 1, "c", 2));
    assert_eq!(store.flush(&two)?.statuses, "00");
    assert_eq!(row(&id)?, (0, claimed_at));
    assert_eq!(api_index(&id)?, 3);
    // Over a second after the last rewrite: rewritten, exactly.
    set(1_200);
    assert_eq!(step(&id, "d", 3)?, "0");
    assert_eq!(row(&id)?, (4, iso(t0 + Duration::from_millis(1_200))));
    // Progress always rewrites it.
    set(1_300);
    let with_progress =
        step_op(&id, 1, "e", 4).replace(r#""progress":null"#, r#""progress":{"current":5}"#);
    assert_eq!(store.flush(&format!("[{with_progress}]"))?.statuses, "0");
    assert_eq!(row(&id)?, (5, iso(t0 + Duration::from_millis(1_300))));
    // A lagging row, then the completion: exact from the steps when the op
    // carries no stepIndex.
    set(1_400);
    assert_eq!(step(&id, "f", 5)?, "0");
    assert_eq!(row(&id)?.0, 5);
    assert_eq!(api_index(&id)?, 6);
    set(1_500);
    let done = format!(
        r#"[{{"complete":{{"run":"{id}","gen":1,"output":null,"progress":null,"at":"{}"}}}}]"#,
        iso(t0 + Duration::from_millis(1_500))
    );
    assert_eq!(store.flush(&done)?.statuses, "0");
    assert_eq!(row(&id)?, (6, iso(t0 + Duration::from_millis(1_500))));

    // The worker's stepIndex, when sent, is what the ending op stores.
    let other = created_id(store.trigger(&item("job", None, None))?);
    assert_eq!(store.claim(&jobs(&["job"]), 1)?.len(), 1);
    set(1_600);
    let steps = format!(
        "[{},{}]",
        step_op(&other, 1, "a", 0),
        step_op(&other, 1, "b", 1)
    );
    assert_eq!(store.flush(&steps)?.statuses, "00");
    assert_eq!(row(&other)?.0, 0);
    let fail = format!(
        r#"[{{"fail":{{"run":"{other}","gen":1,"error":"boom","stack":null,"progress":null,"at":"{}","stepIndex":2}}}}]"#,
        iso(t0 + Duration::from_millis(1_700))
    );
    assert_eq!(store.flush(&fail)?.statuses, "0");
    assert_eq!(row(&other)?.0, 2);
    Ok(())
}

/// A step's fence read is skipped while an earlier read's answer still
/// holds (see fences.rs), and never once anything could have changed it.
mod kept_fences {
    use super::*;

    fn kept(store: &SqliteStore) -> u64 {
        lock(&store.writer).fences.kept
    }

    /// One step op of generation 1 in a batch of its own: its status.
    fn step(store: &SqliteStore, id: &str, name: &str, index: i64) -> Result<String> {
        Ok(store
            .flush(&format!("[{}]", step_op(id, 1, name, index)))?
            .statuses)
    }

    fn stored(store: &SqliteStore, id: &str, name: &str) -> Result<bool> {
        Ok(store
            .get_steps(id)?
            .contains(&format!("\"name\":\"{name}\"")))
    }

    /// A run of `job` triggered and claimed (generation 1), and its first step written.
    fn running_of(
        store: &SqliteStore,
        job: &str,
    ) -> std::result::Result<String, Box<dyn std::error::Error>> {
        let id = created_id(store.trigger(&item(job, None, None))?);
        assert_eq!(store.claim(&jobs(&[job]), 1)?.len(), 1);
        assert_eq!(step(store, &id, "a", 0)?, "0");
        Ok(id)
    }

    fn running(store: &SqliteStore) -> std::result::Result<String, Box<dyn std::error::Error>> {
        running_of(store, "job")
    }

    #[test]
    fn between_flushes_of_one_connection() -> TestResult {
        let (_d, store) = temp_store()?;
        let id = running(&store)?;
        let before = kept(&store);
        assert_eq!(step(&store, &id, "b", 1)?, "0");
        assert_eq!(
            store
                .flush(&format!(
                    "[{},{}]",
                    step_op(&id, 1, "c", 2),
                    step_op(&id, 1, "d", 3)
                ))?
                .statuses,
            "00"
        );
        assert_eq!(kept(&store) - before, 3, "three steps, no fence read");
        for name in ["a", "b", "c", "d"] {
            assert!(stored(&store, &id, name)?, "step {name}");
        }
        // A step of another generation is read, and refused.
        let stale = step_op(&id, 2, "x", 4);
        assert_eq!(store.flush(&format!("[{stale}]"))?.statuses, "l");
        assert!(!stored(&store, &id, "x")?);
        Ok(())
    }

    #[test]
    fn not_after_another_connection_committed() -> TestResult {
        let (_d, store) = temp_store()?;
        let other = SqliteStore::open(StoreOptions::new(store.options().path.clone()))?;
        let id = running(&store)?;
        other.cancel(&id)?;
        let before = kept(&store);
        assert_eq!(step(&store, &id, "b", 1)?, "c", "the cancel is seen");
        assert_eq!(kept(&store), before);
        assert!(!stored(&store, &id, "b")?);

        // Another process took the run over (stale recovery, a new claim).
        let id = running(&store)?;
        let future = iso(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(other.recover_stale(&jobs(&["job"]), &future)?, 1);
        assert_eq!(other.claim(&jobs(&["job"]), 1)?.len(), 1);
        assert_eq!(step(&store, &id, "b", 1)?, "l", "the lease is lost");
        assert!(!stored(&store, &id, "b")?);
        Ok(())
    }

    #[test]
    fn not_after_a_write_of_this_connection_outside_a_flush() -> TestResult {
        let (_d, store) = temp_store()?;
        let id = running(&store)?;
        store.cancel(&id)?;
        assert_eq!(step(&store, &id, "b", 1)?, "c");
        assert!(!stored(&store, &id, "b")?);

        let id = running(&store)?;
        let future = iso(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(store.recover_stale(&jobs(&["job"]), &future)?, 1);
        assert_eq!(step(&store, &id, "b", 1)?, "l");
        assert!(!stored(&store, &id, "b")?);
        Ok(())
    }

    #[test]
    fn not_after_an_op_that_rewrote_the_run() -> TestResult {
        let (_d, store) = temp_store()?;
        let at = r#""at":"2020-01-01T00:00:01.000Z""#;
        let complete = |id: &str| {
            format!(r#"{{"complete":{{"run":"{id}","gen":1,"output":null,"progress":null,{at}}}}}"#)
        };
        let fail = |id: &str| {
            format!(
                r#"{{"fail":{{"run":"{id}","gen":1,"error":"e","stack":null,"progress":null,{at}}}}}"#
            )
        };
        let release = |id: &str| format!(r#"{{"release":{{"run":"{id}","gen":1}}}}"#);
        for (what, end) in [
            ("complete", &complete as &dyn Fn(&str) -> String),
            ("fail", &fail),
            ("release", &release),
        ] {
            // In a later batch … (a job per case: a released run is claimed first)
            let id = running_of(&store, what)?;
            assert_eq!(
                store.flush(&format!("[{}]", end(&id)))?.statuses,
                "0",
                "{what}"
            );
            assert_eq!(step(&store, &id, "b", 1)?, "l", "{what}, a later batch");
            assert!(!stored(&store, &id, "b")?, "{what}");
            // … and in the same one.
            let id = running_of(&store, &format!("{what}-2"))?;
            let batch = format!(
                "[{},{},{}]",
                step_op(&id, 1, "b", 1),
                end(&id),
                step_op(&id, 1, "c", 2)
            );
            assert_eq!(
                store.flush(&batch)?.statuses,
                "00l",
                "{what}, the same batch"
            );
            assert!(
                stored(&store, &id, "b")? && !stored(&store, &id, "c")?,
                "{what}"
            );
        }
        Ok(())
    }

    /// A batch with an op SQLite refuses runs again with a savepoint per op,
    /// which neither reads nor keeps fences: it forgets them.
    #[test]
    fn not_after_a_batch_applied_op_by_op() -> TestResult {
        let (_d, store) = temp_store()?;
        let id = running_of(&store, "job")?;
        let bad_log = format!(
            r#"{{"log":{{"run":"{id}","gen":1,"step":null,"level":"loud","message":"m","data":null,"at":"2020-01-01T00:00:01.000Z"}}}}"#
        );
        let complete = format!(
            r#"{{"complete":{{"run":"{id}","gen":1,"output":null,"progress":null,"at":"2020-01-01T00:00:01.000Z"}}}}"#
        );
        let out = store.flush(&format!("[{bad_log},{complete}]"))?;
        assert_eq!(out.statuses, "e0", "the log's level breaks a CHECK");
        assert_eq!(step(&store, &id, "b", 1)?, "l");
        assert!(!stored(&store, &id, "b")?);
        Ok(())
    }
}
