//! A batch of writes whose session the server ends (issue 16): sent again
//! on a fresh connection only when the server provably applied none of it.
//! The server ends its own session from a trigger (`pg_terminate_backend`
//! of itself, on the first firing only; a sequence, which no rollback
//! undoes, counts the firings, i.e. how many times the batch was sent).

use std::time::SystemTime;

use serde_json::value::RawValue;

use super::{item, skip_without_server, TResult, TestSchema};
use crate::store::{FlushOp, TriggerOutcome};

/// Where the trigger ends the session.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// While the step row is written (a `BEFORE` row trigger): before the
    /// statement completes.
    InStatement,
    /// At commit (a deferred constraint trigger): after the server reported
    /// the statement complete, before the commit is durable.
    AtCommit,
}

/// Installs the trigger of `cut` on `schema`'s steps (replacing any) and
/// resets the count of firings.
async fn arm(raw: &tokio_postgres::Client, schema: &str, cut: Cut) -> TResult {
    let (kind, when) = match cut {
        Cut::InStatement => ("TRIGGER", "BEFORE INSERT OR UPDATE ON steps FOR EACH ROW"),
        Cut::AtCommit => (
            "CONSTRAINT TRIGGER",
            "AFTER INSERT OR UPDATE ON steps DEFERRABLE INITIALLY DEFERRED FOR EACH ROW",
        ),
    };
    raw.batch_execute(&format!(
        "SET search_path = {schema};
         DROP TRIGGER IF EXISTS cut_session ON steps;
         DROP SEQUENCE IF EXISTS firings;
         CREATE SEQUENCE firings;
         CREATE OR REPLACE FUNCTION cut_session() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('{schema}.firings') = 1 THEN
             PERFORM pg_terminate_backend(pg_backend_pid());
             PERFORM pg_sleep(5); -- the termination is handled here: FATAL
           END IF;
           RETURN NEW;
         END $$;
         CREATE {kind} cut_session {when} EXECUTE FUNCTION cut_session();"
    ))
    .await?;
    Ok(())
}

async fn firings(raw: &tokio_postgres::Client, schema: &str) -> TResult<i64> {
    let row = raw
        .query_one(&format!("SELECT last_value FROM {schema}.firings"), &[])
        .await?;
    Ok(row.get(0))
}

async fn steps(raw: &tokio_postgres::Client, schema: &str, run: &str) -> TResult<Vec<String>> {
    let rows = raw
        .query(
            &format!("SELECT name FROM {schema}.steps WHERE run_id = $1 ORDER BY name"),
            &[&run],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[test]
fn a_batch_is_sent_again_only_when_the_session_ended_before_it_could_commit() -> TResult {
    skip_without_server!();
    let db = TestSchema::new("sessions")?;
    db.runtime().block_on(async {
        // One connection: a lost one put back in the pool would be the next call's.
        let s = db.store(1).await?;
        let raw = db.raw().await?;
        let schema = db.name().to_string();
        let TriggerOutcome::Created { id, .. } = s.trigger(&item("job")).await? else {
            return Err("not created".into());
        };
        let run = s
            .claim(&["job".to_string()], 1)
            .await?
            .pop()
            .ok_or("no claim")?;
        let now = crate::store::iso(SystemTime::now());
        let one = RawValue::from_string("1".into())?;
        let step = |name: &str| FlushOp::Step {
            run: id.clone(),
            generation: run.generation,
            name: name.into(),
            index: 0,
            status: "completed".into(),
            output: Some(&*one),
            error: None,
            stack: None,
            started_at: now.clone(),
            completed_at: Some(now.clone()),
            progress: None,
        };
        let progress = || FlushOp::Progress {
            run: id.clone(),
            generation: run.generation,
            progress: Some(&*one),
        };

        // Ended inside the statement: nothing ran, sent again (2 firings), written once.
        arm(&raw, &schema, Cut::InStatement).await?;
        assert_eq!(s.flush(&[step("alone")]).await?, "0", "a statement alone");
        assert_eq!(firings(&raw, &schema).await?, 2);
        arm(&raw, &schema, Cut::InStatement).await?;
        assert_eq!(
            s.flush(&[step("piped"), progress()]).await?,
            "00",
            "a piped transaction"
        );
        assert_eq!(firings(&raw, &schema).await?, 2);
        assert_eq!(steps(&raw, &schema, &id).await?, ["alone", "piped"]);

        // Ended at commit: whether it committed is unknown to the client, so
        // the batch is not sent again (1 firing) and the call fails.
        for (name, ops) in [
            ("late-alone", vec![step("late-alone")]),
            ("late-piped", vec![step("late-piped"), progress()]),
        ] {
            arm(&raw, &schema, Cut::AtCommit).await?;
            let err = s
                .flush(&ops)
                .await
                .err()
                .ok_or(format!("{name}: no error"))?;
            assert_eq!(err.code(), "DB_ERROR", "{name}: {err}");
            assert!(
                err.to_string().contains("terminating connection"),
                "{name}: {err}"
            );
            assert_eq!(firings(&raw, &schema).await?, 1, "{name}: sent once");
        }
        // (here the server rolled back: the FATAL came before the commit record)
        assert_eq!(steps(&raw, &schema, &id).await?, ["alone", "piped"]);

        // The store goes on with fresh connections.
        raw.batch_execute(&format!("DROP TRIGGER cut_session ON {schema}.steps"))
            .await?;
        assert_eq!(s.flush(&[step("after"), progress()]).await?, "00");
        TResult::Ok(())
    })
}
