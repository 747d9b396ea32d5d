'use strict'
// The boundary with the native engine, one place: how the JS layer encodes
// the ops it sends (flush batches, trigger batches) and what the engine
// answers (typed results, see "results" below). Values (inputs, outputs, progress, log data) are already
// JSON text (lib/values.js) and are spliced in as is, so nothing is encoded
// twice. The Rust side parses flush ops with serde into `store::FlushOp`
// (src/store/flush.rs); __test__/protocol.test.mjs and the cargo test
// `protocol_fixture_parses` check both sides against
// __test__/fixtures/protocol-ops.json.

/** JSON text of a string or null. */
function q(s) {
  return s == null ? 'null' : JSON.stringify(s)
}

let lastRun = null
let lastRunJson = 'null'
/**
 * JSON text of a run id. A run's ops mostly follow one another (a step
 * after the other, then the completion), so the last one is kept: one
 * JSON.stringify less per op (~4 % of the JS of a step).
 */
function qrun(run) {
  if (run !== lastRun) {
    lastRun = run
    lastRunJson = q(run)
  }
  return lastRunJson
}

// ---- flush ops: {"<kind>": {...}}, one key naming the kind ------------------

/**
 * A finished step. `outputText`/`progressText`: JSON text or null;
 * `err`: `{ message, stack }` or null; times: ISO strings.
 */
function stepOp(run, gen, name, index, status, outputText, err, startedAt, completedAt, progressText = null) {
  return (
    `{"step":{"run":${qrun(run)},"gen":${gen},"name":${q(name)},"index":${index},"status":"${status}",` +
    `"output":${outputText ?? 'null'},"error":${err ? q(err.message) : 'null'},"stack":${err ? q(err.stack) : 'null'},` +
    `"startedAt":"${startedAt}","completedAt":${completedAt ? `"${completedAt}"` : 'null'},"progress":${progressText ?? 'null'}}}`
  )
}

/**
 * The run completed with `outputText` (JSON text). `stepIndex`: the position
 * after its last completed step as the execution knows it (stored as the
 * run's `current_step_index`); null: the engine reads it from the steps.
 */
function completeOp(run, gen, outputText, progressText, at, stepIndex = null) {
  return `{"complete":{"run":${qrun(run)},"gen":${gen},"output":${outputText ?? 'null'},"progress":${progressText ?? 'null'},"at":"${at}","stepIndex":${stepIndex ?? 'null'}}}`
}

/** The run failed. `stepIndex` as for completeOp. */
function failOp(run, gen, message, stack, progressText, at, stepIndex = null) {
  return `{"fail":{"run":${qrun(run)},"gen":${gen},"error":${q(message)},"stack":${q(stack)},"progress":${progressText ?? 'null'},"at":"${at}","stepIndex":${stepIndex ?? 'null'}}}`
}

/** The run's progress alone (JSON text). */
function progressOp(run, gen, progressText) {
  return `{"progress":{"run":${qrun(run)},"gen":${gen},"progress":${progressText ?? 'null'}}}`
}

/** A log line; `dataText`: JSON text or null. */
function logOp(run, gen, stepName, level, message, dataText, at) {
  return `{"log":{"run":${qrun(run)},"gen":${gen},"step":${q(stepName)},"level":"${level}","message":${q(message)},"data":${dataText ?? 'null'},"at":"${at}"}}`
}

/** Give the run back (pending) so any worker resumes it now. */
function releaseOp(run, gen) {
  return `{"release":{"run":${qrun(run)},"gen":${gen}}}`
}

/** The batch of ops (each op's JSON text) as one JSON array. */
function encodeBatch(ops) {
  return ops.length === 1 ? `[${ops[0]}]` : `[${ops.join(',')}]`
}

// ---- triggers ----------------------------------------------------------------

/**
 * One `triggerBatch` item (`store::TriggerRequest` on the Rust side):
 * `{"job", "input": <JSON>, "idempotencyKey", "concurrencyKey", "coalesce", "labels": <JSON>}`.
 * `jobNameJson`, `inputText` and `labelsText` are JSON text already.
 */
function triggerItem(jobNameJson, inputText, idem, conc, coalesce, labelsText) {
  return (
    `{"job":${jobNameJson},"input":${inputText},"idempotencyKey":${q(idem)},` +
    `"concurrencyKey":${q(conc)},"coalesce":${coalesce === true},"labels":${labelsText}}`
  )
}

/** A whole `triggerBatch` message: the items' JSON text as one array. */
function encodeTriggerBatch(items) {
  return `[${items.join(',')}]`
}

// ---- results -------------------------------------------------------------------
//
// What comes back is typed by the binding (`#[napi(object)]` structs and
// `string_enum`s in src/binding/convert.rs, declared in the generated
// binding.d.ts); only run records and claimed runs stay JSON text (decoded
// by lib/records.js and lib/runner.js):
// - trigger / triggerAsync → TriggerResult:
//   `{ kind: 'created', id, createdAt, claimed?, started? }` or `{ kind: 'idempotent' | 'coalesced', run }`
//   (`run`: the existing run's JSON text; `claimed`, worker on: the runs the
//   engine claimed in or right after the trigger's commit, JSON text;
//   `started`, worker on: the new run was inserted already claimed by this
//   worker, generation 1, started at createdAt: see Runner#startTriggered);
//   `trigger` answers a created run as text instead (the object was ~10 % of
//   a trigger's CPU): `c<id> <createdAt>`, then `\ns` (started) or `\n` and
//   the claimed runs' JSON, read by createdResult() below;
// - triggerBatch(Async) → TriggerBatchResult, one object for the batch:
//   `{ createdAt?, ids, existing? }`: `ids` one per item (the new run's id, or
//   null), `createdAt` shared by the runs created, `existing` the items that
//   found a run: `[{ index, kind: 'idempotent' | 'coalesced', run }]`;
// - flush / flushAsync → FlushResult: `{ statuses, claimed?, errors? }`, one
//   OpResult per op (OP_RESULTS), the runs claimed in the same commit (JSON
//   text) and the ops that failed (`{ index, code, message }`); both
//   answer with text instead when no op failed (the object cost ~2 µs of a
//   ~30 µs flush): a status code per op (`0` written, `c` cancelled, `l`
//   lost, `b` too big), then a newline and the claimed runs' JSON, if any;
// - cancel → CancelResult: `{ previous: <run status>, run: <JSON text> }`;
// - purge, recoverStale → a number; close → undefined.

/**
 * The TriggerResult of a created run from `trigger`'s text answer
 * (`trigger_answer` in src/binding/convert.rs): `c<id> <createdAt>`, then a
 * newline and `s` when the run was inserted already claimed by this worker, or
 * a newline and the claimed runs' JSON (last: it may hold anything).
 */
function createdResult(text) {
  const nl = text.indexOf('\n')
  const head = nl < 0 ? text : text.slice(0, nl)
  const sp = head.indexOf(' ')
  const r = { kind: 'created', id: head.slice(1, sp), createdAt: head.slice(sp + 1), claimed: null, started: false }
  if (nl >= 0) {
    if (text.length === nl + 2 && text.charCodeAt(nl + 1) === 115 /* s */) r.started = true
    else r.claimed = text.slice(nl + 1)
  }
  return r
}

/** What happened to one flush op (`OpResult` in src/binding/convert.rs). */
const OP_RESULTS = Object.freeze({
  written: 'written',
  /** not written: the run was cancelled */
  cancelled: 'cancelled',
  /** not written: the run belongs to another lease */
  lost: 'lost',
  /** not written: a value is longer than SQLite's length limit */
  tooBig: 'tooBig',
  /** not written: the op is malformed or SQLite refused it (see the errors) */
  failed: 'failed',
})

module.exports = {
  q,
  stepOp,
  completeOp,
  failOp,
  progressOp,
  logOp,
  releaseOp,
  encodeBatch,
  triggerItem,
  encodeTriggerBatch,
  createdResult,
  OP_RESULTS,
}
