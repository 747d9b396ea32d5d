//! Conversions at the boundary: engine errors to JS errors with a stable
//! `.code`, trigger outcomes to compact strings, and the pool-thread task.

use napi::bindgen_prelude::{AsyncTask, Env, Status, Task};
use napi::JsError;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::result::Result;

use crate::error::Error as EngineError;
use crate::store::{TriggerItem, TriggerOutcome};

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

/// `c<id><createdAt>`, `i<run json>` or `k<run json>`.
pub fn encode_outcome(o: &TriggerOutcome) -> String {
    match o {
        TriggerOutcome::Created { id, created_at } => format!("c{id}{created_at}"),
        TriggerOutcome::Idempotent(json) => format!("i{json}"),
        TriggerOutcome::Coalesced(json) => format!("k{json}"),
    }
}

/// One encoded outcome per line (JSON text never holds a raw newline).
pub fn encode_outcomes(list: &[TriggerOutcome]) -> String {
    let mut out = String::with_capacity(list.len() * 52);
    for (i, o) in list.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&encode_outcome(o));
    }
    out
}

fn string<'a>(f: &'a RawValue) -> Result<Option<Cow<'a, str>>, EngineError> {
    Ok(serde_json::from_str(f.get())?)
}

/// One parsed `triggerBatch` item; strings borrow from the message unless
/// they needed unescaping.
pub struct BatchItem<'a> {
    job: Cow<'a, str>,
    input: &'a str,
    idempotency_key: Option<Cow<'a, str>>,
    concurrency_key: Option<Cow<'a, str>>,
    coalesce: bool,
    labels: &'a str,
}

impl BatchItem<'_> {
    /// The store's view of this item.
    pub fn as_item(&self) -> TriggerItem<'_> {
        TriggerItem {
            job_name: &self.job,
            input: self.input,
            idempotency_key: self.idempotency_key.as_deref(),
            concurrency_key: self.concurrency_key.as_deref(),
            coalesce: self.coalesce,
            labels: self.labels,
        }
    }
}

/// Parses `[[job, <input>, idemKey, concKey, coalesce, <labels>], …]`.
pub fn parse_batch(items: &str) -> Result<Vec<BatchItem<'_>>, EngineError> {
    let list: Vec<[&RawValue; 6]> = serde_json::from_str(items)?;
    list.iter()
        .map(|it| {
            Ok(BatchItem {
                job: string(it[0])?.unwrap_or_default(),
                input: it[1].get(),
                idempotency_key: string(it[2])?,
                concurrency_key: string(it[3])?,
                coalesce: it[4].get() == "true",
                labels: it[5].get(),
            })
        })
        .collect()
}

/// A closure run on libuv's thread pool, resolving to a string. An engine
/// error rejects the promise with a JS error carrying the error's `.code`
/// (the same conversion as a synchronous throw, [`to_js`]): one error channel.
pub struct NativeTask(Option<Box<dyn FnOnce() -> Result<String, EngineError> + Send>>);

impl NativeTask {
    /// Wraps `f` for `AsyncTask`.
    pub fn spawn(
        f: impl FnOnce() -> Result<String, EngineError> + Send + 'static,
    ) -> AsyncTask<Self> {
        AsyncTask::new(NativeTask(Some(Box::new(f))))
    }
}

impl Task for NativeTask {
    /// The value, or the engine error's code and message (computed on the
    /// pool thread; the JS error is made on the JS thread in `resolve`).
    type Output = Result<String, (&'static str, String)>;
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let f = self
            .0
            .take()
            .ok_or_else(|| napi::Error::from_reason("task ran twice"))?;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(EngineError::Internal("panic in native task".into())));
        Ok(out.map_err(|e| (e.code(), e.to_string())))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<String> {
        match output {
            Ok(s) => Ok(s),
            // A task can only reject with a `napi::Error`; one made from a JS
            // value rejects with that value, here an error with our `.code`.
            Err((code, message)) => {
                let error = napi::Error::new(JsCode(code.to_string()), message);
                Err(napi::Error::from(JsError::from(error).into_unknown(env)))
            }
        }
    }
}
