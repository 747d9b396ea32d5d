//! The store's operations against the SQLite store's semantics: triggers
//! with keys (also from many connections at once), management, queries,
//! the database clock, and the notifications.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{code_of, item, skip_without_server, TResult, TestSchema};
use crate::pg::{PgPurgeOptions, PgStore};
use crate::store::FlushOp;
use crate::store::{HeartbeatOutcome, RunFilter, TriggerItem, TriggerOutcome};

fn id_of(out: &TriggerOutcome) -> String {
    match out {
        TriggerOutcome::Created { id, .. } => id.clone(),
        TriggerOutcome::Idempotent(json) | TriggerOutcome::Coalesced(json) => {
            let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
            v["id"].as_str().unwrap_or_default().to_string()
        }
    }
}

fn json(text: &str) -> TResult<Value> {
    Ok(serde_json::from_str(text)?)
}

#[test]
fn idempotency_keys_hold_across_connections_at_once() -> TResult {
    skip_without_server!();
    let db = TestSchema::new_multi("idem")?;
    db.runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let s = db.store(1).await?;
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for k in 0..20 {
                    let key = format!("key-{k}");
                    let it = TriggerItem {
                        idempotency_key: Some(&key),
                        ..item("job")
                    };
                    ids.push(id_of(&s.trigger(&it).await?));
                }
                Ok::<_, crate::error::Error>(ids)
            }));
        }
        let mut per_key: Vec<HashSet<String>> = vec![HashSet::new(); 20];
        for t in tasks {
            for (k, id) in t.await??.into_iter().enumerate() {
                per_key[k].insert(id);
            }
        }
        assert!(per_key.iter().all(|ids| ids.len() == 1), "one run per key");
        let s = db.store(1).await?;
        let runs = json(&s.get_runs(&RunFilter::default()).await?)?;
        assert_eq!(runs.as_array().map(Vec::len), Some(20));
        // The same key for another job is another run.
        let other = TriggerItem {
            idempotency_key: Some("key-0"),
            ..item("other")
        };
        assert!(matches!(
            s.trigger(&other).await?,
            TriggerOutcome::Created { .. }
        ));
        let again = s.trigger(&other).await?;
        assert!(matches!(again, TriggerOutcome::Idempotent(_)), "{again:?}");
        TResult::Ok(())
    })
}

#[test]
fn coalescing_triggers_from_many_connections_leave_one_pending_run() -> TResult {
    skip_without_server!();
    let db = TestSchema::new_multi("coalesce")?;
    db.runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let s = db.store(1).await?;
            tasks.push(tokio::spawn(async move {
                let mut outs = Vec::new();
                for _ in 0..10 {
                    let it = TriggerItem {
                        concurrency_key: Some("K"),
                        coalesce: true,
                        ..item("job")
                    };
                    outs.push(s.trigger(&it).await?);
                }
                Ok::<_, crate::error::Error>(outs)
            }));
        }
        let mut created = 0;
        let mut ids = HashSet::new();
        for t in tasks {
            for out in t.await?? {
                if matches!(out, TriggerOutcome::Created { .. }) {
                    created += 1;
                }
                ids.insert(id_of(&out));
            }
        }
        assert_eq!(created, 1, "one trigger created, 59 coalesced");
        assert_eq!(ids.len(), 1);
        // Once it runs, the next coalescing trigger creates a new pending run.
        let s = db.store(1).await?;
        let claimed = s.claim(&["job".to_string()], 5).await?;
        assert_eq!(claimed.len(), 1);
        let it = TriggerItem {
            concurrency_key: Some("K"),
            coalesce: true,
            ..item("job")
        };
        let next = s.trigger(&it).await?;
        assert!(matches!(next, TriggerOutcome::Created { .. }));
        assert!(matches!(
            s.trigger(&it).await?,
            TriggerOutcome::Coalesced(_)
        ));
        // It waits for the running one of its key.
        assert_eq!(s.claim(&["job".to_string()], 5).await?.len(), 0);
        TResult::Ok(())
    })
}

#[test]
fn batches_share_one_time_and_are_all_or_nothing() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("batch")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let items: Vec<TriggerItem> = (0..50).map(|_| item("job")).collect();
        let outs = s.trigger_batch(&items).await?;
        let times: HashSet<String> = outs
            .iter()
            .map(|o| match o {
                TriggerOutcome::Created { created_at, .. } => created_at.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(times.len(), 1, "one created_at for the batch");
        let ids: Vec<String> = outs.iter().map(id_of).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "ids keep the batch order");
        // Claimed in batch order.
        let claimed: Vec<String> = s
            .claim(&["job".to_string()], 50)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(claimed, ids);
        // A batch with keys, one of them repeated: the repeat is idempotent.
        let keyed = [
            TriggerItem {
                idempotency_key: Some("a"),
                ..item("job")
            },
            TriggerItem {
                idempotency_key: Some("a"),
                ..item("job")
            },
        ];
        let outs = s.trigger_batch(&keyed).await?;
        assert!(matches!(outs[0], TriggerOutcome::Created { .. }));
        assert!(matches!(outs[1], TriggerOutcome::Idempotent(_)));
        assert_eq!(id_of(&outs[0]), id_of(&outs[1]));
        // Bad JSON in one item: nothing of the batch is written.
        let before = json(&s.get_runs(&RunFilter::default()).await?)?;
        let bad = [
            item("job"),
            TriggerItem {
                input: "{not json",
                ..item("job")
            },
        ];
        assert_eq!(code_of(s.trigger_batch(&bad).await), "DB_ERROR");
        let after = json(&s.get_runs(&RunFilter::default()).await?)?;
        assert_eq!(before, after);
        TResult::Ok(())
    })
}

/// A batch's step ops written as one statement (a group: `flush.rs`)
/// leave what they would one after another: the run's index is one past
/// its highest completed step (a failed step at a higher index does not
/// count), the last progress given stays, a step written twice keeps its
/// last row; the ops of a run under another generation are refused (lost)
/// and write nothing. A group with an op the server refuses is applied op
/// by op, and the claim after it is made as after any batch.
#[test]
fn a_group_of_steps_leaves_what_the_ops_alone_would() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("group")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let jobs = ["job".to_string()];
        let id = id_of(&s.trigger(&item("job")).await?);
        let other = id_of(&s.trigger(&item("job")).await?);
        let third = id_of(&s.trigger(&item("job")).await?);
        let run = s.claim(&jobs, 1).await?.pop().ok_or("no claim")?;
        assert_eq!(run.id, id);
        let now = crate::store::iso(SystemTime::now());
        let value = |v: &str| serde_json::value::RawValue::from_string(v.into());
        let (one, two, p1, p2) = (
            value("1")?,
            value("2")?,
            value("{\"n\":1}")?,
            value("{\"n\":2}")?,
        );
        let step = |run: &str, generation, name: &str, index, status: &str, output, progress| {
            FlushOp::Step {
                run: run.to_string(),
                generation,
                name: name.into(),
                index,
                status: status.into(),
                output,
                error: (status != "completed").then(|| "boom".to_string()),
                stack: None,
                started_at: now.clone(),
                completed_at: Some(now.clone()),
                progress,
            }
        };
        let g = run.generation;
        let ops = [
            step(&id, g, "a", 0, "completed", Some(&*one), Some(&*p1)),
            step(&id, g, "b", 1, "completed", Some(&*one), None),
            step(&other, 1, "a", 0, "completed", Some(&*one), Some(&*p2)),
            step(&id, g, "a", 0, "completed", Some(&*two), None),
            step(&id, g, "c", 2, "failed", None, None),
        ];
        assert_eq!(s.flush(&ops).await?, "00l00");
        let got = json(&s.get_run(&id).await?.ok_or("gone")?)?;
        assert_eq!(got["currentStepIndex"], 2, "only completed steps advance");
        assert_eq!(got["progress"], serde_json::json!({ "n": 1 }));
        let steps = json(&s.get_steps(&id).await?)?;
        let rows: Vec<(String, String)> = steps
            .as_array()
            .ok_or("steps")?
            .iter()
            .map(|r| (r["name"].to_string(), r["output"].to_string()))
            .collect();
        assert_eq!(
            rows,
            [
                ("\"a\"".into(), "2".into()),
                ("\"b\"".into(), "1".into()),
                ("\"c\"".into(), "null".into())
            ]
        );
        let untouched = json(&s.get_run(&other).await?.ok_or("gone")?)?;
        assert_eq!(untouched["status"], "pending");
        assert_eq!(untouched["progress"], serde_json::Value::Null);
        assert_eq!(json(&s.get_steps(&other).await?)?, serde_json::json!([]));
        // A group with an op the server refuses, then the run's completion
        // and the claim of its successor in the same commit: the group is
        // applied op by op, the refused op fails alone, the rest commits.
        let ops = [
            step(&id, g, "d", 3, "completed", Some(&*one), None),
            step(&id, g, "e", 4, "bogus", Some(&*one), None),
            step(&id, g, "f", 5, "completed", Some(&*one), None),
            step(&id, g, "g", 6, "completed", Some(&*one), None),
            FlushOp::Complete {
                run: id.clone(),
                generation: g,
                output: Some(&*one),
                progress: None,
                at: now.clone(),
                step_index: None,
            },
        ];
        let out = s
            .flush_then_claim(&ops, |ended| {
                assert_eq!(ended, &[(id.clone(), g)]);
                Some((std::sync::Arc::from(&jobs[..]), 1))
            })
            .await?;
        assert_eq!(out.statuses, "0e000");
        let errors = out.error_codes();
        assert_eq!(errors, vec![(1, "DB_ERROR")]);
        assert_eq!(out.then.len(), 1);
        assert_eq!(out.then[0].id, other);
        let done = json(&s.get_run(&id).await?.ok_or("gone")?)?;
        assert_eq!(done["status"], "completed");
        assert_eq!(done["currentStepIndex"], 7);
        let names: Vec<String> = json(&s.get_steps(&id).await?)?
            .as_array()
            .ok_or("steps")?
            .iter()
            .map(|r| r["name"].as_str().unwrap_or("?").to_string())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d", "f", "g"]);
        // The same without a refused op: one commit for the group, the
        // completion and the claim.
        let mut ops: Vec<FlushOp<'_>> = ["a", "b", "c", "d"]
            .iter()
            .zip(0..)
            .map(|(name, i)| step(&other, 1, name, i, "completed", Some(&*one), None))
            .collect();
        ops.push(FlushOp::Complete {
            run: other.clone(),
            generation: 1,
            output: Some(&*one),
            progress: None,
            at: now.clone(),
            step_index: None,
        });
        let out = s
            .flush_then_claim(&ops, |_| Some((std::sync::Arc::from(&jobs[..]), 1)))
            .await?;
        assert_eq!((out.statuses.as_str(), out.errors.len()), ("00000", 0));
        assert_eq!(out.then.len(), 1);
        assert_eq!(out.then[0].id, third);
        let done = json(&s.get_run(&other).await?.ok_or("gone")?)?;
        assert_eq!(done["status"], "completed");
        assert_eq!(done["currentStepIndex"], 4);
        TResult::Ok(())
    })
}

/// A batch's completions written as one statement (a group: `flush.rs`)
/// answer and leave what they would one after another: each run completed
/// under its own fence (its output; its progress kept unless given), one
/// under another generation refused as lost and one of a cancelled run as
/// cancelled, neither writing anything; a run completed twice in a batch
/// keeps the first; the end of keyed runs wakes other processes once; the
/// claim after the group takes a released key's successor in its commit.
#[test]
fn a_group_of_completions_leaves_what_the_ops_alone_would() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("completes")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let jobs = ["job".to_string()];
        let keyed = |k| TriggerItem {
            concurrency_key: Some(k),
            ..item("job")
        };
        let mut ids = Vec::new();
        for it in [
            item("job"),
            item("job"),
            keyed("K1"),
            item("job"),
            keyed("K2"),
        ] {
            ids.push(id_of(&s.trigger(&it).await?));
        }
        let successor = id_of(&s.trigger(&keyed("K1")).await?);
        let runs = s.claim(&jobs, 10).await?;
        let claimed: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(claimed, ids, "the successor waits for its key");
        s.cancel(&ids[3]).await?;
        let (_keep, mut rx) = listen(&db, &[s.wake_channel()]).await?;
        wants_wakes(&db).await?;
        let value = |v: &str| serde_json::value::RawValue::from_string(v.into());
        let (one, two, three, p1) = (value("1")?, value("2")?, value("3")?, value("{\"n\":1}")?);
        let complete = |i: usize, generation: i64, output, progress| FlushOp::Complete {
            run: ids[i].clone(),
            generation,
            output,
            progress,
            at: String::new(),
            step_index: None,
        };
        let g = |i: usize| runs[i].generation;
        let ops = [
            complete(0, g(0), Some(&*one), Some(&*p1)),
            complete(1, g(1) + 1, Some(&*one), None),
            complete(2, g(2), Some(&*two), None),
            complete(3, g(3), Some(&*one), None),
            complete(0, g(0), Some(&*three), None),
            complete(4, g(4), None, None),
        ];
        let out = s
            .flush_then_claim(&ops, |ended| {
                assert_eq!(ended.len(), 6);
                Some((std::sync::Arc::from(&jobs[..]), 2))
            })
            .await?;
        assert_eq!((out.statuses.as_str(), out.errors.len()), ("0l0cl0", 0));
        let then: Vec<&str> = out.then.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(then, [successor.as_str()]);
        let run = |i: usize| {
            let id = ids[i].clone();
            let s = &s;
            async move { json(&s.get_run(&id).await?.ok_or("gone")?) }
        };
        let r0 = run(0).await?;
        assert_eq!(
            (r0["status"].as_str(), &r0["output"]),
            (Some("completed"), &serde_json::json!(1))
        );
        assert_eq!(r0["progress"], serde_json::json!({ "n": 1 }));
        let r1 = run(1).await?;
        assert_eq!(
            (r1["status"].as_str(), &r1["output"]),
            (Some("running"), &Value::Null)
        );
        let r2 = run(2).await?;
        assert_eq!(
            (r2["status"].as_str(), &r2["output"]),
            (Some("completed"), &serde_json::json!(2))
        );
        let r3 = run(3).await?;
        assert_eq!(
            (r3["status"].as_str(), &r3["output"]),
            (Some("cancelled"), &Value::Null)
        );
        let r4 = run(4).await?;
        assert_eq!(
            (r4["status"].as_str(), &r4["output"]),
            (Some("completed"), &Value::Null)
        );
        assert_eq!(
            next(&mut rx).await?,
            (s.wake_channel().to_string(), String::new())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "one wake for the batch");
        TResult::Ok(())
    })
}

#[test]
fn cancel_retry_delete_and_purge() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("manage")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let jobs = ["job".to_string()];
        let id = id_of(&s.trigger(&item("job")).await?);
        assert_eq!(code_of(s.retry(&id).await), "CONFLICT");
        assert_eq!(code_of(s.delete_run(&id).await), "CONFLICT");
        let run = s.claim(&jobs, 1).await?.pop().ok_or("no claim")?;
        // A completed step, then a failed one.
        let now = crate::store::iso(SystemTime::now());
        let one = serde_json::value::RawValue::from_string("1".into())?;
        let step = |name: &str, index, status: &str| FlushOp::Step {
            run: id.clone(),
            generation: run.generation,
            name: name.into(),
            index,
            status: status.into(),
            output: (status == "completed").then_some(&*one),
            error: (status != "completed").then(|| "boom".to_string()),
            stack: None,
            started_at: now.clone(),
            completed_at: Some(now.clone()),
            progress: None,
        };
        let ops = [
            step("a", 0, "completed"),
            step("b", 1, "failed"),
            FlushOp::Fail {
                run: id.clone(),
                generation: run.generation,
                error: "boom".into(),
                stack: Some("at b".into()),
                progress: None,
                at: now.clone(),
                step_index: None,
            },
        ];
        assert_eq!(s.flush(&ops).await?, "000");
        let failed = json(&s.get_run(&id).await?.ok_or("gone")?)?;
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["errorStack"], "at b");
        assert_eq!(
            failed["currentStepIndex"], 1,
            "the failed step advanced the run"
        );
        assert_eq!(code_of(s.cancel(&id).await), "CONFLICT");
        // Retry: the same run, pending, the failed step row gone.
        let retried = json(&s.retry(&id).await?)?;
        assert_eq!(retried["status"], "pending");
        assert_eq!(retried["error"], Value::Null);
        let steps = json(&s.get_steps(&id).await?)?;
        assert_eq!(steps.as_array().map(Vec::len), Some(1));
        assert_eq!(steps[0]["name"], "a");
        // The replay gets the completed step back, under a new generation.
        let again = s.claim(&jobs, 1).await?.pop().ok_or("no reclaim")?;
        assert_eq!(again.generation, 2);
        assert_eq!(
            json(&again.json)?["steps"],
            serde_json::json!([["a", 0, 1]])
        );
        // Cancel while running: previous status reported.
        let (prev, cancelled) = s.cancel(&id).await?;
        assert_eq!(prev, "running");
        assert_eq!(json(&cancelled)?["status"], "cancelled");
        let lost = s.heartbeat(&[(id.clone(), 2)]).await?;
        assert_eq!(lost, [HeartbeatOutcome::Cancelled(id.clone())]);
        // Delete: run, steps and logs gone.
        let deleted = json(&s.delete_run(&id).await?)?;
        assert_eq!(deleted["id"], id.as_str());
        assert_eq!(s.get_run(&id).await?, None);
        assert_eq!(s.get_steps(&id).await?, "[]");
        assert_eq!(code_of(s.delete_run(&id).await), "NOT_FOUND");
        assert_eq!(code_of(s.cancel("nope").await), "NOT_FOUND");
        // Purge: only terminal runs that ended before the cutoff, up to the limit.
        let mut ended = Vec::new();
        for _ in 0..3 {
            let id = id_of(&s.trigger(&item("job")).await?);
            s.cancel(&id).await?;
            ended.push(id);
        }
        let pending = id_of(&s.trigger(&item("job")).await?);
        let past = PgPurgeOptions {
            older_than: SystemTime::now() - Duration::from_secs(3600),
            limit: 10,
        };
        assert_eq!(s.purge(&past).await?, 0);
        let future = PgPurgeOptions {
            older_than: s.db_now().await? + Duration::from_secs(1),
            limit: 2,
        };
        assert_eq!(s.purge(&future).await?, 2);
        assert_eq!(s.purge(&future).await?, 1);
        assert_eq!(s.purge(&future).await?, 0);
        assert!(s.get_run(&pending).await?.is_some());
        TResult::Ok(())
    })
}

#[test]
fn queries_filter_by_status_job_and_labels() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("query")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let mut ids = Vec::new();
        for (job, labels) in [
            ("a", r#"{"team":"x","env":"prod"}"#),
            ("a", r#"{"team":"y"}"#),
            ("b", r#"{"team":"x"}"#),
        ] {
            ids.push(id_of(
                &s.trigger(&TriggerItem {
                    labels,
                    ..item(job)
                })
                .await?,
            ));
        }
        s.cancel(&ids[1]).await?;
        let ids_of = |v: Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| r["id"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let filter = |f: &str| -> TResult<RunFilter> { Ok(serde_json::from_str(f)?) };
        // Newest first.
        let all = ids_of(json(&s.get_runs(&RunFilter::default()).await?)?);
        assert_eq!(all, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
        let x = ids_of(json(
            &s.get_runs(&filter(r#"{"labels":{"team":"x"}}"#)?).await?,
        )?);
        assert_eq!(x, [ids[2].clone(), ids[0].clone()]);
        let both = filter(r#"{"labels":{"team":"x","env":"prod"},"jobName":["a"]}"#)?;
        assert_eq!(ids_of(json(&s.get_runs(&both).await?)?), [ids[0].clone()]);
        let cancelled = filter(r#"{"status":["cancelled"]}"#)?;
        assert_eq!(
            ids_of(json(&s.get_runs(&cancelled).await?)?),
            [ids[1].clone()]
        );
        let page = filter(r#"{"limit":1,"offset":1}"#)?;
        assert_eq!(ids_of(json(&s.get_runs(&page).await?)?), [ids[1].clone()]);
        assert_eq!(
            code_of(s.get_runs(&filter(r#"{"status":["done"]}"#)?).await),
            "VALIDATION_ERROR"
        );
        assert_eq!(
            code_of(s.get_runs(&filter(r#"{"limit":-2}"#)?).await),
            "VALIDATION_ERROR"
        );
        let counts = json(&s.run_counts().await?)?;
        assert_eq!(
            counts,
            serde_json::json!([
                {"jobName": "a", "status": "cancelled", "count": 1},
                {"jobName": "a", "status": "pending", "count": 1},
                {"jobName": "b", "status": "pending", "count": 1}
            ])
        );
        TResult::Ok(())
    })
}

/// The store's times come from the database: a heartbeat lands between
/// two readings of the server's clock, and staleness is judged on it.
#[test]
fn leases_and_heartbeats_use_the_database_clock() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("clock")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let jobs = ["job".to_string()];
        let id = id_of(&s.trigger(&item("job")).await?);
        let run = s.claim(&jobs, 1).await?.pop().ok_or("no claim")?;
        let before = s.db_now().await?;
        assert_eq!(s.heartbeat(&[(id.clone(), run.generation)]).await?, []);
        let after = s.db_now().await?;
        let c = s.client().await?;
        let beat: SystemTime = c
            .query_one("SELECT heartbeat_at FROM runs WHERE id = $1", &[&id])
            .await?
            .get(0);
        assert!(
            before <= beat && beat <= after,
            "heartbeat_at is the server's now()"
        );
        // Ten seconds old on the server's clock: stale for 5 s, not for 60 s.
        c.execute(
            "UPDATE runs SET heartbeat_at = now() - interval '10 seconds' WHERE id = $1",
            &[&id],
        )
        .await?;
        assert!(!s.has_stale(&jobs, Duration::from_secs(60)).await?);
        assert_eq!(s.recover_stale(&jobs, Duration::from_secs(60)).await?, 0);
        assert!(s.has_stale(&jobs, Duration::from_secs(5)).await?);
        // The worker's own runs in flight are kept.
        let keep = [(id.clone(), run.generation)];
        assert_eq!(
            s.recover_stale_except(&jobs, Duration::from_secs(5), &keep)
                .await?,
            0
        );
        assert_eq!(s.recover_stale(&jobs, Duration::from_secs(5)).await?, 1);
        let lost = s.heartbeat(&[(id.clone(), run.generation)]).await?;
        assert_eq!(lost, [HeartbeatOutcome::Lost(id.clone())]);
        // Job timeout: fenced like any op.
        let again = s.claim(&jobs, 1).await?.pop().ok_or("no reclaim")?;
        assert_eq!(
            s.fail_owned(&id, run.generation, "late").await?,
            crate::store::OpStatus::Lost
        );
        assert_eq!(
            s.fail_owned(&id, again.generation, "timed out").await?,
            crate::store::OpStatus::Ok
        );
        assert_eq!(
            json(&s.get_run(&id).await?.ok_or("gone")?)?["error"],
            "timed out"
        );
        TResult::Ok(())
    })
}

/// The JS layer's flush format (`lib/protocol.js`, tagged ops) parses into
/// the shared typed ops, values kept as written; bad batches fail with
/// INTERNAL naming the problem, and so does a bad time when PostgreSQL binds it.
#[test]
fn flush_batches_in_the_js_format_parse() -> TResult {
    let text = r#"[{"step":{"run":"r1","gen":3,"name":"a","index":0,"status":"completed","output":{"x":[1,2]},"error":null,"stack":null,"startedAt":"2026-01-02T03:04:05.678Z","completedAt":"2026-01-02T03:04:06.000Z","progress":{"current":1}}},
            {"complete":{"run":"r1","gen":3,"output":"out","progress":null,"at":"2026-01-02T03:04:07.000Z"}},
            {"fail":{"run":"r2","gen":1,"error":"boom","stack":"stack","progress":null,"at":"2026-01-02T03:04:07.000Z"}},
            {"progress":{"run":"r2","gen":1,"progress":{"current":2}}},
            {"log":{"run":"r2","gen":1,"step":null,"level":"warn","message":"msg","data":{"b":1,"a":2},"at":"2026-01-02T03:04:08.000Z"}},
            {"release":{"run":"r3","gen":4}}]"#;
    let ops = crate::store::Batch::parse(text)?.ops;
    assert_eq!(ops.len(), 6);
    match &ops[0] {
        FlushOp::Step {
            output,
            progress,
            started_at,
            ..
        } => {
            assert_eq!(output.map(|r| r.get()), Some(r#"{"x":[1,2]}"#));
            assert_eq!(progress.map(|r| r.get()), Some(r#"{"current":1}"#));
            assert_eq!(
                crate::pg::flush::time("startedAt", started_at)?,
                humantime::parse_rfc3339("2026-01-02T03:04:05.678Z")?
            );
        }
        other => panic!("{other:?}"),
    }
    match &ops[4] {
        FlushOp::Log { data, level, .. } => {
            assert_eq!(
                data.map(|r| r.get()),
                Some(r#"{"b":1,"a":2}"#),
                "kept as written"
            );
            assert_eq!(level, "warn");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&ops[5], FlushOp::Release { run, generation: 4 } if run == "r3"));
    assert!(ops[1].ends_execution() && ops[2].ends_execution() && ops[5].ends_execution());
    for bad in [r#"not json"#, r#"{"step":{}}"#] {
        assert_eq!(
            code_of(crate::store::Batch::parse(bad)),
            "INTERNAL",
            "{bad}"
        );
    }
    for bad in [
        r#"[{"explode":{"run":"r","gen":1}}]"#,
        r#"[{"complete":{"run":"r","gen":1}}]"#,
    ] {
        let batch = crate::store::Batch::parse(bad)?;
        assert!(batch.ops.is_empty(), "{bad} is malformed: it fails alone");
    }
    assert_eq!(
        code_of(crate::pg::flush::time("startedAt", "yesterday")),
        "INTERNAL"
    );
    Ok(())
}

/// Receives notifications on `channels` until `n` arrived (or 10 s passed).
async fn listen(
    db: &TestSchema,
    channels: &[&str],
) -> TResult<(
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
)> {
    let (client, mut conn) =
        tokio_postgres::connect(&db.options(1).url, tokio_postgres::NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = msg {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    for ch in channels {
        client.batch_execute(&format!("LISTEN \"{ch}\"")).await?;
    }
    Ok((client, rx))
}

/// A live registration for wake-ups (a worker with a free slot elsewhere):
/// without one, a keyed run's end sends no wake-up (see
/// `listen::a_keyed_end_wakes_only_while_some_process_wants_wakes`).
async fn wants_wakes(db: &TestSchema) -> TResult {
    db.raw()
        .await?
        .batch_execute(&format!(
            "INSERT INTO {}.wakers VALUES ('elsewhere:1', now() + interval '1 hour')",
            db.name()
        ))
        .await?;
    Ok(())
}

async fn next(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) -> TResult<(String, String)> {
    Ok(tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .map_err(|_| "no notification within 10 s")?
        .ok_or("listener closed")?)
}

#[test]
fn triggers_cancels_and_hand_backs_notify_at_commit() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("notify")?;
    db.runtime().block_on(async {
        let s: PgStore = db.store(2).await?;
        assert_eq!(s.wake_channel(), format!("durably_wake_{}", db.name()));
        assert_eq!(s.cancel_channel(), format!("durably_cancel_{}", db.name()));
        let (_keep, mut rx) = listen(&db, &[s.wake_channel(), s.cancel_channel()]).await?;
        wants_wakes(&db).await?;
        let wake = |job: &str| (s.wake_channel().to_string(), job.to_string());

        let id = id_of(&s.trigger(&item("mail")).await?);
        assert_eq!(next(&mut rx).await?, wake("mail"));
        let batch = [item("a"), item("b"), item("a")];
        s.trigger_batch(&batch).await?;
        let mut got = vec![next(&mut rx).await?, next(&mut rx).await?];
        got.sort();
        assert_eq!(got, [wake("a"), wake("b")], "one per job of the batch");
        // A failed batch notifies nothing (checked by the next message below).
        let bad = [TriggerItem {
            input: "{",
            ..item("zzz")
        }];
        assert!(s.trigger_batch(&bad).await.is_err());

        let run = s
            .claim(&["mail".to_string()], 1)
            .await?
            .pop()
            .ok_or("no claim")?;
        let release = [FlushOp::Release {
            run: id.clone(),
            generation: run.generation,
        }];
        assert_eq!(s.flush(&release).await?, "0");
        assert_eq!(next(&mut rx).await?, wake("mail"), "a hand-back wakes");
        s.cancel(&id).await?;
        assert_eq!(
            next(&mut rx).await?,
            (s.cancel_channel().to_string(), id.clone())
        );
        s.retry(&id).await?;
        assert_eq!(next(&mut rx).await?, wake("mail"), "a retry wakes");

        // The end of a keyed run wakes (its successor may be claimable).
        let keyed = TriggerItem {
            concurrency_key: Some("K"),
            ..item("k")
        };
        s.trigger(&keyed).await?;
        assert_eq!(next(&mut rx).await?, wake("k"));
        let k = s
            .claim(&["k".to_string()], 1)
            .await?
            .pop()
            .ok_or("no claim")?;
        let done = [FlushOp::Complete {
            run: k.id.clone(),
            generation: k.generation,
            output: None,
            progress: None,
            at: String::new(),
            step_index: None,
        }];
        assert_eq!(s.flush(&done).await?, "0");
        assert_eq!(next(&mut rx).await?, wake(""));
        // Stale recovery wakes the jobs whose runs went back to pending.
        s.claim(&["mail".to_string()], 1).await?;
        assert_eq!(
            s.recover_older_than_ms(&["mail".to_string()], -1000, &[])
                .await?,
            1
        );
        assert_eq!(next(&mut rx).await?, wake("mail"));
        assert!(rx.try_recv().is_err(), "nothing else was sent");
        TResult::Ok(())
    })
}

/// An op too big for the server is refused alone (`b`), before any of its
/// statements runs; the rest of the batch commits.
#[test]
fn an_op_over_the_size_limit_is_refused_alone() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("toobig")?;
    db.runtime().block_on(async {
        let s = db.store(1).await?.with_max_op_bytes(100);
        let id = id_of(&s.trigger(&item("job")).await?);
        let run = s
            .claim(&["job".to_string()], 1)
            .await?
            .pop()
            .ok_or("no claim")?;
        let big = serde_json::value::RawValue::from_string(format!("\"{}\"", "x".repeat(200)))?;
        let current = serde_json::value::RawValue::from_string("{\"current\":1}".into())?;
        let ops = [
            FlushOp::Progress {
                run: id.clone(),
                generation: run.generation,
                progress: Some(&big),
            },
            FlushOp::Progress {
                run: id.clone(),
                generation: run.generation,
                progress: Some(&current),
            },
            FlushOp::Complete {
                run: id.clone(),
                generation: run.generation,
                output: Some(&big),
                progress: None,
                at: String::new(),
                step_index: None,
            },
        ];
        assert_eq!(s.flush(&ops).await?, "b0b");
        let rec = json(&s.get_run(&id).await?.ok_or("gone")?)?;
        assert_eq!(rec["status"], "running");
        assert_eq!(rec["progress"], serde_json::json!({"current": 1}));
        TResult::Ok(())
    })
}

/// A heartbeat over several runs holds no row lock while it waits for the
/// next one, so it cannot deadlock with a write batch that locks the same
/// runs in another order (seen in the SIGKILL fault test: heartbeat of
/// [A, B] against a flush completing B then A).
#[test]
fn a_heartbeat_cannot_deadlock_with_a_batch_over_the_same_runs() -> TResult {
    skip_without_server!();
    let db = TestSchema::new_multi("hbdeadlock")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        for _ in 0..2 {
            s.trigger(&item("job")).await?;
        }
        let claimed = s.claim(&["job".to_string()], 2).await?;
        assert_eq!(claimed.len(), 2);
        let (a, b) = (&claimed[0], &claimed[1]);
        // Another transaction (a write batch) holds B ...
        let mut raw = db.raw().await?;
        let tx = raw.transaction().await?;
        let upd = format!(
            "UPDATE {}.runs SET updated_at = now() WHERE id = $1",
            db.name()
        );
        tx.execute(&upd, &[&b.id]).await?;
        // ... while the heartbeat goes A then B ...
        let hb = {
            let s = s.clone();
            let runs = vec![(a.id.clone(), a.generation), (b.id.clone(), b.generation)];
            tokio::spawn(async move { s.heartbeat(&runs).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        // ... and then the batch needs A: it must get it (no deadlock).
        tokio::time::timeout(Duration::from_secs(10), tx.execute(&upd, &[&a.id]))
            .await
            .map_err(|_| "the batch waited for the heartbeat")??;
        tx.commit().await?;
        let lost = hb.await??;
        assert!(lost.is_empty(), "{lost:?}");
        TResult::Ok(())
    })
}

/// A statement reads from the snapshot taken when it started (READ
/// COMMITTED), while its fence is checked again on the row's latest version
/// once the row lock it waited for is free. A cancel that commits while a
/// heartbeat, an op or a timeout waits for the run's row must still be told
/// as a cancel, not as a lost lease (seen in CI: a step aborted with
/// LeaseLostError instead of CancelledError after cancel()).
#[test]
fn a_cancel_committed_while_a_write_waits_for_the_row_is_a_cancel() -> TResult {
    skip_without_server!();
    let db = TestSchema::new_multi("cancelwait")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        for _ in 0..7 {
            s.trigger(&item("job")).await?;
        }
        let runs = s.claim(&["job".to_string()], 7).await?;
        assert_eq!(runs.len(), 7);
        let mut raw = db.raw().await?;
        let cancel = format!(
            "UPDATE {}.runs SET status = 'cancelled', completed_at = now(), updated_at = now() \
             WHERE id = $1",
            db.name()
        );
        let now = crate::store::iso(SystemTime::now());
        let step = |run: &crate::store::ClaimedRun| FlushOp::Step {
            run: run.id.clone(),
            generation: run.generation,
            name: "s".into(),
            index: 0,
            status: "completed".into(),
            output: None,
            error: None,
            stack: None,
            started_at: now.clone(),
            completed_at: Some(now.clone()),
            progress: None,
        };
        let (c, l, ok) = (
            crate::store::OpStatus::Cancelled.as_char(),
            crate::store::OpStatus::Lost.as_char(),
            crate::store::OpStatus::Ok.as_char(),
        );
        // Each case: the cancel holds the row, the write starts and waits,
        // then the cancel commits.
        let mut wrong = Vec::new();
        for case in 0..4 {
            let tx = raw.transaction().await?;
            let target = &runs[case];
            tx.execute(&cancel, &[&target.id]).await?;
            let s2 = s.clone();
            let (id, generation) = (target.id.clone(), target.generation);
            let ops: Vec<FlushOp<'static>> = match case {
                // one step op alone (its own statement)
                1 => vec![step(target)],
                // a group of steps (one statement for four runs)
                2 => vec![step(target), step(&runs[4]), step(&runs[5]), step(&runs[6])],
                _ => Vec::new(),
            };
            let write = tokio::spawn(async move {
                match case {
                    0 => {
                        let lost = s2.heartbeat(&[(id.clone(), generation)]).await?;
                        Ok::<_, crate::error::Error>(format!("{lost:?}"))
                    }
                    3 => Ok(format!(
                        "{:?}",
                        s2.fail_owned(&id, generation, "timed out").await?
                    )),
                    _ => s2.flush(&ops).await,
                }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !write.is_finished(),
                "case {case}: the write waits for the cancel's row lock"
            );
            tx.commit().await?;
            let answer = write.await??;
            let expected = match case {
                0 => format!("{:?}", [HeartbeatOutcome::Cancelled(target.id.clone())]),
                1 => c.to_string(),
                2 => format!("{c}{ok}{ok}{ok}"),
                _ => format!("{:?}", crate::store::OpStatus::Cancelled),
            };
            if answer != expected {
                wrong.push(format!(
                    "case {case}: {answer} (expected {expected}; lost is {l})"
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        TResult::Ok(())
    })
}

/// Run records carry `completedStepCount` (the completed steps), as on
/// SQLite: from a trigger, a claim, a read and a cancel.
#[test]
fn run_records_count_their_completed_steps() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("stepcount")?;
    db.runtime().block_on(async {
        let s = db.store(1).await?;
        let TriggerOutcome::Created { id, .. } = s.trigger(&item("job")).await? else {
            return Err("expected a new run".into());
        };
        let claimed = s.claim(&["job".to_string()], 1).await?;
        assert_eq!(json(&claimed[0].json)?["completedStepCount"], 0);
        let raw = db.raw().await?;
        raw.execute(
            &format!(
                "INSERT INTO {}.steps (run_id, name, \"index\", status, output, started_at, completed_at) \
                 VALUES ($1, 'a', 0, 'completed', '1', now(), now()), ($1, 'b', 1, 'completed', '2', now(), now()), \
                        ($1, 'c', 2, 'failed', NULL, now(), now())",
                db.name()
            ),
            &[&id],
        )
        .await?;
        let read = s.get_run(&id).await?.ok_or("no run")?;
        assert_eq!(json(&read)?["completedStepCount"], 2);
        assert_eq!(json(&s.get_runs(&Default::default()).await?)?[0]["completedStepCount"], 2);
        assert_eq!(json(&s.cancel(&id).await?.1)?["completedStepCount"], 2);
        TResult::Ok(())
    })
}

/// An id holding NUL (PostgreSQL text cannot) is an unknown run, not a
/// database error (found by http-fuzz on PostgreSQL: `?runId=%00` gave 500).
#[test]
fn an_id_with_nul_is_not_found() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("nulid")?;
    db.runtime().block_on(async {
        let s = db.store(1).await?;
        let id = "01ABC\0";
        assert_eq!(s.get_run(id).await?, None);
        assert_eq!(s.get_steps(id).await?, "[]");
        assert_eq!(s.get_logs(id).await?, "[]");
        assert_eq!(code_of(s.cancel(id).await), "NOT_FOUND");
        assert_eq!(code_of(s.retry(id).await), "NOT_FOUND");
        assert_eq!(code_of(s.delete_run(id).await), "NOT_FOUND");
        // A labels filter holding NUL (jsonb cannot) matches nothing.
        let filter: crate::store::RunFilter =
            serde_json::from_str(r#"{"labels":{"__proto__":"\u0000","k":"v"}}"#)?;
        assert_eq!(s.get_runs(&filter).await?, "[]");
        let filter: crate::store::RunFilter = serde_json::from_str(r#"{"jobName":["a\u0000"]}"#)?;
        assert_eq!(s.get_runs(&filter).await?, "[]");
        // A deleted run's record still counts its steps.
        let TriggerOutcome::Created { id, .. } = s.trigger(&item("job")).await? else {
            return Err("expected a new run".into());
        };
        let raw = db.raw().await?;
        raw.execute(
            &format!(
                "INSERT INTO {}.steps (run_id, name, \"index\", status, output, started_at, completed_at) \
                 VALUES ($1, 'a', 0, 'completed', '1', now(), now())",
                db.name()
            ),
            &[&id],
        )
        .await?;
        s.cancel(&id).await?;
        assert_eq!(json(&s.delete_run(&id).await?)?["completedStepCount"], 1);
        TResult::Ok(())
    })
}

/// As on SQLite (`store::tests::one_bad_op_fails_alone_and_is_rolled_back`):
/// an op the server refuses halfway (its run row updated, its step row
/// refused by a CHECK) fails alone, rolled back, with its error; the other
/// runs' ops in the batch commit, and the batch still claims after them.
#[test]
fn one_refused_op_fails_alone_and_is_rolled_back() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("badop")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let jobs = ["job".to_string()];
        let a = id_of(&s.trigger(&item("job")).await?);
        let b = id_of(&s.trigger(&item("job")).await?);
        let c = id_of(&s.trigger(&item("job")).await?);
        let claimed = s.claim(&jobs, 3).await?;
        assert_eq!(claimed.len(), 3);
        let gen = claimed[0].generation;
        let d = id_of(&s.trigger(&item("job")).await?); // claimed after the batch
        let now = crate::store::iso(SystemTime::now());
        let one = serde_json::value::RawValue::from_string("1".into())?;
        let half = serde_json::value::RawValue::from_string(r#"{"half":true}"#.into())?;
        let step = |run: &str, status: &str, progress| FlushOp::Step {
            run: run.to_string(),
            generation: gen,
            name: "s".into(),
            index: 0,
            status: status.into(),
            output: Some(&*one),
            error: None,
            stack: None,
            started_at: now.clone(),
            completed_at: Some(now.clone()),
            progress,
        };
        let ops = [
            step(&a, "completed", None),
            step(&b, "bogus", Some(&*half)),
            FlushOp::Complete {
                run: c.clone(),
                generation: gen,
                output: Some(&*one),
                progress: None,
                at: now.clone(),
                step_index: None,
            },
        ];
        let out = s
            .flush_then_claim(&ops, |ended| {
                assert_eq!(ended, &[(c.clone(), gen)]);
                Some((std::sync::Arc::from(&jobs[..]), 1))
            })
            .await?;
        assert_eq!(out.statuses, "0e0");
        let errors = out.error_codes();
        assert_eq!(errors, vec![(1, "DB_ERROR")]);
        assert!(
            out.errors[0].error.to_string().contains("check"),
            "{:?}",
            out.errors[0]
        );
        assert_eq!(out.then.len(), 1);
        assert_eq!(out.then[0].id, d);
        // The valid ops committed; the refused one left nothing behind.
        assert_eq!(json(&s.get_steps(&a).await?)?[0]["name"], "s");
        assert_eq!(
            json(&s.get_run(&c).await?.ok_or("gone")?)?["status"],
            "completed"
        );
        let run_b = json(&s.get_run(&b).await?.ok_or("gone")?)?;
        assert_eq!(run_b["status"], "running");
        assert_eq!(run_b["progress"], Value::Null);
        assert_eq!(json(&s.get_steps(&b).await?)?, serde_json::json!([]));
        TResult::Ok(())
    })
}

/// A batch's statements are piped (`pipe.rs`): one that the server refuses
/// in the middle (a NUL in a log message, which `text` cannot hold) rolls
/// the piped pass back whole, then the batch is applied again op by op: the
/// refused op fails alone, the others and the claim after them commit, and
/// the connection (the pool has one) is then usable at once.
#[test]
fn a_batch_refused_by_the_server_midway_commits_the_other_ops() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("midway")?;
    db.runtime().block_on(async {
        let s = db.store(1).await?;
        let jobs = ["job".to_string()];
        let a = id_of(&s.trigger(&item("job")).await?);
        let b = id_of(&s.trigger(&item("job")).await?);
        let claimed = s.claim(&jobs, 2).await?;
        assert_eq!(claimed.len(), 2);
        let waiting = id_of(&s.trigger(&item("job")).await?);
        let now = crate::store::iso(SystemTime::now());
        let one = serde_json::value::RawValue::from_string("1".into())?;
        let ops = |message: &str| {
            [
                FlushOp::Step {
                    run: a.clone(),
                    generation: 1,
                    name: "s".into(),
                    index: 0,
                    status: "completed".into(),
                    output: Some(&*one),
                    error: None,
                    stack: None,
                    started_at: now.clone(),
                    completed_at: Some(now.clone()),
                    progress: None,
                },
                FlushOp::Log {
                    run: a.clone(),
                    generation: 1,
                    step: None,
                    level: "info".into(),
                    message: message.into(),
                    data: None,
                    at: now.clone(),
                },
                FlushOp::Complete {
                    run: b.clone(),
                    generation: 1,
                    output: Some(&*one),
                    progress: None,
                    at: now.clone(),
                    step_index: None,
                },
            ]
        };
        let bad = ops("a NUL \0 here");
        let out = s
            .flush_then_claim(&bad, |ended| {
                assert_eq!(ended, [(b.clone(), 1)]);
                Some((std::sync::Arc::from(jobs.to_vec()), 5))
            })
            .await?;
        assert_eq!(out.statuses, "0e0");
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            (out.errors[0].index, out.errors[0].error.code()),
            (1, "DB_ERROR")
        );
        let got: Vec<&str> = out.then.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, [waiting.as_str()]);
        assert_eq!(
            json(&s.get_steps(&a).await?)?.as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(s.get_logs(&a).await?, "[]", "the refused log left nothing");
        let run_b = json(&s.get_run(&b).await?.ok_or("gone")?)?;
        assert_eq!(run_b["status"], "completed");
        // The same connection, at once: a good batch commits.
        let good = ops("fine");
        assert_eq!(s.flush(&good[1..2]).await?, "0");
        assert_eq!(
            json(&s.get_logs(&a).await?)?.as_array().map(Vec::len),
            Some(1)
        );
        TResult::Ok(())
    })
}
