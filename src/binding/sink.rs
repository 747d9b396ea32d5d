//! The worker's [`Sink`] for Node: messages go to one JS function through a
//! weak ThreadsafeFunction (it never keeps the process alive; the JS layer
//! holds a timer while the worker is started).

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;

use crate::error::Error;
use crate::store::json::{array, JsonObject};
use crate::store::ClaimedRun;
use crate::worker::{LostReason, Sink};

type Tsfn = ThreadsafeFunction<String, (), String, Status, false, true>;

/// Sends worker messages to JS as JSON text.
pub struct JsSink {
    tsfn: Tsfn,
}

impl JsSink {
    /// Wraps the JS message handler.
    pub fn new(tsfn: Tsfn) -> Self {
        JsSink { tsfn }
    }

    fn send(&self, msg: String) {
        // The catching variant: a throw in the handler is reported to this
        // callback instead of becoming an uncaught exception.
        let _ = self.tsfn.call_with_return_value(
            msg,
            ThreadsafeFunctionCallMode::NonBlocking,
            |_result, _env| Ok(()),
        );
    }
}

impl Sink for JsSink {
    fn runs(&self, runs: Vec<ClaimedRun>) {
        let mut o = JsonObject::new();
        o.str("t", Some("runs"))
            .raw("runs", Some(&array(runs.into_iter().map(|r| r.json))));
        self.send(o.finish());
    }

    fn lost(&self, id: &str, reason: LostReason) {
        let mut o = JsonObject::new();
        o.str("t", Some("lost"))
            .str("id", Some(id))
            .str("reason", Some(reason.as_str()));
        self.send(o.finish());
    }

    fn event(&self, run_id: &str, json: &str) {
        let mut o = JsonObject::new();
        o.str("t", Some("event"))
            .str("id", Some(run_id))
            .str("event", Some(json));
        self.send(o.finish());
    }

    fn error(&self, context: &'static str, err: &Error) {
        let mut o = JsonObject::new();
        o.str("t", Some("error"))
            .str("context", Some(context))
            .str("code", Some(err.code()))
            .str("message", Some(&err.to_string()));
        self.send(o.finish());
    }
}
