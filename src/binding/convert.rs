//! Conversions at the boundary: engine errors to JS errors with a stable
//! `.code`, engine results to typed `#[napi(object)]` results (JSON text only
//! where payloads travel: run records, claimed runs; plain text on the hottest
//! paths, where building an object cost more than the work: a flush's
//! statuses, a batch's ids, the run a synchronous trigger created), and the
//! pool-thread task.

use napi::bindgen_prelude::{AsyncTask, Either, Env, Status, Task, ToNapiValue, TypeName};
use napi::JsError;
use napi_derive::napi;
use std::result::Result;

use crate::error::Error as EngineError;
use crate::store::{ClaimedRun, FlushOutcome, RunStatus, TriggerOutcome};

/// The status type of errors thrown to JS: its text becomes `error.code`.
pub struct JsCode(String);

impl AsRef<str> for JsCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Status> for JsCode {
    fn from(s: Status) -> Self {
        JsCode(s.as_ref().to_string())
    }
}

/// The one conversion from engine errors to JS errors.
pub fn to_js(e: EngineError) -> napi::Error<JsCode> {
    napi::Error::new(JsCode(e.code().to_string()), e.to_string())
}

/// How a trigger ended.
#[napi(string_enum = "lowercase")]
pub enum TriggerKind {
    /// A new pending run.
    Created,
    /// The run that already had this idempotency key.
    Idempotent,
    /// The pending run of the same concurrency key this trigger was coalesced into.
    Coalesced,
}

/// What a trigger did (`trigger`).
#[napi(object)]
pub struct TriggerResult {
    /// How it ended.
    pub kind: TriggerKind,
    /// `created`: the new run's id.
    pub id: Option<String>,
    /// `created`: the new run's `createdAt` (ISO).
    pub created_at: Option<String>,
    /// `idempotent`/`coalesced`: the existing run as JSON text.
    pub run: Option<String>,
    /// `created`, single trigger, worker on: the runs the engine claimed on
    /// this thread right after the trigger (JSON array text), to execute.
    pub claimed: Option<String>,
    /// `created`, single trigger, worker on: true when the run was inserted
    /// already claimed by this worker (generation 1, started at `createdAt`,
    /// no steps), for the caller to execute with the job, input and labels it
    /// triggered with (then there is no `claimed`).
    pub started: Option<bool>,
}

impl TriggerResult {
    /// With the runs claimed right after the trigger (none: no field).
    pub fn with_claimed(mut self, runs: Vec<ClaimedRun>) -> Self {
        if runs.iter().any(|r| r.inserted) {
            // Only ever alone: inserted claimed means nothing else was claimable.
            self.started = Some(true);
        } else if !runs.is_empty() {
            self.claimed = Some(crate::store::json::array(runs.into_iter().map(|r| r.json)));
        }
        self
    }
}

impl From<TriggerOutcome> for TriggerResult {
    fn from(o: TriggerOutcome) -> Self {
        let (kind, id, created_at, run) = match o {
            TriggerOutcome::Created { id, created_at } => {
                (TriggerKind::Created, Some(id), Some(created_at), None)
            }
            TriggerOutcome::Idempotent(run) => (TriggerKind::Idempotent, None, None, Some(run)),
            TriggerOutcome::Coalesced(run) => (TriggerKind::Coalesced, None, None, Some(run)),
        };
        TriggerResult {
            kind,
            id,
            created_at,
            run,
            claimed: None,
            started: None,
        }
    }
}

/// The synchronous `trigger`'s answer: a created run as text, an existing one
/// (idempotent, coalesced: not the hot path) as a `TriggerResult`. The text
/// is `c<id> <createdAt>`, then, when the worker took the run in the same
/// call, a newline and `s` (inserted already claimed by this worker: see
/// `TriggerResult::started`) or the claimed runs' JSON (`claimed`), which
/// comes last so that nothing in it can be mistaken for a separator. Building
/// the object was ~10 % of a trigger's CPU (perf: napi's property
/// definitions and strings), the text costs a `slice` or two in JS
/// (`createdResult` in lib/protocol.js).
pub fn trigger_answer(
    outcome: TriggerOutcome,
    claimed: Vec<ClaimedRun>,
) -> Either<String, TriggerResult> {
    let r = TriggerResult::from(outcome).with_claimed(claimed);
    let (TriggerKind::Created, Some(id), Some(created_at)) = (&r.kind, &r.id, &r.created_at) else {
        return Either::B(r);
    };
    let mut text = format!("c{id} {created_at}");
    if r.started == Some(true) {
        text.push_str("\ns");
    } else if let Some(runs) = &r.claimed {
        text.push('\n');
        text.push_str(runs);
    }
    Either::A(text)
}

/// What a `triggerBatch` did, in one object for the whole batch rather than
/// one per run (building an object per run was a quarter of a batch's CPU).
#[napi(object)]
pub struct TriggerBatchResult {
    /// The `createdAt` (ISO) shared by every run the batch created; none when
    /// it created nothing.
    pub created_at: Option<String>,
    /// One per item, in order, separated by commas: the new run's id, or
    /// nothing where the item found an existing run (see `existing`). One
    /// string rather than an array of strings: napi made a string per id for
    /// ~0.2 µs each (of a batched run's ~2.3 µs call), JS's `split` makes
    /// them for much less.
    pub ids: String,
    /// The items that created nothing (none: no field).
    pub existing: Option<Vec<TriggerExisting>>,
}

/// An item of a batch that found an existing run.
#[napi(object)]
pub struct TriggerExisting {
    /// The item's position in the batch.
    pub index: u32,
    /// `idempotent` or `coalesced`.
    pub kind: TriggerKind,
    /// The existing run as JSON text.
    pub run: String,
}

impl From<Vec<TriggerOutcome>> for TriggerBatchResult {
    fn from(outcomes: Vec<TriggerOutcome>) -> Self {
        let mut out = TriggerBatchResult {
            created_at: None,
            ids: String::with_capacity(outcomes.len() * 27),
            existing: None,
        };
        for (index, o) in outcomes.into_iter().enumerate() {
            if index > 0 {
                out.ids.push(',');
            }
            let (kind, run) = match o {
                TriggerOutcome::Created { id, created_at } => {
                    out.ids.push_str(&id);
                    out.created_at.get_or_insert(created_at);
                    continue;
                }
                TriggerOutcome::Idempotent(run) => (TriggerKind::Idempotent, run),
                TriggerOutcome::Coalesced(run) => (TriggerKind::Coalesced, run),
            };
            out.existing
                .get_or_insert_with(Vec::new)
                .push(TriggerExisting {
                    index: index as u32,
                    kind,
                    run,
                });
        }
        out
    }
}

/// What happened to one flush op.
#[napi(string_enum = "camelCase")]
pub enum OpResult {
    /// Written.
    Written,
    /// Not written: the run was cancelled.
    Cancelled,
    /// Not written: the run belongs to another lease (reclaimed, reset, deleted).
    Lost,
    /// Not written: a value in it is longer than SQLite's length limit.
    TooBig,
    /// Not written: the op is malformed or SQLite refused it (see `errors`).
    Failed,
}

impl OpResult {
    /// From one character of [`FlushOutcome::statuses`] ([`crate::store::OpStatus::as_char`]).
    fn from_char(c: u8) -> Self {
        match c {
            b'0' => OpResult::Written,
            b'c' => OpResult::Cancelled,
            b'l' => OpResult::Lost,
            b'b' => OpResult::TooBig,
            _ => OpResult::Failed,
        }
    }
}

/// An op of a flush that failed alone (its status is `failed`).
#[napi(object)]
pub struct FlushError {
    /// The op's position in the batch.
    pub index: u32,
    /// The engine error's code.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// What a flush did.
#[napi(object)]
pub struct FlushResult {
    /// One per op, in order.
    pub statuses: Vec<OpResult>,
    /// The runs claimed in the same commit (successors of the runs the batch
    /// ended), as a JSON array; absent when none.
    pub claimed: Option<String>,
    /// The ops that failed; absent when none.
    pub errors: Option<Vec<FlushError>>,
}

/// A flush's answer as text when no op failed: one status code per op, in
/// order (`0` written, `c` cancelled, `l` lost, `b` too big), then, when the
/// commit claimed runs, a newline and their JSON array. With failed ops
/// (`e`, whose errors the text has no room for) a [`FlushResult`].
pub fn flush_answer(out: FlushOutcome<Vec<ClaimedRun>>) -> Either<String, FlushResult> {
    if !out.errors.is_empty() {
        return Either::B(out.into());
    }
    let mut text = out.statuses;
    if !out.then.is_empty() {
        text.push('\n');
        text.push_str(&crate::store::json::array(
            out.then.into_iter().map(|r| r.json),
        ));
    }
    Either::A(text)
}

impl From<FlushOutcome<Vec<ClaimedRun>>> for FlushResult {
    fn from(out: FlushOutcome<Vec<ClaimedRun>>) -> Self {
        let statuses = out.statuses.bytes().map(OpResult::from_char).collect();
        let claimed = (!out.then.is_empty())
            .then(|| crate::store::json::array(out.then.into_iter().map(|r| r.json)));
        let errors = (!out.errors.is_empty()).then(|| {
            out.errors
                .iter()
                .map(|e| FlushError {
                    index: e.index as u32,
                    code: e.error.code().to_string(),
                    message: e.error.to_string(),
                })
                .collect()
        });
        FlushResult {
            statuses,
            claimed,
            errors,
        }
    }
}

/// What a `flushSend` batch did: its result, or the error that failed it
/// whole (`code`, `message`).
#[napi(object)]
pub struct FlushDone {
    pub result: Option<FlushResult>,
    pub code: Option<String>,
    pub message: Option<String>,
}

impl FlushDone {
    pub fn ok(result: FlushResult) -> Self {
        FlushDone {
            result: Some(result),
            code: None,
            message: None,
        }
    }

    pub fn err(e: &EngineError) -> Self {
        FlushDone {
            result: None,
            code: Some(e.code().to_string()),
            message: Some(e.to_string()),
        }
    }
}

/// A future whose panic becomes `Err(())` (a spawned flush must still answer).
#[cfg(feature = "postgres")]
pub struct CatchUnwind<F>(pub F);

#[cfg(feature = "postgres")]
impl<F: std::future::Future + Unpin> std::future::Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, ()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = std::pin::Pin::new(&mut self.get_mut().0);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

/// A run's status, as stored.
#[napi(string_enum = "lowercase")]
pub enum RunState {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl From<RunStatus> for RunState {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Pending => RunState::Pending,
            RunStatus::Running => RunState::Running,
            RunStatus::Completed => RunState::Completed,
            RunStatus::Failed => RunState::Failed,
            RunStatus::Cancelled => RunState::Cancelled,
        }
    }
}

/// What `cancel` did.
#[napi(object)]
pub struct CancelResult {
    /// The run's status before it was cancelled.
    pub previous: RunState,
    /// The run, now cancelled, as JSON text.
    pub run: String,
}

/// A closure run on libuv's thread pool, resolving to a `T`. An engine
/// error rejects the promise with a JS error carrying the error's `.code`
/// (the same conversion as a synchronous throw, [`to_js`]): one error channel.
pub struct NativeTask<T>(Option<Box<dyn FnOnce() -> Result<T, EngineError> + Send>>);

impl<T: ToNapiValue + TypeName + Send + 'static> NativeTask<T> {
    /// Wraps `f` for `AsyncTask`.
    pub fn spawn(f: impl FnOnce() -> Result<T, EngineError> + Send + 'static) -> AsyncTask<Self> {
        AsyncTask::new(NativeTask(Some(Box::new(f))))
    }
}

impl<T: ToNapiValue + TypeName + Send + 'static> Task for NativeTask<T> {
    /// The value, or the engine error's code and message (computed on the
    /// pool thread; the JS error is made on the JS thread in `resolve`).
    type Output = Result<T, (&'static str, String)>;
    type JsValue = T;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let f = self
            .0
            .take()
            .ok_or_else(|| napi::Error::from_reason("task ran twice"))?;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(EngineError::Internal("panic in native task".into())));
        Ok(out.map_err(|e| (e.code(), e.to_string())))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<T> {
        match output {
            Ok(v) => Ok(v),
            // A task can only reject with a `napi::Error`; one made from a JS
            // value rejects with that value, here an error with our `.code`.
            Err((code, message)) => {
                let error = napi::Error::new(JsCode(code.to_string()), message);
                Err(napi::Error::from(JsError::from(error).into_unknown(env)))
            }
        }
    }
}

/// A `Date.toISOString()` as a time. Dates before 1970 and after 9999 (which
/// `toISOString` writes as `-YYYYYY-…` / `+YYYYYY-…`) clamp to the range
/// stored times can have, so every date orders as it did compared as text.
pub fn iso_time(s: &str) -> Result<std::time::SystemTime, EngineError> {
    use std::time::{Duration, UNIX_EPOCH};
    match humantime::parse_rfc3339(s) {
        Ok(t) => Ok(t),
        // (`-` sorts before the digits: years before 1 AD too)
        Err(_) if s < "1970" => Ok(UNIX_EPOCH),
        // 9999-12-31T23:59:59.999Z
        Err(_) if s.starts_with('+') => Ok(UNIX_EPOCH + Duration::from_millis(253_402_300_799_999)),
        Err(e) => Err(EngineError::Validation(format!(
            "olderThan {s:?} is not an ISO time: {e}"
        ))),
    }
}
