//! The store contract suite: what every store backend must guarantee, written
//! once as test cases that are generic over how the store is opened.
//!
//! It holds the lease fence (issue 22), durably's main safety property across
//! processes. For every kind of write the executing worker makes ([`Write`]),
//! on a fresh database:
//!
//! - worker A claims the run (generation 1), and loses it: another worker's
//!   stale recovery puts it back to `pending`; A's write is refused as lost;
//! - worker B claims it (generation 2) and commits steps, a log and progress;
//!   A's write is refused as lost, and B's same write is accepted;
//! - the run is cancelled while A holds it: A's write is refused as cancelled;
//! - the run has ended (B completed it): both generations are refused;
//! - in one batch, A's stale ops are refused and its ops on a run it still
//!   holds are applied.
//!
//! "Refused" means the reported outcome *and* nothing changed: every row of
//! every table is compared before and after ([`Snapshot`]). A bystander run,
//! held by B under the same generation number 1, catches a fence that
//! matches the wrong row.
//!
//! `scripts/mutate-fences.js` (run by `.ci/run`) removes each guard of each
//! fenced statement of each backend in turn and checks this suite fails.
//!
//! ## Plugging in a new backend
//!
//! The cases drive the [`crate::store::Store`] interface itself, through one
//! [`Handle`] (the blanket [`ContractStore`] implementation in `handle.rs`).
//! A backend only brings an opener:
//!
//! 1. Write `fn() -> CResult<Workers<Handle<YourStore>>>`: two handles on one
//!    fresh, migrated database, as two worker processes would hold them
//!    (separate connections, separate lease owners; for a backend with an
//!    injectable clock, a clock shared by both that moves forward on every
//!    reading, so a heartbeat visibly renews). Each [`Handle`] takes a
//!    [`Driver`] (how to run the store's futures: polled once for a blocking
//!    store, a runtime for an async one) and a snapshot function returning
//!    every row of every table, values as JSON (text as strings, integers as
//!    numbers, NULL as null).
//! 2. Put it in `src/store/contract/<backend>.rs` (declared below, next to
//!    `sqlite.rs`) and end it with
//!    `super::store_contract_suite!(Handle<YourStore>, opener);`: it expands to
//!    one module per write kind with one `#[test]` per case, named
//!    `store::contract::<backend>::…`.
//! 3. Add the backend (its source directory, cargo features, that filter) to
//!    `BACKENDS` in `scripts/mutate-fences.js`.
//!
//! A new kind of fenced write: add a [`Write`] variant and its [`WriteKind`],
//! map it in `handle.rs` and in [`cases`]'s `write_of` and `check_applied`
//! (the compiler points at each `match`), then to [`WriteKind::ALL`] and to
//! the list in [`store_contract_suite!`] (a test checks that list against
//! `ALL`). `scripts/mutate-fences.js` picks the new statement up by itself and
//! fails until a case refuses it.

pub(crate) mod cases;
mod handle;
#[cfg(feature = "postgres")]
mod postgres;
mod snapshot;
mod sqlite;

pub(crate) use handle::{Driver, Handle};
pub(crate) use snapshot::{col_json, col_text, Row, Snapshot};

/// Result of the suite's functions: any backend's error type fits.
pub(crate) type CResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Two workers' handles on one database (and whatever keeps it alive, e.g.
/// its temp directory, dropped last). `S` is a [`Handle`].
pub(crate) struct Workers<S> {
    /// The worker that loses its lease in the cases.
    pub a: S,
    /// The other worker: recovers, reclaims and cancels.
    pub b: S,
    /// Dropped after both handles (never read: held to be dropped last).
    #[allow(dead_code)]
    pub keep: Box<dyn std::any::Any>,
}

/// A store as the contract suite drives it. Implemented once, for every
/// [`Store`], by [`Handle`] (in `handle.rs`): the cases drive the
/// interface itself, not an adapter per backend.
pub(crate) trait ContractStore {
    /// Creates a pending run of `job`; returns its id.
    fn create_run(&self, job: &str) -> CResult<String>;
    /// Claims the oldest pending run of `job` for this worker; returns its id
    /// and lease generation (an error if none was claimed).
    fn claim_one(&self, job: &str) -> CResult<(String, i64)>;
    /// Another worker's stale recovery, with every heartbeat counted as
    /// stale: `running` runs of `job` go back to `pending`. Returns how many.
    fn recover_stale(&self, job: &str) -> CResult<usize>;
    /// Cancels a pending or running run.
    fn cancel(&self, run: &str) -> CResult;
    /// Issues one write of the executing worker, with its own entry point
    /// (batched kinds as a batch of one).
    fn write(&self, w: &Write) -> CResult<Outcome>;
    /// Issues several batched writes ([`Write::batched`]) in one
    /// transaction; one outcome per write, in order.
    fn write_batch(&self, ws: &[Write]) -> CResult<Vec<Outcome>>;
    /// Every row of every table.
    fn snapshot(&self) -> CResult<Snapshot>;
}

/// What the store answered to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written.
    Ok,
    /// Refused: the run was cancelled.
    Cancelled,
    /// Refused: the run is not `running` under this generation.
    Lost,
}

/// One write of the executing worker, under lease `generation`.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// A completed step (insert, or overwrite of a row of the same name),
    /// with the run's progress.
    Step {
        run: String,
        generation: i64,
        name: String,
        index: i64,
        output: serde_json::Value,
        progress: Option<serde_json::Value>,
    },
    /// The run completed with `output`.
    Complete {
        run: String,
        generation: i64,
        output: serde_json::Value,
        progress: Option<serde_json::Value>,
    },
    /// The run failed with `error`.
    Fail {
        run: String,
        generation: i64,
        error: String,
        progress: Option<serde_json::Value>,
    },
    /// The worker's job timeout failed the run (its own entry point).
    TimeoutFail {
        run: String,
        generation: i64,
        error: String,
    },
    /// Progress alone.
    Progress {
        run: String,
        generation: i64,
        progress: serde_json::Value,
    },
    /// A log line.
    Log {
        run: String,
        generation: i64,
        message: String,
    },
    /// Hand the run back (`pending`) so any worker resumes it.
    Release { run: String, generation: i64 },
    /// Renew the lease.
    Heartbeat { run: String, generation: i64 },
}

impl Write {
    /// Whether the executing worker sends this write in its write batches
    /// (the others have an entry point of their own).
    pub fn batched(&self) -> bool {
        !matches!(self, Write::TimeoutFail { .. } | Write::Heartbeat { .. })
    }
}

/// The kinds of write the suite covers, one case module each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    /// A step not stored yet.
    StepNew,
    /// A step over a stored step of the same name (a replayed, committed one).
    StepOverwrite,
    /// Completion.
    Complete,
    /// Failure.
    Fail,
    /// Failure by the worker's job timeout.
    TimeoutFail,
    /// Progress.
    Progress,
    /// Log line.
    Log,
    /// Hand-back.
    Release,
    /// Heartbeat.
    Heartbeat,
}

impl WriteKind {
    /// Every kind.
    pub const ALL: [WriteKind; 9] = [
        WriteKind::StepNew,
        WriteKind::StepOverwrite,
        WriteKind::Complete,
        WriteKind::Fail,
        WriteKind::TimeoutFail,
        WriteKind::Progress,
        WriteKind::Log,
        WriteKind::Release,
        WriteKind::Heartbeat,
    ];
}

/// Expands to the contract suite for one backend: `$store` is the type
/// implementing [`ContractStore`], `$open` a `fn() -> CResult<Workers<$store>>`
/// (see the module docs). A backend that needs a server adds
/// `skip_unless: fn() -> Option<String>`: a reason to skip every case
/// (e.g. no server configured outside CI), or `None` to run them.
macro_rules! store_contract_suite {
    ($store:ty, $open:expr) => {
        $crate::store::contract::store_contract_suite!($store, $open, skip_unless: || None);
    };
    ($store:ty, $open:expr, skip_unless: $skip:expr) => {
        fn contract_open()
            -> $crate::store::contract::CResult<$crate::store::contract::Workers<$store>> {
            $open()
        }
        /// `Some(reason)` when this backend cannot be tested here (printed, and
        /// the case passes without running; the backend's `$skip` decides
        /// when that is allowed).
        fn contract_skip() -> Option<String> {
            let skip: fn() -> Option<String> = $skip;
            skip().inspect(|why| eprintln!("skipped: {why}"))
        }
        $crate::store::contract::store_contract_suite!(@kinds
            step_new: StepNew,
            step_overwrite: StepOverwrite,
            complete: Complete,
            fail: Fail,
            timeout_fail: TimeoutFail,
            progress: Progress,
            log: Log,
            release: Release,
            heartbeat: Heartbeat
        );
        #[test]
        fn a_batch_applies_held_ops_and_refuses_stale_ones(
        ) -> $crate::store::contract::CResult {
            if contract_skip().is_some() {
                return Ok(());
            }
            $crate::store::contract::cases::batch_mixes_held_and_stale_ops(contract_open)
        }
        #[test]
        fn a_batch_of_steps_reads_as_one_op_after_another(
        ) -> $crate::store::contract::CResult {
            if contract_skip().is_some() {
                return Ok(());
            }
            $crate::store::contract::cases::batch_of_steps_reads_as_one_after_another(contract_open)
        }
        #[test]
        fn a_batch_of_completions_reads_as_one_op_after_another(
        ) -> $crate::store::contract::CResult {
            if contract_skip().is_some() {
                return Ok(());
            }
            $crate::store::contract::cases::batch_of_completions_reads_as_one_after_another(
                contract_open,
            )
        }
    };
    (@kinds $($module:ident : $kind:ident),* $(,)?) => {
        #[test]
        fn every_write_kind_has_its_cases() {
            let listed = [$($crate::store::contract::WriteKind::$kind),*];
            for kind in $crate::store::contract::WriteKind::ALL {
                assert!(listed.contains(&kind), "{kind:?} is missing from store_contract_suite!");
            }
        }
        $(
            mod $module {
                use $crate::store::contract::{cases, CResult, WriteKind};
                const KIND: WriteKind = WriteKind::$kind;

                #[test]
                fn refused_as_lost_after_stale_recovery() -> CResult {
                    if super::contract_skip().is_some() {
                        return Ok(());
                    }
                    cases::refused_after_recovery(super::contract_open, KIND)
                }

                #[test]
                fn refused_as_lost_once_reclaimed_and_the_holders_accepted() -> CResult {
                    if super::contract_skip().is_some() {
                        return Ok(());
                    }
                    cases::refused_once_reclaimed(super::contract_open, KIND)
                }

                #[test]
                fn refused_as_cancelled_while_held() -> CResult {
                    if super::contract_skip().is_some() {
                        return Ok(());
                    }
                    cases::refused_when_cancelled(super::contract_open, KIND)
                }

                #[test]
                fn refused_for_both_generations_once_the_run_ended() -> CResult {
                    if super::contract_skip().is_some() {
                        return Ok(());
                    }
                    cases::refused_after_the_run_ended(super::contract_open, KIND)
                }
            }
        )*
    };
}
pub(crate) use store_contract_suite;
