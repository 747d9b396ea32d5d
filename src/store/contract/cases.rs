//! The cases of the contract suite, generic over the backend (see the
//! `contract` module docs for the scenes they play).

use serde_json::{json, Value};

use super::snapshot::Row;
use super::{
    col_json, col_text, CResult, ContractStore, Outcome, Snapshot, Workers, Write, WriteKind,
};

/// Job of the run the cases fight over.
pub(crate) const JOB: &str = "job";
/// Job of the bystander run (held by B under generation 1 too).
pub(crate) const BYSTANDER: &str = "bystander";
/// The step A commits before it loses the run (B replays it).
pub(crate) const FIRST_STEP: &str = "first";
/// The step B commits after it reclaims the run.
const SECOND_STEP: &str = "second";
/// The step the [`WriteKind::StepNew`] writes add.
const NEXT_STEP: &str = "next";

type Open<S> = fn() -> CResult<Workers<S>>;

/// The write of `kind` on `run` under `generation`, its values marked with
/// `who` (so a stale write that got through is recognisable).
pub(crate) fn write_of(kind: WriteKind, run: &str, generation: i64, who: &str) -> Write {
    let run = run.to_string();
    let mark = json!({ "by": who, "generation": generation });
    let progress = json!({ "current": generation, "message": who });
    match kind {
        WriteKind::StepNew => Write::Step {
            run,
            generation,
            name: NEXT_STEP.into(),
            index: 2,
            output: mark,
            progress: Some(progress),
        },
        WriteKind::StepOverwrite => Write::Step {
            run,
            generation,
            name: FIRST_STEP.into(),
            index: 0,
            output: mark,
            progress: None,
        },
        WriteKind::Complete => Write::Complete {
            run,
            generation,
            output: mark,
            progress: Some(progress),
        },
        WriteKind::Fail => Write::Fail {
            run,
            generation,
            error: format!("failed by {who}"),
            progress: Some(progress),
        },
        WriteKind::TimeoutFail => Write::TimeoutFail {
            run,
            generation,
            error: format!("timed out ({who})"),
        },
        WriteKind::Progress => Write::Progress {
            run,
            generation,
            progress,
        },
        WriteKind::Log => Write::Log {
            run,
            generation,
            message: format!("log by {who}"),
        },
        WriteKind::Release => Write::Release { run, generation },
        WriteKind::Heartbeat => Write::Heartbeat { run, generation },
    }
}

fn step(run: &str, generation: i64, name: &str, index: i64, who: &str) -> Write {
    Write::Step {
        run: run.to_string(),
        generation,
        name: name.to_string(),
        index,
        output: json!({ "by": who, "generation": generation }),
        progress: Some(json!({ "current": index + 1 })),
    }
}

fn run_of(w: &Write) -> &str {
    match w {
        Write::Step { run, .. }
        | Write::Complete { run, .. }
        | Write::Fail { run, .. }
        | Write::TimeoutFail { run, .. }
        | Write::Progress { run, .. }
        | Write::Log { run, .. }
        | Write::Release { run, .. }
        | Write::Heartbeat { run, .. } => run,
    }
}

/// A fresh database where A holds the run and B the bystander.
struct Scene<S> {
    w: Workers<S>,
    run: String,
    bystander: String,
}

/// A claims the run (generation 1) and commits its first step and a log; B
/// claims the bystander (also generation 1) and commits a step there.
fn held_by_a<S: ContractStore>(open: Open<S>) -> CResult<Scene<S>> {
    let w = open()?;
    let run = w.a.create_run(JOB)?;
    let bystander = w.b.create_run(BYSTANDER)?;
    assert_eq!(w.a.claim_one(JOB)?, (run.clone(), 1), "A's claim");
    assert_eq!(
        w.b.claim_one(BYSTANDER)?,
        (bystander.clone(), 1),
        "B's claim of the bystander"
    );
    accepted_plain(&w.a, &step(&run, 1, FIRST_STEP, 0, "A"))?;
    accepted_plain(&w.a, &write_of(WriteKind::Log, &run, 1, "A"))?;
    accepted_plain(&w.b, &step(&bystander, 1, FIRST_STEP, 0, "B"))?;
    Ok(Scene { w, run, bystander })
}

/// B's stale recovery puts A's run back to `pending`.
fn lose<S: ContractStore>(s: &Scene<S>) -> CResult {
    assert_eq!(s.w.b.recover_stale(JOB)?, 1, "stale recovery of A's run");
    Ok(())
}

/// B claims the run (generation 2), replays A's step and commits a second
/// step, a log and progress.
fn reclaim<S: ContractStore>(s: &Scene<S>) -> CResult {
    assert_eq!(s.w.b.claim_one(JOB)?, (s.run.clone(), 2), "B's claim");
    accepted_plain(&s.w.b, &step(&s.run, 2, SECOND_STEP, 1, "B"))?;
    accepted_plain(&s.w.b, &write_of(WriteKind::Log, &s.run, 2, "B"))?;
    accepted_plain(&s.w.b, &write_of(WriteKind::Progress, &s.run, 2, "B"))?;
    Ok(())
}

fn accepted_plain<S: ContractStore>(by: &S, w: &Write) -> CResult {
    match by.write(w)? {
        Outcome::Ok => Ok(()),
        other => Err(format!("setup write {w:?} answered {other:?}").into()),
    }
}

/// `by` issues `w`: the store must answer `want` and change nothing at all.
fn refused<S: ContractStore>(
    by: &S,
    observer: &S,
    w: &Write,
    want: Outcome,
    when: &str,
) -> CResult {
    let before = observer.snapshot()?;
    let got = by.write(w)?;
    let after = observer.snapshot()?;
    if got != want {
        return Err(format!("{when}: {w:?} answered {got:?}, expected {want:?}").into());
    }
    let diff = before.diff(&after);
    if !diff.is_empty() {
        return Err(format!(
            "{when}: the refused {w:?} changed the database:\n{}",
            diff.join("\n")
        )
        .into());
    }
    Ok(())
}

/// `by` issues `w`: the store must accept it, apply it, and touch no other run.
fn accepted<S: ContractStore>(by: &S, observer: &S, w: &Write, when: &str) -> CResult {
    let before = observer.snapshot()?;
    let got = by.write(w)?;
    let after = observer.snapshot()?;
    if got != Outcome::Ok {
        return Err(format!("{when}: {w:?} answered {got:?}, expected Ok").into());
    }
    let run = run_of(w);
    let others = before.without_run(run).diff(&after.without_run(run));
    if !others.is_empty() {
        return Err(format!("{when}: {w:?} changed other runs:\n{}", others.join("\n")).into());
    }
    check_applied(w, &before, &after).map_err(|e| {
        format!(
            "{when}: {w:?} was accepted but {e}; changes:\n{}",
            before.diff(&after).join("\n")
        )
        .into()
    })
}

/// The accepted write `w` is visible in `after`.
fn check_applied(w: &Write, before: &Snapshot, after: &Snapshot) -> Result<(), String> {
    let id = run_of(w);
    let was = before.run(id).ok_or("the run was missing before")?;
    let run = after.run(id).ok_or("the run is gone")?;
    let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    let progress_is = |p: &Option<Value>| match p {
        Some(p) => ensure(col_json(run, "progress") == *p, "the progress is not set"),
        None => ensure(
            run.get("progress") == was.get("progress"),
            "the progress changed",
        ),
    };
    let status = col_text(run, "status");
    match w {
        Write::Step {
            name,
            index,
            output,
            progress,
            ..
        } => {
            let steps = after.of_run("steps", id);
            let row = steps.iter().find(|r| col_text(r, "name") == Some(name));
            ensure(
                row.is_some_and(|r| {
                    col_json(r, "output") == *output
                        && col_text(r, "status") == Some("completed")
                        && r.get("index") == Some(&json!(index))
                }),
                "its step row is not stored",
            )?;
            let old = step_index(was);
            let now = step_index(run);
            // A store may leave the column behind while the run goes on
            // (SQLite: rewritten at most about once a second), never past
            // the step's position nor back (exact once the run ended).
            ensure(
                now >= old && now <= old.max(index + 1),
                "current_step_index is wrong",
            )?;
            progress_is(progress)
        }
        Write::Complete {
            output, progress, ..
        } => {
            ensure(status == Some("completed"), "the run is not completed")?;
            ensure(col_json(run, "output") == *output, "the output is not set")?;
            ensure(col_text(run, "completed_at").is_some(), "no completed_at")?;
            ensure_exact_step_index(run, after, id)?;
            progress_is(progress)
        }
        Write::Fail {
            error, progress, ..
        } => {
            ensure(status == Some("failed"), "the run is not failed")?;
            ensure(
                col_text(run, "error") == Some(error),
                "the error is not set",
            )?;
            ensure_exact_step_index(run, after, id)?;
            progress_is(progress)
        }
        Write::TimeoutFail { error, .. } => {
            ensure(status == Some("failed"), "the run is not failed")?;
            ensure(
                col_text(run, "error") == Some(error),
                "the error is not set",
            )
        }
        Write::Progress { progress, .. } => progress_is(&Some(progress.clone())),
        Write::Log { message, .. } => {
            let (old, new) = (before.of_run("logs", id), after.of_run("logs", id));
            ensure(new.len() == old.len() + 1, "no log row was added")?;
            ensure(
                new.iter()
                    .any(|r| !old.contains(r) && col_text(r, "message") == Some(message)),
                "the new log row is not this one",
            )
        }
        Write::Release { .. } => {
            ensure(status == Some("pending"), "the run is not pending")?;
            ensure(
                run.get("lease_owner") == Some(&Value::Null),
                "the lease owner is kept",
            )
        }
        Write::Heartbeat { .. } => ensure(
            col_text(run, "heartbeat_at") > col_text(was, "heartbeat_at"),
            "heartbeat_at did not move forward",
        ),
    }
}

/// A run row's `current_step_index` (0 when absent).
fn step_index(run: &Row) -> i64 {
    run.get("current_step_index")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// An ended run's `current_step_index` is the position after its last
/// completed step (the column may lag while it runs, not once it ended).
fn ensure_exact_step_index(run: &Row, after: &Snapshot, id: &str) -> Result<(), String> {
    let last = after
        .of_run("steps", id)
        .iter()
        .filter(|r| col_text(r, "status") == Some("completed"))
        .filter_map(|r| r.get("index").and_then(Value::as_i64))
        .max()
        .map_or(0, |i| i + 1);
    if step_index(run) == last {
        Ok(())
    } else {
        Err(format!(
            "current_step_index is {} once the run ended, expected {last}",
            step_index(run)
        ))
    }
}

/// A lost its run to stale recovery (now `pending`, nobody holds it): A's
/// write is refused as lost.
pub(crate) fn refused_after_recovery<S: ContractStore>(open: Open<S>, kind: WriteKind) -> CResult {
    let s = held_by_a(open)?;
    lose(&s)?;
    let stale = write_of(kind, &s.run, 1, "A");
    refused(
        &s.w.a,
        &s.w.b,
        &stale,
        Outcome::Lost,
        "after stale recovery",
    )
}

/// B reclaimed the run (generation 2, `running`): A's write under
/// generation 1 is refused as lost; B's same write is accepted.
pub(crate) fn refused_once_reclaimed<S: ContractStore>(open: Open<S>, kind: WriteKind) -> CResult {
    let s = held_by_a(open)?;
    lose(&s)?;
    reclaim(&s)?;
    let stale = write_of(kind, &s.run, 1, "A");
    refused(&s.w.a, &s.w.b, &stale, Outcome::Lost, "reclaimed by B")?;
    let holder = write_of(kind, &s.run, 2, "B");
    accepted(&s.w.b, &s.w.a, &holder, "the holder's write")
}

/// The run was cancelled (by B) while A holds it: A's write is refused as
/// cancelled.
pub(crate) fn refused_when_cancelled<S: ContractStore>(open: Open<S>, kind: WriteKind) -> CResult {
    let s = held_by_a(open)?;
    s.w.b.cancel(&s.run)?;
    let late = write_of(kind, &s.run, 1, "A");
    refused(
        &s.w.a,
        &s.w.b,
        &late,
        Outcome::Cancelled,
        "cancelled while held",
    )
}

/// B reclaimed the run and completed it: neither A's write (generation 1)
/// nor a late one of B's (generation 2) changes the finished run.
pub(crate) fn refused_after_the_run_ended<S: ContractStore>(
    open: Open<S>,
    kind: WriteKind,
) -> CResult {
    let s = held_by_a(open)?;
    lose(&s)?;
    reclaim(&s)?;
    accepted_plain(&s.w.b, &write_of(WriteKind::Complete, &s.run, 2, "B"))?;
    let stale = write_of(kind, &s.run, 1, "A");
    refused(&s.w.a, &s.w.b, &stale, Outcome::Lost, "A after the end")?;
    let late = write_of(kind, &s.run, 2, "B-late");
    refused(&s.w.b, &s.w.a, &late, Outcome::Lost, "B after the end")?;
    // The bystander is untouched by all of it.
    let snap = s.w.a.snapshot()?;
    let by = snap.run(&s.bystander).ok_or("bystander missing")?;
    assert_eq!(col_text(by, "status"), Some("running"));
    Ok(())
}

/// One batch of A's: ops on a run A still holds (`held`, generation 1) are
/// applied, ops on the run it lost (`lost`, reclaimed by B) are refused, each
/// on its own, and the lost run is left exactly as B wrote it.
pub(crate) fn batch_mixes_held_and_stale_ops<S: ContractStore>(open: Open<S>) -> CResult {
    let w = open()?;
    let lost = w.a.create_run(JOB)?;
    let held = w.a.create_run(BYSTANDER)?;
    assert_eq!(w.a.claim_one(JOB)?, (lost.clone(), 1));
    assert_eq!(w.a.claim_one(BYSTANDER)?, (held.clone(), 1));
    accepted_plain(&w.a, &step(&lost, 1, FIRST_STEP, 0, "A"))?;
    assert_eq!(w.b.recover_stale(JOB)?, 1);
    assert_eq!(w.b.claim_one(JOB)?, (lost.clone(), 2));
    accepted_plain(&w.b, &step(&lost, 2, SECOND_STEP, 1, "B"))?;

    use WriteKind::*;
    let plan: Vec<(Write, Outcome)> = [
        (held.as_str(), StepNew, Outcome::Ok),
        (lost.as_str(), StepNew, Outcome::Lost),
        (held.as_str(), Log, Outcome::Ok),
        (lost.as_str(), StepOverwrite, Outcome::Lost),
        (lost.as_str(), Log, Outcome::Lost),
        (lost.as_str(), Progress, Outcome::Lost),
        (held.as_str(), Complete, Outcome::Ok),
        (lost.as_str(), Release, Outcome::Lost),
        (lost.as_str(), Fail, Outcome::Lost),
        (lost.as_str(), Complete, Outcome::Lost),
    ]
    .into_iter()
    .map(|(run, kind, want)| (write_of(kind, run, 1, "A"), want))
    .collect();
    let writes: Vec<Write> = plan.iter().map(|(w, _)| w.clone()).collect();
    assert!(writes.iter().all(Write::batched));
    let wants: Vec<Outcome> = plan.iter().map(|(_, o)| *o).collect();

    let before = w.b.snapshot()?;
    let got = w.a.write_batch(&writes)?;
    let after = w.b.snapshot()?;
    assert_eq!(got, wants, "one outcome per op");
    let changed = before.without_run(&held).diff(&after.without_run(&held));
    assert!(
        changed.is_empty(),
        "the stale ops changed the database:\n{}",
        changed.join("\n")
    );
    let run = after.run(&held).ok_or("held run missing")?;
    assert_eq!(col_text(run, "status"), Some("completed"));
    assert_eq!(
        col_json(run, "output"),
        json!({ "by": "A", "generation": 1 })
    );
    assert_eq!(after.of_run("steps", &held).len(), 1);
    assert_eq!(after.of_run("logs", &held).len(), 1);
    Ok(())
}

/// Runs in each state a write batch must tell apart (see [`mixed_runs`]).
struct Mixed {
    /// A run of `JOB` that A holds (generation 1).
    one: String,
    /// A run of `BYSTANDER` that A holds (generation 1).
    two: String,
    /// A run of `JOB` that A claimed and B cancelled.
    gone: String,
    /// A run that A claimed and B reclaimed once stale (generation 2).
    taken: String,
}

fn mixed_runs<S: ContractStore>(w: &Workers<S>) -> CResult<Mixed> {
    let one = w.a.create_run(JOB)?;
    let two = w.a.create_run(BYSTANDER)?;
    let gone = w.a.create_run(JOB)?;
    assert_eq!(w.a.claim_one(JOB)?, (one.clone(), 1));
    assert_eq!(w.a.claim_one(BYSTANDER)?, (two.clone(), 1));
    assert_eq!(w.a.claim_one(JOB)?, (gone.clone(), 1));
    w.b.cancel(&gone)?;
    // (its own job, so that only it goes stale)
    let taken = w.a.create_run("taken")?;
    assert_eq!(w.a.claim_one("taken")?, (taken.clone(), 1));
    assert_eq!(w.b.recover_stale("taken")?, 1);
    assert_eq!(w.b.claim_one("taken")?, (taken.clone(), 2));
    Ok(Mixed {
        one,
        two,
        gone,
        taken,
    })
}

/// One batch of step ops, some on the same run and the same step, one under
/// a generation its run does not hold (beside ops of that run that it
/// holds), one of a run another worker reclaimed, one of a cancelled run,
/// one after its run's completion: the store answers and writes exactly as if the ops
/// were applied one after another (PostgreSQL writes a batch's steps with
/// one statement: it must not move a step before its run's completion, nor
/// let an earlier write of a step or of the progress win, nor a refused
/// op's row or progress in).
pub(crate) fn batch_of_steps_reads_as_one_after_another<S: ContractStore>(
    open: Open<S>,
) -> CResult {
    let w = open()?;
    let Mixed {
        one,
        two,
        gone,
        taken,
    } = mixed_runs(&w)?;
    let again = Write::Step {
        run: one.clone(),
        generation: 1,
        name: FIRST_STEP.into(),
        index: 0,
        output: json!({ "by": "A-again" }),
        progress: Some(json!({ "current": 9 })),
    };
    let no_progress = Write::Step {
        run: one.clone(),
        generation: 1,
        name: SECOND_STEP.into(),
        index: 1,
        output: json!({ "by": "A" }),
        progress: None,
    };
    let writes = vec![
        step(&one, 1, FIRST_STEP, 0, "A"),
        step(&two, 1, FIRST_STEP, 0, "A"),
        no_progress,
        step(&one, 2, SECOND_STEP, 1, "stale"),
        step(&gone, 1, FIRST_STEP, 0, "A"),
        step(&taken, 1, FIRST_STEP, 0, "A"),
        again,
        write_of(WriteKind::Complete, &two, 1, "A"),
        step(&two, 1, SECOND_STEP, 1, "A-late"),
    ];
    let got = w.a.write_batch(&writes)?;
    let ok = Outcome::Ok;
    assert_eq!(
        got,
        vec![
            ok,
            ok,
            ok,
            Outcome::Lost,
            Outcome::Cancelled,
            Outcome::Lost,
            ok,
            ok,
            Outcome::Lost
        ],
        "one outcome per op"
    );
    let snap = w.b.snapshot()?;
    let run = snap.run(&one).ok_or("run one missing")?;
    assert_eq!(run.get("current_step_index"), Some(&json!(2)));
    assert_eq!(col_json(run, "progress"), json!({ "current": 9 }));
    let steps = snap.of_run("steps", &one);
    assert_eq!(steps.len(), 2);
    let first = steps
        .iter()
        .find(|s| col_text(s, "name") == Some(FIRST_STEP))
        .ok_or("first step missing")?;
    assert_eq!(col_json(first, "output"), json!({ "by": "A-again" }));
    let second = steps
        .iter()
        .find(|s| col_text(s, "name") == Some(SECOND_STEP))
        .ok_or("second step missing")?;
    assert_eq!(
        col_json(second, "output"),
        json!({ "by": "A" }),
        "the refused op's row was written"
    );
    assert!(
        snap.of_run("steps", &gone).is_empty(),
        "the cancelled run's step was written"
    );
    assert!(
        snap.of_run("steps", &taken).is_empty(),
        "the step of a generation the run no longer holds was written"
    );
    let run = snap.run(&taken).ok_or("run taken missing")?;
    assert_eq!(run.get("current_step_index"), Some(&json!(0)));
    let run = snap.run(&two).ok_or("run two missing")?;
    assert_eq!(col_text(run, "status"), Some("completed"));
    let steps = snap.of_run("steps", &two);
    assert_eq!(steps.len(), 1, "the step after the completion was written");
    assert_eq!(col_text(steps[0], "name"), Some(FIRST_STEP));
    Ok(())
}

/// One batch of completions (PostgreSQL writes four or more of a batch with
/// one statement): of runs held, of one under a generation it does not
/// hold, of a cancelled run, of a run another worker reclaimed, and of a run
/// completed earlier in the batch: the store answers and writes exactly as
/// if they were applied one after another; the refused ones change nothing.
pub(crate) fn batch_of_completions_reads_as_one_after_another<S: ContractStore>(
    open: Open<S>,
) -> CResult {
    let w = open()?;
    let Mixed {
        one,
        two,
        gone,
        taken,
    } = mixed_runs(&w)?;
    let three = w.a.create_run(JOB)?;
    assert_eq!(w.a.claim_one(JOB)?, (three.clone(), 1));
    use WriteKind::Complete;
    let writes = vec![
        write_of(Complete, &one, 1, "A"),
        write_of(Complete, &two, 2, "stale"),
        write_of(Complete, &gone, 1, "A"),
        write_of(Complete, &taken, 1, "A"),
        write_of(Complete, &three, 1, "A"),
        write_of(Complete, &one, 1, "A-again"),
    ];
    let before = w.b.snapshot()?;
    let got = w.a.write_batch(&writes)?;
    let after = w.b.snapshot()?;
    let (ok, lost) = (Outcome::Ok, Outcome::Lost);
    assert_eq!(
        got,
        vec![ok, lost, Outcome::Cancelled, lost, ok, lost],
        "one outcome per op"
    );
    let changed = before
        .without_run(&one)
        .without_run(&three)
        .diff(&after.without_run(&one).without_run(&three));
    assert!(
        changed.is_empty(),
        "the refused completions changed the database:\n{}",
        changed.join("\n")
    );
    for id in [&one, &three] {
        let run = after.run(id).ok_or("completed run missing")?;
        assert_eq!(col_text(run, "status"), Some("completed"));
        assert_eq!(
            col_json(run, "output"),
            json!({ "by": "A", "generation": 1 })
        );
    }
    Ok(())
}
