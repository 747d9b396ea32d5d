//! The engine's decisions as plain functions: no runtime, no store, no
//! clock of their own. The worker's tasks and the engine call them; a build
//! without tokio (the browser's, driven by JS timers) can call them too:
//! this module is compiled for wasm32, the rest of `engine` is not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::{ClaimedRun, OpStatus, TriggerOutcome};

/// Why a run this worker was executing is no longer its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// Cancelled (by any process).
    Cancelled,
    /// Reclaimed by another worker, reset, or deleted.
    Lost,
    /// Exceeded its job's `timeout`; the worker marked it failed.
    Timeout,
}

impl LostReason {
    /// Name sent to JavaScript.
    pub fn as_str(self) -> &'static str {
        match self {
            LostReason::Cancelled => "cancelled",
            LostReason::Lost => "lost",
            LostReason::Timeout => "timeout",
        }
    }
}

/// Free run slots: `max` minus the runs in flight and the slots reserved by
/// claims under way.
pub fn free_slots(max: usize, inflight: usize, reserved: usize) -> usize {
    max.saturating_sub(inflight + reserved)
}

/// How many slots a claim may reserve: up to `want`, counting the slots of
/// `freed` runs (in flight, ending in the same commit) as free.
pub fn slots_to_reserve(
    max: usize,
    inflight: usize,
    reserved: usize,
    freed: usize,
    want: usize,
) -> usize {
    (max + freed).saturating_sub(inflight + reserved).min(want)
}

/// Whether the claim loop claims on this turn: something may be claimable
/// (a local wake-up, another process's write, the poll) and a slot is free.
pub fn should_claim(woken: bool, changed: bool, poll_due: bool, free: usize) -> bool {
    (woken || changed || poll_due) && free > 0
}

/// Whether a trigger that just wrote claims on the calling thread (in the
/// trigger's own commit on the non-waiting path, in a second one after a
/// waiting trigger), instead of waiting for the claim loop to
/// wake, claim and call back: when it created a run and the worker is on.
pub fn start_locally(created: bool, running: bool) -> bool {
    created && running
}

/// Whether a non-waiting trigger wakes the claim loop: whenever it wrote,
/// except when the run it created was claimed in its own commit (the loop
/// would find nothing new; waking it would only take a core from the thread
/// about to execute that run).
pub fn wake_after_trigger(outcome: &TriggerOutcome, claimed: &[ClaimedRun]) -> bool {
    match outcome {
        TriggerOutcome::Created { id, .. } => !claimed.iter().any(|r| &r.id == id),
        _ => true,
    }
}

/// The error a run's job timeout fails it with.
pub fn timeout_message(timeout: Duration) -> String {
    format!("run timed out after {} ms", timeout.as_millis())
}

/// What the executing JS side is told when the worker failed a run for its
/// timeout, given what the fenced write found.
pub fn timeout_outcome(status: OpStatus) -> LostReason {
    match status {
        OpStatus::Ok => LostReason::Timeout,
        OpStatus::Cancelled => LostReason::Cancelled,
        // (a timeout's fail op holds no user value)
        OpStatus::Lost | OpStatus::TooBig | OpStatus::Failed => LostReason::Lost,
    }
}

/// Runs deleted by one retention pass of a started worker (small, so a pass
/// never holds the write lock for long).
pub const RETAIN_BATCH: i64 = 100;

/// Runs deleted by the retention pass before `processOne`/`processUntilIdle`.
pub const PROCESS_RETAIN_BATCH: i64 = 1000;

/// How often a started worker applies `retainRuns`: the polling interval,
/// but at least every second and at most every 10 s.
pub fn retention_period(polling: Duration) -> Duration {
    polling.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Whether a retention pass runs now: never while runs execute here (their
/// commits come first).
pub fn retention_due(inflight: usize) -> bool {
    inflight == 0
}

/// Terminal runs that finished before this time are deleted by retention.
pub fn retention_cutoff(now: SystemTime, retain: Duration) -> SystemTime {
    now.checked_sub(retain)
        .unwrap_or(UNIX_EPOCH)
        .max(UNIX_EPOCH)
}

/// A batch at least this long is a big write: committed off the JS thread
/// (the non-waiting flush declines it) and checkpointed at once.
pub fn commit_off_thread(batch_bytes: usize) -> bool {
    batch_bytes >= crate::store::BIG_WRITE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        assert_eq!(free_slots(2, 1, 0), 1);
        assert_eq!(free_slots(2, 1, 1), 0);
        assert_eq!(free_slots(1, 3, 0), 0, "never negative");
        // Two runs ending in the commit free their slots for the claim.
        assert_eq!(slots_to_reserve(2, 2, 0, 2, usize::MAX), 2);
        assert_eq!(slots_to_reserve(2, 2, 0, 0, usize::MAX), 0);
        assert_eq!(slots_to_reserve(8, 0, 0, 0, 1), 1, "bounded by want");
    }

    #[test]
    fn claim_turns() {
        assert!(should_claim(true, false, false, 1));
        assert!(should_claim(false, true, false, 1));
        assert!(should_claim(false, false, true, 1));
        assert!(!should_claim(false, false, false, 1));
        assert!(!should_claim(true, true, true, 0));
    }

    #[test]
    fn a_trigger_wakes_the_loop_unless_its_run_started_here() {
        let created = TriggerOutcome::Created {
            id: "a".into(),
            created_at: "t".into(),
        };
        let run = |id: &str| ClaimedRun {
            id: id.into(),
            job_name: "j".into(),
            generation: 1,
            json: "{}".into(),
            inserted: false,
        };
        assert!(!wake_after_trigger(&created, &[run("a")]), "claimed here");
        assert!(
            wake_after_trigger(&created, &[]),
            "no slot: the loop claims it"
        );
        assert!(
            wake_after_trigger(&created, &[run("older")]),
            "an older run took the slot: this one is still pending"
        );
        assert!(wake_after_trigger(
            &TriggerOutcome::Idempotent("{}".into()),
            &[]
        ));
    }

    #[test]
    fn local_starts() {
        assert!(start_locally(true, true));
        assert!(
            !start_locally(false, true),
            "an idempotent or coalesced trigger"
        );
        assert!(!start_locally(true, false), "a stopped worker");
    }

    #[test]
    fn retention() {
        assert_eq!(
            retention_period(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            retention_period(Duration::from_millis(2500)),
            Duration::from_millis(2500)
        );
        assert_eq!(
            retention_period(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert!(retention_due(0));
        assert!(!retention_due(1));
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(
            retention_cutoff(now, Duration::from_secs(40)),
            UNIX_EPOCH + Duration::from_secs(60)
        );
        assert_eq!(retention_cutoff(now, Duration::from_secs(400)), UNIX_EPOCH);
    }

    #[test]
    fn timeouts() {
        assert_eq!(
            timeout_message(Duration::from_millis(150)),
            "run timed out after 150 ms"
        );
        assert_eq!(timeout_outcome(OpStatus::Ok), LostReason::Timeout);
        assert_eq!(timeout_outcome(OpStatus::Cancelled), LostReason::Cancelled);
        assert_eq!(timeout_outcome(OpStatus::Lost), LostReason::Lost);
    }
}
