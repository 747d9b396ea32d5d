//! Claims from many connections: never the same run twice, never two
//! running runs of one concurrency key, and the READ COMMITTED race of
//! `claim.rs`'s docs replayed step by step.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{skip_without_server, TResult, TestSchema};
use crate::pg::claim::{claim_statement, RUNNING_KEY_INDEX};
use crate::pg::PgStore;
use crate::store::{ClaimedRun, FlushOp, TriggerItem, TriggerOutcome};

const JOB: &str = "job";

fn item<'a>(key: Option<&'a str>) -> TriggerItem<'a> {
    TriggerItem {
        job_name: JOB,
        input: "{}",
        idempotency_key: None,
        concurrency_key: key,
        coalesce: false,
        labels: "{}",
    }
}

fn created(out: TriggerOutcome) -> TResult<String> {
    match out {
        TriggerOutcome::Created { id, .. } => Ok(id),
        other => Err(format!("expected a new run, got {other:?}").into()),
    }
}

/// What claim A got and how many runs of key K are running at the end.
struct Race {
    a_claimed: Vec<String>,
    older: String,
    running_of_k: i64,
    a_waited: bool,
}

/// The interleaving of `claim.rs`'s docs: B claims r2 (key K) and has not
/// committed; a trigger that began before r2's commits r1 (key K, older);
/// A claims; B commits.
async fn race(db: &TestSchema, with_index: bool, via_flush: bool) -> TResult<Race> {
    // One connection for A, so its backend (and its lock waits) can be named.
    let a = db.store(1).await?;
    let b = db.store(2).await?;
    let a_pid: i32 = a
        .client()
        .await?
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    let raw = db.raw().await?;
    let s = db.name();
    if !with_index {
        raw.batch_execute(&format!("DROP INDEX {s}.{RUNNING_KEY_INDEX}"))
            .await?;
    }
    // The trigger of r1 starts first (its created_at is the earlier one)…
    let mut t_client = db.raw().await?;
    let t = t_client.transaction().await?;
    t.batch_execute("SELECT 1").await?;
    // …r2 is triggered and committed…
    let r2 = created(b.trigger(&item(Some("K"))).await?)?;
    // …r1 is written but not committed yet.
    let r1 = a.new_id();
    t.execute(
        &format!(
            "INSERT INTO {s}.runs (id, job_name, input, status, concurrency_key, labels, \
             created_at, updated_at) VALUES ($1, $2, '{{}}', 'pending', 'K', '{{}}', now(), now())"
        ),
        &[&r1, &JOB],
    )
    .await?;
    // B's claim takes r2 (r1 is invisible to it) and stays uncommitted.
    let mut b_client = b.client().await?;
    let b_tx = b_client.transaction().await?;
    let got = claim_statement(&b_tx, &[JOB.to_string()], 5, b.owner()).await?;
    let got: Vec<String> = got.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(got, std::slice::from_ref(&r2), "B claims r2");
    t.commit().await?;
    // A's claim sees r1 as the oldest pending run of K and nothing running.
    let a2 = a.clone();
    let a_task = tokio::spawn(async move {
        let jobs = vec![JOB.to_string()];
        if via_flush {
            // The claim that follows a batch, in its transaction (savepoint).
            Ok(a2
                .flush_then_claim(&[], |_| Some((Arc::from(jobs), 5)))
                .await?
                .then)
        } else {
            a2.claim(&jobs, 5).await
        }
    });
    let mut a_waited = false;
    if with_index {
        // A's update of r1 waits for B's transaction.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !a_task.is_finished() {
            let waiting: i64 = raw
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1",
                    &[&a_pid],
                )
                .await?
                .get(0);
            if waiting > 0 {
                a_waited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            a_waited,
            "A's claim should wait for B's uncommitted claim of K"
        );
        b_tx.commit().await?;
    } else {
        // Nothing makes A wait: it finishes while B is still uncommitted.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !a_task.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .map_err(|_| "A's claim waited although there is no index")?;
        b_tx.commit().await?;
    }
    let a_claimed: Vec<ClaimedRun> = tokio::time::timeout(Duration::from_secs(20), a_task)
        .await
        .map_err(|_| "A's claim never returned")???;
    let running_of_k: i64 = raw
        .query_one(
            &format!(
                "SELECT count(*) FROM {s}.runs WHERE status = 'running' AND concurrency_key = 'K'"
            ),
            &[],
        )
        .await?
        .get(0);
    Ok(Race {
        a_claimed: a_claimed.into_iter().map(|r| r.id).collect(),
        older: r1,
        running_of_k,
        a_waited,
    })
}

#[test]
fn a_claim_racing_an_older_trigger_never_runs_two_runs_of_a_key() -> TResult {
    skip_without_server!();
    for via_flush in [false, true] {
        let db = TestSchema::new("race")?;
        let r = db.runtime().block_on(race(&db, true, via_flush))?;
        assert!(r.a_waited);
        assert!(
            !r.a_claimed.contains(&r.older),
            "A claimed r1 while r2 of the same key runs"
        );
        assert_eq!(r.a_claimed, Vec::<String>::new());
        assert_eq!(r.running_of_k, 1);
    }
    Ok(())
}

/// The guard broken on purpose: without the unique index the same
/// interleaving double-claims, so the test above is what stands between
/// the race and a second running run of the key.
#[test]
fn without_the_unique_index_the_same_race_double_claims() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("race_noidx")?;
    let r = db.runtime().block_on(race(&db, false, false))?;
    assert_eq!(
        r.a_claimed,
        std::slice::from_ref(&r.older),
        "A claims r1 too"
    );
    assert_eq!(r.running_of_k, 2, "two running runs of key K");
    Ok(())
}

/// Shared record of the hammer test.
#[derive(Default)]
struct Ledger {
    /// Concurrency key → run holding it now (by the workers' own account).
    held: HashMap<String, String>,
    /// Every claimed run id, in claim order.
    claims: Vec<String>,
    /// What went wrong.
    violations: Vec<String>,
}

#[test]
fn claims_from_many_connections_never_double_claim_nor_overlap_a_key() -> TResult {
    skip_without_server!();
    const WORKERS: usize = 8;
    const KEYS: usize = 6;
    const SEEDED_KEYED: usize = 240;
    const SEEDED_FREE: usize = 60;
    const LATE: usize = 150;
    const TOTAL: usize = SEEDED_KEYED + SEEDED_FREE + LATE;
    let db = TestSchema::new_multi("hammer")?;
    let rt = db.runtime();
    rt.block_on(async {
        let seed = db.store(2).await?;
        let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
        // Seeded runs, interleaved over the keys, in one batch (ids in order).
        let seeded: Vec<TriggerItem> = (0..SEEDED_KEYED + SEEDED_FREE)
            .map(|i| item((i < SEEDED_KEYED).then(|| keys[i % KEYS].as_str())))
            .collect();
        let mut key_of: HashMap<String, Option<String>> = HashMap::new();
        let mut seeded_order: HashMap<String, Vec<String>> = HashMap::new();
        for (it, out) in seeded.iter().zip(seed.trigger_batch(&seeded).await?) {
            let id = created(out)?;
            if let Some(k) = it.concurrency_key {
                seeded_order
                    .entry(k.to_string())
                    .or_default()
                    .push(id.clone());
            }
            key_of.insert(id, it.concurrency_key.map(str::to_string));
        }
        let key_of = Arc::new(Mutex::new(key_of));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));

        // Late triggers while the workers claim.
        let late = {
            let seed = seed.clone();
            let keys = keys.clone();
            let key_of = key_of.clone();
            tokio::spawn(async move {
                for i in 0..LATE {
                    let key = keys[(i * 7) % KEYS].clone();
                    let id = created(seed.trigger(&item(Some(&key))).await?)?;
                    key_of.lock().unwrap().insert(id, Some(key));
                    if i % 10 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                TResult::<()>::Ok(())
            })
        };

        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let store: PgStore = db.store(1).await?;
            let (ledger, done, key_of) = (ledger.clone(), done.clone(), key_of.clone());
            let failed = failed.clone();
            let failed2 = failed.clone();
            let work = async move {
                let jobs = [JOB.to_string()];
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut next: Vec<ClaimedRun> = Vec::new();
                while done.load(Ordering::SeqCst) < TOTAL {
                    if failed.load(Ordering::SeqCst) {
                        return Ok(()); // another worker failed: its error is reported
                    }
                    if Instant::now() > deadline {
                        return Err("hammer did not finish in 120 s".into());
                    }
                    let runs = if next.is_empty() {
                        store.claim(&jobs, 2).await?
                    } else {
                        std::mem::take(&mut next)
                    };
                    if runs.is_empty() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    let output = serde_json::value::RawValue::from_string(format!("{w}"))?;
                    let mut ops = Vec::new();
                    for run in &runs {
                        // A run triggered late may be claimed before the
                        // trigger task recorded it: read its key from the run.
                        let v: serde_json::Value = serde_json::from_str(&run.json)?;
                        let key = v["concurrencyKey"].as_str().map(str::to_string);
                        let mut l = ledger.lock().unwrap();
                        if l.claims.contains(&run.id) {
                            l.violations.push(format!("{} claimed twice", run.id));
                        }
                        if run.generation != 1 {
                            l.violations.push(format!(
                                "{} claimed under generation {}",
                                run.id, run.generation
                            ));
                        }
                        l.claims.push(run.id.clone());
                        if let Some(k) = &key {
                            if let Some(other) = l.held.insert(k.clone(), run.id.clone()) {
                                l.violations.push(format!(
                                    "key {k}: {} claimed while {other} runs",
                                    run.id
                                ));
                            }
                        }
                        drop(l);
                        if let Some(known) = key_of.lock().unwrap().get(&run.id) {
                            if *known != key {
                                return Err(
                                    format!("{} has key {key:?}, not {known:?}", run.id).into()
                                );
                            }
                        }
                        ops.push(FlushOp::Complete {
                            run: run.id.clone(),
                            generation: run.generation,
                            output: Some(&output),
                            progress: None,
                            at: String::new(),
                            step_index: None,
                        });
                    }
                    // Hold the runs a moment, as a step would.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    {
                        // Released before the completion commits, so a claim
                        // of the key after that commit never finds it held.
                        let mut l = ledger.lock().unwrap();
                        for run in &runs {
                            l.held.retain(|_, r| r != &run.id);
                        }
                    }
                    // Half the workers complete and claim the successors in
                    // one transaction (the savepoint path).
                    let statuses = if w % 2 == 0 {
                        let out = store
                            .flush_then_claim(&ops, |ended| {
                                Some((Arc::from(jobs.to_vec()), ended.len()))
                            })
                            .await?;
                        next = out.then;
                        out.statuses
                    } else {
                        store.flush(&ops).await?
                    };
                    if statuses != "0".repeat(ops.len()) {
                        return Err(format!("completion refused: {statuses}").into());
                    }
                    done.fetch_add(ops.len(), Ordering::SeqCst);
                }
                // A claim made by flush_then_claim after the last run: none is left.
                if !next.is_empty() {
                    return Err(format!("claimed {} runs after all were done", next.len()).into());
                }
                TResult::<()>::Ok(())
            };
            tasks.push(tokio::spawn(async move {
                let out = work.await;
                if out.is_err() {
                    failed2.store(true, Ordering::SeqCst);
                }
                out
            }));
        }
        late.await??;
        for t in tasks {
            t.await??;
        }

        let l = std::mem::take(&mut *ledger.lock().unwrap());
        assert_eq!(l.violations, Vec::<String>::new());
        assert_eq!(l.claims.len(), TOTAL, "each run claimed once");
        assert_eq!(l.claims.iter().collect::<HashSet<_>>().len(), TOTAL);
        // Runs of a key seeded together are claimed in creation order.
        for (k, ids) in &seeded_order {
            let pos: Vec<usize> = ids
                .iter()
                .map(|id| l.claims.iter().position(|c| c == id).unwrap_or(usize::MAX))
                .collect();
            assert!(
                pos.windows(2).all(|w| w[0] < w[1]),
                "key {k}: claimed out of creation order"
            );
        }
        let c = seed.client().await?;
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'completed'), \
                 count(*) FILTER (WHERE lease_generation = 1), count(*) FROM runs",
                &[],
            )
            .await?;
        let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let n = TOTAL as i64;
        assert_eq!(counts, (n, n, n));
        TResult::Ok(())
    })
}

/// Buffers (pages) a claim of 4 runs reads with a backlog of 20,000 pending
/// runs over 32 concurrency keys (all triggered by batches, so 500 share
/// each `created_at`) and 4 keys running, on a schema with the first
/// `migrations` only; the claim itself is rolled back.
async fn claim_pages(db: &TestSchema, migrations: usize) -> TResult<i64> {
    let s = PgStore::connect(db.options(1)).await?;
    s.migrate_with(&crate::pg::migrate::MIGRATIONS_FOR_TESTS[..migrations])
        .await?;
    let keys: Vec<String> = (0..32).map(|k| format!("k{k}")).collect();
    for b in 0..40 {
        let items: Vec<TriggerItem> = (0..500)
            .map(|i| item(Some(keys[(b * 500 + i) % 32].as_str())))
            .collect();
        s.trigger_batch(&items).await?;
    }
    assert_eq!(s.claim(&[JOB.to_string()], 4).await?.len(), 4);
    // (No ANALYZE: a table without statistics yet, as right after a large
    // batch into a new schema, is where the planner went wrong.)
    let sql = crate::pg::claim::claim_sql()
        .replace("$1", &format!("ARRAY['{JOB}']"))
        .replace("$2", "4")
        .replace("$3", "'other'");
    let c = s.client().await?;
    c.batch_execute("BEGIN").await?;
    c.batch_execute(crate::pg::claim::CLAIM_PLAN).await?;
    // (the simple protocol answers the plan as text)
    let mut plan = String::new();
    for m in c
        .simple_query(&format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            plan.push_str(r.get(0).unwrap_or_default());
        }
    }
    c.batch_execute("ROLLBACK").await?;
    let plan: serde_json::Value = serde_json::from_str(&plan)?;
    let top = &plan[0]["Plan"];
    let pages = top["Shared Hit Blocks"].as_i64().unwrap_or(-1)
        + top["Shared Read Blocks"].as_i64().unwrap_or(-1);
    Ok(pages)
}

/// The claim reads a few pages, not the backlog (schema v3's partial
/// indexes); on the v2 schema the same claim read every pending run and
/// each key's whole backlog; and without [`crate::pg::claim::CLAIM_PLAN`]
/// the planner (no statistics yet) filtered every pending run, then sorted.
#[test]
fn a_claim_reads_a_few_pages_whatever_the_backlog() -> TResult {
    skip_without_server!();
    let now = TestSchema::new("pages")?;
    let pages = now
        .runtime()
        .block_on(claim_pages(&now, crate::pg::PG_SCHEMA_VERSION as usize))?;
    let v2 = TestSchema::new("pages2")?;
    let pages_v2 = v2.runtime().block_on(claim_pages(&v2, 2))?;
    assert!(pages > 0 && pages < 200, "the claim read {pages} pages");
    assert!(
        pages_v2 > 10 * pages,
        "v2 read {pages_v2} pages, v3 {pages}"
    );
    Ok(())
}
