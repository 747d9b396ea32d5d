//! The listen connection against the real server: notifications from other
//! connections arrive as notices, the listener recovers after its backend is
//! killed, and run events cross processes inline or by reference.

use std::time::Duration;

use super::{skip_without_server, TResult, TestSchema};
use crate::pg::{ListenOptions, PgListener, PgNotice, RemoteEvent, MAX_INLINE_PAYLOAD};
use crate::store::{TriggerItem, TriggerOutcome};

/// Fast timings for tests.
fn fast() -> ListenOptions {
    ListenOptions {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..ListenOptions::default()
    }
}

/// The next notice for which `pick` answers `Some`, skipping others; fails
/// after 10 s.
/// Two stores on the schema, the first listening (its first notice read)
/// and registered for run events (so the second publishes them).
async fn listening(
    db: &TestSchema,
) -> TResult<(crate::pg::PgStore, crate::pg::PgStore, PgListener)> {
    let here = db.store(1).await?;
    let there = db.store(1).await?;
    here.register_listener().await?;
    let mut l = here.listen(fast());
    assert_eq!(
        l.recv().await,
        Some(PgNotice::Listening { reconnect: false })
    );
    Ok((here, there, l))
}

async fn next<T>(l: &mut PgListener, mut pick: impl FnMut(&PgNotice) -> Option<T>) -> TResult<T> {
    let wait = async {
        while let Some(n) = l.recv().await {
            if let Some(v) = pick(&n) {
                return Ok(v);
            }
        }
        Err::<T, Box<dyn std::error::Error + Send + Sync>>("listener ended".into())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| "no matching notice within 10 s")?
}

/// Every notice that arrives within `d`.
async fn drain(l: &mut PgListener, d: Duration) -> Vec<PgNotice> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(n)) = tokio::time::timeout_at(end, l.recv()).await {
        out.push(n);
    }
    out
}

/// The next `count` run events `l` receives (packed ones unpacked).
async fn receive_events(l: &mut PgListener, count: usize) -> TResult<Vec<RemoteEvent>> {
    let mut got = Vec::new();
    while got.len() < count {
        got.extend(events(&[next(l, |n| Some(n.clone())).await?]));
    }
    Ok(got)
}

/// The events another process receives when `from` publishes `batch`.
fn published_by(from: &crate::pg::PgStore, batch: &[(&str, &str)]) -> Vec<RemoteEvent> {
    batch
        .iter()
        .map(|(r, j)| RemoteEvent {
            origin: from.owner().to_string(),
            run_id: r.to_string(),
            json: j.to_string(),
        })
        .collect()
}

fn events(notices: &[PgNotice]) -> Vec<RemoteEvent> {
    notices
        .iter()
        .filter_map(|n| match n {
            PgNotice::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn notifications_from_other_connections_arrive() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("listen")?;
    db.runtime().block_on(async {
        let (here, there, mut l) = listening(&db).await?;
        assert_ne!(l.backend_pid(), 0);

        // A plain NOTIFY on another connection.
        let raw = db.raw().await?;
        raw.batch_execute(&format!("NOTIFY {}, 'mail'", here.wake_channel()))
            .await?;
        assert_eq!(
            l.recv().await,
            Some(PgNotice::Wake {
                job: Some("mail".into())
            })
        );
        raw.batch_execute(&format!("NOTIFY {}", here.wake_channel()))
            .await?;
        assert_eq!(l.recv().await, Some(PgNotice::Wake { job: None }));

        // Another store's trigger wakes with its job; its cancel names the run.
        let item = TriggerItem {
            job_name: "report",
            input: "{}",
            idempotency_key: None,
            concurrency_key: None,
            coalesce: false,
            labels: "{}",
        };
        let TriggerOutcome::Created { id, .. } = there.trigger(&item).await? else {
            return Err("expected a new run".into());
        };
        assert_eq!(
            l.recv().await,
            Some(PgNotice::Wake {
                job: Some("report".into())
            })
        );
        there.cancel(&id).await?;
        let got = next(&mut l, |n| match n {
            PgNotice::Cancel { run_id } => Some(run_id.clone()),
            _ => None,
        })
        .await?;
        assert_eq!(got, id);

        // A rolled-back transaction notifies nobody; another schema's channel is not ours.
        raw.batch_execute(&format!(
            "BEGIN; NOTIFY {}, 'rolled'; ROLLBACK; NOTIFY durably_wake_other_schema, 'x'",
            here.wake_channel()
        ))
        .await?;
        assert_eq!(drain(&mut l, Duration::from_millis(300)).await, vec![]);
        TResult::Ok(())
    })
}

#[test]
fn the_listener_recovers_after_its_backend_is_terminated() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("relisten")?;
    db.runtime().block_on(async {
        let s = db.store(1).await?;
        let mut l = s.listen(fast());
        assert_eq!(
            l.recv().await,
            Some(PgNotice::Listening { reconnect: false })
        );
        let raw = db.raw().await?;
        for round in 0..2 {
            let pid = l.backend_pid();
            let killed: bool = raw
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .await?
                .get(0);
            assert!(killed, "round {round}: backend {pid} not terminated");
            let error = next(&mut l, |n| match n {
                PgNotice::Disconnected { error } => Some(error.clone()),
                _ => None,
            })
            .await?;
            assert!(!error.is_empty());
            assert_eq!(
                next(&mut l, |n| matches!(n, PgNotice::Listening { .. })
                    .then(|| n.clone()))
                .await?,
                PgNotice::Listening { reconnect: true }
            );
            assert_ne!(l.backend_pid(), pid, "a new connection");
            raw.batch_execute(&format!("NOTIFY {}, 'after-{round}'", s.wake_channel()))
                .await?;
            assert_eq!(
                l.recv().await,
                Some(PgNotice::Wake {
                    job: Some(format!("after-{round}"))
                })
            );
        }
        TResult::Ok(())
    })
}

#[test]
fn a_listener_keeps_retrying_while_the_server_refuses_and_stops_when_dropped() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("refuse")?;
    db.runtime().block_on(async {
        // A store whose listen connection cannot open (its role does not exist).
        let s = db.store(1).await?;
        let mut cfg = s.inner.config.clone();
        cfg.user("no_such_role_durably");
        let broken = s.with_listen_config(cfg);
        let mut l = broken.listen(fast());
        let mut errors = 0;
        while errors < 3 {
            match next(&mut l, |n| Some(n.clone())).await? {
                PgNotice::Disconnected { error } => {
                    assert!(error.contains("no_such_role_durably"), "{error}");
                    errors += 1;
                }
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
        assert_eq!(l.backend_pid(), 0);
        drop(l);
        TResult::Ok(())
    })
}

#[test]
fn run_events_cross_processes_inline_or_by_reference() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("events")?;
    db.runtime().block_on(async {
        let (here, there, mut l) = listening(&db).await?;

        // Sizes around the NOTIFY limit, counted in bytes (é is two).
        let header = format!("i{}\t{}\t", there.owner(), "run1").len();
        let fits = format!("\"{}\"", "x".repeat(MAX_INLINE_PAYLOAD - header - 2));
        let over = format!("\"{}\"", "x".repeat(MAX_INLINE_PAYLOAD - header - 1));
        let wide = format!("{{\"s\":\"{}\"}}", "é".repeat(6000)); // 12 000 bytes, 6 000 chars
        let big = format!(
            "{{\"type\":\"step:complete\",\"output\":\"{}\"}}",
            "y".repeat(100_000)
        );
        let small = r#"{"type":"run:start","runId":"run1","tab":"a\tb"}"#;
        let batch = [
            ("run1", small),
            ("run1", fits.as_str()),
            ("run1", over.as_str()),
            ("run1", wide.as_str()),
            ("run2", big.as_str()),
        ];
        there.publish_events(&batch).await?;
        assert_eq!(
            receive_events(&mut l, batch.len()).await?,
            published_by(&there, &batch),
            "in order, exactly as published"
        );
        let raw = db.raw().await?;
        let stored: i64 = raw
            .query_one(&format!("SELECT count(*) FROM {}.events", db.name()), &[])
            .await?
            .get(0);
        assert_eq!(stored, 3, "only the payloads over the limit are stored");

        // Own events are not delivered (the process emitted them locally) ...
        here.publish_events(&[("run3", r#"{"own":true}"#)]).await?;
        there
            .publish_events(&[("run3", r#"{"own":false}"#)])
            .await?;
        let e = next(&mut l, |n| match n {
            PgNotice::Event(e) => Some(e.clone()),
            _ => None,
        })
        .await?;
        assert_eq!(e.json, r#"{"own":false}"#);
        // ... unless asked for.
        let mut all = here.listen(ListenOptions {
            own_events: true,
            ..fast()
        });
        assert_eq!(
            all.recv().await,
            Some(PgNotice::Listening { reconnect: false })
        );
        here.publish_events(&[("run4", r#"{"own":true}"#)]).await?;
        let e = next(&mut all, |n| match n {
            PgNotice::Event(e) => Some(e.clone()),
            _ => None,
        })
        .await?;
        assert_eq!(
            (e.origin.as_str(), e.json.as_str()),
            (here.owner(), r#"{"own":true}"#)
        );
        drop(all);

        // A reference whose row is gone, and malformed payloads, are dropped.
        raw.batch_execute(&format!(
            "NOTIFY {ch}, 'rsomeone\trun5\t999999999'; NOTIFY {ch}, 'garbage'; \
             NOTIFY {ch}, 'rsomeone\trun5\tnot-a-number'; NOTIFY {ch}, 'isomeone\trun6\t{{}}'",
            ch = here.events_channel()
        ))
        .await?;
        let e = next(&mut l, |n| match n {
            PgNotice::Event(e) => Some(e.clone()),
            _ => None,
        })
        .await?;
        assert_eq!((e.run_id.as_str(), e.json.as_str()), ("run6", "{}"));

        // Stored events older than the retention go with the next large publish.
        raw.batch_execute(&format!(
            "UPDATE {}.events SET created_at = now() - interval '1 hour'",
            db.name()
        ))
        .await?;
        there.publish_events(&[("run7", big.as_str())]).await?;
        let left: i64 = raw
            .query_one(&format!("SELECT count(*) FROM {}.events", db.name()), &[])
            .await?
            .get(0);
        assert_eq!(left, 1);

        // A run id with a tab cannot be published (it would split the payload).
        let bad = there.publish_events(&[("a\tb", "{}")]).await;
        assert_eq!(super::code_of(bad), "VALIDATION_ERROR");
        TResult::Ok(())
    })
}

/// While a process does not want other processes' run events
/// (`set_remote_events(false)`: nothing in its JS listens), its listener drops
/// them, a by-reference one unread; wakes and cancels still arrive; turned
/// back on, events arrive again.
#[test]
fn unwanted_run_events_are_dropped_but_wakes_and_cancels_arrive() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("unwanted")?;
    db.runtime().block_on(async {
        let (here, there, mut l) = listening(&db).await?;
        assert!(here.remote_events(), "on by default");
        here.set_remote_events(false);
        let big = format!("\"{}\"", "z".repeat(MAX_INLINE_PAYLOAD));
        there
            .publish_events(&[("run1", "{}"), ("run2", big.as_str())])
            .await?;
        let raw = db.raw().await?;
        raw.batch_execute(&format!(
            "NOTIFY {}, 'mail'; NOTIFY {}, 'run3'",
            here.wake_channel(),
            here.cancel_channel()
        ))
        .await?;
        let got = drain(&mut l, Duration::from_millis(500)).await;
        assert_eq!(
            got,
            vec![
                PgNotice::Wake {
                    job: Some("mail".into())
                },
                PgNotice::Cancel {
                    run_id: "run3".into()
                },
            ]
        );

        here.set_remote_events(true);
        there.publish_events(&[("run4", "{}")]).await?;
        assert_eq!(
            receive_events(&mut l, 1).await?,
            published_by(&there, &[("run4", "{}")])
        );
        TResult::Ok(())
    })
}

/// Run events are published only while some process is registered for
/// them (schema v4's `listeners`): not before, not after the registration
/// expired or ended, and again once registered anew.
#[test]
fn run_events_are_published_only_while_a_listener_is_registered() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("registry")?;
    db.runtime().block_on(async {
        let here = db.store(1).await?;
        let there = db.store(1).await?;
        let mut l = here.listen(fast());
        assert_eq!(
            l.recv().await,
            Some(PgNotice::Listening { reconnect: false })
        );
        let raw = db.raw().await?;
        let published = |n: &str| [(n.to_string(), r#"{"type":"run:start"}"#.to_string())];
        let send = |n: &'static str| {
            let there = there.clone();
            async move {
                let ev = published(n);
                let refs: Vec<(&str, &str)> =
                    ev.iter().map(|(r, j)| (r.as_str(), j.as_str())).collect();
                there.publish_events(&refs).await
            }
        };

        // Nobody registered: nothing is sent (a stored event neither).
        send("run1").await?;
        let big = format!("\"{}\"", "b".repeat(MAX_INLINE_PAYLOAD));
        there.publish_events(&[("run2", big.as_str())]).await?;
        assert_eq!(
            events(&drain(&mut l, Duration::from_millis(300)).await),
            vec![]
        );

        here.register_listener().await?;
        assert_eq!(listener_rows(&raw, db.name()).await?, 1);
        send("run3").await?;
        there.publish_events(&[("run4", big.as_str())]).await?;
        let got = receive_events(&mut l, 2).await?;
        assert_eq!(
            got.iter().map(|e| e.run_id.as_str()).collect::<Vec<_>>(),
            ["run3", "run4"]
        );

        // An expired registration counts no more.
        raw.batch_execute(&format!(
            "UPDATE {}.listeners SET expires_at = now() - interval '1 second'",
            db.name()
        ))
        .await?;
        send("run5").await?;
        assert_eq!(
            events(&drain(&mut l, Duration::from_millis(300)).await),
            vec![]
        );

        // Ended (only once the events are not wanted), then registered anew.
        here.unregister_listener().await?;
        assert_eq!(
            listener_rows(&raw, db.name()).await?,
            1,
            "still wanted: kept"
        );
        here.set_remote_events(false);
        here.unregister_listener().await?;
        assert_eq!(listener_rows(&raw, db.name()).await?, 0);
        here.register_listener().await?;
        assert_eq!(
            listener_rows(&raw, db.name()).await?,
            0,
            "not wanted: not registered"
        );
        here.set_remote_events(true);
        here.register_listener().await?;
        assert_eq!(
            listener_rows(&raw, db.name()).await?,
            1,
            "the expired row was replaced"
        );
        send("run6").await?;
        assert_eq!(receive_events(&mut l, 1).await?[0].run_id, "run6");
        TResult::Ok(())
    })
}

/// The rows of the schema's `listeners` table.
async fn listener_rows(raw: &tokio_postgres::Client, schema: &str) -> TResult<i64> {
    let sql = format!("SELECT count(*) FROM {schema}.listeners");
    Ok(raw.query_one(&sql, &[]).await?.get(0))
}

/// A registration waits for every publish that read the registrations
/// without it (the table's ACCESS EXCLUSIVE lock): once registered, an event
/// not sent to this process was committed before, so a read made then sees
/// its effect.
#[test]
fn a_registration_waits_for_publishes_that_did_not_see_it() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("regwait")?;
    db.runtime().block_on(async {
        let here = db.store(1).await?;
        let raw = db.raw().await?;
        // A publish in flight: it read `listeners` and has not committed.
        raw.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM {}.listeners WHERE expires_at > now()",
            db.name()
        ))
        .await?;
        let task = tokio::spawn({
            let here = here.clone();
            async move { here.register_listener().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !task.is_finished(),
            "registered while a publish was in flight"
        );
        raw.batch_execute("COMMIT").await?;
        tokio::time::timeout(Duration::from_secs(5), task).await???;
        TResult::Ok(())
    })
}

/// The engine hears one error per outage: the retries while the server
/// refuses are not reported again, and the next outage is (issue 16: the
/// dropped listen connection reported `worker:error` on every try).
#[test]
fn one_reported_error_per_outage() {
    use crate::store::Notice;
    let mut o = crate::pg::store_impl::Outage::default();
    let down = |i: u32| PgNotice::Disconnected {
        error: format!("try {i}"),
    };
    let mut heard = Vec::new();
    let seq = [
        PgNotice::Listening { reconnect: false },
        down(1),
        down(2),
        down(3),
        PgNotice::Listening { reconnect: true },
        PgNotice::Wake { job: None },
        down(4),
        down(5),
    ];
    for n in seq {
        heard.extend(o.notice(n));
    }
    assert_eq!(
        heard,
        vec![
            Notice::Poll,
            Notice::Error("try 1".into()),
            Notice::Poll,
            Notice::Wake,
            Notice::Error("try 4".into()),
        ]
    );
}

/// Through the store interface the engine uses: a listen connection the
/// server keeps refusing is retried (several attempts in 1.6 s with the
/// default backoff) but reported once.
#[test]
fn a_refused_listen_connection_is_reported_once_through_the_store() -> TResult {
    use crate::store::{Notice, Store};
    skip_without_server!();
    let db = TestSchema::new("outage")?;
    db.runtime().block_on(async {
        let s = db.store(1).await?;
        let mut cfg = s.inner.config.clone();
        cfg.user("no_such_role_durably");
        let broken = s.with_listen_config(cfg);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let guard = Store::listen(
            &broken,
            Box::new(move |n: Notice| {
                let _ = tx.send(n);
            }),
        )
        .ok_or("no listener")?;
        tokio::time::sleep(Duration::from_millis(1600)).await;
        drop(guard);
        let mut heard = Vec::new();
        while let Ok(n) = rx.try_recv() {
            heard.push(n);
        }
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert!(
            matches!(&heard[0], Notice::Error(e) if e.contains("no_such_role_durably")),
            "{heard:?}"
        );
        TResult::Ok(())
    })
}

/// A publish packs consecutive events into as few notifications as fit
/// (`m`), in order; a lone event stays inline (`i`); an event with a newline
/// is sent alone; one over the limit is stored. No payload exceeds the limit.
#[test]
fn a_burst_of_events_is_packed_into_few_notifications() {
    use crate::pg::events::{pack, Piece};
    let owner = "123:01ABC";
    let jsons: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"type":"step:complete","runId":"r{i}","tab":"a\tb"}}"#))
        .collect();
    let mut burst: Vec<(&str, &str)> = jsons.iter().map(|j| ("run", j.as_str())).collect();
    let newline = "{\n\"pretty\": true\n}";
    let big = format!("\"{}\"", "x".repeat(MAX_INLINE_PAYLOAD));
    burst.insert(100, ("run", newline));
    burst.insert(150, ("run", big.as_str()));
    let pieces = pack(owner, &burst);
    let payloads: Vec<&str> = pieces.iter().filter_map(Piece::payload).collect();
    assert!(payloads.iter().all(|p| p.len() <= MAX_INLINE_PAYLOAD));
    assert!(
        pieces.len() < 20,
        "{} notifications for {} events",
        pieces.len(),
        burst.len()
    );
    // Unpacked again, in order: every event exactly once.
    let mut back: Vec<(String, String)> = Vec::new();
    for piece in &pieces {
        match piece {
            Piece::Store(run, json) => back.push((run.to_string(), json.to_string())),
            Piece::Notify(p) if p.starts_with('m') => {
                let (origin, lines) = p[1..].split_once('\n').unwrap_or_default();
                assert_eq!(origin, owner);
                for line in lines.split('\n') {
                    let (run, json) = line.split_once('\t').unwrap_or_default();
                    back.push((run.to_string(), json.to_string()));
                }
            }
            Piece::Notify(p) => {
                let mut f = p[1..].splitn(3, '\t');
                assert_eq!((&p[..1], f.next()), ("i", Some(owner)));
                let (run, json) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
                back.push((run.to_string(), json.to_string()));
            }
        }
    }
    let want: Vec<(String, String)> = burst
        .iter()
        .map(|(r, j)| (r.to_string(), j.to_string()))
        .collect();
    assert_eq!(back, want);
    assert!(matches!(&pieces[..], [.., Piece::Notify(_)]));
    // A lone event: the plain inline form.
    let one = pack(owner, &[("run", "{}")]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].payload(), Some("i123:01ABC\trun\t{}"));
}

/// A burst published at once arrives whole and in order through the packed
/// notifications, with the events around it that cannot be packed.
#[test]
fn a_packed_burst_of_events_arrives_in_order() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("burst")?;
    db.runtime().block_on(async {
        let (here, there, mut l) = listening(&db).await?;
        let jsons: Vec<String> = (0..120)
            .map(|i| format!(r#"{{"type":"step:start","stepIndex":{i}}}"#))
            .collect();
        let big = format!("\"{}\"", "y".repeat(20_000));
        let mut batch: Vec<(&str, &str)> = jsons.iter().map(|j| ("run1", j.as_str())).collect();
        batch.insert(40, ("run2", "{\n}"));
        batch.insert(80, ("run3", big.as_str()));
        there.publish_events(&batch).await?;
        assert_eq!(
            receive_events(&mut l, batch.len()).await?,
            published_by(&there, &batch)
        );
        // Own packed events are left out too.
        here.publish_events(&batch[..10]).await?;
        there.publish_events(&[("run4", "{}")]).await?;
        let e = next(&mut l, |n| match n {
            PgNotice::Event(e) => Some(e.clone()),
            _ => None,
        })
        .await?;
        assert_eq!(e.run_id, "run4");
        TResult::Ok(())
    })
}

#[test]
fn queued_events_go_with_the_next_flush_else_with_the_publisher_in_order() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("evflush")?;
    db.runtime().block_on(async {
        let (_here, there, mut l) = listening(&db).await?;
        let ghost = [crate::store::FlushOp::Release {
            run: "01JB0000000000000000000000".into(),
            generation: 1,
        }];
        let owned = |batch: &[(&str, &str)]| -> Vec<(String, String)> {
            batch
                .iter()
                .map(|(r, j)| (r.to_string(), j.to_string()))
                .collect()
        };

        // A flush sends what is queued in its round trip (its op is lost: a
        // run nobody holds), leaving nothing for the publisher.
        let first = [("run1", r#"{"n":1}"#), ("run1", r#"{"n":2}"#)];
        there.queue_events(owned(&first));
        assert!(there.events_queued());
        assert_eq!(there.flush(&ghost).await?, "l");
        assert!(!there.events_queued());
        assert_eq!(
            receive_events(&mut l, 2).await?,
            published_by(&there, &first)
        );

        // While a publish is under way a flush leaves them queued; the
        // publisher sends them next, with what queued up meanwhile, in order.
        let second = [("run2", r#"{"n":3}"#), ("run2", r#"{"n":4}"#)];
        there.queue_events(owned(&second[..1]));
        {
            let _publishing = there.inner.publishing.lock().await;
            assert_eq!(there.flush(&ghost).await?, "l");
            assert!(there.events_queued());
        }
        there.queue_events(owned(&second[1..]));
        there.publish_queued().await?;
        assert!(!there.events_queued());
        assert_eq!(
            receive_events(&mut l, 2).await?,
            published_by(&there, &second)
        );

        // A batch that claims after its ops sends them with its COMMIT (the
        // round trip after the claim), not the publisher.
        let fourth = [("run4", r#"{"n":6}"#), ("run4", r#"{"n":7}"#)];
        there.queue_events(owned(&fourth));
        let jobs: std::sync::Arc<[String]> = std::sync::Arc::from(vec!["job".to_string()]);
        let out = there
            .flush_then_claim(&ghost, |_| Some((jobs.clone(), 1)))
            .await?;
        assert_eq!(out.statuses, "l");
        assert!(!there.events_queued());
        assert_eq!(
            receive_events(&mut l, 2).await?,
            published_by(&there, &fourth)
        );

        // One too large for a NOTIFY (stored, sent by reference) keeps the
        // whole group for the publisher, whose transaction stores it.
        let big = format!("\"{}\"", "x".repeat(MAX_INLINE_PAYLOAD));
        let third = [("run3", r#"{"n":5}"#), ("run3", big.as_str())];
        there.queue_events(owned(&third));
        assert_eq!(there.flush(&ghost).await?, "l");
        assert!(there.events_queued());
        there.publish_queued().await?;
        assert_eq!(
            receive_events(&mut l, 2).await?,
            published_by(&there, &third)
        );
        TResult::Ok(())
    })
}

/// Wake-ups turned off (a worker with no free slot): the listen connection
/// stops listening on the wake channel, so none arrives (cancels still do);
/// turned on again, it listens and announces `Resumed` (the worker claims
/// once for what it missed), and wake-ups arrive again. Setting the same
/// value twice changes nothing.
#[test]
fn wakes_stop_while_unwanted_and_resume_with_a_notice() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("wakes")?;
    db.runtime().block_on(async {
        let (here, _there, mut l) = listening(&db).await?;
        let raw = db.raw().await?;
        here.set_wakes_wanted(false);
        here.set_wakes_wanted(false);
        // (the UNLISTEN is made before the next notice is read: wait for it)
        let unlistened = async {
            loop {
                let n: i64 = raw
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 \
                         AND query LIKE 'UNLISTEN%'",
                        &[&l.backend_pid()],
                    )
                    .await?
                    .get(0);
                if n > 0 {
                    return TResult::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), unlistened).await??;
        raw.batch_execute(&format!(
            "NOTIFY {}, 'missed'; NOTIFY {}, 'run1'",
            here.wake_channel(),
            here.cancel_channel()
        ))
        .await?;
        assert_eq!(
            drain(&mut l, Duration::from_millis(300)).await,
            [PgNotice::Cancel {
                run_id: "run1".into()
            }],
            "no wake-up while unwanted"
        );
        here.set_wakes_wanted(true);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), l.recv()).await?,
            Some(PgNotice::Resumed)
        );
        raw.batch_execute(&format!("NOTIFY {}, 'mail'", here.wake_channel()))
            .await?;
        assert_eq!(
            drain(&mut l, Duration::from_millis(300)).await,
            [PgNotice::Wake {
                job: Some("mail".into())
            }]
        );
        TResult::Ok(())
    })
}

/// A worker wants wake-ups only while it has a free slot: none while every
/// slot holds a run (it could only ignore them), again as soon as one is
/// freed (see `PgStore::set_wakes_wanted`).
#[test]
fn a_worker_with_every_slot_taken_wants_no_wakes() -> TResult {
    use std::sync::Arc;

    use crate::worker::{Worker, WorkerConfig};

    skip_without_server!();
    let db = TestSchema::new("fullwakes")?;
    db.runtime().block_on(async {
        let store = Arc::new(db.store(2).await?);
        for _ in 0..2 {
            store.trigger(&super::item("job")).await?;
        }
        let runs = Arc::new(Runs::default());
        let cfg = WorkerConfig {
            max_concurrent: 2,
            ..WorkerConfig::default()
        };
        let worker = Worker::new(
            store.clone(),
            cfg,
            runs.clone(),
            tokio::runtime::Handle::current(),
        );
        worker.set_jobs(vec![("job".into(), None)]);
        assert!(!store.wakes_wanted(), "the claim loop is not started");
        worker.start();
        let full = async {
            while crate::store::lock(&runs.0).len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), full).await?;
        assert!(!store.wakes_wanted(), "every slot taken");
        let first = crate::store::lock(&runs.0)[0].clone();
        worker.release(&first.id, first.generation);
        assert!(store.wakes_wanted(), "a slot free");
        worker.stop();
        assert!(!store.wakes_wanted(), "the claim loop stopped");
        worker.close();
        TResult::Ok(())
    })
}

/// A plain connection listening on `channel`: the payloads it receives.
async fn raw_listener(
    db: &TestSchema,
    channel: &str,
) -> TResult<(
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
)> {
    use tokio_postgres::AsyncMessage;
    let url = std::env::var("DURABLY_TEST_PG_URL")?;
    let (client, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    let _ = db;
    Ok((client, rx))
}

/// The owners registered for wake-ups, live or not.
async fn wakers(raw: &tokio_postgres::Client, db: &TestSchema) -> TResult<Vec<String>> {
    let rows = raw
        .query(
            &format!("SELECT owner FROM {}.wakers ORDER BY owner", db.name()),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Waits (up to 10 s) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F) -> TResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = TResult<bool>>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await? {
        if tokio::time::Instant::now() > end {
            return Err(format!("not within 10 s: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Claims `n` runs of `job` (each with a concurrency key) and ends them in
/// one flush (completed, or failed with `fail`): whether a wake-up was
/// heard within 500 ms.
async fn end_keyed(
    s: &crate::pg::PgStore,
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    job: &str,
    n: usize,
    fail: bool,
) -> TResult<bool> {
    use crate::store::FlushOp;
    let runs = s.claim(&[job.to_string()], n).await?;
    assert_eq!(runs.len(), n, "claimable runs of {job}");
    let at = crate::store::iso(std::time::SystemTime::now());
    let ops: Vec<FlushOp> = runs
        .iter()
        .map(|run| {
            assert!(run.json.contains("\"concurrencyKey\":\""), "{}", run.json);
            let (r, generation, at) = (run.id.clone(), run.generation, at.clone());
            if fail {
                FlushOp::Fail {
                    run: r,
                    generation,
                    error: "boom".into(),
                    stack: None,
                    progress: None,
                    at,
                    step_index: None,
                }
            } else {
                FlushOp::Complete {
                    run: r,
                    generation,
                    output: None,
                    progress: None,
                    at,
                    step_index: None,
                }
            }
        })
        .collect();
    assert_eq!(s.flush(&ops).await?, "0".repeat(n));
    let got = tokio::time::timeout(Duration::from_millis(500), heard.recv()).await;
    Ok(got.is_ok())
}

/// [`end_keyed`] for a completion, a failure and a group of four
/// completions: each sends a wake-up when `wanted`, else none.
async fn ends(
    s: &crate::pg::PgStore,
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    wanted: bool,
) -> TResult {
    for (job, n, fail) in [("one", 1, false), ("fail", 1, true), ("group", 4, false)] {
        let woke = end_keyed(s, heard, job, n, fail).await?;
        assert_eq!(woke, wanted, "{job}: a wake-up sent: {woke}");
    }
    Ok(())
}

/// The end of a run with a concurrency key (a completion, a failure, a
/// group of completions in one statement) wakes other workers only while
/// some process is registered for wake-ups (schema v5's `wakers`): a
/// listening process registers, and ends its registration when it wants
/// no wake-ups; an expired registration (a process that died) does not
/// count, and the next registration deletes it.
#[test]
fn a_keyed_end_wakes_only_while_some_process_wants_wakes() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("wakers")?;
    db.runtime().block_on(async {
        let s = db.store(2).await?;
        let raw = db.raw().await?;
        let (_c, mut heard) = raw_listener(&db, s.wake_channel()).await?;
        let keys = ["k1", "k2", "k3", "k4"];
        for job in ["one", "fail", "group"] {
            for round in 0..3 {
                for k in keys {
                    // (a key's runs of several jobs would queue behind each other)
                    let (key, ck) = (format!("{job}{round}{k}"), format!("{job}{k}"));
                    s.trigger(&TriggerItem {
                        concurrency_key: Some(&ck),
                        idempotency_key: Some(&key),
                        ..super::item(job)
                    })
                    .await?;
                }
            }
        }
        // (the triggers' own wake-ups)
        tokio::time::sleep(Duration::from_millis(200)).await;
        while heard.try_recv().is_ok() {}
        // A registration that expired (its process died) does not count.
        raw.batch_execute(&format!(
            "INSERT INTO {}.wakers VALUES ('dead:1', now() - interval '1 second')",
            db.name()
        ))
        .await?;
        ends(&s, &mut heard, false).await?;
        let w = db.store(1).await?;
        let mut l = w.listen(fast());
        assert_eq!(
            l.recv().await,
            Some(PgNotice::Listening { reconnect: false })
        );
        assert_eq!(
            wakers(&raw, &db).await?,
            [w.owner()],
            "the dead one deleted"
        );
        ends(&s, &mut heard, true).await?;
        next(&mut l, |n| matches!(n, PgNotice::Wake { .. }).then_some(())).await?;
        w.set_wakes_wanted(false);
        until("the registration ended", || async {
            Ok(wakers(&raw, &db).await?.is_empty())
        })
        .await?;
        ends(&s, &mut heard, false).await?;
        TResult::Ok(())
    })
}

/// The race a registration for wake-ups closes: a keyed run's end, not yet
/// committed, that read `wakers` before a worker registered sends no
/// wake-up, and the worker's claim made when its slot freed ran before that
/// commit and did not see the successor. The registration waits for that
/// commit (the table's ACCESS EXCLUSIVE lock) and the worker claims once
/// after it (`Resumed`): the successor is claimed at once, not at the next
/// poll (an hour away here). Without the lock, or without the claim after
/// the registration, the successor stays pending and this fails.
#[test]
fn a_worker_that_registers_claims_what_an_end_it_missed_made_claimable() -> TResult {
    use std::sync::Arc;

    use crate::store::{Notice, Store};
    use crate::worker::{Worker, WorkerConfig};

    skip_without_server!();
    let db = TestSchema::new("wakerace")?;
    db.runtime().block_on(async {
        let store = Arc::new(db.store(2).await?);
        let other = db.store(2).await?;
        let raw = db.raw().await?;
        let x = match store.trigger(&super::item("job")).await? {
            TriggerOutcome::Created { id, .. } => id,
            o => return Err(format!("{o:?}").into()),
        };
        let runs = Arc::new(Runs::default());
        let cfg = WorkerConfig {
            max_concurrent: 1,
            polling_interval: Duration::from_secs(3600),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(
            store.clone(),
            cfg,
            runs.clone(),
            tokio::runtime::Handle::current(),
        );
        // The engine's wiring of the listen connection to the worker.
        let w = worker.clone_handle();
        let _listening = Store::listen(
            &*store,
            Box::new(move |n| {
                if matches!(n, Notice::Wake | Notice::Poll) {
                    w.wake()
                }
            }),
        );
        worker.set_jobs(vec![("job".into(), None)]);
        worker.start();
        let claimed = |id: String| {
            let runs = runs.clone();
            move || {
                let hit = crate::store::lock(&runs.0).iter().any(|r| r.id == id);
                async move { TResult::Ok(hit) }
            }
        };
        until("x claimed", claimed(x.clone())).await?;
        let x_gen = crate::store::lock(&runs.0)[0].generation;
        until("the busy worker unregistered", || async {
            Ok(wakers(&raw, &db).await?.is_empty())
        })
        .await?;
        // Another process runs r1; r2 waits behind it on the key.
        let keyed = |id: &'static str| TriggerItem {
            concurrency_key: Some("k"),
            idempotency_key: Some(id),
            ..super::item("job")
        };
        other.trigger(&keyed("r1")).await?;
        let r2 = match other.trigger(&keyed("r2")).await? {
            TriggerOutcome::Created { id, .. } => id,
            o => return Err(format!("{o:?}").into()),
        };
        let r1 = other
            .claim(&["job".to_string()], 1)
            .await?
            .pop()
            .ok_or("r1 not claimable")?;
        // r1's end, in a transaction left open: it reads `wakers` (empty).
        let ender = db.raw().await?;
        ender
            .batch_execute(&format!("SET search_path TO {}; BEGIN", db.name()))
            .await?;
        let row = ender
            .query_one(
                crate::pg::flush::COMPLETE_SQL,
                &[
                    &r1.id,
                    &r1.generation,
                    &"1",
                    &None::<&str>,
                    &store.wake_channel(),
                ],
            )
            .await?;
        assert_eq!(row.get::<_, i64>(0), 1, "r1 completed (uncommitted)");
        // The slot frees: a claim at once (it cannot see r2 yet) and the
        // registration, which waits for r1's end to commit.
        worker.release(&x, x_gen);
        let waiting = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{}' AND c.relname = 'wakers' AND NOT l.granted",
            db.name()
        );
        let end = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < end {
            if raw.query_one(&waiting, &[]).await?.get::<_, i64>(0) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // (a registration that did not wait: the next step shows its harm)
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !crate::store::lock(&runs.0).iter().any(|r| r.id == r2),
            "r2 cannot be claimed before r1's end commits"
        );
        ender.batch_execute("COMMIT").await?;
        until("r2 claimed after the registration", claimed(r2.clone())).await?;
        worker.close();
        TResult::Ok(())
    })
}

/// A registration for wake-ups is renewed by the listen connection's
/// check; one found lapsed (the connection was stuck past its life, and
/// keyed ends meanwhile sent no wake-up) is made anew under the lock and
/// announced as `Resumed`, so the worker claims what it missed.
#[test]
fn a_lapsed_wake_registration_is_made_anew_and_claimed_for() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("lapsed")?;
    db.runtime().block_on(async {
        let raw = db.raw().await?;
        let w = db.store(1).await?;
        let mut l = w.listen(ListenOptions {
            ping_interval: Duration::from_millis(100),
            ..fast()
        });
        assert_eq!(
            l.recv().await,
            Some(PgNotice::Listening { reconnect: false })
        );
        let expires = format!(
            "SELECT expires_at > now() + interval '30 seconds' FROM {}.wakers WHERE owner = $1",
            db.name()
        );
        // Renewed while alive: still registered, nothing announced.
        raw.batch_execute(&format!(
            "UPDATE {}.wakers SET expires_at = now() + interval '1 second'",
            db.name()
        ))
        .await?;
        until("renewed", || async {
            Ok(raw
                .query_one(&expires, &[&w.owner()])
                .await?
                .get::<_, bool>(0))
        })
        .await?;
        assert_eq!(drain(&mut l, Duration::from_millis(300)).await, []);
        // Lapsed: made anew and announced.
        raw.batch_execute(&format!(
            "UPDATE {}.wakers SET expires_at = now() - interval '1 second'",
            db.name()
        ))
        .await?;
        next(&mut l, |n| (*n == PgNotice::Resumed).then_some(())).await?;
        assert!(raw
            .query_one(&expires, &[&w.owner()])
            .await?
            .get::<_, bool>(0));
        TResult::Ok(())
    })
}

/// The runs a test worker was handed (its sink; lost runs and errors are not
/// what these tests look at).
#[derive(Default)]
struct Runs(std::sync::Mutex<Vec<crate::store::ClaimedRun>>);

impl crate::worker::Sink for Runs {
    fn runs(&self, runs: Vec<crate::store::ClaimedRun>) {
        crate::store::lock(&self.0).extend(runs);
    }
    fn lost(&self, _id: &str, _reason: crate::worker::LostReason) {}
    fn error(&self, _context: &'static str, _err: &crate::error::Error) {}
}
